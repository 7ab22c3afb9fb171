"""Stacked memory layers (``MemoryCore.build(num_layers=…)``, :class:`StackedCore`), for every core."""

import pytest
import torch as th

from fw_agents.memory import MEMORY_CORES, FastWeightsRNN, GRUCore, LSTMCore, NoMemoryCore, StackedCore

F_IN, H = 4, 6


@pytest.mark.parametrize("name", sorted(MEMORY_CORES))
def test_build_one_layer_is_the_core_itself(name):
    core = MEMORY_CORES[name].build(F_IN, H)
    assert type(core) is MEMORY_CORES[name] and core.state_size == MEMORY_CORES[name](F_IN, H).state_size


@pytest.mark.parametrize("core_class", [LSTMCore, GRUCore])
def test_torch_cores_stack_natively(core_class):
    core = core_class.build(F_IN, H, num_layers=2, dropout=0.25)
    assert type(core) is core_class and core.rnn.num_layers == 2 and core.rnn.dropout == 0.25


@pytest.mark.parametrize("core_class", [FastWeightsRNN, NoMemoryCore])
def test_a_stack_is_its_layers_one_above_the_other(core_class):
    """Outputs and packed state equal running layer 0, then layer 1 on its outputs, with the same resets."""
    th.manual_seed(0)
    stack = core_class.build(F_IN, H, num_layers=2)
    assert isinstance(stack, StackedCore) and stack.state_size == 2 * core_class(F_IN, H).state_size
    bottom, top = stack.layers
    assert (bottom.input_size, top.input_size) == (F_IN, H)
    T, B = 7, 3
    x, state = th.randn(T, B, F_IN), th.rand(B, stack.state_size)
    starts = th.zeros(T, B)
    starts[3, 1] = 1.0
    out, new_state = stack(x, state, starts)
    bottom_out, bottom_state = bottom(x, state[:, : bottom.state_size], starts)
    top_out, top_state = top(bottom_out, state[:, bottom.state_size :], starts)
    th.testing.assert_close(out, top_out)
    th.testing.assert_close(new_state, th.cat([bottom_state, top_state], dim=1))


def test_dropout_between_layers_only_while_training():
    th.manual_seed(0)
    stack = FastWeightsRNN.build(F_IN, H, num_layers=2, dropout=0.5)
    x, state, starts = th.randn(5, 3, F_IN), th.zeros(3, stack.state_size), th.zeros(5, 3)
    stack.eval()
    th.testing.assert_close(stack(x, state, starts)[0], stack(x, state, starts)[0])
    stack.train()
    assert not th.allclose(stack(x, state, starts)[0], stack.eval()(x, state, starts)[0])


def test_invalid_stacks():
    with pytest.raises(ValueError, match="num_layers"):
        FastWeightsRNN.build(F_IN, H, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        NoMemoryCore.build(F_IN, H, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="dropout"):
        GRUCore.build(F_IN, H, num_layers=2, dropout=-0.1)
    with pytest.raises(ValueError, match="layer 1 takes inputs of size 4, but layer 0 outputs 6"):
        StackedCore([NoMemoryCore(F_IN, H), NoMemoryCore(F_IN, H)])
    with pytest.warns(UserWarning, match="dropout"):
        FastWeightsRNN.build(F_IN, H, num_layers=1, dropout=0.5)


def test_option_names():
    assert GRUCore.option_names() == ["dropout"]
    assert NoMemoryCore.option_names() == ["dropout"]
    options = FastWeightsRNN.option_names()
    assert options[0] == "dropout" and {"decay_rate", "fast_learning_rate", "inner_steps"} <= set(options)
    assert not {"input_size", "hidden_size", "num_layers"} & set(options)
