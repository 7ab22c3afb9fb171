"""sb3-contrib's own LSTM tests, run with its LSTM policies swapped for ours: the "drop-in" check.

The tests are sb3-contrib's ``tests/test_lstm.py`` of the installed sb3-contrib version, taken at test time
from its source distribution (``pip download``; not copied into this repository) and cached in
``$FW_AGENTS_CACHE/sb3-contrib-<version>/`` (default ``~/.cache/fw-agents``). They run in a separate pytest
process with :mod:`tests.conformance.sb3_contrib_plugin`, which points sb3-contrib's ``MlpLstmPolicy``,
``CnnLstmPolicy`` and ``MultiInputLstmPolicy`` aliases at our fast-weights classes, or at our GRU classes;
nothing else of the file changes, its policy keyword arguments included. Its learning test (marked ``slow``
there too) runs only under our ``slow`` marker.

Without PyPI the tests skip with the reason, except where the environment variable ``CI`` is set (``true``):
there they fail, so that CI never passes without having run them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conformance.sb3_contrib_plugin import SWAPS

REPO = Path(__file__).resolve().parents[2]
SB3_CONTRIB_VERSION = importlib.metadata.version("sb3-contrib")
#: Where the test file sits in sb3-contrib's source distribution, below its top folder.
TEST_FILE = "tests/test_lstm.py"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip for ``reason`` (no network here), or fail under CI, which has PyPI and must run these tests."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: failing rather than skipping)")
    pytest.skip(reason)


def cache_dir() -> Path:
    """``$FW_AGENTS_CACHE``, else ``$XDG_CACHE_HOME/fw-agents`` (``~/.cache/fw-agents``), per sb3-contrib version."""
    if os.environ.get("FW_AGENTS_CACHE"):
        root = Path(os.environ["FW_AGENTS_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fw-agents"
    return root / f"sb3-contrib-{SB3_CONTRIB_VERSION}"


def download_test_file(workdir: Path) -> bytes:
    """sb3-contrib's ``tests/test_lstm.py`` from its source distribution on PyPI, for the installed version."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
        "--dest", str(workdir), f"sb3-contrib=={SB3_CONTRIB_VERSION}",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        unavailable(f"pip download of sb3-contrib=={SB3_CONTRIB_VERSION}'s source distribution timed out")
    if result.returncode != 0:
        last_lines = " | ".join(result.stderr.strip().splitlines()[-3:])
        unavailable(f"cannot download sb3-contrib=={SB3_CONTRIB_VERSION}'s source distribution: {last_lines}")
    sdists = sorted(workdir.glob("*.tar.gz"))
    if len(sdists) != 1:
        pytest.fail(f"pip download gave {[p.name for p in workdir.iterdir()]}, expected one .tar.gz")
    with tarfile.open(sdists[0]) as sdist:
        # Read the one member by name (never extract the archive): "<name>-<version>/tests/test_lstm.py".
        members = [m for m in sdist.getmembers() if m.isfile() and m.name.partition("/")[2] == TEST_FILE]
        if not members:
            pytest.fail(f"{sdists[0].name} holds no {TEST_FILE}: find another source of sb3-contrib's LSTM tests")
        return sdist.extractfile(members[0]).read()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def sb3_contrib_test_lstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of sb3-contrib's ``test_lstm.py`` (downloaded once, then cached across sessions)."""
    cached = cache_dir() / "test_lstm.py"
    if cached.is_file():
        return cached
    content = download_test_file(tmp_path_factory.mktemp("sb3-contrib-sdist"))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"test_lstm.py.{os.getpid()}.partial")  # never leave a half-written file
        partial.write_bytes(content)
        partial.replace(cached)
        return cached
    except OSError:  # no writable cache: keep it for this session only
        path = tmp_path_factory.mktemp("sb3-contrib-tests") / "test_lstm.py"
        path.write_bytes(content)
        return path


def run_sb3_contrib_tests(test_file: Path, memory: str, marker: str, tmp_path: Path) -> tuple[dict[str, str], set[str]]:
    """Run sb3-contrib's tests selected by ``-m marker`` with its LSTM aliases pointed at ``memory``'s classes.

    :return: outcome per test (``passed``, ``failed``, ``error``, ``skipped``) and the names of the policy
        classes the tests built.
    """
    workdir = tmp_path / "sb3-contrib"
    workdir.mkdir()
    shutil.copy(test_file, workdir / "test_lstm.py")
    # Its own pytest settings, not ours: sb3-contrib's marker, none of our addopts (-m 'not slow').
    (workdir / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: sb3-contrib's learning tests\n")
    junit, used = tmp_path / "junit.xml", tmp_path / "policies_used.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "FW_AGENTS_MEMORY": memory,
        "FW_AGENTS_POLICIES_USED": str(used),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "pytest", "test_lstm.py", "-c", "pytest.ini", "--rootdir", str(workdir),
        "-p", "no:cacheprovider", "-p", "tests.conformance.sb3_contrib_plugin", "-m", marker,
        "--junitxml", str(junit), "-q", "-rfE",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600)
    output = result.stdout + result.stderr
    # What a failed learning test needs to be judged: its evaluations over training, then the end of the log.
    evaluations = "\n".join(line for line in output.splitlines() if "Eval num_timesteps" in line)
    output = f"{evaluations}\n...\n{output[-6000:]}" if evaluations else output[-6000:]
    if not junit.exists():
        pytest.fail(f"sb3-contrib's tests did not run (exit status {result.returncode}):\n{output}")
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "?")] = {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
    not_passed = {name: outcome for name, outcome in outcomes.items() if outcome != "passed"}
    passed = len(outcomes) - len(not_passed)
    summary = f"sb3-contrib {SB3_CONTRIB_VERSION} test_lstm.py -m '{marker}' with {memory}: "
    summary += f"{passed}/{len(outcomes)} passed"
    print(summary)
    assert outcomes and not not_passed and result.returncode == 0, f"{summary}; {not_passed}\n{output}"
    return outcomes, set(json.loads(used.read_text()))


@pytest.mark.parametrize("memory", sorted(SWAPS))
def test_sb3_contrib_lstm_tests_pass(memory: str, sb3_contrib_test_lstm: Path, tmp_path: Path) -> None:
    _, used = run_sb3_contrib_tests(sb3_contrib_test_lstm, memory, "not slow", tmp_path)
    # The swap took effect: every policy the tests built is ours (Mlp, Cnn and MultiInput variants).
    assert used == {cls.__name__ for cls in SWAPS[memory].values()}


@pytest.mark.slow
@pytest.mark.parametrize("memory", sorted(SWAPS))
def test_sb3_contrib_lstm_learning_test_passes(memory: str, sb3_contrib_test_lstm: Path, tmp_path: Path) -> None:
    """sb3-contrib's learning bar (CartPole without velocities, mean return >= 450 after 50k steps)."""
    _, used = run_sb3_contrib_tests(sb3_contrib_test_lstm, memory, "slow", tmp_path)
    assert used == {SWAPS[memory]["MlpLstmPolicy"].__name__}
