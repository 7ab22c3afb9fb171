"""The fused op (fw_agents/memory/_fused) against the PyTorch explicit path and finite differences."""

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch as th
from torch.utils import cpp_extension

from fw_agents.memory import FastWeightsRNN, _fused
from tests.memory.test_fast_weights import F_IN, make_core, random_state, saved_bytes_for_backward

pytestmark = pytest.mark.skipif(_fused.load() is None, reason=f"fused op unavailable: {_fused.load_error()}")


def make_pair(**kwargs) -> tuple[FastWeightsRNN, FastWeightsRNN]:
    """The same core (same parameters) on the explicit path and on the fused path."""
    kwargs = {"decay_rate": 0.9, "fast_learning_rate": 0.4, **kwargs}
    return make_core("explicit", **kwargs), make_core("fused", **kwargs)


def random_sequence(T: int, B: int, scale: float = 1.0, dtype=th.float64) -> tuple[th.Tensor, th.Tensor]:
    """Inputs and episode starts with resets at random steps, the first step of env 0 among them."""
    x = scale * th.randn(T, B, F_IN, dtype=dtype)
    starts = (th.rand(T, B) < 0.2).to(dtype)
    starts[0, 0] = 1.0
    return x, starts


def outputs_and_grads(core: FastWeightsRNN, x: th.Tensor, state: th.Tensor, starts: th.Tensor):
    """Outputs, new state and the gradients of a loss of both w.r.t. inputs, the state and every parameter."""
    x, state = x.clone().requires_grad_(True), state.clone().requires_grad_(True)
    out, new_state = core(x, state, starts)
    weights = th.linspace(-1, 1, new_state.shape[1], dtype=x.dtype)
    loss = (out * out.detach().sign()).sum() + (out[-1] ** 2).sum() + (new_state * weights).sum()
    grads = th.autograd.grad(loss, [x, state, *core.parameters()])
    return out, new_state, grads


def assert_same(explicit, fused, x, state, starts, **tolerances):
    out_e, state_e, grads_e = outputs_and_grads(explicit, x, state, starts)
    out_f, state_f, grads_f = outputs_and_grads(fused, x, state, starts)
    th.testing.assert_close(out_f, out_e, **tolerances)
    th.testing.assert_close(state_f, state_e, **tolerances)
    names = ["inputs", "state"] + [name for name, _ in explicit.named_parameters()]
    for name, g_e, g_f in zip(names, grads_e, grads_f, strict=True):
        th.testing.assert_close(g_f, g_e, msg=lambda m, name=name: f"gradient w.r.t. {name}: {m}", **tolerances)


@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize(
    "options",
    [{}, {"gated": True, "learn_rates": True}, {"gated": True, "recurrent_step_scale": 0.3}],
    ids=["paper", "gated-learned", "recurrent-step-scale"],
)
def test_fused_matches_explicit(inner_steps, layer_norm, options):
    explicit, fused = make_pair(inner_steps=inner_steps, layer_norm=layer_norm, **options)
    scale = 1.0 if layer_norm else 0.1  # without LN the fast term grows like |h|³: keep it small
    for core in (explicit, fused):
        with th.no_grad():
            core.input_to_hidden.weight.mul_(scale)
            core.input_to_hidden.bias.mul_(scale)
    x, starts = random_sequence(11, 4, scale)
    assert_same(explicit, fused, x, random_state(explicit, 4, scale=0.3 * scale), starts)


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "gelu", "identity"])
@pytest.mark.parametrize("options", [{}, {"gated": True}, {"learn_rates": True}], ids=["paper", "gated", "learned"])
def test_fused_matches_explicit_every_activation(activation, options):
    explicit, fused = make_pair(activation=activation, inner_steps=2, **options)
    x, starts = random_sequence(7, 3)
    assert_same(explicit, fused, x, random_state(explicit, 3), starts)


@pytest.mark.parametrize(("T", "B"), [(1, 1), (1, 5), (6, 1)])
def test_fused_single_step_and_single_env(T, B):
    explicit, fused = make_pair(gated=True)
    x, starts = random_sequence(T, B)
    starts[0] = 0.0  # a carried-in A is read at the first step
    assert_same(explicit, fused, x, random_state(explicit, B), starts)
    with th.no_grad():  # the rollout path: the op called directly, no autograd node
        state = random_state(explicit, B)
        expected = explicit.step(x[0], state, starts[0])
        for got, want in zip(fused.step(x[0], state, starts[0]), expected, strict=True):
            th.testing.assert_close(got, want)


def test_fused_resets_everywhere_and_nowhere():
    explicit, fused = make_pair(learn_rates=True, inner_steps=3)
    x, _ = random_sequence(6, 2)
    for starts in (th.ones(6, 2, dtype=th.float64), th.zeros(6, 2, dtype=th.float64)):
        assert_same(explicit, fused, x, random_state(explicit, 2), starts)


