"""The fused fast-weights op: one C++ call runs a whole sequence forward, and one its backward.

The C++ source (``fast_weights.cpp``, shipped as package data) is compiled with
:func:`torch.utils.cpp_extension.load` on first use and cached under torch's extension directory
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), in a folder named after a hash of the source,
the flags, torch's and Python's versions, so that an upgrade rebuilds instead of loading a stale library. The
first use prints the compile time (tens of seconds); later processes load the cached library directly, in well
under a second, without torch's build step.

Builds are serialised by an ``fcntl.flock`` on ``build.flock`` in that folder, which the kernel releases when its
holder dies, so concurrent first uses are safe. torch's own lock (a ``lock`` file that ``cpp_extension.load`` creates
for every call, even with nothing to build, and on which it waits without a timeout) would be left behind by a
process killed during the call (``kill -9``) and make every later process hang; it is only taken while building,
and one found by the holder of the flock was left by a killed build (every build of this folder holds the flock)
and is removed. A library in the folder that does not load or does not hold the op (a build killed while linking,
a foreign file) is moved aside (``*.so.unusable``) and built anew.

Where the op cannot run (no compiler, a failed build, a device other than the CPU, a dtype other than float32 or
float64) :func:`unsupported_reason` says why and the caller falls back to the PyTorch paths, warning once per
reason (:func:`warn_once`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch as th
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("fast_weights.cpp")
# -march=native: the library is built on the machine that runs it (and the folder name carries no CPU, so
# a cache shared between different CPUs would need TORCH_EXTENSIONS_DIR set per machine).
CFLAGS = ("-O3", "-march=native", "-fopenmp-simd")
ACTIVATION_CODES = {"relu": 0, "tanh": 1, "elu": 2, "gelu": 3, "identity": 4}
DTYPES = (th.float32, th.float64)

_lock = threading.Lock()
_module: Any = None
_load_error: str | None = None
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """``warnings.warn`` each distinct message once per process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def extension_name() -> str:
    """``fw_agents_fused_<hash>``: a hash of what the build depends on."""
    key = b"\0".join([SOURCE.read_bytes(), " ".join(CFLAGS).encode(), th.__version__.encode(), sys.version.encode()])
    return f"fw_agents_fused_{hashlib.sha256(key).hexdigest()[:12]}"


def load() -> Any:
    """``torch.ops.fw_agents_fused`` (``forward``, ``backward``), building the op on first use; None if it cannot be
    built (the reason: :func:`load_error`)."""
    global _module, _load_error
    with _lock:
        if _module is not None or _load_error is not None:
            return _module
        if os.environ.get("FW_AGENTS_FUSED", "1") == "0":
            _load_error = "disabled by FW_AGENTS_FUSED=0"
            return None
        try:
            from torch.utils import cpp_extension

            name = extension_name()
            root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
            build_dir = Path(root) / name
            build_dir.mkdir(parents=True, exist_ok=True)
            library = build_dir / f"{name}.so"
            if not _load_library(library):  # none yet, or one left half-written by a killed build
                with _build_lock(build_dir):
                    if not _load_library(library):  # unless another process built it while this one waited
                        _build(name, build_dir, library)
            _module = th.ops.fw_agents_fused
        except Exception as error:  # no compiler, failed build, unwritable folder: the PyTorch paths still work
            _load_error = f"{type(error).__name__}: {str(error).strip()[-500:]}"
        return _module


def _build(name: str, build_dir: Path, library: Path) -> None:
    """Compile the op into ``library`` (holding the build lock). An unusable library there is moved aside and built
    anew, not taken as up to date by torch's build; under another name, since this process has opened the old one's
    path (a second dlopen of it would return that), then moved to where the next process looks for it."""
    from torch.utils import cpp_extension

    build_name = name
    if library.exists():
        library.replace(library.with_name(library.name + ".unusable"))
        build_name = f"{name}_rebuilt"
    print("compiling the fused fast-weights op (first use, cached)…", file=sys.stderr, flush=True)
    start = time.perf_counter()
    cpp_extension.load(
        build_name,
        [str(SOURCE)],
        extra_cflags=list(CFLAGS),
        build_directory=str(build_dir),
        verbose=False,
        is_python_module=False,  # the source registers torch.ops.fw_agents_fused.* itself
    )
    if build_name != name:
        (build_dir / f"{build_name}.so").replace(library)
    seconds = time.perf_counter() - start
    print(f"compiled the fused fast-weights op in {seconds:.1f} s ({build_dir})", file=sys.stderr)


