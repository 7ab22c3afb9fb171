"""Model benchmarks for ``python -m bench.speed``: the ``core`` and ``throughput`` subcommands.

* ``core``: one memory core alone, forward + backward over ``(T, B)`` sequences: fast weights (fused, explicit
  and attention paths) against ``torch.nn.LSTM`` and ``torch.nn.GRU``; time and the bytes autograd saves for the
  backward pass (each storage counted once). Then single rollout steps (T = 1, no grad) at ``--step-batches``.
  ``--memories`` adds the core of any registered memory (:mod:`fw_agents.registry`) at its defaults.
* ``throughput``: env steps per second of whole training runs (collection and updates together), and the
  process's peak resident memory: RecurrentPPO with sb3-contrib's ``MlpLstmPolicy`` or our
  ``FastWeightsActorCriticPolicy``, :class:`fw_agents.a2c.RecurrentA2C` with sb3-contrib's ``MlpLstmPolicy`` or
  ``MlpFastWeightsPolicy``, and SB3's feed-forward A2C. ``--memories`` adds both recurrent algorithms with any
  registered memory's policy.

Both pin torch's threads, warm up, repeat, and report the median with the min-max spread, and every median
as a ratio to a reference measured in the same run (``nn.LSTM``; RecurrentPPO + ``MlpLstmPolicy``), since
absolute numbers on a shared machine mean little.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch as th
from torch import nn

from fw_agents.memory import FastWeightsRNN
from fw_agents.registry import MEMORY_CORES, get_memory, memory_names
from train.cli import check_json_path, positive_int, seed_int, write_json


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and min-max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def add_ratios(
    rows: list[dict[str, Any]],
    group_keys: Sequence[str],
    metrics: Sequence[str],
    is_reference: Callable[[dict[str, Any]], bool],
) -> None:
    """Add ``<metric>_ratio`` to each row: its median over the reference row's median in the same group."""
    for row in rows:
        group = tuple(row[k] for k in group_keys)
        reference = next(r for r in rows if tuple(r[k] for k in group_keys) == group and is_reference(r))
        for metric in metrics:
            ref = reference[metric]["median"] if isinstance(reference[metric], dict) else reference[metric]
            value = row[metric]["median"] if isinstance(row[metric], dict) else row[metric]
            row[f"{metric}_ratio"] = value / ref if ref else float("nan")


def start_run(args: argparse.Namespace, subcommand: str) -> bool:
    """Check ``--json`` (one-line error on stderr if it cannot be written) and pin torch's threads."""
    if error := check_json_path(args.json):
        print(f"python -m bench.speed {subcommand}: error: {error}", file=sys.stderr)
        return False
    th.set_num_threads(args.threads)
    return True


# --- core ---------------------------------------------------------------------------------------------------
#: The default rows: fast weights' compute paths (``fast-weights-<path>``) and torch's own RNNs.
CORE_MODELS = ("fast-weights-fused", "fast-weights-explicit", "fast-weights-attention", "nn.LSTM", "nn.GRU")
CORE_REFERENCE = "nn.LSTM"
TORCH_RNNS: dict[str, type[nn.Module]] = {"nn.LSTM": nn.LSTM, "nn.GRU": nn.GRU}
FAST_WEIGHTS_PATH = "fast-weights-"


def make_core(name: str, input_size: int, hidden_size: int) -> nn.Module:
    """``nn.LSTM``/``nn.GRU``, ``fast-weights-<compute path>``, or a registered memory's core at its defaults."""
    if name in TORCH_RNNS:
        return TORCH_RNNS[name](input_size, hidden_size)
    if name.startswith(FAST_WEIGHTS_PATH):
        return FastWeightsRNN(input_size, hidden_size, compute_path=name.removeprefix(FAST_WEIGHTS_PATH))
    return MEMORY_CORES[name](input_size, hidden_size)


def make_core_step(name: str, input_size: int, hidden_size: int, batch: int) -> Callable[[th.Tensor], th.Tensor]:
    """A function ``inputs (T, B, F) -> outputs (T, B, H)`` for one benchmarked core (see :func:`make_core`),
    from a zero state."""
    core = make_core(name, input_size, hidden_size)
    if name in TORCH_RNNS:
        return lambda x: core(x)[0]
    state = core.initial_state(batch)
    return lambda x: core(x, state, x.new_zeros(x.shape[:2]))[0]


