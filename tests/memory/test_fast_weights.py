"""FastWeightsRNN against the paper's equations, written out plainly here, one environment at a time."""

import math

import pytest
import torch as th

from fw_agents.memory import FastWeightsRNN

F_IN, H = 5, 12


def reference_run(core: FastWeightsRNN, inputs, h, A, starts):
    """The paper's equations for ONE environment with plain vectors and matrices, no batching tricks.

    inputs (T, F), h (H,), A (H, H), starts (T,) -> outputs (T, H), h, A.
    """
    W = core.recurrent_step_scale * core.hidden_to_hidden.weight  # stored as W / s
    C, b = core.input_to_hidden.weight, core.input_to_hidden.bias
    lam, eta = core.decay_rate, core.fast_learning_rate
    if core.learn_rates:  # λ = sigmoid(logit), η = exp(log η)
        lam, eta = 1 / (1 + th.exp(-core.decay_logit)), th.exp(core.log_fast_learning_rate)
    outputs = []
    for t in range(inputs.shape[0]):
        if starts[t]:
            h, A = th.zeros_like(h), th.zeros_like(A)
        z = W @ h + C @ inputs[t] + b
        hs = th.relu(z)  # h_0(t+1): slow weights only
        for _ in range(core.inner_steps):
            read = A @ hs
            if core.read_gain is not None:  # g ⊙ A h_s / tr A
                read = core.read_gain * read / (th.trace(A) + 1e-8)
            u = z + read
            if isinstance(core.layer_norm, th.nn.LayerNorm):
                # Layer norm over the hidden units of this one sample (biased variance, as in the paper's LN).
                u = (u - u.mean()) / th.sqrt(u.var(unbiased=False) + core.layer_norm.eps)
                u = u * core.layer_norm.weight + core.layer_norm.bias
            hs = th.relu(u)
        if core.gated:  # z = σ(G x + U h + b): h(t+1) = h(t) + z ⊙ (h_S(t+1) − h(t))
            G, bz = core.input_to_gate.weight, core.input_to_gate.bias
            U = core.recurrent_step_scale * core.hidden_to_gate.weight
            gate = th.sigmoid(G @ inputs[t] + bz + U @ h)
            hs = h + gate * (hs - h)
        h = hs
        A = lam * A + eta * th.outer(h, h)  # A(t+1) contains h(t+1)
        outputs.append(h)
    return th.stack(outputs), h, A


def make_core(path="explicit", **kwargs) -> FastWeightsRNN:
    th.manual_seed(0)
    core = FastWeightsRNN(F_IN, H, compute_path=path, **kwargs).double()
    with th.no_grad():  # non-trivial LN gain/bias and W, so a test cannot pass by symmetry
        core.hidden_to_hidden.weight.add_(0.1 * th.randn(H, H, dtype=th.float64))
        if isinstance(core.layer_norm, th.nn.LayerNorm):
            core.layer_norm.weight.add_(0.3 * th.randn(H, dtype=th.float64))
            core.layer_norm.bias.add_(0.3 * th.randn(H, dtype=th.float64))
        if core.read_gain is not None:
            core.read_gain.add_(0.3 * th.randn(H, dtype=th.float64))
    return core


def random_state(core, batch, scale=0.3):
    """A random carried h and A; A positive semi-definite (M Mᵀ), as every A the cell writes is."""
    h = scale * th.rand(batch, H, dtype=th.float64)
    M = scale * th.randn(batch, H, H, dtype=th.float64)
    return core.pack(h, M @ M.transpose(1, 2) / H)


@pytest.mark.parametrize("path", ["explicit", "attention"])
@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"gated": True, "learn_rates": True},
        {"gated": True, "learn_rates": True, "fast_read_gain": 0.7},
        {"gated": True, "learn_rates": True, "recurrent_step_scale": 0.3},
    ],
    ids=["paper", "gated-learned", "normalised-read", "recurrent-step-scale"],
)
def test_matches_paper_equations(path, inner_steps, layer_norm, options):
    core = make_core(
        path, inner_steps=inner_steps, layer_norm=layer_norm, decay_rate=0.9, fast_learning_rate=0.4, **options
    )
    T, B = 9, 3
    # Without layer norm the fast term grows like |h|³ per step: keep the scale small so nothing overflows.
    scale = 1.0 if layer_norm else 0.1
    x = scale * th.randn(T, B, F_IN, dtype=th.float64)
    starts = th.zeros(T, B, dtype=th.float64)
    starts[4, 1] = 1.0
    starts[0, 2] = 1.0
    state = random_state(core, B, scale=0.3 * scale)
    with th.no_grad():
        core.input_to_hidden.weight.mul_(scale)
        core.input_to_hidden.bias.mul_(scale)
    out, new_state = core(x, state, starts)
    h0, A0 = core.unpack(state)
    h_end, A_end = core.unpack(new_state)
    for b in range(B):
        ref_out, ref_h, ref_A = reference_run(core, x[:, b], h0[b], A0[b], starts[:, b])
        th.testing.assert_close(out[:, b], ref_out)
        th.testing.assert_close(h_end[b], ref_h)
        th.testing.assert_close(A_end[b], ref_A)


