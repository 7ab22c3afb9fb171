"""An episode start clears a NaN or inf from a core's state: resets select zeros, they never multiply by zero.

For every core and compute path, env 0 carries a state full of NaN (or ±inf) into a sequence that starts a new
episode at step 0; env 1 carries an ordinary state and no reset. The outputs and the final state must equal those
of the same run from a zero state for env 0, bit for bit, and the gradients must be finite, with none flowing into
the reset env's carried-in state.
"""

from collections.abc import Callable

import pytest
import torch as th

from fw_agents.memory import FastWeightsRNN, GRUCore, LSTMCore, MemoryCore, NoMemoryCore, StackedCore, _fused

F_IN, H, T = 5, 8, 6
FUSED = _fused.load() is not None
needs_fused = pytest.mark.skipif(not FUSED, reason=f"fused op unavailable: {_fused.load_error()}")


def fast_weights(path: str, **kwargs) -> Callable[[], MemoryCore]:
    return lambda: FastWeightsRNN(F_IN, H, decay_rate=0.9, fast_learning_rate=0.4, compute_path=path, **kwargs)


CORES: dict[str, Callable[[], MemoryCore]] = {
    "fw-explicit": fast_weights("explicit"),
    "fw-explicit-gated-learned": fast_weights("explicit", gated=True, learn_rates=True),
    "fw-attention": fast_weights("attention"),
    "fw-attention-gated-learned": fast_weights("attention", gated=True, learn_rates=True),
    "fw-fused": fast_weights("fused"),
    "fw-fused-gated-learned": fast_weights("fused", gated=True, learn_rates=True, inner_steps=2),
    "lstm": lambda: LSTMCore(F_IN, H),
    "lstm-2-layers": lambda: LSTMCore(F_IN, H, num_layers=2),
    "gru": lambda: GRUCore(F_IN, H),
    "mlp": lambda: NoMemoryCore(F_IN, H),
    "stacked-fw-fused": lambda: FastWeightsRNN.build(F_IN, H, num_layers=2, compute_path="fused"),
    "stacked-fw-attention": lambda: FastWeightsRNN.build(F_IN, H, num_layers=2, compute_path="attention"),
    "stacked-gru-lstm-fw": lambda: StackedCore(
        [GRUCore(F_IN, H), LSTMCore(H, H), FastWeightsRNN(H, H, compute_path="explicit")]
    ),
}
POISONS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def core_params():
    for name in CORES:
        marks = [needs_fused] if "fused" in name else []
        yield pytest.param(name, marks=marks, id=name)


def run(core: MemoryCore, x: th.Tensor, state: th.Tensor, starts: th.Tensor):
    """Outputs, final state and the gradients of a loss on both w.r.t. the carried-in state and every parameter."""
    state = state.clone().requires_grad_(True)
    out, new_state = core(x, state, starts)
    loss = out.sum() + (out**2).sum() + new_state.sum()
    params = [p for p in core.parameters() if p.requires_grad]
    grads = th.autograd.grad(loss, [state, *params], allow_unused=True)
    return out.detach(), new_state.detach(), grads


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("name", core_params())
def test_a_reset_at_step_0_clears_nonfinite_state(name, poison):
    th.manual_seed(0)
    core = CORES[name]()
    x = th.randn(T, 2, F_IN)
    # Env 1: an ordinary state (the fast-weights triangle too), no reset. Env 0: poisoned, reset at step 0.
    clean = 0.3 * th.randn(2, core.state_size)
    clean[0] = 0.0
    poisoned = clean.clone()
    poisoned[0] = POISONS[poison]
    starts = th.zeros(T, 2)
    starts[0, 0] = 1.0

    out_clean, state_clean, grads_clean = run(core, x, clean, starts)
    out, state, grads = run(core, x, poisoned, starts)

    assert th.isfinite(out).all() and th.isfinite(state).all()
    # Identical to the run from a zero state, bit for bit: env 0 as a fresh episode, env 1 unaffected.
    assert th.equal(out, out_clean)
    assert th.equal(state, state_clean)
    for grad, grad_clean in zip(grads, grads_clean, strict=True):
        if grad is None:
            continue
        assert th.isfinite(grad).all()
        assert th.allclose(grad, grad_clean, rtol=1e-5, atol=1e-6)
    # Nothing flows back into the state of an env that was reset before its first step.
    assert th.equal(grads[0][0], th.zeros_like(grads[0][0]))


@pytest.mark.parametrize("name", [n for n in core_params() if not n.values[0].startswith("mlp")])
def test_a_reset_mid_sequence_clears_nonfinite_state(name):
    """A NaN state before a reset at step k: the steps from k on equal a fresh run from k (forward only: the
    steps before k are NaN, as they should be). The attention path keeps the sequence's earlier hidden states as
    keys; the reset selects them away as well."""
    th.manual_seed(0)
    core = CORES[name]()
    k = 3
    x = th.randn(T, 2, F_IN)
    state = 0.3 * th.randn(2, core.state_size)
    state[0] = float("nan")
    starts = th.zeros(T, 2)
    starts[k, 0] = 1.0
    with th.no_grad():
        out, final = core(x, state, starts)
        fresh_starts = th.zeros(T - k, 1)
        fresh_starts[0] = 1.0
        fresh_out, fresh_final = core(x[k:, :1], th.zeros(1, core.state_size), fresh_starts)
    assert th.isfinite(out[k:, 0]).all() and th.isfinite(final[0]).all()
    assert th.allclose(out[k:, 0], fresh_out[:, 0], atol=1e-6)
    assert th.allclose(final[0], fresh_final[0], atol=1e-6)
