"""Recurrent actor-critic policies that hold any memory core and ride through stock sb3-contrib.

The policies subclass sb3-contrib's :class:`RecurrentActorCriticPolicy` and keep its state protocol, so
``sb3_contrib.RecurrentPPO`` (and :class:`fw_agents.RecurrentA2C`) train them unmodified:

* a state is ``RNNStates(pi=(s0, s1), vf=(s0, s1))``, each tensor ``(1, batch, slot)``;
* RecurrentPPO sizes its buffers from ``policy.lstm_actor.num_layers`` and ``.hidden_size``.

How a core's state travels that way: a core's packed state ``(B, D)`` (see :mod:`fw_agents.memory`) is
padded to an even length and split in two halves, ``s0`` and ``s1``, each ``(1, B, slot)`` with
``slot = ⌈D/2⌉``; ``lstm_actor`` is a :class:`MemoryStateLayout`, a thin module that reports
``hidden_size = slot`` and does the splitting. For fast weights ``D = H + H(H+1)/2`` (h and the upper
triangle of the symmetric A). RecurrentPPO's buffer stores four slots per env-step (actor and critic,
whether or not the critic has a memory), so it holds ``2·D·4`` bytes per env-step: 17 KB at H=64,
67 KB at H=128, 264 KB at H=256.

Everything else — heads, distributions, ``forward``, ``evaluate_actions``, ``predict`` — is
sb3-contrib's code, unchanged.

The concrete classes, one per memory and kind of observation (``FastWeightsActorCriticPolicy``,
``GRUActorCriticCnnPolicy``, ``NoMemoryMultiInputActorCriticPolicy``, …), are made by :mod:`fw_agents.registry`
from each registered memory and set in this module, where saved models name them.

Keyword arguments: the policies take sb3-contrib's LSTM-policy names beside their own, with sb3-contrib's
meaning; :func:`canonical_policy_kwargs` is the one place that maps them (:data:`SB3_CONTRIB_KWARG_NAMES`),
and :func:`sb3_contrib_policy_kwargs` maps back for sb3-contrib's own LSTM policies.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from fw_agents.memory import MemoryCore
from fw_agents.memory.base import check_positive_int
from fw_agents.predict_guard import StatelessPredictGuard, check_predict_batch

#: sb3-contrib's LSTM-policy keyword argument -> ours, same meaning. Not in the table: sb3-contrib's
#: ``lstm_kwargs``, a dict of options for the memory, whose items are our own (flat) memory options.
SB3_CONTRIB_KWARG_NAMES: dict[str, str] = {
    "lstm_hidden_size": "hidden_size",
    "n_lstm_layers": "num_layers",
    "shared_lstm": "shared_memory",
    "enable_critic_lstm": "enable_critic_memory",
}
#: sb3-contrib's keyword argument for the memory's own options.
SB3_CONTRIB_MEMORY_OPTIONS = "lstm_kwargs"
#: Our recurrent options and their defaults, when neither spelling is given.
MEMORY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "num_layers": 1,
    "shared_memory": False,
    "enable_critic_memory": True,
}
#: ``torch.nn.LSTM`` options that sb3-contrib's ``lstm_kwargs`` may hold and no core of ours has (``dropout`` has
#: a counterpart: every core takes it, between stacked layers).
TORCH_ONLY_RNN_OPTIONS = ("bias", "batch_first", "bidirectional", "proj_size", "device", "dtype")


class PolicyArgumentError(ValueError, AssertionError):
    """A combination of policy arguments that cannot work.

    A ``ValueError``, as every bad argument here; an ``AssertionError`` too, because sb3-contrib's LSTM policy
    rejects the same combinations (``shared_lstm`` with ``enable_critic_lstm``, or without a shared features
    extractor) with ``assert``, so code written against it that catches ``AssertionError`` keeps working.
    """


def _spellings(name: str) -> str:
    """``"hidden_size"`` -> ``"hidden_size (lstm_hidden_size)"``: our name and sb3-contrib's, for messages."""
    theirs = [key for key, ours in SB3_CONTRIB_KWARG_NAMES.items() if ours == name]
    return f"{name} ({theirs[0]})" if theirs else name