def test_fused_long_sequence_crosses_checkpoint_segments():
    """T = 40: the backward pass rebuilds A(t) from √T checkpoints; a reset falls inside a segment."""
    explicit, fused = make_pair(gated=True, learn_rates=True, decay_rate=0.97)
    x, starts = random_sequence(40, 2)
    starts.zero_()
    starts[23, 1] = 1.0
    assert_same(explicit, fused, x, random_state(explicit, 2), starts)


@pytest.mark.parametrize("new_state_in_loss", [True, False], ids=["state-gradient", "no-state-gradient"])
def test_fused_runs_of_resets(new_state_in_loss):
    """In a run of resets the op skips the A writes that the next reset overwrites, and the reads of an A or a
    dL/dA known to be zero (RecurrentPPO marks sequences' padding so). T = 40: checkpoint segments of 7 steps."""
    explicit, fused = make_pair(gated=True, learn_rates=True, inner_steps=2, decay_rate=0.97)
    x, starts = random_sequence(40, 4)
    starts.zero_()
    starts[13:, 0] = 1.0  # padding after a 13-step sequence, to the last step
    starts[5:10, 1] = starts[14:21, 1] = 1.0  # runs that end inside a segment; one starts at a segment's first step
    starts[20:, 2] = 1.0  # from the last step of a segment to the end
    starts[[0, 1, 2, 39], 3] = 1.0  # a run at the start, a single reset at the last step
    state = random_state(explicit, 4)
    if new_state_in_loss:
        assert_same(explicit, fused, x, state, starts)
        return
    results = []
    for core in (explicit, fused):
        inputs = (x.clone().requires_grad_(True), state.clone().requires_grad_(True))
        out, _ = core(*inputs, starts)  # no gradient reaches the new state: dL/dA starts at zero
        loss = (out * out.detach().sign()).sum()
        results.append([out, *th.autograd.grad(loss, [*inputs, *core.parameters()])])
    for got, want in zip(*reversed(results), strict=True):
        th.testing.assert_close(got, want)


@pytest.mark.parametrize("options", [{}, {"gated": True, "learn_rates": True, "inner_steps": 3}], ids=["paper", "all"])
def test_fused_gradcheck(options):
    """float64 finite differences w.r.t. inputs, carried-in state and every parameter (small sizes)."""
    hidden = 4
    th.manual_seed(1)
    core = FastWeightsRNN(3, hidden, compute_path="fused", decay_rate=0.8, fast_learning_rate=0.5, **options).double()
    with th.no_grad():
        for p in core.parameters():
            p.add_(0.2 * th.randn_like(p))
    T, B = 5, 2
    x = th.randn(T, B, 3, dtype=th.float64)
    starts = th.zeros(T, B, dtype=th.float64)
    starts[2, 1] = 1.0
    h = 0.3 * th.rand(B, hidden, dtype=th.float64)
    M = 0.3 * th.randn(B, hidden, hidden, dtype=th.float64)
    state = core.pack(h, M + M.transpose(1, 2))
    names = [name for name, _ in core.named_parameters()]
    params = [p.detach().clone() for p in core.parameters()]

    def functional(x, state, *values):
        return th.func.functional_call(core, dict(zip(names, values, strict=True)), (x, state, starts))

    inputs = tuple(t.requires_grad_(True) for t in (x, state, *params))
    assert th.autograd.gradcheck(functional, inputs)


def test_fused_float32_matches_explicit_to_1e_5():
    explicit, fused = make_pair(gated=True, learn_rates=True, inner_steps=3)
    state = random_state(explicit, 4).float()
    explicit, fused = explicit.float(), fused.float()
    x, starts = random_sequence(16, 4, dtype=th.float32)
    assert_same(explicit, fused, x, state, starts, atol=1e-5, rtol=1e-5)


def test_auto_uses_fused_and_it_saves_no_fast_weight_matrices():
    T, B, hidden = 32, 4, 64
    core = FastWeightsRNN(F_IN, hidden, gated=True, learn_rates=True)
    assert core._choose_path(th.zeros(T, B, F_IN), core.initial_state(B)) == "fused"
    # Outputs, slow terms, x̂, 1/σ and z: O(T·B·H), far below one A per step.
    assert saved_bytes_for_backward(core, T, B) < T * B * hidden * hidden * 4 / 8