def _load_library(library: Path) -> bool:
    """Load a built library (the folder's name is a hash of everything it was built from); False if there is
    none, it does not load (a build killed while linking) or it does not register the op (a foreign file)."""
    if not library.is_file():
        return False
    try:
        th.ops.load_library(str(library))
        th.ops.fw_agents_fused.forward, th.ops.fw_agents_fused.backward  # noqa: B018  (registered by it?)
    except (OSError, RuntimeError, AttributeError):
        return False
    return True


@contextmanager
def _build_lock(build_dir: Path) -> Iterator[None]:
    """Exclusive right to build in ``build_dir``: an ``fcntl.flock``, released by the kernel if its holder dies.
    Holding it, a torch ``lock`` file was left by a build killed while holding it, and is removed."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock alone
        yield
        return
    with open(build_dir / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with suppress(FileNotFoundError):
                (build_dir / "lock").unlink()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_error() -> str | None:
    return _load_error


def unsupported_reason(*tensors: th.Tensor | None) -> str | None:
    """Why the fused op cannot run on these tensors (None: it can). Builds the op if needed."""
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" for t in present):
        return "the fused op runs on the CPU only"
    if any(t.dtype not in DTYPES or t.dtype != present[0].dtype for t in present):
        return "the fused op needs float32 or float64 tensors of one dtype"
    if load() is None:
        return f"the fused op could not be built ({_load_error})"
    return None


def _as_float(value: float | th.Tensor) -> float:
    return float(value.item()) if isinstance(value, th.Tensor) else float(value)


class FusedSequence(th.autograd.Function):
    """The whole sequence as one autograd node; see ``fast_weights.cpp`` for what is saved and recomputed.

    ``forward(input_terms (T, B, H), gate_terms (T, B, H) | None, state (B, D), starts (T, B), W (H, H),
    U (H, H) | None, gain (H,) | None, bias (H,) | None, λ, η (floats or 0-dim tensors), options)``
    -> outputs ``(T, B, H)``, packed state ``(B, D)``.
    """

    @staticmethod
    def forward(ctx, input_terms, gate_terms, state, starts, W, U, gain, bias, lam, eta, options):  # type: ignore[override]
        lam_f, eta_f = _as_float(lam), _as_float(eta)
        out, new_state, *saved = load().forward(
            input_terms, gate_terms, state, starts, W, U, gain, bias, lam_f, eta_f, *options, True
        )
        ctx.save_for_backward(out, state, starts, *saved, W, U, gain, bias)
        ctx.rates, ctx.options = (lam_f, eta_f), options
        return out, new_state

    @staticmethod
    @once_differentiable  # the backward pass is compiled code: no double backward through it
    def backward(ctx, grad_out, grad_state):  # type: ignore[override]
        out, state, starts, slow, xhat, rstd, z, W, U, gain, bias = ctx.saved_tensors
        want_lam = ctx.needs_input_grad[8]
        d_in, d_gin, d_state, dW, dU, d_gain, d_bias, d_lam, d_eta = load().backward(
            grad_out, grad_state, out, state, starts, slow, xhat, rstd, z, W, U, gain, bias, *ctx.rates,
            *ctx.options, want_lam,
        )  # fmt: skip
        needs = ctx.needs_input_grad
        return (
            d_in,
            d_gin if needs[1] else None,
            d_state if needs[2] else None,
            None,
            dW if needs[4] else None,
            dU if needs[5] else None,
            d_gain if needs[6] else None,
            d_bias if needs[7] else None,
            d_lam if want_lam else None,
            d_eta if needs[9] else None,
            None,
        )


def run(
    input_terms: th.Tensor,
    gate_terms: th.Tensor | None,
    state: th.Tensor,
    starts: th.Tensor,
    W: th.Tensor,
    U: th.Tensor | None,
    gain: th.Tensor | None,
    bias: th.Tensor | None,
    lam: float | th.Tensor,
    eta: float | th.Tensor,
    inner_steps: int,
    activation: str,
    eps: float,
) -> tuple[th.Tensor, th.Tensor]:
    """The fused sequence: outputs ``(T, B, H)`` and the packed state ``(B, D)``.

    ``input_terms`` = C x + c and ``gate_terms`` = G x + g (None: no gate) for every step; ``gain``/``bias``
    None: no layer norm. Without gradients it calls the op directly (no autograd node, nothing saved).
    """
    code = ACTIVATION_CODES[activation]
    options: tuple[Any, ...] = (inner_steps, code, gain is not None, gate_terms is not None, eps)
    args = (input_terms, gate_terms, state, starts, W, U, gain, bias)
    tensors = [t for t in (*args, lam, eta) if isinstance(t, th.Tensor)]
    if th.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return FusedSequence.apply(*args, lam, eta, options)
    out, new_state, *_ = load().forward(*args, _as_float(lam), _as_float(eta), *options, False)
    return out, new_state