def _policy_argument_names() -> set[str]:
    """Names a policy takes as arguments of its own (not memory options), in both spellings."""
    parameters = inspect.signature(RecurrentMemoryActorCriticPolicy.__init__).parameters.values()
    ours = {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}
    return ours | set(SB3_CONTRIB_KWARG_NAMES) | {SB3_CONTRIB_MEMORY_OPTIONS}


def canonical_policy_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Policy keyword arguments in fw-agents' names: the one place where sb3-contrib's are mapped.

    ``lstm_hidden_size`` -> ``hidden_size``, ``n_lstm_layers`` -> ``num_layers``, ``shared_lstm`` ->
    ``shared_memory``, ``enable_critic_lstm`` -> ``enable_critic_memory`` (:data:`SB3_CONTRIB_KWARG_NAMES`), and
    ``lstm_kwargs=dict(decay_rate=0.9)`` -> ``decay_rate=0.9`` (our memory options are flat). Every other
    argument passes unchanged, in its place; already-canonical arguments come back equal.

    :raises ValueError: if one option is given in two spellings (``hidden_size`` and ``lstm_hidden_size``,
        ``decay_rate`` and ``lstm_kwargs["decay_rate"]``), even with equal values; if ``lstm_kwargs`` is not a
        dict, or holds a policy argument (``hidden_size``, ``net_arch``, …) rather than a memory option.
    """
    canonical: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # canonical name -> the spelling it was given as
    for key, value in kwargs.items():
        if key == SB3_CONTRIB_MEMORY_OPTIONS:
            continue
        name = SB3_CONTRIB_KWARG_NAMES.get(key, key)
        if name in canonical:
            raise ValueError(
                f"{spelled[name]!r} and {key!r} are two spellings of the same policy option (sb3-contrib's and "
                f"fw-agents'); give only one"
            )
        canonical[name], spelled[name] = value, key
    options = kwargs.get(SB3_CONTRIB_MEMORY_OPTIONS)
    if options is None:
        return canonical
    if not isinstance(options, Mapping):
        raise ValueError(
            f"{SB3_CONTRIB_MEMORY_OPTIONS} must be a dict of the memory's options (e.g. dict(decay_rate=0.9)), "
            f"got {options!r}"
        )
    policy_arguments = _policy_argument_names()
    for key, value in options.items():
        if key in policy_arguments or key == "input_size":
            raise ValueError(
                f"{SB3_CONTRIB_MEMORY_OPTIONS}[{key!r}]: {SB3_CONTRIB_MEMORY_OPTIONS} holds the memory's own options "
                f"(e.g. dropout, decay_rate); {key!r} is not one of them"
                + ("" if key == "input_size" else ", give it as a policy argument beside it")
            )
        if key in canonical:
            raise ValueError(
                f"{key!r} and {SB3_CONTRIB_MEMORY_OPTIONS}[{key!r}] are two spellings of the same memory option; "
                "give only one"
            )
        canonical[key] = value
    return canonical


def sb3_contrib_policy_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Policy keyword arguments for sb3-contrib's own LSTM policies (``MlpLstmPolicy``, …), from either spelling.

    The inverse of :func:`canonical_policy_kwargs` through the same table: ``hidden_size`` ->
    ``lstm_hidden_size``, …, and every argument sb3-contrib's policy does not take itself (``dropout``, memory
    options) into ``lstm_kwargs``, which it passes to ``torch.nn.LSTM``.

    :raises ValueError: as :func:`canonical_policy_kwargs`.
    """
    theirs = {ours: name for name, ours in SB3_CONTRIB_KWARG_NAMES.items()}
    accepted = set(inspect.signature(RecurrentActorCriticPolicy.__init__).parameters)
    result: dict[str, Any] = {}
    lstm_kwargs: dict[str, Any] = {}
    for key, value in canonical_policy_kwargs(kwargs).items():
        name = theirs.get(key, key)
        if name in accepted:
            result[name] = value
        else:
            lstm_kwargs[key] = value
    if lstm_kwargs:
        result[SB3_CONTRIB_MEMORY_OPTIONS] = lstm_kwargs
    return result


