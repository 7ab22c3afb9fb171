"""End-to-end tests of the command lines (train.a2c, train.ppo, train.evaluate, train.plot) on tiny budgets.

Each CLI's ``main(argv)`` runs in-process (fast); one real ``python -m train.a2c`` subprocess shows the exit
status and the absence of tracebacks as a user sees them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from fw_agents.predict_guard import StatelessPredictWarning
from train import a2c, cli, evaluate, plot, ppo, runs, spec

REPO = Path(__file__).resolve().parents[2]
CATCH = "fw_agents/Catch-N16-M3-v0"  # 15-step episodes: several finish within a tiny budget


def tiny(tmp_path: Path, name: str = "run", steps: int = 120, *extra: str) -> list[str]:
    """Arguments for a run of a few seconds in ``tmp_path``."""
    return [
        "--env", CATCH, "--n-envs", "2", "--total-timesteps", str(steps), "--hidden-size", "8",
        "--eval-episodes", "2", "--final-eval-episodes", "2", "--eval-freq", "60", "--checkpoint-freq", "60",
        "--log-interval", "1",
        "--no-progress-bar", "--verbose", "0",
        "--save-dir", str(tmp_path / name), "--tensorboard-log", str(tmp_path / "tb"), *extra,
    ]  # fmt: skip


def run_config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yml").read_text())


def tensorboard_tags(directory: str | Path) -> tuple[set[str], set[str], EventAccumulator]:
    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    tags = accumulator.Tags()
    return set(tags["scalars"]), set(tags["tensors"]), accumulator


# ----------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("policy", ["fast-weights", "lstm", "gru", "mlp"])
def test_a2c_trains_saves_and_logs(tmp_path: Path, policy: str, capsys: pytest.CaptureFixture) -> None:
    assert a2c.main([*tiny(tmp_path), "--policy", policy]) == 0
    run = tmp_path / "run"
    for name in ("model.zip", "best_model.zip", "evaluations.npz", "config.yml", "checkpoints/model_60_steps.zip"):
        assert (run / name).exists(), name
    config = run_config(run)
    assert config["algorithm"] == "a2c" and config["policy"] == policy and config["env_id"] == CATCH
    assert config["policy_alias"] == {"fast-weights": "MlpFastWeightsPolicy", "lstm": "MlpLstmPolicy",
                                      "gru": "MlpGruPolicy", "mlp": "MlpNoMemoryPolicy"}[policy]  # fmt: skip
    assert config["hyperparams"]["policy_kwargs"]["hidden_size"] == 8
    assert {"torch", "stable-baselines3", "sb3-contrib", "gymnasium", "fw-agents"} <= set(config["versions"])
    assert "--total-timesteps 120" in config["command"]
    assert config["result"]["num_timesteps"] == 120
    assert 0.0 <= config["result"]["final_eval_deterministic"]["success_rate"] <= 1.0
    assert 0.0 <= config["result"]["final_eval_stochastic"]["success_rate"] <= 1.0  # both ways of acting, always
    assert config["deterministic_eval"] is True

    scalars, tensors, _ = tensorboard_tags(config["tensorboard_dir"])
    expected = {"rollout/ep_rew_mean", "rollout/success_rate", "train/policy_loss", "train/value_loss",
                "train/entropy_loss", "eval/mean_reward", "eval/success_rate"}  # fmt: skip
    assert expected <= scalars, expected - scalars
    memory_tags = {"memory/fast_weights_norm", "memory/fast_slow_ratio", "memory/decay_rate",
                   "memory/fast_learning_rate", "memory/gate_mean", "memory/gate_slow_fraction"}  # fmt: skip
    assert (memory_tags <= scalars) == (policy == "fast-weights")
    # The run's hyperparameters in TensorBoard's HParams tab.
    plugins = {value.metadata.plugin_data.plugin_name for path in Path(config["tensorboard_dir"]).glob("events*")
               for event in EventFileLoader(str(path)).Load() for value in event.summary.value}  # fmt: skip
    assert "hparams" in plugins
    assert any(tag.startswith("config") for tag in tensors)

    summary = capsys.readouterr().out
    assert "final evaluation (deterministic)" in summary and "final evaluation (stochastic)" in summary
    assert str(run / "model.zip") in summary and "tensorboard:" in summary


def test_stochastic_eval_is_recorded_and_kept_on_resume(tmp_path: Path) -> None:
    assert a2c.main([*tiny(tmp_path), "--stochastic-eval"]) == 0
    run = tmp_path / "run"
    assert run_config(run)["deterministic_eval"] is False
    assert a2c.main(["--resume", str(run), "--total-timesteps", "60", "--tensorboard-log", "none"]) == 0
    assert run_config(run)["deterministic_eval"] is False


def test_memory_stats_are_sane(tmp_path: Path) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    _, _, accumulator = tensorboard_tags(run_config(tmp_path / "run")["tensorboard_dir"])
    norms = [event.value for event in accumulator.Scalars("memory/fast_weights_norm")]
    ratios = [event.value for event in accumulator.Scalars("memory/fast_slow_ratio")]
    assert all(np.isfinite(norms)) and all(value >= 0 for value in norms) and max(norms) > 0
    assert all(np.isfinite(ratios)) and all(value >= 0 for value in ratios) and max(ratios) > 0


def test_ppo_trains(tmp_path: Path) -> None:
    args = [*tiny(tmp_path), "--hparams", "n_steps=16", "batch_size=16", "n_epochs=1", "learning_rate=lin_3e-4"]
    assert ppo.main(args) == 0
    config = run_config(tmp_path / "run")
    assert config["algorithm"] == "ppo" and config["policy_alias"] == "MlpFastWeightsPolicy"
    assert config["hyperparams"]["learning_rate"] == "lin_3e-4"
    scalars, _, _ = tensorboard_tags(config["tensorboard_dir"])
    assert {"rollout/ep_rew_mean", "train/clip_fraction", "memory/fast_weights_norm"} <= scalars


def test_resume_continues_step_count(tmp_path: Path) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    run = tmp_path / "run"
    first = run_config(run)
    resume = ["--resume", str(run), "--total-timesteps", "60", "--no-progress-bar", "--verbose", "0",
              "--eval-freq", "60", "--checkpoint-freq", "60", "--log-interval", "1"]  # fmt: skip
    assert a2c.main(resume) == 0
    config = run_config(run)
    assert config["result"]["num_timesteps"] == 180
    assert config["resumed"][0]["at_step"] == 120
    # Same TensorBoard folder, steps continuing past the first part.
    assert config["tensorboard_dir"] == first["tensorboard_dir"]
    _, _, accumulator = tensorboard_tags(config["tensorboard_dir"])
    assert max(event.step for event in accumulator.Scalars("train/policy_loss")) > 120
    assert (run / "checkpoints" / "model_180_steps.zip").exists()
    with np.load(run / "evaluations.npz") as data:
        assert list(data["timesteps"]) == [60, 120, 180]
    # A continuation can log elsewhere (a copied run), leaving the run's own TensorBoard folder as it was.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    logged = {path: path.stat().st_size for path in Path(first["tensorboard_dir"]).rglob("*") if path.is_file()}
    assert a2c.main(["--resume", str(copy), *resume[2:], "--tensorboard-log", str(tmp_path / "tb-copy")]) == 0
    assert Path(run_config(copy)["tensorboard_dir"]).parent == tmp_path / "tb-copy"
    assert {path: path.stat().st_size for path in Path(first["tensorboard_dir"]).rglob("*") if path.is_file()} == logged
    # Also from a checkpoint.
    checkpoint = run / "checkpoints" / "model_60_steps.zip"
    assert a2c.main(["--resume", str(checkpoint), *resume[2:], "--archive-newer"]) == 0
    assert run_config(run)["result"]["num_timesteps"] == 120


def test_normalize_saved_and_applied_frozen(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert a2c.main([*tiny(tmp_path), "--hparams", "normalize={norm_obs: true, norm_reward: true}"]) == 0
    run = tmp_path / "run"
    stats = ("model_vecnormalize.pkl", "best_model_vecnormalize.pkl", "checkpoints/model_vecnormalize_60_steps.pkl")
    for name in stats:
        assert (run / name).exists(), name
    model, venv, _ = evaluate.load_run(run)
    assert venv.training is False and venv.norm_reward is False
    assert model.get_vec_normalize_env() is venv
    assert evaluate.main([str(run / "best_model.zip"), "--episodes", "2"]) == 0
    assert a2c.main(["--resume", str(run), "--total-timesteps", "30", "--no-progress-bar", "--verbose", "0"]) == 0


def test_config_file_and_precedence(tmp_path: Path) -> None:
    config_file = tmp_path / "hp.yml"
    memory_kwargs = {"fast-weights": {"fast_learning_rate": 0.005}, "gru": {"num_layers": 2}}
    entry = {"n_steps": 4, "gamma": 0.9, "policy_kwargs": {"net_arch": [8]}, "memory_kwargs": memory_kwargs}
    config_file.write_text(yaml.safe_dump({CATCH: entry}))
    args = [*tiny(tmp_path), "--config", str(config_file), "--hparams", "gamma=0.95"]
    args += ["--policy-kwargs", "decay_rate=0.9"]
    assert a2c.main(args) == 0
    params = run_config(tmp_path / "run")["hyperparams"]
    assert params["n_steps"] == 4 and params["gamma"] == 0.95  # --hparams beats --config
    # fast_learning_rate: the config file's memory_kwargs for fast weights (the gru entry is not for this policy).
    expected = {"hidden_size": 8, "net_arch": [8], "fast_learning_rate": 0.005, "decay_rate": 0.9}
    assert params["policy_kwargs"] == expected
    # A run's config.yml is a valid --config: the same hyperparameters again.
    assert a2c.main([*tiny(tmp_path, "again"), "--config", str(tmp_path / "run" / "config.yml")]) == 0
    assert run_config(tmp_path / "again")["hyperparams"] == params


def test_sb3_contrib_policy_kwargs_in_configs_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """sb3-contrib's names work in every source; the run's config holds ours; a later source overrides an earlier
    one whichever spelling each uses (tiny's --hidden-size 8 beats the file's lstm_hidden_size)."""
    config_file = tmp_path / "hp.yml"
    file_kwargs = {"lstm_hidden_size": 6, "lstm_kwargs": {"decay_rate": 0.8}, "enable_critic_lstm": False}
    config_file.write_text(yaml.safe_dump({CATCH: {"policy_kwargs": file_kwargs}}))
    args = [*tiny(tmp_path), "--config", str(config_file), "--policy-kwargs", "n_lstm_layers=2"]
    assert a2c.main(args) == 0
    policy_kwargs = run_config(tmp_path / "run")["hyperparams"]["policy_kwargs"]
    expected = {"hidden_size": 8, "decay_rate": 0.8, "enable_critic_memory": False, "num_layers": 2}
    assert expected.items() <= policy_kwargs.items() and "lstm_kwargs" not in policy_kwargs
    scalars, _, _ = tensorboard_tags(run_config(tmp_path / "run")["tensorboard_dir"])
    assert {"memory/layer0_fast_slow_ratio", "memory/layer1_fast_weights_norm"} <= scalars  # stats of each layer
    bad(a2c.main, [*tiny(tmp_path, "both"), "--policy-kwargs", "shared_memory=false", "shared_lstm=false"], capsys,
        "--policy-kwargs", "'shared_memory' and 'shared_lstm' are two spellings")  # fmt: skip
    config_file.write_text(yaml.safe_dump({"policy_kwargs": {"decay_rate": 0.9, "lstm_kwargs": {"decay_rate": 0.9}}}))
    bad(a2c.main, [*tiny(tmp_path, "both"), "--config", str(config_file)], capsys, f"--config {config_file}",
        "'decay_rate' and lstm_kwargs['decay_rate']")  # fmt: skip
    assert not (tmp_path / "both").exists()


def test_policy_kwargs_translate_through_one_table(tmp_path: Path) -> None:
    kwargs = {"hidden_size": 8, "n_lstm_layers": 2, "dropout": 0.1}

    def policy_kwargs(policy: str) -> dict:
        hyperparams = {"n_timesteps": 10, "policy_kwargs": kwargs}
        return spec.RunSpec(env_id=CATCH, policy=policy, hyperparams=hyperparams, save_dir=tmp_path).model_kwargs()[
            "policy_kwargs"
        ]

    assert policy_kwargs("lstm") == {"lstm_hidden_size": 8, "n_lstm_layers": 2, "lstm_kwargs": {"dropout": 0.1}}
    assert policy_kwargs("gru") == {"hidden_size": 8, "num_layers": 2, "dropout": 0.1}


def test_default_save_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [arg for arg in tiny(tmp_path) if arg not in ("--save-dir", str(tmp_path / "run"))]
    assert a2c.main([*args, "--policy", "mlp", "--seed", "3", "--progress-bar"]) == 0  # tqdm + rich
    assert (tmp_path / "runs" / "a2c-fw_agents_Catch-N16-M3-v0-mlp-s3" / "model.zip").exists()


def test_real_subprocess_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    good = subprocess.run([sys.executable, "-m", "train.a2c", *tiny(tmp_path, "run", 60)], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "Traceback" not in good.stderr and "final evaluation" in good.stdout
    bad = subprocess.run([sys.executable, "-m", "train.a2c", "--env", "NoSuchEnv-v0"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown environment 'NoSuchEnv-v0'" in bad.stderr


# ----------------------------------------------------------------------------------------------- evaluate, plot
def test_evaluate_prints_and_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    capsys.readouterr()
    gif = tmp_path / "episode.gif"
    assert evaluate.main([str(tmp_path / "run"), "--episodes", "4", "--record", str(gif)]) == 0
    out = capsys.readouterr().out
    assert "deterministic" in out and "sampled" in out and "±" in out and "success" in out
    with Image.open(gif) as image:
        assert image.n_frames == 16  # the reset frame and one per step of a 15-step episode
    # A checkpoint finds its run's config one folder up.
    assert evaluate.main([str(tmp_path / "run" / "checkpoints" / "model_60_steps.zip"), "--episodes", "2"]) == 0


def test_stateless_predict_warns(tmp_path: Path) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    model, venv, _ = evaluate.load_run(tmp_path / "run")
    obs = venv.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        action, state = model.predict(obs)  # first call of an episode: fine
        for _ in range(3):
            action, state = model.predict(obs, state=state, episode_start=np.zeros(1, dtype=bool))
    model.predict(obs)
    with pytest.warns(StatelessPredictWarning, match="without state"):
        model.predict(obs)


def test_plot_groups_policies_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for policy in ("fast-weights", "mlp"):
        for seed in ("0", "1"):
            assert a2c.main([*tiny(tmp_path, f"{policy}-{seed}"), "--policy", policy, "--seed", seed]) == 0
    capsys.readouterr()
    out = tmp_path / "curves.png"
    assert plot.main([str(tmp_path), "--out", str(out)]) == 0
    assert "4 runs, 2 lines" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.size[0] > 100
    grid, mean, std = plot.mean_and_std([(np.array([0.0, 10.0]), np.array([0.0, 1.0])),
                                         (np.array([0.0, 20.0]), np.array([1.0, 3.0]))], 3)  # fmt: skip
    np.testing.assert_allclose(grid, [0, 5, 10])
    np.testing.assert_allclose(mean, [0.5, 1.0, 1.5])
    np.testing.assert_allclose(std, [0.5, 0.5, 0.5])


# ----------------------------------------------------------------------------------------------- bad input
def bad(main, argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    """Run ``main(argv)``; assert exit status 2 and one line on stderr containing every ``expected``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_unknown_env_lists_memory_envs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad(a2c.main, [*tiny(tmp_path), "--env", "NoSuch-v0"], capsys, "unknown environment", CATCH,
        "fw_agents/TMazePassive-L10-v0")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_divergence_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An absurd learning rate without layer norm drives the logits to NaN within a few updates."""
    argv = [*tiny(tmp_path, "run", 3000), "--env", "fw_agents/CartPoleNoVel-v1", "--n-envs", "8",
            "--hparams", "learning_rate=1e5", "--policy-kwargs", "layer_norm=false"]  # fmt: skip
    bad(a2c.main, argv, capsys, "training diverged", "lower the learning rate", "Training stopped at step")
    assert not (tmp_path / "run" / "model.zip").exists()  # nothing saved after the divergence


def test_unknown_policy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad(ppo.main, [*tiny(tmp_path), "--policy", "transformer"], capsys, "invalid choice", "fast-weights", "mlp")


def test_unsupported_spaces(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Blackjack observes a Tuple; the test env below acts with a Tuple.
    bad(a2c.main, [*tiny(tmp_path), "--env", "Blackjack-v1"], capsys, "observation space Tuple", "not supported")
    bad(a2c.main, [*tiny(tmp_path), "--env", "tests.train.tuple_action_env:TupleAction-v0"], capsys,
        "action space Tuple", "not supported")  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [["--total-timesteps", "0"], ["--total-timesteps", "-5"],
                                    ["--hparams", "n_timesteps=0"], ["--n-envs", "0"]])  # fmt: skip
def test_non_positive_counts(tmp_path: Path, capsys: pytest.CaptureFixture, option: list[str]) -> None:
    args = [arg for arg in tiny(tmp_path) if arg not in ("--total-timesteps", "120")]
    if option[0] == "--n-envs":
        args = [*tiny(tmp_path)]
        args[args.index("--n-envs") + 1] = "0"
        option = []
    bad(a2c.main, [*args, *option], capsys, "positive integer")


def test_bad_hyperparameters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad(a2c.main, [*tiny(tmp_path), "--device", "warp-drive"], capsys, "unknown device")
    bad(a2c.main, [*tiny(tmp_path), "--hparams", "n_stepz=3"], capsys, "unknown hyperparameter(s) n_stepz")
    bad(a2c.main, [*tiny(tmp_path), "--hparams", "gamma"], capsys, "key=value")
    bad(a2c.main, [*tiny(tmp_path), "--policy", "lstm", "--policy-kwargs", "decay_rate=0.9"], capsys, "cannot build")
    bad(a2c.main, [*tiny(tmp_path), "--config", str(tmp_path / "missing.yml")], capsys, "does not exist")
    assert not (tmp_path / "run").exists()


def test_missing_or_corrupt_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad(evaluate.main, [str(tmp_path / "nothing.zip")], capsys, "does not exist")
    bad(a2c.main, ["--resume", str(tmp_path / "nothing.zip")], capsys, "does not exist")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip file at all")
    bad(evaluate.main, [str(corrupt), "--algo", "a2c", "--env", CATCH], capsys, "cannot load", str(corrupt))
    bad(evaluate.main, [str(corrupt)], capsys, "--algo and --env")
    # A real model cut in half.
    assert a2c.main(tiny(tmp_path)) == 0
    model = tmp_path / "run" / "model.zip"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    bad(evaluate.main, [str(model)], capsys, "cannot load")
    bad(a2c.main, ["--resume", str(model)], capsys, "cannot load")


def test_refuses_to_overwrite_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert a2c.main(tiny(tmp_path)) == 0
    run = tmp_path / "run"
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    bad(a2c.main, tiny(tmp_path), capsys, "is not empty", "--resume", "--save-dir")
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before
    bad(a2c.main, ["--resume", str(run), "--policy", "mlp"], capsys, "--policy", "cannot be changed")
    bad(ppo.main, ["--resume", str(run)], capsys, "trained with 'a2c'", "train.a2c")


def test_value_parsing() -> None:
    assert cli.parse_assignments(["a=7e-4", "b=[64, 64]", "c=true", "d=nn.ReLU", "e={x: 1}"], "--hparams") == {
        "a": 7e-4, "b": [64, 64], "c": True, "d": "nn.ReLU", "e": {"x": 1}}  # fmt: skip
    # Python's spellings, as SB3 users type them, next to YAML's: None is null, not the string 'None'.
    assert cli.parse_assignments(["a=None", "b=null", "c=[None, 1]", "d=False", "e=Nonesuch"], "--hparams") == {
        "a": None, "b": None, "c": [None, 1], "d": False, "e": "Nonesuch"}  # fmt: skip
    assert runs.vecnormalize_path("r/model.zip").name == "model_vecnormalize.pkl"
    assert runs.vecnormalize_path("r/checkpoints/model_60_steps.zip").name == "model_vecnormalize_60_steps.pkl"
    assert spec.to_schedule("lin_1e-3")(0.5) == pytest.approx(5e-4)
