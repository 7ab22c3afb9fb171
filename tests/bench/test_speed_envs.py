"""``python -m bench.speed envs`` runs and reports every selected id."""

from __future__ import annotations

import json

import pytest

from bench.speed import build_parser, main


def test_envs_subcommand_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["envs", "--steps", "50", "--repeats", "2", "--ids", "*Catch-N16-M3*", "*TMazeActive-L10*", "--json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["env_id"] for r in rows] == [
        "fw_agents/Catch-N16-M3-v0", "fw_agents/TMazeActive-L10-v0", "fw_agents/TMazeActive-L10-v1"
    ]  # fmt: skip
    assert all(0 < r["min"] <= r["median"] <= r["max"] for r in rows)


def test_envs_subcommand_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--steps", "20", "--repeats", "1", "--ids", "*MemoryS7*"]) == 0
    assert "fw_agents/MiniGrid-MemoryS7-v0" in capsys.readouterr().out


def test_unknown_pattern_and_bad_counts() -> None:
    assert main(["envs", "--ids", "nothing*"]) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["envs", "--steps", "0"])
