"""Associative retrieval, supervised (Ba et al. 2016, §4.1): ``python -m bench.assoc [options]``.

A sequence is K letter-key / digit-value pairs with distinct keys, then ``??``, then one of the K keys; the
target is the digit paired with that key: ``c9k8j3f1??c -> 9``. Symbols are one-hot over 37 tokens (26 letters,
10 digits, ``?``), so a sequence has 2K + 3 steps. The core of a registered memory (``--model``, any name of
:mod:`fw_agents.registry`, or ``irnn``) reads the sequence from a zero state; a small MLP head classifies its last
output into the 10 digits. Training is Adam with gradient-norm clipping and early stopping on validation error; the
test error of the best-validation weights is reported.

Choices the paper leaves open (see ``docs/results.md``): K = 4 by default (the paper's example), Adam with
learning rate 1e-3, batch 128, gradient norm clipped to 1, a head of 100 ReLU units, early stopping after 10
epochs without a better validation error (at most 100 epochs).

The IRNN baseline (Le et al. 2015: ``h(t+1) = relu(W h(t) + C x(t) + b)`` with W = I) needs no new core: it is
:class:`~fw_agents.memory.FastWeightsRNN` with η = 0, no layer norm and W initialised to the identity.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from torch import nn

from fw_agents.memory import FastWeightsRNN, MemoryCore
from fw_agents.registry import MEMORY_CORES, memory_names
from train.cli import (
    ArgumentParser,
    CLIError,
    check_json_path,
    cli_main,
    float_in,
    int_at_least,
    parse_assignments,
    positive_float,
    positive_int,
    seed_int,
    write_json,
)

N_LETTERS = 26
N_DIGITS = 10
QUERY_MARK = N_LETTERS + N_DIGITS  # token of "?"
VOCAB_SIZE = N_LETTERS + N_DIGITS + 1  # 37
#: ``--model`` choices besides the registered memories (:mod:`fw_agents.registry`).
IRNN = "irnn"


def models() -> list[str]:
    """The ``--model`` choices: every registered memory (its core), and the IRNN."""
    return [*memory_names(), IRNN]


# --- data ---------------------------------------------------------------------------------------------------
def generate(n: int, num_pairs: int, rng: np.random.Generator) -> tuple[th.Tensor, th.Tensor]:
    """``n`` random sequences with ``num_pairs`` (K) pairs each.

    Tokens: letters ``a..z`` are 0..25, digits ``0..9`` are 26..35, ``?`` is 36.

    :return: ``tokens`` ``(n, 2K + 3)`` int64 and ``targets`` ``(n,)`` int64 in ``0..9`` (the queried digit).
    """
    if not 1 <= num_pairs <= N_LETTERS:
        raise ValueError(f"num_pairs must be in [1, {N_LETTERS}], got {num_pairs}")
    # Distinct keys per sequence: the first K of a random permutation of the 26 letters.
    keys = np.argsort(rng.random((n, N_LETTERS)), axis=1)[:, :num_pairs]
    values = rng.integers(N_DIGITS, size=(n, num_pairs))
    which = rng.integers(num_pairs, size=n)
    rows = np.arange(n)
    tokens = np.empty((n, 2 * num_pairs + 3), dtype=np.int64)
    tokens[:, 0 : 2 * num_pairs : 2] = keys
    tokens[:, 1 : 2 * num_pairs : 2] = N_LETTERS + values
    tokens[:, 2 * num_pairs : 2 * num_pairs + 2] = QUERY_MARK
    tokens[:, -1] = keys[rows, which]
    return th.from_numpy(tokens), th.from_numpy(values[rows, which])


def decode(tokens: Sequence[int]) -> str:
    """Token ids -> text, e.g. ``c9k8j3f1??c``."""
    return "".join(
        chr(ord("a") + t) if t < N_LETTERS else "?" if t == QUERY_MARK else str(t - N_LETTERS) for t in map(int, tokens)
    )


@dataclass
class Splits:
    """Train / validation / test sets; tokens ``(N, T)``, targets ``(N,)``."""

    train: tuple[th.Tensor, th.Tensor]
    val: tuple[th.Tensor, th.Tensor]
    test: tuple[th.Tensor, th.Tensor]


def make_splits(train_size: int, val_size: int, test_size: int, num_pairs: int, seed: int) -> Splits:
    """Three independent draws from one seeded generator (repeats across splits are possible but rare)."""
    rng = np.random.default_rng(seed)
    return Splits(*(generate(n, num_pairs, rng) for n in (train_size, val_size, test_size)))


# --- model --------------------------------------------------------------------------------------------------
#: Options of the fast-weights core that have their own flags (``--decay-rate`` ...), not ``--core-kwargs``.
FLAG_OPTIONS = ("decay_rate", "fast_learning_rate", "layer_norm", "inner_steps", "compute_path")


def build_core(
    model: str,
    hidden_size: int,
    decay_rate: float = 0.95,
    fast_learning_rate: float | str = 0.5,
    layer_norm: bool = True,
    inner_steps: int = 1,
    compute_path: str = "auto",
    core_kwargs: dict[str, Any] | None = None,
) -> MemoryCore:
    """The memory core for ``model`` (one of :func:`models`) over one-hot inputs of size 37: a registered memory's
    core with the core's own defaults (the paper's cell for fast weights, whose options are the ones given here),
    or the IRNN. ``core_kwargs``: any other option of the core (:func:`check_core_kwargs`), e.g. the policies'
    gated cell: ``gated=True, learn_rates=True, layer_norm_gain=0.3`` with ``fast_learning_rate="balanced"``."""
    if model == IRNN:
        # η = 0 never writes A, and without layer norm the inner loop is relu(W h + C x): an IRNN.
        return FastWeightsRNN(
            VOCAB_SIZE, hidden_size, fast_learning_rate=0.0, layer_norm=False, recurrent_init_scale=1.0
        )
    if model not in MEMORY_CORES:
        raise ValueError(f"model must be one of {models()}, got {model!r}")
    options: dict[str, Any] = {}
    if MEMORY_CORES[model] is FastWeightsRNN:
        options = dict(
            decay_rate=decay_rate,
            fast_learning_rate=fast_learning_rate,
            inner_steps=inner_steps,
            layer_norm=layer_norm,
            compute_path=compute_path,
        )
    return MEMORY_CORES[model](VOCAB_SIZE, hidden_size, **options, **check_core_kwargs(model, core_kwargs or {}))


def check_core_kwargs(model: str, core_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``core_kwargs`` if each is an option of ``model``'s core without a flag of its own, else :class:`CLIError`."""
    allowed = [] if model == IRNN else [
        name for name in MEMORY_CORES[model].option_names() if name not in (*FLAG_OPTIONS, "dropout")
    ]  # fmt: skip
    for name in core_kwargs:
        if name in FLAG_OPTIONS:
            raise CLIError(f"--core-kwargs: give {name} by its flag --{name.replace('_', '-')}")
        if name not in allowed:
            takes = f"its options: {allowed}" if allowed else "it takes none"
            raise CLIError(f"--core-kwargs: {name!r} is not an option of --model {model}; {takes}")
    return core_kwargs


