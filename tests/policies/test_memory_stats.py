"""MemoryStatsCallback measures only what some logger output will show."""

from pathlib import Path

import pytest
from stable_baselines3.common.logger import configure

from fw_agents import RecurrentA2C
from fw_agents.callbacks import MemoryStatsCallback
from fw_agents.policies import FastWeightsActorCriticPolicy
from tests.policies.test_policies import SMALL, make_env


@pytest.mark.parametrize("formats", [[], ["csv"]], ids=["writes-nowhere", "csv"])
def test_measures_only_where_a_logger_output_shows_it(formats: list[str], tmp_path: Path, monkeypatch) -> None:
    measured = []
    measure = MemoryStatsCallback.measure
    monkeypatch.setattr(MemoryStatsCallback, "measure", lambda self: measured.append(1) or measure(self))
    model = RecurrentA2C(FastWeightsActorCriticPolicy, make_env(), n_steps=8, policy_kwargs=SMALL, seed=0)
    model.set_logger(configure(str(tmp_path), formats))
    model.learn(64, callback=MemoryStatsCallback(), log_interval=1)
    assert bool(measured) == bool(formats)
    if formats:
        assert "memory/fast_weights_norm" in (tmp_path / "progress.csv").read_text().splitlines()[0]
