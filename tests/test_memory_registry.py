"""The registry of memories (:mod:`fw_agents.registry`): the built-ins, and a core registered here that trains
through ``python -m train.a2c`` (its ``main(argv)``, in-process) and leaves nothing behind when unregistered."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch as th
import yaml
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from torch import nn

import fw_agents.memory
import fw_agents.policies
from bench import speed as bench
from fw_agents import RecurrentA2C
from fw_agents.memory import FastWeightsRNN, GRUCore, LSTMCore, MemoryCore, NoMemoryCore
from fw_agents.memory.base import check_number, reset_state
from fw_agents.policies import RecurrentMemoryActorCriticPolicy
from fw_agents.registry import (
    MEMORY_CORES,
    POLICY_ALIASES,
    get_memory,
    memory_names,
    register_memory,
    registered_memory,
    unregister_memory,
)
from train import a2c

BUILT_INS = ["fast-weights", "lstm", "gru", "mlp"]


class LeakyCore(MemoryCore):
    """The smallest memory: ``h(t) = tanh(C x(t) + decay · h(t−1))``; packed state ``h`` ``(B, H)``."""

    def __init__(self, input_size: int, hidden_size: int = 128, decay: float = 0.5) -> None:
        super().__init__(input_size, hidden_size)
        self.decay = check_number("decay", decay, low=0.0, high=1.0)
        self.input_to_hidden = nn.Linear(input_size, hidden_size)
        self.state_size = hidden_size

    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``inputs`` ``(T, B, F)``, ``state`` ``(B, H)``, ``episode_starts`` ``(T, B)`` -> outputs ``(T, B, H)``,
        state ``(B, H)``."""
        self.check_shapes(inputs, state, episode_starts)
        outputs = []
        for x, start in zip(inputs, episode_starts, strict=True):
            state = th.tanh(self.input_to_hidden(x) + self.decay * reset_state(state, start))
            outputs.append(state)
        return th.stack(outputs), state


@pytest.fixture
def leaky() -> Iterator[None]:
    """``leaky`` registered for one test; the registry as it was afterwards, checked."""
    with registered_memory("leaky", LeakyCore, default_memory_kwargs={"decay": 0.8}):
        yield
    assert memory_names() == BUILT_INS


def test_built_in_memories() -> None:
    assert memory_names() == BUILT_INS
    assert dict(MEMORY_CORES) == {"fast-weights": FastWeightsRNN, "lstm": LSTMCore, "gru": GRUCore, "mlp": NoMemoryCore}
    assert fw_agents.memory.MEMORY_CORES is MEMORY_CORES  # where it used to be
    # lstm: sb3-contrib's own policies (the reference); their aliases stay sb3-contrib's.
    lstm = get_memory("lstm")
    assert [lstm.policy(kind) for kind in ("Mlp", "Cnn", "MultiInput")] == [
        MlpLstmPolicy,
        CnnLstmPolicy,
        MultiInputLstmPolicy,
    ]
    assert lstm.alias("Mlp") == "MlpLstmPolicy" and not lstm.made_here
    assert not set(lstm.aliases) & set(POLICY_ALIASES)
    # The others' classes are made by the registry, under the names saved models record.
    fast_weights = get_memory("fast-weights")
    assert fast_weights.policy("Mlp") is fw_agents.policies.FastWeightsActorCriticPolicy
    assert fast_weights.policy("Mlp").__module__ == "fw_agents.policies"
    assert fast_weights.policy("Mlp").default_memory_kwargs["fast_learning_rate"] == "balanced"
    assert get_memory("gru").policy("Cnn") is fw_agents.policies.GRUActorCriticCnnPolicy
    mlp = get_memory("mlp")
    assert mlp.core_class is NoMemoryCore and mlp.alias("MultiInput") == "MultiInputNoMemoryPolicy"
    assert mlp.policy("MultiInput") is fw_agents.policies.NoMemoryMultiInputActorCriticPolicy
    assert len(POLICY_ALIASES) == 3 * 3
    with pytest.raises(ValueError, match="unknown memory 'none'; registered: fast-weights, lstm, gru, mlp"):
        get_memory("none")
    with pytest.raises(TypeError):  # read-only: only register_memory changes it
        MEMORY_CORES["x"] = LeakyCore  # type: ignore[index]