class RetrievalClassifier(nn.Module):
    """Memory core over the one-hot sequence, then an MLP on its last output.

    :param core: any :class:`MemoryCore` with ``input_size`` 37.
    :param head_size: hidden units of the head (0: a linear head).
    """

    def __init__(self, core: MemoryCore, head_size: int = 100) -> None:
        super().__init__()
        self.core = core
        hidden = core.hidden_size
        layers: list[nn.Module] = [nn.Linear(hidden, head_size), nn.ReLU()] if head_size > 0 else []
        layers.append(nn.Linear(head_size if head_size > 0 else hidden, N_DIGITS))
        self.head = nn.Sequential(*layers)

    def forward(self, tokens: th.Tensor) -> th.Tensor:
        """``tokens`` ``(B, T)`` int -> digit logits ``(B, 10)``."""
        inputs = F.one_hot(tokens.t(), VOCAB_SIZE).float()  # (T, B, 37)
        batch = tokens.shape[0]
        # Each sequence is one episode from a zero state: no resets inside it.
        starts = inputs.new_zeros(inputs.shape[:2])
        outputs, _ = self.core(inputs, self.core.initial_state(batch, device=inputs.device), starts)
        return self.head(outputs[-1])


# --- training -----------------------------------------------------------------------------------------------
def fast_slow_ratio(model: RetrievalClassifier, tokens: th.Tensor) -> float:
    """How large the fast term is against the slow one, ‖A h_s‖ / ‖W h + C x‖ averaged over the steps of ``tokens``
    ``(B, T)`` (a :class:`FastWeightsRNN` core's ``collect_stats``); draws no random numbers."""
    core = model.core
    core.collect_stats = True
    try:
        with th.no_grad():
            model(tokens)
        return core.stats["fast_slow_ratio"]
    finally:
        core.collect_stats = False


