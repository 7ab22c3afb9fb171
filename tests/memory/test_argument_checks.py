"""Bad arguments to the memory cores: a ValueError naming the argument, before anything is built or run."""

import numpy as np
import pytest
import torch as th

from fw_agents.memory import FastWeightsRNN, GRUCore, LSTMCore, NoMemoryCore, StackedCore

F_IN, H = 5, 6
NAN, INF = float("nan"), float("inf")

# (argument, bad value): every numeric option gets NaN, ±inf, a number too big for float32, a string and a bool.
FAST_WEIGHTS_BAD = [
    ("decay_rate", 0.0),
    ("decay_rate", -0.5),
    ("decay_rate", 1.5),
    ("decay_rate", NAN),
    ("decay_rate", INF),
    ("decay_rate", "0.9"),
    ("decay_rate", True),
    ("decay_rate", None),
    ("fast_learning_rate", -0.1),
    ("fast_learning_rate", NAN),
    ("fast_learning_rate", INF),
    ("fast_learning_rate", -INF),
    ("fast_learning_rate", 1e300),
    ("fast_learning_rate", "large"),
    ("fast_learning_rate", "0.5"),
    ("fast_learning_rate", False),
    ("fast_learning_rate", [0.5]),
    ("recurrent_init_scale", NAN),
    ("recurrent_init_scale", INF),
    ("recurrent_init_scale", -INF),
    ("recurrent_init_scale", 1e39),
    ("recurrent_init_scale", "0.05"),
    ("recurrent_init_scale", None),
    ("inner_steps", 0),
    ("inner_steps", -1),
    ("inner_steps", 1.0),
    ("inner_steps", "1"),
    ("inner_steps", True),
    ("hidden_size", 0),
    ("hidden_size", 6.0),
    ("hidden_size", NAN),
    ("input_size", 0),
    ("input_size", "5"),
    ("attention_max_len", 0),
    ("attention_max_len", 2.5),
    ("layer_norm", "maybe"),
    ("layer_norm", "False"),
    ("layer_norm", 1),
    ("layer_norm", None),
    ("layer_norm_gain", 0.0),
    ("layer_norm_gain", -0.3),
    ("layer_norm_gain", NAN),
    ("layer_norm_gain", "0.3"),
    ("gated", "yes"),
    ("gated", 0),
    ("learn_rates", "true"),
    ("learn_rates", 1.0),
    ("activation", "swish"),
    ("activation", None),
    ("activation", "ReLU"),
    ("compute_path", "fast"),
    ("compute_path", None),
    ("chrono_init", 2.0),
    ("chrono_init", NAN),
    ("chrono_init", INF),
    ("chrono_init", "100"),
    ("chrono_init", True),
]


@pytest.mark.parametrize(("name", "value"), FAST_WEIGHTS_BAD, ids=[f"{n}={v!r}" for n, v in FAST_WEIGHTS_BAD])
def test_fast_weights_rejects_bad_arguments(name, value):
    args = {"input_size": F_IN, "hidden_size": H, name: value}
    with pytest.raises(ValueError, match=name):
        FastWeightsRNN(**args)


def test_learn_rates_needs_room_to_learn():
    for kwargs in ({"decay_rate": 1.0}, {"fast_learning_rate": 0.0}):
        with pytest.raises(ValueError, match="learn_rates"):
            FastWeightsRNN(F_IN, H, learn_rates=True, **kwargs)


def test_fast_weights_accepts_numpy_scalars_and_balanced():
    core = FastWeightsRNN(
        F_IN, H, decay_rate=np.float32(0.9), fast_learning_rate=np.float64(0.1), layer_norm=np.bool_(True)
    )
    assert isinstance(core.decay_rate, float) and core.layer_norm is not None
    assert FastWeightsRNN(F_IN, H, fast_learning_rate="balanced", decay_rate=1.0).fast_learning_rate == 0.0


OTHER_BAD = [
    (LSTMCore, "hidden_size", 0),
    (LSTMCore, "num_layers", 0),
    (LSTMCore, "dropout", NAN),
    (LSTMCore, "dropout", "0.1"),
    (LSTMCore, "dropout", 1.5),
    (GRUCore, "input_size", -3),
    (GRUCore, "num_layers", 2.0),
    (GRUCore, "dropout", INF),
    (NoMemoryCore, "hidden_size", "8"),
    (NoMemoryCore, "input_size", 0),
]


@pytest.mark.parametrize(("core_class", "name", "value"), OTHER_BAD)
def test_other_cores_reject_bad_arguments(core_class, name, value):
    args = {"input_size": F_IN, "hidden_size": H, name: value}
    with pytest.raises(ValueError, match=name):
        core_class(**args)


@pytest.mark.parametrize(("name", "value"), [("num_layers", 0), ("dropout", NAN), ("dropout", -0.1), ("dropout", "0")])
def test_build_rejects_bad_stacking(name, value):
    args = {"input_size": F_IN, "hidden_size": H, "num_layers": 2, name: value}
    with pytest.raises(ValueError, match=name):
        FastWeightsRNN.build(**args)


CORES = {
    "fast-weights": lambda: FastWeightsRNN(F_IN, H, compute_path="explicit"),
    "lstm": lambda: LSTMCore(F_IN, H),
    "gru": lambda: GRUCore(F_IN, H),
    "mlp": lambda: NoMemoryCore(F_IN, H),
    "stacked": lambda: StackedCore([GRUCore(F_IN, H), FastWeightsRNN(H, H, compute_path="explicit")]),
}
T, B = 3, 2
# (what is wrong, inputs shape, state rows or columns off, episode_starts shape, expected word in the message).
BAD_SHAPES = [
    ("inputs 2-d", (T * B, F_IN), 0, (T, B), "inputs"),
    ("inputs 4-d", (T, B, 1, F_IN), 0, (T, B), "inputs"),
    ("inputs features", (T, B, F_IN + 1), 0, (T, B), "inputs"),
    ("state batch", (T, B, F_IN), (B + 1, 0), (T, B), "state"),
    ("state size", (T, B, F_IN), (B, 1), (T, B), "state"),
    ("starts flat", (T, B, F_IN), 0, (T * B,), "episode_starts"),
    ("starts transposed", (T, B, F_IN), 0, (B, T), "episode_starts"),
    ("starts short", (T, B, F_IN), 0, (T - 1, B), "episode_starts"),
]


@pytest.mark.parametrize("core_name", CORES)
@pytest.mark.parametrize(
    ("case", "input_shape", "state_change", "starts_shape", "word"), BAD_SHAPES, ids=[c[0] for c in BAD_SHAPES]
)
def test_forward_rejects_wrong_shapes(core_name, case, input_shape, state_change, starts_shape, word):
    core = CORES[core_name]()
    rows, extra = (B, 0) if state_change == 0 else (state_change[0], state_change[1])
    if core_name == "mlp" and word == "state" and extra:
        extra = 1  # an empty state: one column too many
    inputs = th.zeros(input_shape)
    state = th.zeros(rows, core.state_size + extra)
    with pytest.raises(ValueError, match=word):
        core(inputs, state, th.zeros(starts_shape))