def policy_kwargs_for_class(policy_class: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` in the names ``policy_class`` takes: canonical for ours (:class:`RecurrentMemoryActorCriticPolicy`),
    sb3-contrib's for its own recurrent policies, unchanged for anything else."""
    if isinstance(policy_class, type) and issubclass(policy_class, RecurrentMemoryActorCriticPolicy):
        return canonical_policy_kwargs(kwargs)
    if isinstance(policy_class, type) and issubclass(policy_class, RecurrentActorCriticPolicy):
        return sb3_contrib_policy_kwargs(kwargs)
    return dict(kwargs)


class MemoryStateLayout(nn.Module):
    """Presents a :class:`MemoryCore` as the LSTM-shaped module sb3-contrib's code expects.

    :param core: the memory core.

    ``input_size``, ``num_layers`` (1) and ``hidden_size`` (the slot size, not H) are what RecurrentPPO
    reads to size its states and buffer.
    """

    num_layers = 1

    def __init__(self, core: MemoryCore) -> None:
        super().__init__()
        self.core = core
        self.input_size = core.input_size
        self.hidden_size = (core.state_size + 1) // 2

    def to_slots(self, state: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Packed ``(B, D)`` -> two ``(1, B, slot)`` tensors (the second zero-padded by one where D is odd)."""
        first, second = state[:, : self.hidden_size], state[:, self.hidden_size :]
        if second.shape[1] < self.hidden_size:
            second = nn.functional.pad(second, (0, self.hidden_size - second.shape[1]))
        return first.unsqueeze(0).contiguous(), second.unsqueeze(0).contiguous()  # one copy each, at every env step

    def from_slots(self, slots: tuple[th.Tensor, ...]) -> th.Tensor:
        """Two ``(1, B, slot)`` tensors -> packed ``(B, D)``."""
        return th.cat([slots[0][0], slots[1][0]], dim=1)[:, : self.core.state_size]

    def forward(
        self, features: th.Tensor, slots: tuple[th.Tensor, ...], episode_starts: th.Tensor
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """sb3-contrib's sequence layout in and out.

        :param features: ``(n_seq · T, F)``, sequence by sequence (T = 1 while collecting rollouts).
        :param slots: the state at each sequence's start, two ``(1, n_seq, slot)`` tensors.
        :param episode_starts: ``(n_seq · T,)``.
        :return: outputs ``(n_seq · T, H)`` and the state after the last step, as slots.
        """
        n_seq = slots[0].shape[1]
        inputs = features.reshape(n_seq, -1, self.input_size).transpose(0, 1)  # (T, n_seq, F)
        starts = episode_starts.reshape(n_seq, -1).transpose(0, 1)  # (T, n_seq)
        outputs, state = self.core(inputs, self.from_slots(slots), starts)
        return outputs.transpose(0, 1).reshape(-1, self.core.hidden_size), self.to_slots(state)


def _check_net_arch(net_arch: list[int] | dict[str, list[int]] | None) -> None:
    """PolicyArgumentError unless ``net_arch`` is None, a list of layer sizes, or ``dict(pi=[...], vf=[...])``
    with every size an int >= 1: SB3 builds ``nn.Linear(n, 0)`` for a 0 without complaint (a head that sees
    nothing) and fails with a RuntimeError about tensor dimensions for a negative size."""
    if net_arch is None:
        return
    if isinstance(net_arch, Mapping):
        unknown = sorted(set(net_arch) - {"pi", "vf"})
        if unknown:
            raise PolicyArgumentError(f"net_arch as a dict takes the keys 'pi' and 'vf', got {unknown}")
        layers = [size for key in ("pi", "vf") for size in net_arch.get(key, [])]
    elif isinstance(net_arch, list | tuple):
        layers = list(net_arch)
    else:
        raise PolicyArgumentError(
            f"net_arch must be a list of layer sizes or dict(pi=[...], vf=[...]), got {net_arch!r}"
        )
    for size in layers:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise PolicyArgumentError(f"net_arch layer sizes must be integers >= 1, got {net_arch!r}")


class RecurrentMemoryActorCriticPolicy(RecurrentActorCriticPolicy):
    """Recurrent actor-critic policy around any :class:`MemoryCore` (set by subclasses as ``core_class``; the
    registry, :func:`fw_agents.registry.register_memory`, makes one subclass per memory and kind of observation).

    Takes every argument of SB3's ``ActorCriticPolicy`` and these, each also under sb3-contrib's name for its
    LSTM policy, with the same meaning (giving both spellings of one is a ``ValueError``; see
    :func:`canonical_policy_kwargs`):

    :param hidden_size: H, units of each memory layer (sb3-contrib: ``lstm_hidden_size``). Default 128.
    :param num_layers: memory layers stacked, each reading the outputs of the one below (sb3-contrib:
        ``n_lstm_layers``). Default 1.
    :param shared_memory: actor and critic share one memory; the critic's gradient does not flow into it
        (sb3-contrib: ``shared_lstm``). Needs ``share_features_extractor=True``. Default False.
    :param enable_critic_memory: the critic has a memory of its own (sb3-contrib: ``enable_critic_lstm``).
        With neither option, the critic is feed-forward. Default True.
    :param memory_kwargs: options of the memory, flat (sb3-contrib: in a dict, ``lstm_kwargs``): ``dropout``
        between stacked layers (any core, as ``torch.nn.LSTM``'s) and the core's own, e.g. ``decay_rate`` or
        ``inner_steps`` for fast weights.

    The four recurrent options default to None, meaning "not given" (so that a value under sb3-contrib's name
    can be told from a default); the defaults above apply when neither spelling is given.
    """

    core_class: ClassVar[type[MemoryCore]]
    #: The core's options where the user gives none: the policy's defaults, which may differ from the core's.
    default_memory_kwargs: ClassVar[dict[str, Any]] = {}
    default_features_extractor_class: ClassVar[type[BaseFeaturesExtractor]] = FlattenExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        hidden_size: int | None = None,
        num_layers: int | None = None,
        shared_memory: bool | None = None,
        enable_critic_memory: bool | None = None,
        **memory_kwargs: Any,
    ) -> None:
        given = dict(
            hidden_size=hidden_size,
            num_layers=num_layers,
            shared_memory=shared_memory,
            enable_critic_memory=enable_critic_memory,
        )
        memory_kwargs = canonical_policy_kwargs({k: v for k, v in given.items() if v is not None} | memory_kwargs)
        settings = {name: memory_kwargs.pop(name, default) for name, default in MEMORY_DEFAULTS.items()}
        hidden_size, num_layers = settings["hidden_size"], settings["num_layers"]
        shared_memory, enable_critic_memory = settings["shared_memory"], settings["enable_critic_memory"]
        check_positive_int(_spellings("hidden_size"), hidden_size)
        check_positive_int(_spellings("num_layers"), num_layers)
        if shared_memory and enable_critic_memory:
            raise PolicyArgumentError(
                f"{_spellings('shared_memory')}=True needs {_spellings('enable_critic_memory')}=False: "
                "choose one memory for the critic"
            )
        if shared_memory and not share_features_extractor:
            raise PolicyArgumentError(f"{_spellings('shared_memory')}=True needs share_features_extractor=True")
        _check_net_arch(net_arch)
        self._check_memory_kwargs(memory_kwargs)
        self.given_memory_kwargs = dict(memory_kwargs)
        memory_kwargs = {**self.default_memory_kwargs, **memory_kwargs}
        self.lstm_output_dim = hidden_size  # read by sb3-contrib's _build_mlp_extractor
        # sb3-contrib's __init__ would build nn.LSTMs we do not use; build the SB3 parts directly instead.
        ActorCriticPolicy.__init__(
            self,
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class or self.default_features_extractor_class,
            features_extractor_kwargs,
            share_features_extractor,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.memory_kwargs = memory_kwargs
        # sb3-contrib's forward/evaluate_actions/predict_values read these two names.
        self.shared_lstm = shared_memory
        self.enable_critic_lstm = enable_critic_memory
        self.lstm_kwargs = dict(memory_kwargs)  # sb3-contrib's name for them (informative only)
        self.lstm_actor = self._make_memory()
        self.lstm_critic = self._make_memory() if enable_critic_memory else None
        self.critic = nn.Linear(self.features_dim, hidden_size) if not (shared_memory or enable_critic_memory) else None
        # (n_layers, 1, slot): what predict() uses to build a zero state.
        self.lstm_hidden_state_shape = (1, 1, self.lstm_actor.hidden_size)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)
        self._predict_guard = StatelessPredictGuard()

    @classmethod
    def _check_memory_kwargs(cls, memory_kwargs: dict[str, Any]) -> None:
        allowed = cls.core_class.option_names()
        unknown = sorted(set(memory_kwargs) - set(allowed))
        if unknown:
            torch_only = sorted(set(unknown) & set(TORCH_ONLY_RNN_OPTIONS))
            hint = f" ({torch_only} are torch.nn.LSTM options that no fw-agents memory has)" if torch_only else ""
            recurrent = ", ".join(_spellings(name) for name in MEMORY_DEFAULTS)
            raise ValueError(
                f"unknown keyword argument(s) {unknown} for {cls.__name__}{hint}; its memory "
                f"({cls.core_class.__name__}) takes {allowed} (flat, or in {SB3_CONTRIB_MEMORY_OPTIONS}), besides "
                f"SB3's policy arguments and {recurrent}"
            )

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, also for models saved before the policy had its own memory defaults.

        Those models (fw-agents 0.1) were built with the core's own defaults (for fast weights: the paper's cell),
        and their saved keyword arguments name only what the user gave. If the state lacks parameters that the
        policy's defaults add, the memories are rebuilt with the core's defaults, as they were saved.
        """
        if self.default_memory_kwargs and not set(self.state_dict()) <= set(state_dict):
            self.memory_kwargs = self.given_memory_kwargs
            self.lstm_actor = self._make_memory().to(self.device)
            if self.lstm_critic is not None:
                self.lstm_critic = self._make_memory().to(self.device)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr, **self.optimizer_kwargs)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _make_memory(self) -> MemoryStateLayout:
        core = self.core_class.build(self.features_dim, self.hidden_size, self.num_layers, **self.memory_kwargs)
        return MemoryStateLayout(core)

    @staticmethod
    def _process_sequence(
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        lstm: MemoryStateLayout,  # type: ignore[override]
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor]]:
        """Replaces sb3-contrib's LSTM loop: the core handles resets (and whole sequences) itself."""
        return lstm(features, lstm_states, episode_starts)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """sb3-contrib's ``predict``, warning (:class:`StatelessPredictWarning`) when the state is dropped; a state or
        ``episode_start`` for another number of envs than the observations is a ``ValueError``."""
        check_predict_batch(observation, state, episode_start, self.observation_space)
        self._predict_guard(state)
        return super().predict(observation, state, episode_start, deterministic)

    def memory_cores(self) -> list[MemoryCore]:
        """The cores this policy holds (one, or two with a critic memory)."""
        return [m.core for m in (self.lstm_actor, self.lstm_critic) if m is not None]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # Upstream saves none of the recurrent options, so a standalone policy.save()/load() would lose them.
        # Always in our (canonical) names, whichever spelling built the policy.
        data = super()._get_constructor_parameters()
        data.update(
            share_features_extractor=self.share_features_extractor,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            shared_memory=self.shared_lstm,
            enable_critic_memory=self.enable_critic_lstm,
            **self.memory_kwargs,
        )
        return data