@th.no_grad()
def error_rate(model: nn.Module, tokens: th.Tensor, targets: th.Tensor, batch_size: int = 1024) -> float:
    """Fraction of sequences whose arg-max digit is wrong."""
    model.eval()
    wrong = 0
    for begin in range(0, len(tokens), batch_size):
        logits = model(tokens[begin : begin + batch_size])
        wrong += int((logits.argmax(dim=1) != targets[begin : begin + batch_size]).sum())
    model.train()
    return wrong / len(tokens)


@dataclass
class TrainConfig:
    """Everything that defines one run (written to the JSON as is)."""

    model: str = "fast-weights"
    hidden_size: int = 20
    num_pairs: int = 4
    decay_rate: float = 0.95
    fast_learning_rate: float | str = 0.5
    layer_norm: bool = True
    inner_steps: int = 1
    compute_path: str = "auto"
    core_kwargs: dict[str, Any] = field(default_factory=dict)
    head_size: int = 100
    train_size: int = 100_000
    val_size: int = 10_000
    test_size: int = 20_000
    epochs: int = 100
    patience: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    seed: int = 0
    data_seed: int = 0
    threads: int = 1


def train(config: TrainConfig, log: bool = True) -> dict[str, Any]:
    """Train with early stopping on validation error; return the config, per-epoch history and test error."""
    th.set_num_threads(config.threads)
    th.manual_seed(config.seed)
    try:  # the option names (check_core_kwargs) and the core's own checks of their values, before the data are drawn
        core = build_core(config.model, config.hidden_size, config.decay_rate, config.fast_learning_rate,
                          config.layer_norm, config.inner_steps, config.compute_path, config.core_kwargs)  # fmt: skip
    except CLIError:
        raise
    except (TypeError, ValueError) as error:
        raise CLIError(f"cannot build the {config.model} core: {error}") from None
    splits = make_splits(config.train_size, config.val_size, config.test_size, config.num_pairs, config.data_seed)
    model = RetrievalClassifier(core, config.head_size)
    optimizer = th.optim.Adam(model.parameters(), lr=config.lr)
    shuffle = th.Generator().manual_seed(config.seed)
    train_tokens, train_targets = splits.train
    # Where the fast term starts beside the slow one on these sequences (the balanced η assumes a saturated A and
    # ‖h‖² ≈ H/2, which short sequences and a small LN gain do not give).
    initial_ratio = fast_slow_ratio(model, splits.val[0][:512]) if isinstance(core, FastWeightsRNN) else None

    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        order = th.randperm(len(train_tokens), generator=shuffle)
        total_loss = 0.0
        for begin in range(0, len(order), config.batch_size):
            index = order[begin : begin + config.batch_size]
            loss = F.cross_entropy(model(train_tokens[index]), train_targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Why clip: ReLU recurrences (IRNN, fast weights' A h term) can blow up early in training.
            nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            total_loss += loss.item() * len(index)
        val_error = error_rate(model, *splits.val)
        row = {
            "epoch": epoch,
            "train_loss": total_loss / len(order),
            "val_error": val_error,
            "seconds": time.perf_counter() - epoch_start,
        }
        if getattr(core, "learn_rates", False):  # where the learned λ and η have gone (they start where told)
            decay_rate, fast_learning_rate = core.rates()
            row.update(decay_rate=decay_rate.item(), fast_learning_rate=fast_learning_rate.item())
        history.append(row)
        if log:
            print(
                f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  val error {100 * val_error:6.2f}%  "
                f"({row['seconds']:.1f}s)",
                flush=True,
            )
        if val_error < best_val:
            best_val, best_epoch, best_state = val_error, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
        if val_error == 0.0:  # nothing left to improve
            break

    model.load_state_dict(best_state)
    test_error = error_rate(model, *splits.test)
    return {
        "config": asdict(config),
        "sequence_length": 2 * config.num_pairs + 3,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_error": best_val,
        "test_error": test_error,
        "initial_fast_slow_ratio": initial_ratio,
        "train_seconds": time.perf_counter() - start,
        "history": history,
        "torch": th.__version__,
    }


# --- command line -------------------------------------------------------------------------------------------
def fast_learning_rate(text: str) -> float | str:
    """argparse type of ``--fast-learning-rate``: a finite η >= 0, or ``balanced``."""
    try:
        return text if text == "balanced" else float_in(0.0)(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or 'balanced')") from None


fast_learning_rate.__name__ = "float"  # argparse names the type in its messages


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m bench.assoc", description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    parser.add_argument("--model", choices=models(), default=defaults.model)
    parser.add_argument("--hidden-size", type=positive_int, default=defaults.hidden_size, help="R (default: 20)")
    parser.add_argument(
        "--num-pairs", "-K", type=int_at_least(1, N_LETTERS), default=defaults.num_pairs, help="K pairs (default: 4)"
    )
    parser.add_argument(
        "--decay-rate", type=float_in(0.0, 1.0, low_open=True), default=defaults.decay_rate, help="λ (default: 0.95)"
    )
    parser.add_argument(
        "--fast-learning-rate",
        type=fast_learning_rate,
        default=defaults.fast_learning_rate,
        help="η (default: 0.5; 0 = the ablation 'no fast weights'; balanced: 2(1−λ)/R)",
    )
    parser.add_argument("--no-layer-norm", dest="layer_norm", action="store_false", help="fast weights without LN")
    parser.add_argument("--inner-steps", type=positive_int, default=defaults.inner_steps, help="S (default: 1)")
    parser.add_argument("--compute-path", choices=("auto", "explicit", "attention"), default=defaults.compute_path)
    parser.add_argument(
        "--core-kwargs", nargs="+", metavar="KEY=VALUE", help="other options of the core, e.g. the fast-weights "
        "policies' cell: gated=true learn_rates=true layer_norm_gain=0.3 (with --fast-learning-rate balanced)"
    )  # fmt: skip
    parser.add_argument(
        "--head-size", type=int_at_least(0), default=defaults.head_size, help="ReLU units of the head (0: linear)"
    )
    parser.add_argument("--train-size", type=positive_int, default=defaults.train_size)
    parser.add_argument("--val-size", type=positive_int, default=defaults.val_size)
    parser.add_argument("--test-size", type=positive_int, default=defaults.test_size)
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs, help="at most (default: 100)")
    parser.add_argument(
        "--patience", type=positive_int, default=defaults.patience, help="epochs without a better val error"
    )
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--max-grad-norm", type=positive_float, default=defaults.max_grad_norm)
    parser.add_argument("--seed", type=seed_int, default=defaults.seed, help="initialisation and shuffling")
    parser.add_argument("--data-seed", type=seed_int, default=defaults.data_seed, help="the data sets")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads, help="torch threads (default: 1)")
    parser.add_argument("--json", metavar="OUT", type=Path, help="write the results to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def run_assoc(args: argparse.Namespace) -> int:
    """Train and report one configuration (``--json``: also write every number)."""
    check_json_path(args.json)
    fields = TrainConfig.__dataclass_fields__
    core_kwargs = parse_assignments(args.core_kwargs, "--core-kwargs")
    values = {k: v for k, v in vars(args).items() if k in fields and k != "core_kwargs"}
    config = TrainConfig(**values, core_kwargs=core_kwargs)
    if MEMORY_CORES.get(config.model) is not FastWeightsRNN and (
        config.fast_learning_rate != 0.5 or config.decay_rate != 0.95
    ):
        print("note: --decay-rate / --fast-learning-rate apply to --model fast-weights only", file=sys.stderr)
    results = train(config, log=not args.quiet)
    print(
        f"{config.model} R={config.hidden_size} K={config.num_pairs}: test error {100 * results['test_error']:.2f}% "
        f"(best val {100 * results['best_val_error']:.2f}% at epoch {results['best_epoch']}, "
        f"{results['train_seconds']:.0f}s)"
    )
    write_json(args.json, results)
    return 0


#: Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.
main = cli_main(build_parser, run_assoc)


if __name__ == "__main__":
    sys.exit(main())
