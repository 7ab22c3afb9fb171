"""The registry of memories: one entry per memory, and everything that names memories derives from it.

An entry (:class:`MemoryEntry`) ties a name — the command lines' ``--policy`` choice, the run folders', the suite's
and ``bench.assoc``'s ``--model`` — to a memory core (:mod:`fw_agents.memory`) and to the policy classes that hold
it, one per kind of observation (:data:`POLICY_KINDS`: ``Mlp`` vectors, ``Cnn`` images, ``MultiInput`` Dicts). For
a core of ours the registry *makes* the policy classes (subclasses of
:class:`~fw_agents.policies.RecurrentMemoryActorCriticPolicy`) and their aliases; an entry may name external policy
classes instead, as ``lstm`` does: ``--policy lstm`` is sb3-contrib's own ``MlpLstmPolicy`` (the reference), while
its core, :class:`~fw_agents.memory.LSTMCore`, serves where a bare core is wanted (``bench.assoc``, the bench).

Adding a memory is one module and one call::

    from fw_agents.memory import MemoryCore
    from fw_agents.registry import register_memory

    class MyCore(MemoryCore):
        ...

    register_memory("my-core", MyCore)

which makes ``MyCoreActorCriticPolicy``, ``MyCoreActorCriticCnnPolicy`` and ``MyCoreMultiInputActorCriticPolicy``
(attributes of the core's module, so a model saved with one loads wherever that module is imported), the aliases
``MlpMyCorePolicy``, … (:data:`POLICY_ALIASES`), and ``--policy my-core`` of every command line.

:data:`MEMORY_CORES` and :data:`POLICY_ALIASES` are read-only live views: they change only through
:func:`register_memory` and :func:`unregister_memory` (or :func:`registered_memory`, which undoes itself).

**Memories from other packages** arrive by entry point, group ``fw_agents.memories`` (:data:`ENTRY_POINT_GROUP`), so
that every process that imports fw_agents has them (the command lines, and the training processes that grids and
tuning start): in the other package's ``pyproject.toml``::

    [project.entry-points."fw_agents.memories"]
    leaky = "my_cores.leaky"            # a module that calls register_memory when imported
    # or: leaky = "my_cores.leaky:LeakyCore"   (a MemoryCore subclass, registered under the entry point's name)

``import fw_agents`` loads them (:func:`load_plugins`); one that fails to load is a warning, not an error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN

from fw_agents.memory import FastWeightsRNN, GRUCore, LSTMCore, MemoryCore, NoMemoryCore
from fw_agents.policies import RecurrentMemoryActorCriticPolicy

#: Kinds of policy, by alias prefix (SB3's convention): the class name for a memory's ``policy_name`` (as
#: sb3-contrib's ``RecurrentActorCriticCnnPolicy``, ``RecurrentMultiInputActorCriticPolicy``), the default
#: features extractor, and the observations it takes.
POLICY_KINDS: dict[str, tuple[str, type[BaseFeaturesExtractor], str]] = {
    "Mlp": ("{}ActorCriticPolicy", FlattenExtractor, "vector"),
    "Cnn": ("{}ActorCriticCnnPolicy", NatureCNN, "image"),
    "MultiInput": ("{}MultiInputActorCriticPolicy", CombinedExtractor, "Dict"),
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_IDENTIFIER = re.compile(r"[A-Z][A-Za-z0-9]*")


@dataclass(frozen=True)
class MemoryEntry:
    """One registered memory.

    :param name: its name everywhere: ``--policy``, run folders, the suite, ``bench.assoc --model``.
    :param core_class: the memory core (for a bare core: ``core_class(input_size, hidden_size, **options)``).
    :param alias_name: the part of the aliases that names the memory: ``Mlp<alias_name>Policy``, ….
    :param policies: policy class per kind (:data:`POLICY_KINDS`).
    :param made_here: the policy classes were made by the registry (else they are another library's).
    """

    name: str
    core_class: type[MemoryCore]
    alias_name: str
    policies: Mapping[str, type[RecurrentActorCriticPolicy]]
    made_here: bool
    _module_attributes: tuple[str, ...] = field(default=(), repr=False)

    def alias(self, kind: str) -> str:
        """``"Mlp"`` -> ``"MlpFastWeightsPolicy"``."""
        return f"{_check_kind(kind)}{self.alias_name}Policy"

    def policy(self, kind: str) -> type[RecurrentActorCriticPolicy]:
        """The policy class for observations of ``kind`` (``"Mlp"``, ``"Cnn"``, ``"MultiInput"``)."""
        return self.policies[_check_kind(kind)]

    def policy_for(self, observation_space: spaces.Space, action_space: spaces.Space) -> tuple[str, type]:
        """The alias and policy class that take an env's spaces: ``Mlp`` for vectors, ``Cnn`` for images, ``MultiInput``
        for a flat Dict (``("MlpFastWeightsPolicy", FastWeightsActorCriticPolicy)``); a ValueError naming what the
        policies take otherwise."""
        flat = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
        if not isinstance(action_space, flat):
            raise ValueError(f"action space {action_space} is not supported: the policies take Box, Discrete, "
                             "MultiDiscrete or MultiBinary actions")  # fmt: skip
        if isinstance(observation_space, spaces.Dict) and all(isinstance(s, flat) for s in observation_space.values()):
            kind = "MultiInput"
        elif isinstance(observation_space, flat):
            kind = "Cnn" if is_image_space(observation_space) else "Mlp"
        else:
            raise ValueError(f"observation space {observation_space} is not supported: the policies take a Box (vector "
                             "or image), Discrete, MultiDiscrete, MultiBinary, or a flat Dict of them")  # fmt: skip
        return self.alias(kind), self.policy(kind)

    @property
    def aliases(self) -> dict[str, type[RecurrentActorCriticPolicy]]:
        """Alias -> policy class, every kind."""
        return {self.alias(kind): self.policies[kind] for kind in POLICY_KINDS}


_entries: dict[str, MemoryEntry] = {}
_cores: dict[str, type[MemoryCore]] = {}
_aliases: dict[str, type[RecurrentMemoryActorCriticPolicy]] = {}
#: Memory name -> core class, every registered memory (read-only; in registration order).
MEMORY_CORES: Mapping[str, type[MemoryCore]] = MappingProxyType(_cores)
#: Alias (``"MlpFastWeightsPolicy"``, …) -> policy class, for the policies the registry made (read-only). The
#: aliases of external policies (``MlpLstmPolicy``) are their own library's.
POLICY_ALIASES: Mapping[str, type[RecurrentMemoryActorCriticPolicy]] = MappingProxyType(_aliases)


def _check_kind(kind: str) -> str:
    if kind not in POLICY_KINDS:
        raise ValueError(f"policy kind must be one of {list(POLICY_KINDS)}, got {kind!r}")
    return kind


def memory_names() -> list[str]:
    """The registered memories' names, in registration order (the built-ins first)."""
    return list(_entries)


def get_memory(name: str) -> MemoryEntry:
    """The entry of memory ``name``; a ValueError listing the registered names if there is none."""
    if name not in _entries:
        raise ValueError(f"unknown memory {name!r}; registered: {', '.join(_entries)}")
    return _entries[name]


def _policy_doc(description: str, core_class: type[MemoryCore], kind: str, defaults: Mapping[str, Any]) -> str:
    _, extractor, observations = POLICY_KINDS[kind]
    doc = (
        f"{description} policy for {observations} observations ({extractor.__name__} features by default). "
        f"Memory: :class:`{core_class.__module__}.{core_class.__name__}`, options {core_class.option_names()}."
    )
    if defaults:
        doc += f"\n\nThe policy's defaults of the memory's options (not the core's): {dict(defaults)}."
    return doc


def _make_policies(
    core_class: type[MemoryCore],
    policy_name: str,
    module: str,
    description: str,
    default_memory_kwargs: Mapping[str, Any],
) -> dict[str, type[RecurrentMemoryActorCriticPolicy]]:
    """``<policy_name>ActorCriticPolicy`` and its ``Cnn`` and ``MultiInput`` subclasses, as if written in ``module``."""
    mlp = type(
        POLICY_KINDS["Mlp"][0].format(policy_name),
        (RecurrentMemoryActorCriticPolicy,),
        {
            "__module__": module,
            "__doc__": _policy_doc(description, core_class, "Mlp", default_memory_kwargs),
            "core_class": core_class,
            "default_memory_kwargs": dict(default_memory_kwargs),
        },
    )
    policies: dict[str, type[RecurrentMemoryActorCriticPolicy]] = {"Mlp": mlp}
    for kind, (class_name, extractor, _) in POLICY_KINDS.items():
        if kind != "Mlp":
            namespace = {
                "__module__": module,
                "__doc__": _policy_doc(description, core_class, kind, default_memory_kwargs),
                "default_features_extractor_class": extractor,
            }
            policies[kind] = type(class_name.format(policy_name), (mlp,), namespace)
    return policies


def register_memory(
    name: str,
    core_class: type[MemoryCore],
    *,
    policy_name: str | None = None,
    alias_name: str | None = None,
    default_memory_kwargs: Mapping[str, Any] | None = None,
    policies: Mapping[str, type[RecurrentActorCriticPolicy]] | None = None,
    module: str | None = None,
    description: str | None = None,
) -> MemoryEntry:
    """Register a memory: its core, and policy classes made for it (or given, ``policies``).

    :param name: lower case, digits, ``-`` and ``_`` (``"fast-weights"``); becomes a ``--policy`` choice.
    :param core_class: a :class:`~fw_agents.memory.MemoryCore` subclass.
    :param policy_name: CamelCase stem of the policy classes' names, ``<policy_name>ActorCriticPolicy``, …
        (default: from ``name``, ``"my-core"`` -> ``"MyCore"``).
    :param alias_name: stem of the aliases, ``Mlp<alias_name>Policy``, … (default: ``policy_name``).
    :param default_memory_kwargs: the policies' defaults of the core's options, where they differ from the core's.
    :param policies: another library's policy class per kind (``{"Mlp": …, "Cnn": …, "MultiInput": …}``) instead of
        classes made here; their aliases stay that library's (not in :data:`POLICY_ALIASES`).
    :param module: the module the made classes belong to and are set in (default: ``core_class``'s); a saved model
        names its policy class by module and name.
    :param description: first words of the made classes' docstrings (default: ``"<policy_name> memory"``).
    :return: the entry.
    :raises ValueError: for a name already registered or malformed, a core that is not a ``MemoryCore``, an
        unknown default option, ``policies`` not one class per kind, or a class name or alias already taken.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"memory name must be lower case letters, digits, '-' and '_' (e.g. 'my-core'), got {name!r}")
    if name in _entries:
        raise ValueError(f"memory {name!r} is already registered (as {_entries[name].core_class.__name__})")
    if not (isinstance(core_class, type) and issubclass(core_class, MemoryCore)):
        raise ValueError(f"core_class of memory {name!r} must be a MemoryCore subclass, got {core_class!r}")
    policy_name = policy_name or "".join(part.capitalize() for part in re.split(r"[-_]", name))
    alias_name = alias_name or policy_name
    for what, stem in (("policy_name", policy_name), ("alias_name", alias_name)):
        if not _IDENTIFIER.fullmatch(stem):
            raise ValueError(f"{what} of memory {name!r} must be a CamelCase identifier, got {stem!r}")
    defaults = dict(default_memory_kwargs or {})
    unknown = sorted(set(defaults) - set(core_class.option_names()))
    if unknown:
        raise ValueError(
            f"default_memory_kwargs of memory {name!r}: {unknown} are not options of {core_class.__name__}, "
            f"which takes {core_class.option_names()}"
        )
    module = module or core_class.__module__
    if policies is None:
        made = _make_policies(core_class, policy_name, module, description or f"{policy_name} memory", defaults)
        policies = made
    else:
        if set(policies) != set(POLICY_KINDS) or not all(
            isinstance(cls, type) and issubclass(cls, RecurrentActorCriticPolicy) for cls in policies.values()
        ):
            raise ValueError(
                f"policies of memory {name!r} must map each of {list(POLICY_KINDS)} to a RecurrentActorCriticPolicy "
                f"subclass, got {dict(policies)!r}"
            )
        if defaults:
            raise ValueError(f"default_memory_kwargs of memory {name!r} apply only to policy classes made here")
        made = {}
    attributes = tuple(policy.__name__ for policy in made.values())
    entry = MemoryEntry(name, core_class, alias_name, MappingProxyType(dict(policies)), bool(made), attributes)
    if made:
        taken = sorted(set(entry.aliases) & set(_aliases))
        target = importlib.import_module(module)  # already imported (in sys.modules) when registering from it
        taken += [attribute for attribute in entry._module_attributes if hasattr(target, attribute)]
        if taken:
            raise ValueError(f"memory {name!r}: {taken} already exist; choose another policy_name or alias_name")
        for policy in made.values():
            setattr(target, policy.__name__, policy)
        _aliases.update(entry.aliases)
    _entries[name] = entry
    _cores[name] = core_class
    return entry


def unregister_memory(name: str) -> None:
    """Remove memory ``name``: its entry, its aliases, and the policy classes set in their module."""
    entry = get_memory(name)
    del _entries[name], _cores[name]
    if entry.made_here:
        for alias in entry.aliases:
            del _aliases[alias]
        target = sys.modules.get(entry.policies["Mlp"].__module__)
        for attribute in entry._module_attributes:
            if target is not None and getattr(target, attribute, None) in entry.policies.values():
                delattr(target, attribute)


@contextmanager
def registered_memory(name: str, core_class: type[MemoryCore], **options: Any) -> Iterator[MemoryEntry]:
    """:func:`register_memory` for the ``with`` block only (tests, experiments): unregistered on the way out."""
    entry = register_memory(name, core_class, **options)
    try:
        yield entry
    finally:
        unregister_memory(name)


def register_policy_aliases(*algorithm_classes: type) -> None:
    """Make the string aliases (``"MlpFastWeightsPolicy"``, …) usable with other algorithms.

    An explicit call, not an import side effect: it writes into another library's class-level dict
    (``policy_aliases`` is shared by every user of that class), which a plain ``import fw_agents`` should
    not do behind anyone's back. Passing the policy class itself works without registering anything, and
    saved models load without it (the zip refers to the class). :class:`fw_agents.RecurrentA2C` knows the
    built-in memories' aliases already; call this for it too after registering a memory of your own.

    :param algorithm_classes: algorithms to extend; default ``sb3_contrib.RecurrentPPO``.
    :raises ValueError: if an alias already names a different policy there.
    """
    if not algorithm_classes:
        from sb3_contrib import RecurrentPPO

        algorithm_classes = (RecurrentPPO,)
    for algorithm in algorithm_classes:
        # Copy first, so a subclass that inherits its parent's dict does not write into the parent's.
        aliases = dict(algorithm.policy_aliases)
        for name, policy in POLICY_ALIASES.items():
            if aliases.get(name, policy) is not policy:
                raise ValueError(f"{algorithm.__name__}.policy_aliases[{name!r}] is already {aliases[name]!r}")
            aliases[name] = policy
        algorithm.policy_aliases = aliases


#: The entry-point group through which other packages add memories (module docstring).
ENTRY_POINT_GROUP = "fw_agents.memories"


def load_plugins() -> list[str]:
    """Load the memories other packages declare in the ``fw_agents.memories`` entry-point group, once each: an entry
    point naming a module is imported (the module registers its memories); one naming a
    :class:`~fw_agents.memory.MemoryCore` subclass is registered under the entry point's name. Returns the names of
    the memories that are new. A plugin that fails to import or register is a warning naming it, not an error: one
    broken package must not stop every command."""
    before = set(_entries)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
            if isinstance(loaded, type) and issubclass(loaded, MemoryCore) and entry_point.name not in _entries:
                register_memory(entry_point.name, loaded)
        except Exception as error:  # noqa: BLE001  (any failure of someone else's code is reported, not raised)
            warnings.warn(
                f"fw_agents: memory plugin {entry_point.name!r} ({entry_point.value}) did not load: {error}",
                stacklevel=2,
            )
    return [name for name in _entries if name not in before]


# ----------------------------------------------------------------------------------------------- the built-ins
# Their policy classes live in fw_agents.policies, where models saved since fw-agents 0.1 name them.
_POLICIES_MODULE = "fw_agents.policies"

# The fast-weights policies' defaults are ours, not the paper's (README, "defaults that learn"): a gated, additive
# update, λ and η learned, η starting "balanced" (η = 2(1−λ)/H), LN's gain starting at 0.3 (an output of an
# LSTM's scale: with 1, RecurrentA2C learned POPGym's position-only CartPole below a memoryless agent).
# With the paper's cell (η = 0.5, no gate, fixed rates) the fast term starts ~130× the slow one at H = 64 and
# drowns small observations. The paper's cell: gated=False, learn_rates=False, fast_learning_rate=0.5.
register_memory(
    "fast-weights",
    FastWeightsRNN,
    policy_name="FastWeights",
    default_memory_kwargs={
        "gated": True,
        "learn_rates": True,
        "fast_learning_rate": "balanced",
        "layer_norm_gain": 0.3,
    },
    module=_POLICIES_MODULE,
    description="Fast-weights",
)
# sb3-contrib's own LSTM policies: the reference every other memory is compared with.
register_memory(
    "lstm",
    LSTMCore,
    alias_name="Lstm",
    policies={"Mlp": MlpLstmPolicy, "Cnn": CnnLstmPolicy, "MultiInput": MultiInputLstmPolicy},
)
register_memory("gru", GRUCore, policy_name="GRU", alias_name="Gru", module=_POLICIES_MODULE, description="GRU")
# The memoryless baseline: the same layout with a tanh layer in place of the memory, so that a comparison changes
# only the memory.
register_memory(
    "mlp", NoMemoryCore, policy_name="NoMemory", module=_POLICIES_MODULE, description="Memoryless (baseline)"
)