def test_write_ordering_first_step_reads_only_the_carried_memory():
    """From zero state, step 1 has A = 0 (h_1 = f(LN(Cx+b))), and step 2 must read A = η h_1 h_1ᵀ."""
    core = make_core(fast_learning_rate=0.5, decay_rate=0.95)
    x = th.randn(2, 1, F_IN, dtype=th.float64)
    out, state = core(x, core.initial_state(1).double(), th.zeros(2, 1, dtype=th.float64))
    _, A = core.unpack(state)
    h1, h2 = out[0, 0], out[1, 0]
    th.testing.assert_close(A[0], 0.95 * 0.5 * th.outer(h1, h1) + 0.5 * th.outer(h2, h2))
    # Writing h_0(t+1) or h(t-1) instead (an off-by-one) would change step 2: check the read uses h_1.
    ref, _, _ = reference_run(core, x[:, 0], th.zeros(H, dtype=th.float64), th.zeros(H, H, dtype=th.float64), [0, 0])
    th.testing.assert_close(out[:, 0], ref)


def test_fast_weights_are_read():
    """η changes the outputs from the second step on: A is written AND read."""
    x = th.randn(6, 2, F_IN, dtype=th.float64)
    starts = th.zeros(6, 2, dtype=th.float64)
    outs = []
    for eta in (0.0, 0.5):
        core = make_core(fast_learning_rate=eta)
        outs.append(core(x, core.initial_state(2).double(), starts)[0])
    th.testing.assert_close(outs[0][0], outs[1][0])
    assert (outs[0][1:] - outs[1][1:]).abs().max() > 1e-3


@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize(
    "options",
    [{}, {"gated": True, "learn_rates": True}, {"fast_read_gain": 0.7}, {"gated": True, "recurrent_step_scale": 3.0}],
    ids=["paper", "gated-learned", "normalised-read", "recurrent-step-scale"],
)
def test_paths_agree_with_carried_memory_and_resets(inner_steps, options):
    explicit = make_core("explicit", inner_steps=inner_steps, **options)
    attention = make_core("attention", inner_steps=inner_steps, **options)
    T, B = 20, 4
    x = th.randn(T, B, F_IN, dtype=th.float64)
    starts = (th.rand(T, B) < 0.15).double()
    state = random_state(explicit, B)
    out_e, state_e = explicit(x, state, starts)
    out_a, state_a = attention(x, state, starts)
    th.testing.assert_close(out_e, out_a)
    th.testing.assert_close(state_e, state_a)
    # and the gradients agree too, for every parameter
    loss_e, loss_a = out_e.square().sum() + state_e.sum(), out_a.square().sum() + state_a.sum()
    for g_e, g_a in zip(
        th.autograd.grad(loss_e, list(explicit.parameters())),
        th.autograd.grad(loss_a, list(attention.parameters())),
        strict=True,
    ):
        th.testing.assert_close(g_e, g_a)


@pytest.mark.parametrize("path", ["explicit", "attention"])
def test_normalised_read_makes_the_fast_term_independent_of_eta(path):
    """A is linear in η, so the read divided by tr A is the same for every η > 0; the paper's read is not."""
    x = th.randn(8, 3, F_IN, dtype=th.float64)
    starts = th.zeros(8, 3, dtype=th.float64)
    starts[5, 0] = 1.0
    for gain, same in ((1.0, True), (None, False)):
        small, large = (
            make_core(path, fast_learning_rate=eta, fast_read_gain=gain) for eta in (0.05, 5.0)
        )
        out_small, out_large = (core(x, core.initial_state(3).double(), starts)[0] for core in (small, large))
        assert th.allclose(out_small, out_large) is same
    # and the read is used: a larger gain changes the outputs from the second step on
    weak, strong = (make_core(path, fast_read_gain=gain) for gain in (0.1, 2.0))
    out_weak, out_strong = (core(x, core.initial_state(3).double(), starts)[0] for core in (weak, strong))
    th.testing.assert_close(out_weak[0], out_strong[0])
    assert (out_weak[1:] - out_strong[1:]).abs().max() > 1e-2


