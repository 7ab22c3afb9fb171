"""The baseline cores share the fast-weights core's interface and reset semantics."""

import pytest
import torch as th

from fw_agents.memory import MEMORY_CORES, FastWeightsRNN, GRUCore, LSTMCore, NoMemoryCore

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