def saved_bytes(run: Callable[[th.Tensor], th.Tensor], x: th.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of ``run(x).sum()``, each storage counted once."""
    storages: dict[int, int] = {}

    def pack(tensor: th.Tensor) -> th.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with th.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run(x).sum()
    out.backward()
    return sum(storages.values())


def time_forward_backward(
    run: Callable[[th.Tensor], th.Tensor], x: th.Tensor, warmup: int, repeats: int
) -> list[float]:
    """Seconds per forward + backward of ``run(x).sum()``, one number per repeat, after ``warmup`` untimed runs."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run(x).sum().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def bench_core(
    hidden_sizes: Sequence[int],
    lengths: Sequence[int],
    batch: int,
    input_size: int,
    warmup: int,
    repeats: int,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    models: Sequence[str] = CORE_MODELS,
) -> list[dict[str, Any]]:
    """One row per (H, T, model): forward+backward seconds (median, min, max), saved bytes, ratios to nn.LSTM
    (``models`` must include it)."""
    rows = []
    for hidden in hidden_sizes:
        for length in lengths:
            for name in models:
                th.manual_seed(seed)
                run = make_core_step(name, input_size, hidden, batch)
                x = th.randn(length, batch, input_size)
                row = {
                    "model": name,
                    "hidden_size": hidden,
                    "T": length,
                    "B": batch,
                    "seconds": spread(time_forward_backward(run, x, warmup, repeats)),
                    "saved_bytes": saved_bytes(run, x),
                }
                rows.append(row)
                if log:
                    log(f"  {name:<24} H={hidden:<4} T={length:<4} {1e3 * row['seconds']['median']:9.2f} ms")
    add_ratios(rows, ("hidden_size", "T"), ("seconds", "saved_bytes"), lambda r: r["model"] == CORE_REFERENCE)
    return rows


STEP_MODELS = ("fast-weights-fused", "fast-weights-explicit", "nn.LSTM")


def make_step(name: str, input_size: int, hidden_size: int, batch: int) -> Callable[[th.Tensor], Any]:
    """A function ``x (B, F) -> new state``: one rollout step (T = 1) of one core (see :func:`make_core`) from a
    nonzero state."""
    core = make_core(name, input_size, hidden_size)
    if name in TORCH_RNNS:
        hc = (th.zeros(1, batch, hidden_size), th.zeros(1, batch, hidden_size))
        return lambda x: core(x.unsqueeze(0), hc if name == "nn.LSTM" else hc[0])
    state = th.full((batch, core.state_size), 0.01)  # a carried A is read: not the all-zero shortcut
    starts = th.zeros(batch)
    return lambda x: core.step(x, state, starts)


def bench_step(
    hidden_sizes: Sequence[int],
    batches: Sequence[int],
    input_size: int,
    repeats: int,
    seed: int = 0,
    models: Sequence[str] = STEP_MODELS,
) -> list[dict[str, Any]]:
    """One row per (H, B, model): seconds per single no-grad step (median of 50-step blocks), ratio to nn.LSTM
    (``models`` must include it)."""
    rows = []
    for hidden in hidden_sizes:
        for batch in batches:
            for name in models:
                th.manual_seed(seed)
                step = make_step(name, input_size, hidden, batch)
                x = th.randn(batch, input_size)
                with th.no_grad():
                    block = time_forward_steps(step, x, repeats)
                rows.append({"model": name, "hidden_size": hidden, "B": batch, "seconds": spread(block)})
    add_ratios(rows, ("hidden_size", "B"), ("seconds",), lambda r: r["model"] == CORE_REFERENCE)
    return rows


