"""``python -m bench.speed core``, ``throughput``, ``models`` (:mod:`bench.speed_models`): smoke runs, measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch as th

from bench.speed import main
from bench.speed_models import AGENTS, CORE_MODELS, make_core_step, saved_bytes


def test_core_quick_writes_json_with_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "core.json"
    assert main(["core", "--quick", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == list(CORE_MODELS)
    lstm = next(r for r in rows if r["model"] == "nn.LSTM")
    assert lstm["seconds_ratio"] == 1.0 and lstm["saved_bytes_ratio"] == 1.0
    assert all(0 < r["seconds"]["min"] <= r["seconds"]["median"] <= r["seconds"]["max"] for r in rows)
    assert "fast-weights-attention" in capsys.readouterr().out


def test_throughput_quick_writes_json_with_ratios(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    assert main(["throughput", "--quick", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["agent"] for r in rows] == [label for label, _, _ in AGENTS]
    assert rows[0]["steps_per_second_ratio"] == 1.0
    assert all(r["steps_per_second"]["median"] > 0 and r["peak_rss_mib"] > 0 for r in rows)


def test_models_runs_both_in_one_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models.json"
    assert main(["models", "--quick", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [r["model"] for r in payload["core"]["rows"]] == list(CORE_MODELS)
    assert [r["agent"] for r in payload["throughput"]["rows"]] == [label for label, _, _ in AGENTS]
    printed = capsys.readouterr().out
    assert "# core" in printed and "# throughput" in printed


def test_saved_bytes_explicit_path_grows_with_h_squared() -> None:
    """The explicit path keeps every A(t) (B·T·H² floats); the attention path keeps O(B·T·H)."""
    batch, length, hidden = 4, 16, 64
    x = th.randn(length, batch, 8)
    explicit = saved_bytes(make_core_step("fast-weights-explicit", 8, hidden, batch), x)
    attention = saved_bytes(make_core_step("fast-weights-attention", 8, hidden, batch), x)
    assert explicit >= length * batch * hidden * hidden * 4 > attention


def test_saved_bytes_counts_each_storage_once() -> None:
    weight = th.randn(32, 32, requires_grad=True)
    # `weight` is saved by both products; counted once, with the input: 2 storages of 32·32 floats.
    assert saved_bytes(lambda x: (x @ weight) @ weight, th.randn(32, 32)) <= 3 * 32 * 32 * 4


@pytest.mark.parametrize(
    "argv",
    [
        ["core", "--hidden-sizes", "0"],
        ["core", "-T", "x"],
        ["throughput", "--n-envs", "0"],
        ["throughput", "--repeats", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    assert main(argv) == 2


def test_missing_json_folder_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["core", "--quick", "--json", "/nonexistent-folder/x.json"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["core", "--hidden-sizes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m bench.speed core: error:")
