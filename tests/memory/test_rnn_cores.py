"""The baseline cores share the fast-weights core's interface and reset semantics."""

import pytest
import torch as th

from fw_agents.memory import MEMORY_CORES, FastWeightsRNN, GRUCore, LSTMCore, NoMemoryCore
from fw_agents.memory.gru_sequence import gru_sequence
from fw_agents.memory.rnn import TorchRNNCore

F_IN, H = 4, 6


@pytest.mark.parametrize("core_class", [LSTMCore, GRUCore])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_matches_torch_rnn_without_resets(core_class, num_layers):
    th.manual_seed(0)
    core = core_class(F_IN, H, num_layers=num_layers)
    x = th.randn(7, 3, F_IN)
    state = th.randn(3, core.state_size)
    out, new_state = core(x, state, th.zeros(7, 3))
    rnn_state = core._unpack(state)
    ref_out, ref_state = core.rnn(x, rnn_state if core.n_parts == 2 else rnn_state[0])
    th.testing.assert_close(out, ref_out)
    th.testing.assert_close(new_state, core._pack(ref_state if core.n_parts == 2 else (ref_state,)))


@pytest.mark.parametrize("num_layers", [1, 3], ids=["one-layer", "stacked"])
@pytest.mark.parametrize("name", sorted(MEMORY_CORES))
def test_reset_at_k_equals_fresh_sequence_from_k(name, num_layers):
    th.manual_seed(0)
    core = MEMORY_CORES[name].build(F_IN, H, num_layers=num_layers)
    T, B, k = 9, 3, 4
    x = th.randn(T, B, F_IN)
    starts = th.zeros(T, B)
    starts[k] = 1.0
    out, state = core(x, th.rand(B, core.state_size), starts)
    fresh_out, fresh_state = core(x[k:], core.initial_state(B), th.zeros(T - k, B))
    th.testing.assert_close(out[k:], fresh_out)
    th.testing.assert_close(state, fresh_state)


@pytest.mark.parametrize("name", sorted(MEMORY_CORES))
def test_a_reset_in_one_env_leaves_the_others_alone(name):
    th.manual_seed(0)
    core = MEMORY_CORES[name](F_IN, H)
    x = th.randn(6, 2, F_IN)
    state = th.rand(2, core.state_size)
    starts = th.zeros(6, 2)
    out, _ = core(x, state, starts)
    starts[3, 0] = 1.0
    out_reset, _ = core(x, state, starts)
    th.testing.assert_close(out[:, 1], out_reset[:, 1])
    th.testing.assert_close(out[:3, 0], out_reset[:3, 0])


def test_state_sizes():
    assert LSTMCore(F_IN, H, num_layers=2).state_size == 2 * 2 * H
    assert GRUCore(F_IN, H).state_size == H
    assert NoMemoryCore(F_IN, H).state_size == 0
    assert FastWeightsRNN(F_IN, H).state_size == H + H * (H + 1) // 2


@pytest.mark.parametrize("name", sorted(MEMORY_CORES))
def test_step_equals_one_step_sequence(name):
    th.manual_seed(0)
    core = MEMORY_CORES[name](F_IN, H)
    x, state, start = th.randn(3, F_IN), th.rand(3, core.state_size), th.tensor([0.0, 1.0, 0.0])
    out, new_state = core.step(x, state, start)
    seq_out, seq_state = core(x.unsqueeze(0), state, start.unsqueeze(0))
    th.testing.assert_close(out, seq_out[0])
    th.testing.assert_close(new_state, seq_state)


def test_invalid_num_layers():
    with pytest.raises(ValueError, match="num_layers"):
        GRUCore(F_IN, H, num_layers=0)


def gru_loss_and_grads(core, x, state, starts, weights):
    """A loss over every output and the last state, and its gradients to the inputs, the state and the weights."""
    out, last = core(x, state, starts)
    loss = (out * weights[0]).sum() + (last * weights[1]).sum()
    return out, last, th.autograd.grad(loss, [x, state, *core.parameters()])


class TorchGRUCore(GRUCore):
    """The same core through torch.nn.GRU's own autograd."""

    _run = TorchRNNCore._run


@pytest.mark.parametrize(("num_layers", "dropout"), [(1, 0.0), (2, 0.0), (2, 0.3)])
@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_gru_training_path_matches_torch_nn_gru(dtype, num_layers, dropout):
    """The GRU's training path (fw_agents.memory.gru_sequence per layer) gives torch.nn.GRU's outputs bit for bit
    (with dropout between layers: the same draws) and autograd's gradients up to rounding, through resets and into
    the initial state."""
    th.manual_seed(0)
    core = GRUCore(F_IN, H, num_layers=num_layers, dropout=dropout).to(dtype)
    T, B = 23, 4
    x = th.randn(T, B, F_IN, dtype=dtype, requires_grad=True)
    state = th.randn(B, core.state_size, dtype=dtype, requires_grad=True)
    starts = th.zeros(T, B)
    starts[5, 1] = starts[17, 0] = 1.0
    weights = th.randn(T, B, H, dtype=dtype), th.randn(B, core.state_size, dtype=dtype)
    th.manual_seed(1)
    out, last, grads = gru_loss_and_grads(core, x, state, starts, weights)

    reference = TorchGRUCore(F_IN, H, num_layers=num_layers, dropout=dropout).to(dtype)
    reference.load_state_dict(core.state_dict())
    th.manual_seed(1)
    ref_out, ref_last, ref_grads = gru_loss_and_grads(reference, x, state, starts, weights)
    assert th.equal(out, ref_out) and th.equal(last, ref_last)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        th.testing.assert_close(grad, ref_grad, rtol=1e-5 if dtype == th.float32 else 1e-12, atol=1e-6)


def test_gru_sequence_gradcheck():
    th.manual_seed(0)
    T, B, F, Hs = 5, 3, 2, 4
    inputs = [
        th.randn(T, B, F, dtype=th.float64, requires_grad=True),
        th.randn(B, Hs, dtype=th.float64, requires_grad=True),
        *(
            th.randn(*shape, dtype=th.float64, requires_grad=True)
            for shape in ((3 * Hs, F), (3 * Hs, Hs), (3 * Hs,), (3 * Hs,))
        ),
    ]
    assert th.autograd.gradcheck(gru_sequence, inputs)


@pytest.mark.parametrize(("num_layers", "dropout"), [(1, 0.0), (2, 0.3)])
def test_gru_rollout_path_matches_torch_nn_gru(num_layers, dropout):
    """Without a gradient (rollout steps) the GRU calls torch's GRU directly: torch.nn.GRU's outputs bit for bit,
    dropout draws included."""
    th.manual_seed(0)
    core = GRUCore(F_IN, H, num_layers=num_layers, dropout=dropout)
    reference = TorchGRUCore(F_IN, H, num_layers=num_layers, dropout=dropout)
    reference.load_state_dict(core.state_dict())
    x, state, starts = th.randn(6, 3, F_IN), th.randn(3, core.state_size), th.zeros(6, 3)
    starts[2, 1] = 1.0
    results = []
    for model in (core, reference):
        th.manual_seed(1)
        with th.no_grad():
            results.append(model(x, state, starts))
    assert th.equal(results[0][0], results[1][0]) and th.equal(results[0][1], results[1][1])