def time_forward_steps(step: Callable[[th.Tensor], Any], x: th.Tensor, repeats: int, block: int = 50) -> list[float]:
    """Seconds per call of ``step(x)``, averaged over blocks of ``block`` calls, one number per repeat."""
    for _ in range(block):
        step(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(block):
            step(x)
        times.append((time.perf_counter() - start) / block)
    return times


def format_step_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'single step, no grad':<24} {'H':>4} {'B':>4} {'us (median)':>12} {'x LSTM':>7}"]
    for r in rows:
        seconds = 1e6 * r["seconds"]["median"]
        lines.append(f"{r['model']:<24} {r['hidden_size']:>4} {r['B']:>4} {seconds:>12.1f} {r['seconds_ratio']:>7.2f}")
    return "\n".join(lines)


def format_core_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':<24} {'H':>4} {'T':>4} {'fwd+bwd ms (median)':>20} {'min - max':>17} {'x LSTM':>7} "
        f"{'saved MiB':>10} {'x LSTM':>7}"
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"{r['model']:<24} {r['hidden_size']:>4} {r['T']:>4} {1e3 * s['median']:>20.2f} "
            f"{1e3 * s['min']:>8.2f} - {1e3 * s['max']:<6.2f} {r['seconds_ratio']:>7.2f} "
            f"{r['saved_bytes'] / 2**20:>10.2f} {r['saved_bytes_ratio']:>7.2f}"
        )
    return "\n".join(lines)


