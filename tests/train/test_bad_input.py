"""Bad values on every command line: exit status 2, exactly one line on stderr, no traceback, nothing written.

One table over train.a2c, train.ppo, train.evaluate, train.compare, bench.suite, bench.assoc, bench.speed and
train.plot. Each case runs in a folder that holds a finished tiny run (for the cases that resume, evaluate or plot
it); every file under that folder must be byte for byte the same afterwards, and no file may appear.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch as th
import yaml

from bench import assoc, suite
from bench import speed as bench
from train import a2c, compare, evaluate, plot, ppo

CATCH = "fw_agents/Catch-N16-M3-v0"
MAINS: dict[str, Callable[[list[str]], int]] = {
    "a2c": a2c.main,
    "ppo": ppo.main,
    "evaluate": evaluate.main,
    "compare": compare.main,
    "suite": suite.main,
    "assoc": assoc.main,
    "bench": bench.main,
    "plot": plot.main,
}
#: A run of a few steps that would be trained if the bad value were accepted.
NEW = ["--n-envs", "2", "--env", CATCH, "--total-timesteps", "30", "--hidden-size", "4", "--eval-freq", "0",
       "--checkpoint-freq", "0", "--final-eval-episodes", "0", "--verbose", "0", "--no-progress-bar",
       "--save-dir", "new", "--tensorboard-log", "tb"]  # fmt: skip
UNWRITABLE = "/proc/no-such-folder/x"

#: (command line, argv with RUN for the finished run's folder and DIR for a folder, text the error must contain)
CASES: list[tuple[str, list[str], str]] = [
    # Hyperparameters: type and range of every kind of key, unknown and run-owned keys.
    ("a2c", [*NEW, "--hparams", "n_steps=0"], "n_steps must be a positive integer"),
    ("a2c", [*NEW, "--hparams", "ent_coef=abc"], "ent_coef must be a number"),
    ("a2c", [*NEW, "--hparams", "vf_coef=-1"], "vf_coef"),
    ("a2c", [*NEW, "--hparams", "gamma=2"], "gamma must be"),
    ("a2c", [*NEW, "--hparams", "gae_lambda=5"], "gae_lambda must be"),
    ("a2c", [*NEW, "--hparams", "max_grad_norm=-1"], "max_grad_norm must be > 0"),
    ("a2c", [*NEW, "--hparams", "learning_rate=0"], "learning_rate"),
    ("a2c", [*NEW, "--hparams", "learning_rate=lin_abc"], "lin_<number>"),
    ("a2c", [*NEW, "--hparams", "learning_rate=lin_-1"], "learning_rate"),
    ("a2c", [*NEW, "--hparams", "learning_rate=fast"], "learning_rate must be a number > 0 or a schedule"),
    ("a2c", [*NEW, "--hparams", "use_rms_prop=maybe"], "use_rms_prop must be true or false"),
    ("a2c", [*NEW, "--hparams", "normalize=maybe"], "normalize must be true or false, or a mapping"),
    ("a2c", [*NEW, "--hparams", "normalize={gamma: 3}"], "normalize.gamma"),
    ("a2c", [*NEW, "--hparams", "normalize={norm_obz: true}"], "normalize.norm_obz is not one of its options"),
    # YAML reads {norm_obs:true} (no space after the colon) as the key "norm_obs:true": named as given.
    ("a2c", [*NEW, "--hparams", "normalize={norm_obs:true}"], "normalize.norm_obs:true is not one of its options"),
    ("a2c", [*NEW, "--hparams", "policy_kwargs=abc"], "policy_kwargs must be a mapping"),
    ("a2c", [*NEW, "--hparams", "env_kwargs=3"], "env_kwargs must be a mapping"),
    ("a2c", [*NEW, "--hparams", "env_kwargs={size: -1}"], "cannot make environment"),
    ("a2c", [*NEW, "--hparams", "memory_kwargs={transformer: {}}"], "memory_kwargs must map --policy choices"),
    ("a2c", [*NEW, "--hparams", "n_stepz=3"], "unknown hyperparameter(s) n_stepz"),
    ("a2c", [*NEW, "--hparams", "seed=3"], "cannot be set as a hyperparameter"),
    ("a2c", [*NEW, "--hparams", "batch_size=8"], "unknown hyperparameter(s) batch_size"),  # PPO's, not A2C's
    ("ppo", [*NEW, "--hparams", "batch_size=0"], "batch_size must be a positive integer"),
    ("ppo", [*NEW, "--hparams", "n_epochs=0"], "n_epochs"),
    ("ppo", [*NEW, "--hparams", "clip_range=-1"], "clip_range"),
    ("ppo", [*NEW, "--hparams", "clip_range=lin_0"], "clip_range"),
    ("ppo", [*NEW, "--hparams", "target_kl=-1"], "target_kl"),
    # Policy and memory options: the library's own checks, before any work.
    ("a2c", [*NEW, "--policy-kwargs", "fast_learning_rate=1e300"], "fast_learning_rate"),
    ("a2c", [*NEW, "--policy-kwargs", "layer_norm=maybe"], "layer_norm must be True or False"),
    ("a2c", [*NEW, "--policy-kwargs", "net_arch=[0]"], "net_arch layer sizes must be integers >= 1"),
    ("a2c", [*NEW, "--policy-kwargs", "decay_rate=1.5"], "decay_rate"),
    ("a2c", [*NEW, "--policy-kwargs", "activation_fn=nn.NoSuch"], "cannot import 'nn.NoSuch'"),
    ("a2c", [*NEW, "--policy", "gru", "--policy-kwargs", "bidirectional=true"], "torch.nn.LSTM options"),
    ("a2c", [*NEW, "--hidden-size", "0"], "hidden_size"),
    # Counts, seeds, devices, sources.
    ("a2c", [*NEW, "--seed", "-1"], "--seed: must be an integer in [0, 4294967295]"),
    ("a2c", [*NEW, "--threads", "0"], "--threads must be a positive integer"),
    ("a2c", [*NEW, "--n-envs", "0"], "--n-envs: must be a positive integer"),
    ("a2c", [*NEW, "--total-timesteps", "0"], "--total-timesteps: must be a positive integer"),
    ("a2c", [*NEW, "--eval-freq", "-1"], "--eval-freq"),
    ("a2c", [*NEW, "--checkpoint-freq", "-1"], "--checkpoint-freq"),
    ("a2c", [*NEW, "--eval-episodes", "0"], "--eval-episodes"),
    ("a2c", [*NEW, "--final-eval-episodes", "-1"], "--final-eval-episodes"),
    ("a2c", [*NEW, "--log-interval", "0"], "--log-interval"),
    ("a2c", [*NEW, "--device", "warp-drive"], "unknown device"),
    ("a2c", [*NEW, "--env", "NoSuch-v0"], "unknown environment"),
    ("a2c", [*NEW, "--env", "../../etc/passwd:X"], "cannot import '../../etc/passwd'"),
    ("a2c", [*NEW, "--threads", "99999"], "--threads"),
    ("a2c", [*NEW[2:], "--hparams", "n_envs=1e308"], "n_envs"),
    ("a2c", [*NEW[2:], "--hparams", "n_envs=100000000"], "n_envs"),
    ("a2c", [*NEW, "--policy-kwargs", "features_extractor_class=builtins:print"], "BaseFeaturesExtractor class"),
    ("evaluate", ["RUN", "--algo", "ppo"], "was trained with a2c, not ppo"),
    *([] if th.cuda.is_available() else [("a2c", [*NEW, "--device", "cuda"], "torch sees no CUDA GPU")]),
    ("a2c", [*NEW, "--config", "DIR/missing.yml"], "does not exist"),
    ("a2c", [*NEW, "--config", "DIR/list.yml"], "must hold a YAML mapping"),
    ("a2c", [*NEW, "--hparams", "gamma"], "key=value"),
    # A spec file sets the env, policy and hyperparameters: flags for them would be ignored, so they are refused.
    ("a2c", ["--spec", "RUN/config.yml", "--save-dir", "new", "--env", CATCH], "--env cannot be given with --spec"),
    ("a2c", ["--spec", "RUN/config.yml", "--save-dir", "new", "--hparams", "n_steps=3"], "--hparams cannot be given"),
    # Output paths: writable, and the right kind.
    ("a2c", [*NEW, "--save-dir", UNWRITABLE], "--save-dir"),
    ("a2c", [*NEW, "--save-dir", "DIR/list.yml"], "is a file, expected a folder"),
    ("a2c", [*NEW, "--save-dir", "RUN"], "is not empty"),
    ("a2c", [*NEW, "--tensorboard-log", UNWRITABLE], "--tensorboard-log"),
    ("a2c", [*NEW, "--tensorboard-log", "DIR/list.yml"], "is a file, expected a folder"),
    # Resuming: fixed options, a different algorithm, an incomplete config.
    ("a2c", ["--resume", "RUN", "--policy", "mlp"], "cannot be changed when resuming"),
    ("a2c", ["--resume", "RUN", "--eval-episodes", "7"], "--eval-episodes cannot be changed"),
    ("a2c", ["--resume", "RUN", "--total-timesteps", "0"], "--total-timesteps"),
    ("ppo", ["--resume", "RUN"], "trained with 'a2c'"),
    ("a2c", ["--resume", "DIR/incomplete"], "has no 'policy'"),
    ("a2c", ["--resume", "DIR/nothing.zip"], "does not exist"),
    # Evaluate.
    ("evaluate", ["RUN", "--episodes", "0"], "--episodes must be a positive integer"),
    ("evaluate", ["RUN", "--record", f"{UNWRITABLE}.gif"], "--record"),
    ("evaluate", ["RUN", "--record", "DIR"], "is a folder, expected a file name"),
    ("evaluate", ["RUN", "--record", "DIR/episode.mp4"], "--record writes an animated GIF"),
    ("evaluate", ["RUN", "--seed", "-1"], "--seed"),
    ("evaluate", ["RUN", "--device", "warp-drive"], "unknown device"),
    ("evaluate", ["DIR/nothing.zip"], "does not exist"),
    # Compare, suite, plot.
    ("compare", ["table", "DIR", "--json", "DIR"], "is a folder, expected a file name"),
    ("compare", ["table", "DIR/missing"], "does not exist"),
    ("compare", ["run", "--env", CATCH, "--out-dir", "DIR/grid", "--jobs", "0"], "--jobs"),
    ("compare", ["run", "--env", CATCH, "--out-dir", "DIR/grid", "--seeds", "-1"], "--seeds"),
    ("suite", ["run", "--out-dir", "DIR/suite", "--jobs", "0"], "--jobs"),
    ("suite", ["run", "--out-dir", "DIR/suite", "--seeds", "-1"], "--seeds"),
    ("suite", ["report", "DIR/missing"], "missing"),
    ("plot", ["RUN", "--points", "0"], "--points"),
    ("plot", ["RUN", "--out", "DIR"], "is a folder, expected a file name"),
    ("plot", ["DIR/missing"], "does not exist"),
    # Assoc and bench.
    ("assoc", ["--data-seed", "-1"], "--data-seed"),
    ("assoc", ["--hidden-size", "0"], "--hidden-size"),
    ("assoc", ["--json", "DIR"], "is a folder, expected a file name"),
    ("bench", ["envs", "--ids", "nothing*"], "no registered id matches"),
    ("bench", ["envs", "--seed", "-1"], "--seed"),
    ("bench", ["core", "--quick", "--json", "DIR"], "is a folder, expected a file name"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished a2c run (trained once for the whole table)."""
    root = tmp_path_factory.mktemp("finished")
    argv = [arg if arg not in ("new", "tb") else str(root / arg) for arg in NEW]
    assert a2c.main([*argv, "--save-dir", str(root / "run"), "--tensorboard-log", str(root / "tb")]) == 0
    return root


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(("cli", "argv", "expected"), CASES, ids=[f"{c[0]}:{' '.join(c[1][-2:])}" for c in CASES])
def test_bad_value_is_one_line_exit_2_and_writes_nothing(
    cli: str,
    argv: list[str],
    expected: str,
    finished_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
    (tmp_path / "list.yml").write_text("[1, 2]\n")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(tmp_path / "run", incomplete)
    config = yaml.safe_load((incomplete / "config.yml").read_text())
    del config["policy"]
    (incomplete / "config.yml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # relative paths (new, tb, runs/) land here, where they are looked for
    argv = [arg.replace("RUN", str(tmp_path / "run")).replace("DIR", str(tmp_path)) for arg in argv]
    before = snapshot(tmp_path)

    assert MAINS[cli](argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert out == "", out  # nothing said before the refusal (e.g. "resuming RUN from ..."): the error is the output
    assert err.startswith(("python -m train.", "python -m bench.")) and expected in err, err
    assert snapshot(tmp_path) == before
