"""``python -m bench.retrieval``: what a trained agent answers on associative retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.retrieval import bag_of_values_success, main
from train import a2c


def tiny_run(tmp_path: Path, env_id: str) -> Path:
    save_dir = tmp_path / "run"
    argv = [
        "--env", env_id, "--n-envs", "2", "--total-timesteps", "44", "--hidden-size", "8", "--eval-freq", "0",
        "--checkpoint-freq", "0", "--final-eval-episodes", "2", "--no-progress-bar", "--verbose", "0",
        "--tensorboard-log", "none", "--save-dir", str(save_dir),
    ]  # fmt: skip
    assert a2c.main(argv) == 0
    return save_dir


def test_bag_of_values_success() -> None:
    assert bag_of_values_success(1) == 1.0
    assert bag_of_values_success(4) == pytest.approx(0.325)


def test_answers_by_queried_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tmp_path, "fw_agents/AssociativeRetrieval-K4-v0")
    out = tmp_path / "answers.json"
    assert main([str(run), "--episodes", "60", "--json", str(out)]) == 0
    assert "answer among the shown digits" in capsys.readouterr().out
    (result,) = json.loads(out.read_text())
    by_pair = result["success_by_queried_pair"]
    assert len(by_pair) == 4 and result["episodes"] == 60
    assert all(0.0 <= value <= 1.0 for value in by_pair if value is not None)
    # A right answer is always one of the digits shown, so the share of shown digits bounds the success.
    assert 0.0 <= result["success"] <= result["answer_among_shown_digits"] <= 1.0


def test_a_run_on_another_env_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tmp_path, "fw_agents/Catch-N16-M3-v0")
    capsys.readouterr()
    assert main([str(run), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an associative retrieval env" in err