def measure_core(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``core`` benchmark with ``args``, print its table; the JSON payload."""
    if args.quick:
        args.hidden_sizes, args.lengths, args.batch, args.input_size, args.repeats, args.warmup = [16], [8], 4, 8, 2, 1
        args.step_batches = [2]
    rows = bench_core(
        args.hidden_sizes,
        args.lengths,
        args.batch,
        args.input_size,
        args.warmup,
        args.repeats,
        args.seed,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        models=[*CORE_MODELS, *args.memories],
    )
    print(format_core_table(rows))
    step_models = [*STEP_MODELS, *args.memories]
    step_rows = bench_step(args.hidden_sizes, args.step_batches, args.input_size, args.repeats, args.seed, step_models)
    print(format_step_table(step_rows))
    return {"subcommand": "core", "settings": settings(args), "rows": rows, "step_rows": step_rows}


def run_core(args: argparse.Namespace) -> int:
    if not start_run(args, "core"):
        return 2
    write_json(args.json, measure_core(args))
    return 0


def add_core_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("core", help="memory cores alone: forward+backward time and saved memory")
    parser.add_argument("--hidden-sizes", type=positive_int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--lengths", "-T", type=positive_int, nargs="+", default=[32, 128], help="sequence lengths")
    parser.add_argument("--batch", "-B", type=positive_int, default=16)
    parser.add_argument("--input-size", type=positive_int, default=64, help="F (default: 64)")
    parser.add_argument("--warmup", type=positive_int, default=2)
    parser.add_argument(
        "--step-batches", type=positive_int, nargs="+", default=[8, 128], help="B of the single-step (T=1) table"
    )
    add_memories_argument(parser, "also the core of these registered memories, at its defaults")
    add_common_arguments(parser, repeats=10)
    parser.set_defaults(func=run_core)


# --- throughput ---------------------------------------------------------------------------------------------
#: (label, algorithm, registered memory; None: feed-forward); the first is the reference.
AGENTS: tuple[tuple[str, str, str | None], ...] = (
    ("RecurrentPPO+MlpLstmPolicy", "RecurrentPPO", "lstm"),
    ("RecurrentPPO+FastWeights", "RecurrentPPO", "fast-weights"),
    ("RecurrentA2C+MlpLstmPolicy", "RecurrentA2C", "lstm"),
    ("RecurrentA2C+MlpFastWeightsPolicy", "RecurrentA2C", "fast-weights"),
    ("A2C+MlpPolicy", "A2C", None),
)
RECURRENT_ALGORITHMS = ("RecurrentPPO", "RecurrentA2C")


def memory_agents(memories: Sequence[str]) -> list[tuple[str, str, str]]:
    """``--memories`` of ``throughput``: both recurrent algorithms with each memory's vector policy."""
    return [
        (f"{algorithm}+{get_memory(memory).alias('Mlp')}", algorithm, memory)
        for memory in memories
        for algorithm in RECURRENT_ALGORITHMS
    ]


THROUGHPUT_REFERENCE = AGENTS[0][0]


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's own memory. ``ru_maxrss``
    would not do in a spawned worker: it survives fork and exec, so the worker would report its parent's peak
    (e.g. the ``core`` benchmark's, run before ``throughput`` by ``models``). Elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB elsewhere


def make_agent(
    algorithm: str, memory: str | None, env_id: str, hidden: int, n_envs: int, n_steps: int, seed: int
) -> Any:
    """An untrained agent: ``algorithm`` with ``memory``'s vector policy (None: SB3's feed-forward ``MlpPolicy``);
    everything but ``n_envs``, ``n_steps`` and the memory size at the library defaults."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401  registers fw_agents/* ids
    from fw_agents.a2c import RecurrentA2C
    from fw_agents.policies import policy_kwargs_for_class

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if memory is None:
        # Feed-forward: a layer of H units where the recurrent policies have their memory, then the same [64, 64].
        arch = [hidden, 64, 64]
        return A2C("MlpPolicy", env, n_steps=n_steps, seed=seed, policy_kwargs={"net_arch": {"pi": arch, "vf": arch}})
    policy = get_memory(memory).policy("Mlp")
    policy_kwargs = policy_kwargs_for_class(policy, {"hidden_size": hidden})  # lstm_hidden_size for sb3-contrib's
    algorithm_class = {"RecurrentPPO": RecurrentPPO, "RecurrentA2C": RecurrentA2C}[algorithm]
    return algorithm_class(policy, env, n_steps=n_steps, seed=seed, policy_kwargs=policy_kwargs)


def measure_agent(job: dict[str, Any]) -> dict[str, Any]:
    """Steps/s of ``learn`` for one agent (one number per repeat, after one warm-up rollout) and peak RSS.

    Runs in a fresh process when isolated, so that the peak RSS is this agent's alone.
    """
    th.set_num_threads(job["threads"])
    rss_before = max_rss_mib()
    model = make_agent(
        job["algorithm"], job["memory"], job["env_id"], job["hidden_size"], job["n_envs"], job["n_steps"], job["seed"]
    )
    rollout = job["n_envs"] * job["n_steps"]
    model.learn(rollout)  # warm-up: first-call allocations and lazy imports
    rates = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        model.learn(job["timesteps"], reset_num_timesteps=True)
        rates.append(model.num_timesteps / (time.perf_counter() - start))
    model.get_env().close()
    return {"steps_per_second": spread(rates), "peak_rss_mib": max_rss_mib(), "rss_before_mib": rss_before}


def bench_throughput(
    hidden_sizes: Sequence[int],
    env_id: str,
    n_envs: int,
    n_steps: int,
    timesteps: int,
    repeats: int,
    threads: int,
    seed: int = 0,
    isolate: bool = True,
    log: Callable[[str], None] | None = None,
    agents: Sequence[tuple[str, str, str | None]] = AGENTS,
) -> list[dict[str, Any]]:
    """One row per (H, agent): steps/s (median, min, max), peak RSS, ratios to RecurrentPPO + MlpLstmPolicy
    (``agents`` must include it)."""
    rows = []
    for hidden in hidden_sizes:
        for label, algorithm, memory in agents:
            job = {
                "algorithm": algorithm,
                "memory": memory,
                "env_id": env_id,
                "hidden_size": hidden,
                "n_envs": n_envs,
                "n_steps": n_steps,
                "timesteps": timesteps,
                "repeats": repeats,
                "threads": threads,
                "seed": seed,
            }
            if isolate:
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    measured = pool.submit(measure_agent, job).result()
            else:
                measured = measure_agent(job)
            row = {"agent": label, "hidden_size": hidden, **measured, "isolated": isolate}
            rows.append(row)
            if log:
                log(f"  {label:<34} H={hidden:<4} {row['steps_per_second']['median']:9.0f} steps/s")
    add_ratios(
        rows, ("hidden_size",), ("steps_per_second", "peak_rss_mib"), lambda r: r["agent"] == THROUGHPUT_REFERENCE
    )
    return rows


def format_throughput_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'agent':<34} {'H':>4} {'steps/s (median)':>17} {'min - max':>15} {'x LSTM-PPO':>10} "
        f"{'peak RSS MiB':>12} {'x LSTM-PPO':>10}"
    ]
    for r in rows:
        s = r["steps_per_second"]
        lines.append(
            f"{r['agent']:<34} {r['hidden_size']:>4} {s['median']:>17.0f} {s['min']:>7.0f} - {s['max']:<5.0f} "
            f"{r['steps_per_second_ratio']:>10.2f} {r['peak_rss_mib']:>12.0f} {r['peak_rss_mib_ratio']:>10.2f}"
        )
    return "\n".join(lines)


def measure_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``throughput`` benchmark with ``args``, print its table; the JSON payload."""
    if args.quick:
        args.hidden_sizes, args.n_envs, args.n_steps, args.timesteps, args.repeats = [8], 2, 8, 16, 1
        args.isolate = False
    rows = bench_throughput(
        args.hidden_sizes,
        args.env_id,
        args.n_envs,
        args.n_steps,
        args.timesteps,
        args.repeats,
        args.threads,
        args.seed,
        args.isolate,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        agents=[*AGENTS, *memory_agents(args.memories)],
    )
    print(format_throughput_table(rows))
    return {"subcommand": "throughput", "settings": settings(args), "rows": rows}


def run_throughput(args: argparse.Namespace) -> int:
    if not start_run(args, "throughput"):
        return 2
    write_json(args.json, measure_throughput(args))
    return 0


def add_throughput_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("throughput", help="training env steps/s and peak memory of recurrent agents")
    parser.add_argument("--hidden-sizes", type=positive_int, nargs="+", default=[64, 128])
    parser.add_argument("--env-id", default="fw_agents/CartPoleNoVel-v1")
    parser.add_argument("--n-envs", type=positive_int, default=8)
    parser.add_argument("--n-steps", type=positive_int, default=32, help="rollout length, every agent (default: 32)")
    parser.add_argument("--timesteps", type=positive_int, default=4096, help="env steps per timed repeat")
    parser.add_argument(
        "--no-isolate", dest="isolate", action="store_false", help="measure in this process (peak RSS then shared)"
    )
    add_memories_argument(parser, "also RecurrentPPO and RecurrentA2C with these registered memories' policies")
    add_common_arguments(parser, repeats=3)
    parser.set_defaults(func=run_throughput)


# --- shared options -----------------------------------------------------------------------------------------
def add_memories_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--memories NAME …``: registered memories (:mod:`fw_agents.registry`) to add to a benchmark."""
    parser.add_argument("--memories", nargs="+", choices=memory_names(), default=[], help=help_text)


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int | None) -> None:
    """``repeats`` None: each benchmark's own default."""
    default = "each benchmark's own" if repeats is None else repeats
    parser.add_argument("--repeats", type=positive_int, default=repeats, help=f"timed repeats (default: {default})")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write the results to this JSON file")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run, for the JSON, plus versions."""
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    return {**values, "torch": th.__version__, "python": sys.version.split()[0]}


# --- models: both in one run -------------------------------------------------------------------------------
def run_models(args: argparse.Namespace) -> int:
    """``core`` then ``throughput``, each with its own defaults and the shared options given here."""
    if not start_run(args, "models"):
        return 2
    payload = {}
    for name, add_parser, measure in (
        ("core", add_core_parser, measure_core),
        ("throughput", add_throughput_parser, measure_throughput),
    ):
        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers())
        sub_args = parser.parse_args([name])  # that benchmark's defaults
        sub_args.threads, sub_args.seed, sub_args.quick = args.threads, args.seed, args.quick
        if args.repeats:
            sub_args.repeats = args.repeats
        print(f"# {name}", flush=True)
        payload[name] = measure(sub_args)
    write_json(args.json, {"subcommand": "models", **payload})
    return 0


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="core and throughput in one run, each at its defaults (one JSON with both)"
    )
    add_common_arguments(parser, repeats=None)
    parser.set_defaults(func=run_models)


SUBCOMMANDS = (add_core_parser, add_throughput_parser, add_models_parser)