def test_fallback_warns_once_and_matches(monkeypatch):
    """A dtype the op does not take falls back to the PyTorch path with one warning per process."""
    explicit, fused = make_pair()
    explicit, fused = explicit.to(th.bfloat16), fused.to(th.bfloat16)
    x = th.randn(1, 2, F_IN, dtype=th.bfloat16)  # T = 1: the fallback is the explicit path
    state = fused.initial_state(2).to(th.bfloat16)
    monkeypatch.setattr(_fused, "_warned", set())
    with pytest.warns(RuntimeWarning, match="float32 or float64"):
        out, _ = fused(x, state, th.zeros(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(x, state, th.zeros(1, 2))  # no second warning
    th.testing.assert_close(out, explicit(x, state, th.zeros(1, 2))[0])


def test_fallback_when_the_op_cannot_be_built(monkeypatch):
    explicit, fused = make_pair()
    monkeypatch.setattr(_fused, "load", lambda: None)
    monkeypatch.setattr(_fused, "_warned", set())
    x, starts = random_sequence(4, 2)
    state = random_state(explicit, 2)
    with pytest.warns(RuntimeWarning, match="could not be built"):
        out, new_state = fused(x, state, starts)
    th.testing.assert_close(out, explicit(x, state, starts)[0])


@pytest.mark.parametrize("hidden", [1, 7, 10])
def test_fused_hidden_sizes_not_a_multiple_of_four(hidden):
    """The op works on blocks of four rows: the remaining rows take another branch."""
    th.manual_seed(0)
    explicit = FastWeightsRNN(F_IN, hidden, compute_path="explicit", gated=True).double()
    fused = FastWeightsRNN(F_IN, hidden, compute_path="fused", gated=True).double()
    fused.load_state_dict(explicit.state_dict())
    x, starts = random_sequence(6, 3)
    h = 0.3 * th.rand(3, hidden, dtype=th.float64)
    M = 0.3 * th.randn(3, hidden, hidden, dtype=th.float64)
    assert_same(explicit, fused, x, explicit.pack(h, M + M.transpose(1, 2)), starts)


#: A process that loads the op (building it if needed) and prints ok.
LOAD_SCRIPT = (
    "from fw_agents.memory import _fused\nassert _fused.load() is not None, _fused.load_error()\nprint('ok')\n"
)

#: A process that runs the op forward and backward and prints ok.
OP_SCRIPT = (
    "import torch as th\n"
    "from fw_agents.memory import FastWeightsRNN, _fused\n"
    "assert _fused.load() is not None, _fused.load_error()\n"
    "core = FastWeightsRNN(3, 8, compute_path='fused')\n"
    "out, state = core(th.randn(4, 2, 3), core.initial_state(2), th.zeros(4, 2))\n"
    "out.sum().backward()\n"
    "print('ok')\n"
)


@pytest.mark.slow
def test_first_use_builds_in_a_fresh_folder_and_concurrent_builds_are_safe(tmp_path):
    """Two processes building at once into an empty TORCH_EXTENSIONS_DIR both get a working op (torch's file lock)."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", OP_SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=600) for run in runs]
    for run, (stdout, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0 and stdout.strip() == "ok", stderr
    assert sum("compiling the fused fast-weights op" in stderr for _, stderr in results) >= 1


def test_a_built_op_loads_despite_a_lock_left_by_a_killed_process(tmp_path):
    """torch's build lock, left by a process killed while holding it (kill -9), made every later process wait
    forever. A built library is loaded without it: a fresh process with that lock file in its folder gets the op."""
    name = _fused.extension_name()
    built = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()) / name / f"{name}.so"
    (tmp_path / name).mkdir()
    shutil.copy(built, tmp_path / name / built.name)
    (tmp_path / name / "lock").touch()  # as a killed process leaves it
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert "compiling" not in result.stderr


@pytest.mark.slow
def test_a_build_killed_mid_compile_leaves_nothing_that_blocks_the_next(tmp_path):
    """kill -9 during the first compile leaves torch's lock (and maybe half a build): the next process, started at
    once, builds the op instead of waiting forever on that lock."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=env, stderr=subprocess.DEVNULL)
    torch_lock = tmp_path / _fused.extension_name() / "lock"
    deadline = time.monotonic() + 120
    while not torch_lock.exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # the compiler is running
    first.kill()
    first.wait()
    assert torch_lock.exists()
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow
def test_a_foreign_library_in_the_cache_is_set_aside_and_the_op_built(tmp_path):
    """A library that loads but is not the op (here the C maths library) sat where the op's library goes: it is
    moved aside and the op built, instead of failing at the op's first call."""
    name = _fused.extension_name()
    (tmp_path / name).mkdir()
    shutil.copy(_libm_path(), tmp_path / name / f"{name}.so")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", OP_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert (tmp_path / name / f"{name}.so.unusable").exists()
    again = subprocess.run([sys.executable, "-c", OP_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "compiling" not in again.stderr, again.stderr  # the next process loads it


def _libm_path() -> str:
    """The path of the loaded C maths library (any shared library that loads and registers no op would do)."""
    with open("/proc/self/maps") as maps:  # torch links it: it is mapped in this process
        paths = {line.split()[-1] for line in maps if line.rstrip().endswith("/libm.so.6")}
    assert paths
    return sorted(paths)[0]