def test_registration_makes_policies_and_aliases(leaky: None) -> None:
    entry = get_memory("leaky")
    assert memory_names() == [*BUILT_INS, "leaky"] and MEMORY_CORES["leaky"] is LeakyCore
    mlp, cnn, multi = (entry.policy(kind) for kind in ("Mlp", "Cnn", "MultiInput"))
    assert (mlp.__name__, cnn.__name__, multi.__name__) == (
        "LeakyActorCriticPolicy",
        "LeakyActorCriticCnnPolicy",
        "LeakyMultiInputActorCriticPolicy",
    )
    assert issubclass(mlp, RecurrentMemoryActorCriticPolicy) and issubclass(cnn, mlp) and issubclass(multi, mlp)
    extractors = [p.default_features_extractor_class for p in (mlp, cnn, multi)]
    assert extractors == [FlattenExtractor, NatureCNN, CombinedExtractor]
    assert mlp.core_class is LeakyCore and mlp.default_memory_kwargs == {"decay": 0.8}
    # Set in the core's module, so that a saved model's class reference resolves.
    assert sys.modules[__name__].LeakyActorCriticPolicy is mlp
    assert POLICY_ALIASES["MlpLeakyPolicy"] is mlp and POLICY_ALIASES["MultiInputLeakyPolicy"] is multi


def test_unregistering_leaves_nothing_behind() -> None:
    with registered_memory("leaky", LeakyCore):
        pass
    assert "leaky" not in memory_names() and "leaky" not in MEMORY_CORES
    assert not any("Leaky" in alias for alias in POLICY_ALIASES)
    assert not hasattr(sys.modules[__name__], "LeakyActorCriticPolicy")
    with pytest.raises(ValueError, match="unknown memory 'leaky'"):
        unregister_memory("leaky")


def test_a_registered_core_trains_through_train_a2c(leaky: None, tmp_path: Path, capsys) -> None:
    argv = [
        "--env", "fw_agents/Catch-N16-M3-v0", "--n-envs", "2", "--total-timesteps", "300", "--hidden-size", "8",
        "--eval-freq", "0", "--checkpoint-freq", "0", "--final-eval-episodes", "2", "--no-progress-bar",
        "--verbose", "0", "--tensorboard-log", "none",
    ]  # fmt: skip
    # A choice of --policy, listed with the others.
    assert a2c.main([*argv, "--save-dir", str(tmp_path / "x"), "--policy", "no-such"]) == 2
    assert "'leaky'" in capsys.readouterr().err

    run = tmp_path / "run"
    assert a2c.main([*argv, "--save-dir", str(run), "--policy", "leaky", "--policy-kwargs", "decay=0.9"]) == 0
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["policy"] == "leaky" and config["policy_alias"] == "MlpLeakyPolicy"
    assert config["policy_class"] == f"{__name__}.LeakyActorCriticPolicy"
    assert config["result"]["num_timesteps"] == 300  # 10 rollouts of 2 envs × 15 steps
    model = RecurrentA2C.load(run / "model.zip")
    assert type(model.policy) is get_memory("leaky").policy("Mlp")
    cores = model.policy.memory_cores()
    assert cores and all(isinstance(core, LeakyCore) and core.decay == 0.9 for core in cores)


def test_a_registered_core_is_benchmarked(leaky: None, tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    assert bench.main(["core", "--quick", "--memories", "leaky", "--json", str(out)]) == 0
    payload = yaml.safe_load(out.read_text())  # JSON is YAML
    assert [row["model"] for row in payload["rows"]][-1] == "leaky"
    assert [row["model"] for row in payload["step_rows"]][-1] == "leaky"


def test_an_unregistered_memory_is_no_choice(tmp_path: Path, capsys) -> None:
    with registered_memory("leaky", LeakyCore):
        pass
    assert a2c.main(["--save-dir", str(tmp_path / "run"), "--policy", "leaky"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'leaky'" in err and "'mlp'" in err


@pytest.mark.parametrize(
    ("name", "core_class", "options", "message"),
    [
        ("gru", LeakyCore, {}, "'gru' is already registered"),
        ("Leaky", LeakyCore, {}, "lower case"),
        ("", LeakyCore, {}, "lower case"),
        ("leaky", nn.GRU, {}, "must be a MemoryCore subclass"),
        ("leaky", LeakyCore, {"default_memory_kwargs": {"gated": True}}, r"\['gated'\] are not options of LeakyCore"),
        ("leaky", LeakyCore, {"policy_name": "leaky"}, "CamelCase"),
        ("leaky", LeakyCore, {"policy_name": "NoMemory", "module": "fw_agents.policies"}, "already exist"),
        ("leaky", LeakyCore, {"alias_name": "Gru"}, "already exist"),
        ("leaky", LeakyCore, {"policies": {"Mlp": MlpLstmPolicy}}, "must map each of"),
    ],
)
def test_bad_registrations_are_refused(name: str, core_class: type, options: dict, message: str) -> None:
    try:
        with pytest.raises(ValueError, match=message):
            register_memory(name, core_class, **options)
    finally:
        registered = memory_names()
        if "leaky" in registered:  # not refused: leave the registry as the other tests expect it
            unregister_memory("leaky")
    assert registered == BUILT_INS