@pytest.mark.parametrize("path", ["explicit", "attention", "fused"])
def test_recurrent_step_scale_starts_the_same_and_steps_the_recurrence_s_times_as_far(path):
    """The same cell at the start for every s; one Adam step (of a set size per weight, whatever the gradient's scale)
    moves the used W and U s times as far as at s = 1, and every other weight as far."""
    x = th.randn(6, 3, F_IN, dtype=th.float64)
    starts = th.zeros(6, 3, dtype=th.float64)

    def one_step(scale: float) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        th.manual_seed(0)
        core = FastWeightsRNN(F_IN, H, gated=True, recurrent_step_scale=scale, compute_path=path).double()
        used = lambda: {  # noqa: E731
            "W": core._recurrent(core.hidden_to_hidden.weight).detach().clone(),
            "U": core._recurrent(core.hidden_to_gate.weight).detach().clone(),
            "C": core.input_to_hidden.weight.detach().clone(),
        }
        before = used()
        optimizer = th.optim.Adam(core.parameters(), lr=1e-3, eps=1e-30)  # no ε: steps of exactly lr
        out = core(x, core.initial_state(3).double(), starts)[0]
        out.sum().backward()
        optimizer.step()
        return out.detach(), {name: used()[name] - value for name, value in before.items()}

    out_1, step_1 = one_step(1.0)
    out_s, step_s = one_step(0.3)
    th.testing.assert_close(out_s, out_1)
    th.testing.assert_close(step_s["W"], 0.3 * step_1["W"], rtol=1e-4, atol=1e-9)
    th.testing.assert_close(step_s["U"], 0.3 * step_1["U"], rtol=1e-4, atol=1e-9)
    th.testing.assert_close(step_s["C"], step_1["C"], rtol=1e-4, atol=1e-9)
    assert step_1["W"].abs().max() > 5e-4  # the step moved W: the comparison is not of zeros


@pytest.mark.parametrize("path", ["explicit", "attention", "fused"])
def test_output_scale_scales_what_the_heads_read_and_not_the_state(path):
    """Outputs c·h(t) over a sequence with a reset; the state (h and A), and so the next sequence, as at c = 1."""
    x = th.randn(6, 3, F_IN, dtype=th.float64)
    starts = th.zeros(6, 3, dtype=th.float64)
    starts[3, 1] = 1.0

    def run(scale: float) -> tuple[th.Tensor, th.Tensor]:
        th.manual_seed(0)
        core = FastWeightsRNN(F_IN, H, gated=True, output_scale=scale, compute_path=path).double()
        return core(x, core.initial_state(3).double(), starts)

    out_1, state_1 = run(1.0)
    out_c, state_c = run(1 / 0.3)
    th.testing.assert_close(out_c, out_1 / 0.3)
    th.testing.assert_close(state_c, state_1)
    assert out_1.abs().max() > 1e-3  # the comparison is not of zeros


@pytest.mark.parametrize("path", ["explicit", "attention"])
def test_gated_learned_rates_gradcheck(path):
    """Gradients w.r.t. the new parameters (η, λ, the gate) match finite differences on both paths."""
    core = make_core(path, gated=True, learn_rates=True, fast_learning_rate=0.3)
    T, B = 5, 2
    x = th.randn(T, B, F_IN, dtype=th.float64)
    starts = th.zeros(T, B, dtype=th.float64)
    starts[2, 1] = 1.0
    state = random_state(core, B)
    params = [core.log_fast_learning_rate, core.decay_logit, core.input_to_gate.weight, core.hidden_to_gate.weight]

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    # gradcheck perturbs `inputs`: functional_call routes them into the module in place of its parameters.
    names = ["log_fast_learning_rate", "decay_logit", "input_to_gate.weight", "hidden_to_gate.weight"]

    def functional(*values):
        out, new_state = th.func.functional_call(core, dict(zip(names, values, strict=True)), (x, state, starts))
        return out.sum(dim=-1), new_state.sum(dim=-1)

    assert th.autograd.gradcheck(functional, inputs)
    grads = th.autograd.grad(sum(o.sum() for o in functional(*inputs)), inputs)
    assert all(g.abs().sum() > 0 for g in grads)


def test_balanced_fast_learning_rate():
    core = FastWeightsRNN(F_IN, 64, decay_rate=0.95, fast_learning_rate="balanced")
    assert core.fast_learning_rate == pytest.approx(2 * 0.05 / 64)
    with pytest.raises(ValueError, match="fast_learning_rate"):
        FastWeightsRNN(F_IN, 64, fast_learning_rate="large")


