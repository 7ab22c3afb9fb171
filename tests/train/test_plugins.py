"""A memory from another package, declared by entry point (group ``fw_agents.memories``), trains through
``train.a2c``, ``train.compare run`` and ``train.tune``: their training processes load it too."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fw_agents.registry import load_plugins, memory_names, unregister_memory
from train import a2c, compare, runs, tune
from train.cli import load_yaml

ROOT = Path(__file__).resolve().parents[2]
CATCH = "fw_agents/Catch-N16-M3-v0"
TINY = ["--n-envs", "2", "--total-timesteps", "60", "--hidden-size", "4", "--eval-episodes", "2",
        "--final-eval-episodes", "2", "--eval-freq", "30", "--checkpoint-freq", "0", "--verbose", "0"]  # fmt: skip
PLUGIN = '''
"""A leaky integrator: h(t) = tanh(C x(t) + decay h(t-1))."""
import torch as th
from torch import nn

from fw_agents.memory import MemoryCore
from fw_agents.memory.base import reset_state


class LeakyCore(MemoryCore):
    def __init__(self, input_size, hidden_size=128, decay=0.5):
        super().__init__(input_size, hidden_size)
        self.decay, self.state_size = decay, hidden_size
        self.input_to_hidden = nn.Linear(input_size, hidden_size)

    def forward(self, inputs, state, episode_starts):
        outputs = []
        for x, start in zip(inputs, episode_starts):
            state = th.tanh(self.input_to_hidden(x) + self.decay * reset_state(state, start))
            outputs.append(state)
        return th.stack(outputs), state
'''


@pytest.fixture
def leaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed package ``leaky-memory`` (a folder on the path with its dist-info) declaring ``leaky``."""
    site = tmp_path / "site"
    (site / "leaky_memory").mkdir(parents=True)
    (site / "leaky_memory" / "__init__.py").write_text(PLUGIN)
    dist = site / "leaky_memory-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-memory\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fw_agents.memories]\nleaky = leaky_memory:LeakyCore\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    importlib.invalidate_caches()
    assert load_plugins() == ["leaky"] and load_plugins() == []  # once
    yield
    unregister_memory("leaky")


def test_a_plugin_memory_trains_through_a2c_compare_and_tune(tmp_path: Path, leaky: None) -> None:
    assert "leaky" in memory_names()
    assert a2c.main(["--policy", "leaky", "--env", CATCH, *TINY, "--save-dir", str(tmp_path / "a2c"),
                     "--tensorboard-log", "none"]) == 0  # fmt: skip
    assert load_yaml(tmp_path / "a2c" / runs.CONFIG_NAME)["policy_class"] == "leaky_memory.LeakyActorCriticPolicy"

    grid = ["run", "--env", CATCH, "--policies", "leaky", "--seeds", "0", "--out-dir", str(tmp_path / "grid"), "--",
            *TINY]  # fmt: skip
    assert compare.main(grid) == 0  # its training process finds the plugin by its entry point
    assert (tmp_path / "grid" / "leaky-s0" / "model.zip").is_file()

    search = ["--policy", "leaky", "--env", CATCH, "--n-trials", "1", "--n-timesteps", "60", "--n-evaluations", "2",
              "--out-dir", str(tmp_path / "tune"), "--", "--n-envs", "2"]  # fmt: skip
    assert tune.main(search) == 0
    assert (tmp_path / "tune" / tune.BEST_NAME).is_file()


def test_a_broken_plugin_is_a_warning_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "broken_memory-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-memory\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fw_agents.memories]\nbroken = no_such_module:Core\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.warns(UserWarning, match="memory plugin 'broken'.*did not load"):
        assert load_plugins() == []
