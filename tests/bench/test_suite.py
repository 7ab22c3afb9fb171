"""``python -m bench.suite``: the grid of tasks × memories × seeds, its resume, and the scored report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from bench import suite
from fw_agents.registry import memory_names
from tests.envs.helpers import run_episode
from tests.envs.minigrid_agents import OracleRusher, Scripted
from train.cli import load_yaml
from train.spec import HYPERPARAMS_FILE

#: Two tiny tasks (a few seconds each) standing in for the suite's table.
TINY_TASKS = {
    "tmaze": suite.Task("tmaze", "fw_agents/TMazeActive-L10-v1", "a2c", 0.5, 1.0, {"quick": 256}),
    "catch": suite.Task("catch", "fw_agents/Catch-N16-M3-v0", "a2c", -0.125, 1.0, {"quick": 256, "full": 512}),
    "bandit": suite.Task(
        "bandit", "fw_agents/popgym-MultiarmedBanditEasy-v0", "a2c", None, 1.0, {"quick": 256}, family="popgym"
    ),
}


@pytest.fixture
def tiny_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "TASKS", tuple(TINY_TASKS.values()))
    monkeypatch.setattr(suite, "TASKS_BY_NAME", TINY_TASKS)
    monkeypatch.setattr(suite, "EVALUATIONS", 2)


def test_task_scores_are_normalised_between_memoryless_and_optimal() -> None:
    task = suite.TASKS_BY_NAME["tmaze-passive-l50"]
    assert task.normalise(0.5) == 0.0 and task.normalise(1.0) == 1.0 and task.normalise(0.75) == 0.5
    assert {task.name for task in suite.TASKS} >= {
        "cartpole-novel", "catch-n16", "catch-n24", "tmaze-passive-l50", "tmaze-active-l10", "assoc-k4",
        "minigrid-s7", "minigrid-s9",
    }  # fmt: skip
    assert all("full" in task.budgets for task in suite.TASKS if task.family == "memory")
    assert all(set(task.budgets) == {"popgym"} for task in suite.TASKS if task.family == "popgym")


def test_popgym_tasks_are_scored_against_the_memoryless_runs_of_the_same_task() -> None:
    task = suite.TASKS_BY_NAME["popgym-repeat-first-easy-a2c"]
    assert (task.env_id, task.algo, task.optimal_return) == ("fw_agents/popgym-RepeatFirstEasy-v0", "a2c", 1.0)
    assert task.normalise(-0.5, memoryless_return=-0.5) == 0.0 and task.normalise(0.25, memoryless_return=-0.5) == 0.5
    with pytest.raises(ValueError, match="memoryless"):
        task.normalise(0.0)
    # Every POPGym task runs under both algorithms.
    popgym = [t for t in suite.TASKS if t.family == "popgym"]
    assert len(popgym) == 20 and {t.algo for t in popgym} == {"a2c", "ppo"}


@pytest.mark.parametrize("name", ["minigrid-s7", "minigrid-s9"])
def test_minigrid_score_constants_are_the_scripted_agents_returns(name: str) -> None:
    # 0 = a rushing agent that guesses (the best without memory), 1 = looking at the cue first.
    task = suite.TASKS_BY_NAME[name]
    env = gym.make(task.env_id)
    rush = [run_episode(env, OracleRusher(env), seed=seed) for seed in range(50)]
    look = [run_episode(env, Scripted(env, memory=True), seed=seed) for seed in range(50)]
    assert all(e.info["is_success"] for e in rush + look)
    assert np.mean([e.ret for e in rush]) / 2 == pytest.approx(task.memoryless_return, abs=0.003)
    assert np.mean([e.ret for e in look]) == pytest.approx(task.optimal_return, abs=0.003)


def test_every_task_has_its_own_hyperparams_entry() -> None:
    # The suite's settings are explicit: each task's env has an entry for its algorithm (not just the default).
    table = load_yaml(HYPERPARAMS_FILE)
    missing = [task.name for task in suite.TASKS if task.env_id not in table[task.algo]]
    assert not missing


def test_grid_covers_the_profile_and_gives_every_memory_the_same_settings(tmp_path: Path, tiny_suite: None) -> None:
    args = suite.build_parser().parse_args(["run", "--out-dir", str(tmp_path), "--profile", "full"])
    cells = suite.grid(args)
    # "tmaze" has no full budget: skipped; "catch" runs every memory with 3 seeds.
    assert len(cells) == len(suite.MEMORIES) * 3
    assert {cell.save_dir.parent.name for cell in cells} == {"catch"}  # (bandit: no full budget either)
    specs = [cell.spec for cell in cells]
    assert all(spec.n_timesteps == 512 for spec in specs)
    assert {spec.tensorboard_log for spec in specs} == {str(tmp_path / "tb" / "catch")}
    paper = [spec for spec in specs if spec.save_dir.name.startswith("fast-weights-paper")]
    assert paper and all(spec.hyperparams["policy_kwargs"]["fast_learning_rate"] == 0.5 for spec in paper)
    # No memory gets options of its own: every policy_kwargs is the task's.
    others = [spec for spec in specs if not spec.save_dir.name.startswith("fast-weights-paper")]
    assert len({json.dumps(spec.hyperparams["policy_kwargs"]) for spec in others}) == 1
    # A variant run only when named: not in the default grid, its one option set when asked for.
    assert not {memory.name for memory in suite.NAMED_ONLY} & {spec.save_dir.name.rpartition("-s")[0] for spec in specs}
    named = suite.build_parser().parse_args(["run", "--out-dir", str(tmp_path), "--memories", "fast-weights-ln1"])
    assert {cell.spec.hyperparams["policy_kwargs"]["layer_norm_gain"] for cell in suite.grid(named)} == {1.0}
    argv = ["run", "--out-dir", str(tmp_path), "--memories", "fast-weights-ln1-slow-recurrence"]
    kwargs = [cell.spec.hyperparams["policy_kwargs"] for cell in suite.grid(suite.build_parser().parse_args(argv))]
    assert {(k["layer_norm_gain"], k["recurrent_step_scale"]) for k in kwargs} == {(1.0, 0.3)}
    argv = ["run", "--out-dir", str(tmp_path), "--memories", "fast-weights-ln1-heads"]
    kwargs = [cell.spec.hyperparams["policy_kwargs"] for cell in suite.grid(suite.build_parser().parse_args(argv))]
    assert {(k.get("layer_norm_gain"), k["output_scale"]) for k in kwargs} == {(None, 1 / 0.3)}


def test_popgym_profile_runs_the_registered_memories_at_their_defaults(tmp_path: Path) -> None:
    # The table (fast weights, LSTM, GRU, memoryless); the paper's cell only when named.
    args = suite.build_parser().parse_args(["run", "--out-dir", str(tmp_path), "--profile", "popgym"])
    cells = suite.grid(args)
    assert {cell.save_dir.name.rsplit("-s", 1)[0] for cell in cells} == set(memory_names())
    assert len(cells) == 20 * len(memory_names()) * 3
    named = ["run", "--out-dir", str(tmp_path), "--profile", "popgym", "--memories", "fast-weights-paper"]
    assert {cell.save_dir.name for cell in suite.grid(suite.build_parser().parse_args(named))} >= {
        "fast-weights-paper-s0"
    }


def test_quick_suite_runs_resumes_and_reports(
    tmp_path: Path, tiny_suite: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--out-dir", str(tmp_path), "--memories", "fast-weights", "mlp", "--jobs", "2"]
    assert suite.main(argv) == 0
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["suite_version"] == suite.SUITE_VERSION and report["profile"] == "quick"
    assert len(report["runs"]) == 3 * 2  # tasks × memories, the quick profile's one seed
    runs = {(run["task"], run["memory"]): run for run in report["runs"]}
    zero = runs["bandit", "mlp"]["final_return"]  # the measured zero of a task without a memoryless constant
    for (name, _), run in runs.items():
        task = TINY_TASKS[name]
        assert run["score"] == pytest.approx(task.normalise(run["final_return"], zero if name == "bandit" else None))
    assert runs["bandit", "mlp"]["score"] == 0.0
    for memory in ("fast-weights", "mlp"):
        total = report["aggregate"][memory]
        assert total["ci_low"] <= total["iqm"] <= total["ci_high"] and total["tasks"] == 3
        groups = report["aggregates"]
        assert groups["popgym"][memory]["tasks"] == 1 and groups["memory"][memory]["tasks"] == 2
    assert "IQM over the popgym tasks" in (tmp_path / "suite.md").read_text()
    for name in ("suite.md", "curves.png", "aggregate.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| catch | fast-weights |" in (tmp_path / "suite.md").read_text()

    capsys.readouterr()
    assert suite.main(argv) == 0  # everything finished: nothing is trained again
    assert capsys.readouterr().out.count("already finished, kept") == 6

    # The written suite.json renders again (the committed ones in docs/results/suite are read so).
    capsys.readouterr()
    assert suite.main(["report", str(tmp_path / "suite.json")]) == 0
    assert "| catch | fast-weights |" in capsys.readouterr().out

    # Without its memoryless runs, a task scored against them is named as not scored; the others still are.
    earlier = tmp_path / "earlier.json"
    shutil.copy(tmp_path / "suite.json", earlier)
    shutil.rmtree(tmp_path / "bandit" / "mlp-s0")
    assert suite.main(["report", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "suite.json").read_text())
    assert report["unscored_tasks"] == ["bandit"] and {run["task"] for run in report["runs"]} == {"tmaze", "catch"}

    # A folder reported beside a suite's JSON takes the zero of the JSON's memoryless runs (a memory run later,
    # beside the suite that has them); a run in both is refused.
    later = tmp_path / "later"
    (later / "bandit").mkdir(parents=True)
    shutil.move(tmp_path / "bandit" / "fast-weights-s0", later / "bandit" / "fast-weights-s0")
    earlier_runs = json.loads(earlier.read_text())["runs"]
    only_mlp = {**json.loads(earlier.read_text()), "runs": [r for r in earlier_runs if r["memory"] == "mlp"]}
    (tmp_path / "mlp.json").write_text(json.dumps(only_mlp))
    merged = tmp_path / "merged.json"
    assert suite.main(["report", str(tmp_path / "mlp.json"), str(later), "--json", str(merged)]) == 0
    bandit = {r["memory"]: r for r in json.loads(merged.read_text())["runs"] if r["task"] == "bandit"}
    assert bandit["fast-weights"]["score"] == pytest.approx(runs["bandit", "fast-weights"]["score"])
    assert json.loads(merged.read_text())["suite_version"] == suite.SUITE_VERSION
    capsys.readouterr()
    assert suite.main(["report", str(later)]) == 2  # alone, it has no zero: the message says what to run
    assert f"report SUITE.json {later}" in capsys.readouterr().err
    assert suite.main(["report", str(earlier), str(later)]) == 2
    assert "the same run in two sources: bandit/fast-weights-s0" in capsys.readouterr().err


def result(task: str, memory: str, seed: int, score: float) -> suite.CellResult:
    return suite.CellResult(task, memory, seed, score, score, None, None, f"{task}/{memory}-s{seed}")


def test_aggregate_keeps_the_tasks_with_most_runs_and_names_those_left_out() -> None:
    # Four tasks with 3 seeds of both memories, one with a single seed, one that the GRU did not run.
    results = [
        result(task, memory, seed, score)
        for task, seeds in (("a", 3), ("b", 3), ("c", 3), ("d", 3), ("short", 1))
        for memory, score in (("fast-weights", 1.0), ("gru", 0.0))
        for seed in range(seeds)
    ] + [result("fw-only", "fast-weights", seed, 0.5) for seed in range(3)]
    assert suite.aggregate_selection(results) == (["a", "b", "c", "d"], 3)  # 12 runs, not 5 tasks x 1
    totals = suite.aggregate(results, reps=50)
    assert totals["fast-weights"]["iqm"] == 1.0 and totals["gru"]["iqm"] == 0.0
    assert totals["gru"]["tasks_left_out"] == ["fw-only", "short"] and totals["gru"]["runs_per_task"] == 3
    assert "Not in the aggregate (fewer runs or not every memory): fw-only, short." in suite.markdown([], totals)
    # With one seed on most tasks, a single run per task over more tasks covers more runs.
    few = [result(task, m, 0, 0.5) for task in "abc" for m in ("fast-weights", "gru")]
    two_seeds = [result("d", m, s, 0.5) for m in ("fast-weights", "gru") for s in (0, 1)]
    assert suite.aggregate_selection(few + two_seeds) == (["a", "b", "c", "d"], 1)


def test_bad_input_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert suite.main(["report", str(tmp_path / "missing")]) == 2
    assert suite.main(["run", "--out-dir", str(tmp_path), "--tasks", "catch-n24", "--profile", "quick"]) == 2
    assert suite.main(["run", "--out-dir", str(tmp_path), "--seeds", "1", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("python -m bench.suite: error:") for line in err)


@pytest.mark.parametrize("committed", sorted((Path(__file__).parents[2] / "docs" / "results" / "suite").glob("*.json")))
def test_the_committed_suite_json_renders_again(committed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert suite.main(["report", str(committed)]) == 0
    assert "IQM over tasks and seeds" in capsys.readouterr().out


def test_a_report_of_some_memories_aggregates_the_tasks_they_all_ran(capsys: pytest.CaptureFixture[str]) -> None:
    """Without the GRU (which ran MiniGrid at version 3 only) the aggregate covers more tasks; the GRU's rows go."""
    committed = Path(__file__).parents[2] / "docs" / "results" / "suite" / "full_v4_loguniform_with_gru.json"
    assert suite.main(["report", str(committed)]) == 0
    every = capsys.readouterr().out
    assert suite.main(["report", str(committed), "--memories", "fast-weights", "lstm", "mlp"]) == 0
    some = capsys.readouterr().out
    assert "| gru |" in every and "| gru |" not in some
    assert "| fast-weights |" in some and "| lstm |" in some