def test_chrono_init_spreads_the_gate_time_scales_evenly_over_octaves_up_to_t():
    """z = σ(b) = 1/(1 + u) with log u ~ U(0, log(T − 1)): every unit starts between z = 1/T and ½, with as many
    fast units (u < 3) as T = 100's log-uniform spread gives (24%), not the 2% of u ~ U(1, T − 1)."""
    th.manual_seed(0)
    bias = FastWeightsRNN(F_IN, 1024, gated=True).input_to_gate.bias.detach()  # chrono_init = 100 by default
    z = th.sigmoid(bias)
    assert ((z >= 1 / 100 - 1e-6) & (z <= 0.5 + 1e-6)).all()
    time_scale = 1 / z - 1  # u
    octaves = th.histc(time_scale.log2(), bins=4, min=0.0, max=math.log2(99))
    assert (octaves / 1024 - 0.25).abs().max() < 0.05  # even over log u
    assert 0.19 < (time_scale < 3).float().mean() < 0.29  # log 3 / log 99 = 0.24
    default = th.sigmoid(FastWeightsRNN(F_IN, 256, gated=True, chrono_init=None).input_to_gate.bias.detach())
    assert (default > 0.3).all()  # nn.Linear's init: b near 0, z near ½


@pytest.mark.parametrize("path", ["explicit", "attention"])
def test_reset_at_k_equals_fresh_sequence_from_k(path):
    core = make_core(path)
    T, B, k = 12, 2, 5
    x = th.randn(T, B, F_IN, dtype=th.float64)
    starts = th.zeros(T, B, dtype=th.float64)
    starts[k] = 1.0
    out, state = core(x, random_state(core, B), starts)
    fresh_out, fresh_state = core(x[k:], core.initial_state(B).double(), th.zeros(T - k, B, dtype=th.float64))
    th.testing.assert_close(out[k:], fresh_out)
    th.testing.assert_close(state, fresh_state)


@pytest.mark.parametrize("path", ["explicit", "attention"])
def test_gradient_flows_through_fast_weights_to_earlier_steps(path):
    """With W = 0 and η > 0, step 0's input reaches the last output only through A."""
    core = make_core(path)
    with th.no_grad():
        core.hidden_to_hidden.weight.zero_()
    x = th.randn(4, 1, F_IN, dtype=th.float64, requires_grad=True)
    out, _ = core(x, core.initial_state(1).double(), th.zeros(4, 1, dtype=th.float64))
    (grad,) = th.autograd.grad(out[-1].sum(), x)
    assert grad[0].abs().sum() > 0
    core.fast_learning_rate = 0.0  # no fast weights: no path left
    out, _ = core(x, core.initial_state(1).double(), th.zeros(4, 1, dtype=th.float64))
    (grad,) = th.autograd.grad(out[-1].sum(), x)
    assert grad[0].abs().sum() == 0


@pytest.mark.parametrize("path", ["explicit", "attention"])
def test_environments_are_independent(path):
    """Changing env 0's inputs never changes env 1's outputs: no batch statistics, no shared A."""
    core = make_core(path)
    x = th.randn(7, 3, F_IN, dtype=th.float64)
    starts = th.zeros(7, 3, dtype=th.float64)
    state = random_state(core, 3)
    out, new_state = core(x, state, starts)
    x2 = x.clone()
    x2[:, 0] = 10 * th.randn(7, F_IN, dtype=th.float64)
    out2, new_state2 = core(x2, state, starts)
    assert (out[:, 0] - out2[:, 0]).abs().max() > 1e-3
    th.testing.assert_close(out[:, 1:], out2[:, 1:])
    th.testing.assert_close(new_state[1:], new_state2[1:])


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_any_batch_size(batch):
    core = FastWeightsRNN(F_IN, H)
    out, state = core.step(th.randn(batch, F_IN), core.initial_state(batch), th.zeros(batch))
    assert out.shape == (batch, H) and state.shape == (batch, core.state_size)


def saved_bytes_for_backward(core, T, B):
    """Bytes autograd keeps for the backward pass of one sequence (each storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = th.randn(T, B, F_IN)
    state = core.initial_state(B)
    state[:, :H] = 0.1  # nonzero carried memory
    with th.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        core(x, state, th.zeros(T, B))
    return sum(storages.values())


def test_attention_path_does_not_keep_every_fast_weight_matrix():
    T, B, hidden = 32, 4, 64
    explicit = FastWeightsRNN(F_IN, hidden, compute_path="explicit")
    attention = FastWeightsRNN(F_IN, hidden, compute_path="attention")
    every_A = T * B * hidden * hidden * 4
    assert saved_bytes_for_backward(explicit, T, B) > every_A  # the known cost of the explicit path
    assert saved_bytes_for_backward(attention, T, B) < every_A / 2


def test_attention_path_memory_grows_linearly_with_length():
    """Each read keeps references to the keys, not a stack of them: 4× the length, about 4× the bytes
    (a stack per step would make it ~16×: at T=128 the stacks alone are T²·B·H/2 floats)."""
    B, hidden = 4, 64
    core = FastWeightsRNN(F_IN, hidden, compute_path="attention")
    short, long = saved_bytes_for_backward(core, 32, B), saved_bytes_for_backward(core, 128, B)
    assert long < 5 * short
    assert long < 128 * 128 * B * hidden * 4 / 2


def test_attention_read_gradients_match_finite_differences():
    from fw_agents.memory.fast_weights import AttentionRead

    th.manual_seed(0)
    B, tau, hidden = 2, 3, 5
    weights = th.rand(B, tau, dtype=th.float64, requires_grad=True)
    hs = th.randn(B, hidden, dtype=th.float64, requires_grad=True)
    keys = [th.randn(B, hidden, dtype=th.float64, requires_grad=True) for _ in range(tau)]
    assert th.autograd.gradcheck(AttentionRead.apply, (weights, hs, *keys))
    stacked = th.stack(keys, dim=1)
    expected = ((stacked @ hs.unsqueeze(-1)).squeeze(-1) * weights).unsqueeze(1) @ stacked
    th.testing.assert_close(AttentionRead.apply(weights, hs, *keys), expected.squeeze(1))


def test_pack_unpack_roundtrip_and_state_size():
    core = FastWeightsRNN(F_IN, H)
    assert core.state_size == H + H * (H + 1) // 2
    state = random_state(core.double(), 2)
    h, A = core.unpack(state)
    th.testing.assert_close(A, A.transpose(1, 2))
    th.testing.assert_close(core.pack(h, A), state)


def test_stats_are_collected_only_when_asked():
    core = FastWeightsRNN(F_IN, H)
    x, starts = th.randn(3, 2, F_IN), th.zeros(3, 2)
    core(x, core.initial_state(2), starts)
    assert core.stats == {}
    core.collect_stats = True
    core(x, core.initial_state(2), starts)
    assert core.stats["fast_weights_norm"] > 0 and core.stats["fast_slow_ratio"] > 0


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"decay_rate": 0.0}, "decay_rate"),
        ({"decay_rate": 1.5}, "decay_rate"),
        ({"fast_learning_rate": -0.1}, "fast_learning_rate"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"input_size": 0}, "input_size"),
        ({"activation": "swish"}, "activation"),
        ({"compute_path": "fast"}, "compute_path"),
        ({"learn_rates": True, "decay_rate": 1.0}, "learn_rates"),
        ({"learn_rates": True, "fast_learning_rate": 0.0}, "learn_rates"),
        ({"fast_read_gain": 0.0}, "fast_read_gain"),
        ({"fast_read_gain": float("nan")}, "fast_read_gain"),
        ({"recurrent_step_scale": 0.0}, "recurrent_step_scale"),
        ({"recurrent_step_scale": float("inf")}, "recurrent_step_scale"),
        ({"output_scale": -1.0}, "output_scale"),
        ({"output_scale": float("nan")}, "output_scale"),
    ],
)
def test_invalid_settings_raise_value_error(kwargs, names):
    args = {"input_size": F_IN, "hidden_size": H, **kwargs}
    with pytest.raises(ValueError, match=names):
        FastWeightsRNN(**args)


def test_normalised_read_runs_on_the_pytorch_paths_whatever_is_asked():
    """The compiled op has no normalised read: ``auto`` and ``fused`` give the PyTorch paths' numbers, no warning."""
    x = th.randn(4, 2, F_IN, dtype=th.float64)
    reference = make_core("explicit", fast_read_gain=0.5)
    state = random_state(reference, 2)
    for path in ("auto", "fused"):
        core = make_core(path, fast_read_gain=0.5)
        assert core._choose_path(x.float(), state.float()) in ("explicit", "attention")
        th.testing.assert_close(core(x, state, th.zeros(4, 2))[0], reference(x, state, th.zeros(4, 2))[0])


def test_auto_path_choice():
    core = make_core("auto")
    assert core.attention_max_len == H
    x = th.randn(4, 2, F_IN, dtype=th.float64)
    reference = make_core("explicit")
    state = random_state(core, 2)
    th.testing.assert_close(core(x, state, th.zeros(4, 2))[0], reference(x, state, th.zeros(4, 2))[0])
