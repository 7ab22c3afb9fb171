"""The fast-weights RNN of Ba, Hinton, Mnih, Leibo and Ionescu (NIPS 2016), paper §2.

Per environment, with ``A`` and ``h`` reset to zero at every episode start::

    A(t)        = λ A(t-1) + η h(t) h(t)ᵀ                      (write, after each new h)
    h_0(t+1)    = f(W h(t) + C x(t))                            (preliminary state, slow weights)
    h_{s+1}(t+1) = f(LN[W h(t) + C x(t) + A(t) h_s(t+1)])       s = 0 .. S-1
    h(t+1)      = h_S(t+1)

Two options depart from the paper (both off here, on in the fast-weights *policies*, where they make agents
learn without a per-task η; README, "defaults that learn"):

* ``gated``: an update gate makes the step additive, as in a GRU: ``h(t+1) = h(t) + z ⊙ (h_S(t+1) − h(t))`` with
  ``z = σ(G x(t) + U h(t) + b)``; the write uses this h(t+1). The bias b starts chrono-initialised
  (``chrono_init``, after Tallec and Ollivier 2018) with time scales spread evenly over octaves, 1 to ~100 steps:
  slow units let gradients reach a cue far back from the start (with b ≈ 0 every unit halves its memory each
  step), fast ones follow the current input.
* ``learn_rates``: λ and η are trained with the other weights (λ = sigmoid(·), η = exp(·): positive by
  construction), starting from the given values; ``fast_learning_rate="balanced"`` starts η at 2(1−λ)/H, where
  the fast term is about as large as the slow one.

A third choice is an initial value: ``layer_norm_gain``, where LN's learned gain starts (1 here, as the paper and
torch; 0.3 in the policies). LN then ReLU give every unit an output of order 1 (‖h‖² ≈ H/2), several times an LSTM's
or GRU's at the start; with gain 1, RecurrentA2C learned POPGym's position-only CartPole below a memoryless agent
(0.11 / 0.28 against 0.37 / 0.41 after 150k steps) and with 0.3 solved it (0.96 / 1.0) (docs/results.md).

Three computation paths give the same numbers:

* ``"fused"`` runs the whole sequence, forward and backward, in one compiled C++ op
  (:mod:`fw_agents.memory._fused`, built on first use and cached): one autograd node per sequence instead of
  ~10 per step. Its backward pass keeps O(T·B·S·H) floats (no A per step) and rebuilds A(t) from the carried-in
  A and the outputs. CPU, float32/float64 only.
* ``"explicit"`` keeps the H×H matrix A per environment: O(H²) per step, and autograd keeps every A(t),
  O(T·B·H²) memory over a training sequence.
* ``"attention"`` never forms A(t) inside a sequence. It uses
  ``A(t) h = λ^{t-t₀} A₀ h + η Σ_{t₀<τ≤t} λ^{t-τ} h(τ) ⟨h(τ), h⟩`` (the read is attention over the
  hidden states of the sequence, plus the decayed memory A₀ carried in from before it): O(t·H) per step
  on top of the A₀ read. Each step's read is one autograd node (:class:`AttentionRead`) that keeps references
  to the keys, not a copy: the backward pass keeps O(T·B·H) floats of states plus O(T²·B) scores, and A₀ once.

``"auto"`` uses the fused op wherever it runs: it is the fastest path at every length measured, single
rollout steps included (``python -m bench.speed core``). Where it cannot run (no C++ compiler, a failed
build, CUDA, another dtype) ``"auto"`` and ``"fused"`` warn once and use the explicit path for single steps
(rollouts) and the attention path for sequences of up to ``attention_max_len`` steps (default H, where the two
cross over in speed; the attention path is the lighter one in memory at every length). ``collect_stats``
also uses these PyTorch paths (it looks inside each step), without a warning.

The packed state is ``[h, triu(A)]``: A is a decayed sum of outer products, so it is exactly symmetric
and its upper triangle holds all of it. That halves what a rollout buffer stores per env-step:
``H + H(H+1)/2`` floats instead of ``H + H²``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch as th
import torch.nn.functional as F
from torch import nn

from fw_agents.memory import _fused
from fw_agents.memory.base import (
    MemoryCore,
    check_bool,
    check_choice,
    check_number,
    check_positive_int,
    reset_state,
)

ACTIVATIONS: dict[str, Callable[[th.Tensor], th.Tensor]] = {
    "relu": F.relu,
    "tanh": th.tanh,
    "elu": F.elu,
    "gelu": F.gelu,
    "identity": lambda x: x,
}
COMPUTE_PATHS = ("auto", "fused", "explicit", "attention")


def activation_by_name(name: str) -> Callable[[th.Tensor], th.Tensor]:
    """Look up a nonlinearity by name; ValueError listing the choices otherwise."""
    return ACTIVATIONS[check_choice("activation", name, sorted(ACTIVATIONS))]


def balanced_fast_learning_rate(hidden_size: int, decay_rate: float) -> float:
    """η = 2(1−λ)/H: the fast term then starts about as large as the slow one.

    With LN then ReLU each h has ‖h‖² ≈ H/2, so A saturates at ‖A‖ ≈ η‖h‖²/(1−λ) = ηH/(2(1−λ)) times a
    unit-norm matrix; this η makes that factor 1. The paper's η = 0.5 makes it 320 at H = 64, λ = 0.95.
    """
    return 2.0 * (1.0 - decay_rate) / hidden_size


class AttentionRead(th.autograd.Function):
    """``η Σ_τ λ^{t-τ} h(τ)⟨h(τ), hs⟩`` over the keys ``h(τ)`` given one by one, as a single autograd node.

    ``forward(weights (B, τ), hs (B, H), *keys (B, H) each) -> (B, H)``. Stacking the keys into ``(B, τ, H)``
    inside an ordinary graph would make autograd keep that stack at every step, O(B·T²·H) over a sequence; here
    the stack is transient and the backward pass keeps only references to the keys (the sequence's own
    outputs, kept anyway), ``hs`` and the ``(B, τ)`` scores: O(B·T²) floats over a sequence.
    """

    @staticmethod
    def forward(ctx, weights: th.Tensor, hs: th.Tensor, *keys: th.Tensor) -> th.Tensor:  # type: ignore[override]
        stacked = th.stack(keys, dim=1)  # (B, τ, H), freed after this call
        scores = th.bmm(stacked, hs.unsqueeze(-1)).squeeze(-1)  # ⟨h(τ), hs⟩, (B, τ)
        ctx.save_for_backward(weights, hs, scores, *keys)
        return th.bmm((scores * weights).unsqueeze(1), stacked).squeeze(1)

    @staticmethod
    def backward(ctx, grad: th.Tensor) -> tuple[th.Tensor | None, ...]:  # type: ignore[override]
        weights, hs, scores, *keys = ctx.saved_tensors
        stacked = th.stack(keys, dim=1)
        # out = Σ_τ w_τ s_τ k_τ with s_τ = ⟨k_τ, hs⟩.
        grad_weighted = th.bmm(stacked, grad.unsqueeze(-1)).squeeze(-1)  # ∂/∂(w_τ s_τ) = ⟨k_τ, g⟩
        grad_scores = grad_weighted * weights
        grad_hs = th.bmm(grad_scores.unsqueeze(1), stacked).squeeze(1)
        grad_keys = (scores * weights).unsqueeze(-1) * grad.unsqueeze(1) + grad_scores.unsqueeze(-1) * hs.unsqueeze(1)
        grad_weights = grad_weighted * scores if ctx.needs_input_grad[0] else None
        return (grad_weights, grad_hs, *grad_keys.unbind(dim=1))


class FastWeightsRNN(MemoryCore):
    """Fast-weights recurrent network (Ba et al. 2016).

    :param input_size: F, size of each input vector.
    :param hidden_size: H, number of recurrent units.
    :param decay_rate: λ in (0, 1], how fast the fast weights forget (paper: 0.95).
    :param fast_learning_rate: η >= 0, the fast weights' learning rate (paper: 0.5), or ``"balanced"``:
        η = 2(1−λ)/H (:func:`balanced_fast_learning_rate`). η = 0 is a plain
        layer-normalised ReLU RNN: the ablation "no fast weights".
    :param inner_steps: S >= 1, iterations of the inner loop (paper: 1).
    :param layer_norm: layer normalisation over the hidden units of each sample, with learned gain and
        bias, before the nonlinearity in the inner loop (paper: on).
    :param layer_norm_gain: where LN's learned gain starts (> 0; with ``layer_norm`` only): 1 as in the paper and
        ``torch.nn.LayerNorm``; the policies start it at 0.3 (module docstring).
    :param activation: the nonlinearity f: one of ``relu`` (paper), ``tanh``, ``elu``, ``gelu``, ``identity``.
    :param compute_path: ``auto``, ``fused``, ``explicit`` or ``attention`` (see the module docstring).
    :param attention_max_len: longest sequence the PyTorch fallback sends to the attention path (default: H).
    :param recurrent_init_scale: W starts as this multiple of the identity (0.05, as common
        reimplementations do; the paper's IRNN baselines start from the identity).
    :param learn_rates: λ and η become parameters trained with the rest (λ = sigmoid(logit), η = exp(log η),
        so both stay positive), starting from ``decay_rate`` and ``fast_learning_rate`` (paper: fixed).
    :param gated: an update gate z = σ(G x(t) + U h(t) + b) makes the step additive, as in a GRU:
        ``h(t+1) = h(t) + z ⊙ (h_S(t+1) − h(t))``; the fast weights are written with this h(t+1)
        (paper: no gate, ``h(t+1) = h_S(t+1)``).
    :param chrono_init: how the gate's bias starts (only with ``gated``): T > 2 for a chrono initialisation
        (Tallec and Ollivier 2018), ``b = −log u`` per unit, so unit i starts at z ≈ 1/(1 + u) and keeps its state
        for about u steps. The time scales u are log-uniform over (1, T − 1), as many units per octave (1–2
        steps, 2–4, …). Tallec and Ollivier draw u ~ U(1, T − 1), which at T = 100 starts 98% of the units
        keeping their state longer than 3 steps: on MiniGrid MemoryS9 that delayed learning past 1M steps
        (docs/results.md, section 2c). None for ``nn.Linear``'s init (b ≈ 0: every unit starts at z ≈ ½,
        forgetting within a few steps).
    :param fast_read_gain: None for the paper's read ``A(t) h_s``. A number g > 0: the read is divided by the trace
        of A, ``g ⊙ A(t) h_s / tr A(t)`` with a learned per-unit gain starting at g. tr A = η Σ λ^{t−τ} ‖h(τ)‖², so
        the read becomes an average of the stored states weighted by their overlap with h_s: its size is set by g
        and by how well h_s matches what is stored, not by η (A is linear in η, which then has no effect), λ,
        ‖h‖ or how many steps were written. An experiment toward a fast term large enough to bind without drowning
        the observations (docs/results.md, "A normalised read": with labels it binds in the ungated cell, not sooner
        in the gated one; in RL the ungated cell learned control and no retrieval). PyTorch paths only.
    :param recurrent_step_scale: s > 0, how far an optimiser's step moves the recurrent matrices W and U (the gate's)
        relative to the other weights: they are stored as W / s and used as s·W, so they start the same and, under
        optimisers whose steps do not scale with the gradient (RMSprop, Adam), each step moves them s times as far.
        An experiment: LN's gain sets the size of h, and with it how far a step of W moves W h beside C x, so at
        gain 1 the recurrence learns 1/0.3 times as fast relative to the input weights as at gain 0.3; s = 0.3 at
        gain 1 undoes that (docs/results.md, "The LN gain as the recurrence's learning rate").
    :param output_scale: c > 0, the outputs the policy's heads read are c·h(t); the state, and so the recurrence
        and the fast weights, keep h(t). An experiment that parts the two things LN's gain sets: at gain 0.3,
        c = 1/0.3 gives the heads gain 1's outputs (their scale, and how far a step of the heads' first layer
        moves their result) while the cell itself stays at gain 0.3 (docs/results.md, "The heads' input or the
        cell's").
    """

    # A reset is a select in the PyTorch paths; in a run of resets the fused op writes no A and reads none.
    resets_are_free = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        decay_rate: float = 0.95,
        fast_learning_rate: float | str = 0.5,
        inner_steps: int = 1,
        layer_norm: bool = True,
        layer_norm_gain: float = 1.0,
        activation: str = "relu",
        compute_path: str = "auto",
        attention_max_len: int | None = None,
        recurrent_init_scale: float = 0.05,
        learn_rates: bool = False,
        gated: bool = False,
        chrono_init: float | None = 100.0,
        fast_read_gain: float | None = None,
        recurrent_step_scale: float = 1.0,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        # Every argument is checked before anything is built, each with a ValueError naming it: NaN and inf
        # would otherwise pass the range tests (NaN compares False) and poison the first forward pass.
        decay_rate = check_number("decay_rate (λ)", decay_rate, low=0.0, high=1.0, low_inclusive=False)
        if isinstance(fast_learning_rate, str):
            if fast_learning_rate != "balanced":
                raise ValueError(
                    f"fast_learning_rate (η) must be a finite number >= 0 or 'balanced', got {fast_learning_rate!r}"
                )
            fast_learning_rate = balanced_fast_learning_rate(hidden_size, decay_rate)
        fast_learning_rate = check_number(
            "fast_learning_rate (η)", fast_learning_rate, low=0.0, allowed="a finite number >= 0 or 'balanced'"
        )
        self.inner_steps = check_positive_int("inner_steps", inner_steps)
        layer_norm = check_bool("layer_norm", layer_norm)
        layer_norm_gain = check_number("layer_norm_gain", layer_norm_gain, low=0.0, low_inclusive=False)
        self.activation_name = check_choice("activation", activation, sorted(ACTIVATIONS))
        self.compute_path = check_choice("compute_path", compute_path, COMPUTE_PATHS)
        recurrent_init_scale = check_number("recurrent_init_scale", recurrent_init_scale)
        self.learn_rates = check_bool("learn_rates", learn_rates)
        self.gated = check_bool("gated", gated)
        if chrono_init is not None:
            chrono_init = check_number(
                "chrono_init", chrono_init, low=2.0, low_inclusive=False, allowed="a finite number > 2 (steps) or None"
            )
        if fast_read_gain is not None:
            fast_read_gain = check_number(
                "fast_read_gain", fast_read_gain, low=0.0, low_inclusive=False, allowed="a finite number > 0 or None"
            )
        self.recurrent_step_scale = check_number(
            "recurrent_step_scale", recurrent_step_scale, low=0.0, low_inclusive=False, allowed="a finite number > 0"
        )
        self.output_scale = check_number(
            "output_scale", output_scale, low=0.0, low_inclusive=False, allowed="a finite number > 0"
        )
        if self.learn_rates and not (decay_rate < 1.0 and fast_learning_rate > 0.0):
            # λ = sigmoid(logit) and η = exp(log η) cannot start at λ = 1 or η = 0.
            raise ValueError(
                f"learn_rates=True needs decay_rate (λ) < 1 and fast_learning_rate (η) > 0, "
                f"got λ={decay_rate!r}, η={fast_learning_rate!r}"
            )
        self.decay_rate = decay_rate
        self.fast_learning_rate = fast_learning_rate
        self.activation = ACTIVATIONS[self.activation_name]
        self.attention_max_len = check_positive_int(
            "attention_max_len", hidden_size if attention_max_len is None else attention_max_len
        )

        H = hidden_size
        self.input_to_hidden = nn.Linear(input_size, H)  # C x(t) + b
        self.hidden_to_hidden = nn.Linear(H, H, bias=False)  # W h(t)
        with th.no_grad():
            self.hidden_to_hidden.weight.copy_(recurrent_init_scale * th.eye(H))
        # LayerNorm normalises the last axis of each sample: statistics over hidden units, never the batch.
        self.layer_norm = nn.LayerNorm(H) if layer_norm else nn.Identity()
        if layer_norm:
            nn.init.constant_(self.layer_norm.weight, layer_norm_gain)
        # The read A h_s as it is (the paper), or g ⊙ A h_s / tr A with a learned gain g per unit.
        self.read_gain = None if fast_read_gain is None else nn.Parameter(th.full((H,), fast_read_gain))
        if self.learn_rates:
            # Positive by construction: η = exp(log η), λ = sigmoid(logit λ).
            self.log_fast_learning_rate = nn.Parameter(th.tensor(float(fast_learning_rate)).log())
            self.decay_logit = nn.Parameter(th.logit(th.tensor(float(decay_rate))))
        if self.gated:
            # Update gate z = σ(G x + U h): h(t+1) = h(t) + z ⊙ (h̃(t+1) − h(t)), additive like a GRU's.
            self.input_to_gate = nn.Linear(input_size, H)
            self.hidden_to_gate = nn.Linear(H, H, bias=False)
            if chrono_init is not None:
                with th.no_grad():  # z = σ(−log u) = 1/(1 + u): unit i first keeps h for ~u steps
                    self.input_to_gate.bias.copy_(-th.empty(H).uniform_(0.0, math.log(chrono_init - 1.0)))
        if self.recurrent_step_scale != 1.0:
            # Stored as W / s and used as s·W (_recurrent): the same starting values, steps s times as far.
            with th.no_grad():
                self.hidden_to_hidden.weight.div_(self.recurrent_step_scale)
                if self.gated:
                    self.hidden_to_gate.weight.div_(self.recurrent_step_scale)

        # Packing A by its upper triangle: `triu_index` picks it out of a flattened A, and
        # `sym_index` rebuilds the full flattened A from it. Derived from H, so not saved.
        rows, cols = th.triu_indices(H, H)
        self.register_buffer("triu_index", rows * H + cols, persistent=False)
        tri_pos = th.empty(H, H, dtype=th.long)
        tri_pos[rows, cols] = th.arange(rows.numel())
        tri_pos[cols, rows] = th.arange(rows.numel())
        self.register_buffer("sym_index", tri_pos.flatten(), persistent=False)
        self.state_size = H + rows.numel()

        # Diagnostics for TensorBoard, off by default so the hot path stays lean.
        self.collect_stats = False
        self.stats: dict[str, float] = {}

    def rates(self) -> tuple[float | th.Tensor, float | th.Tensor]:
        """λ and η: floats, or 0-dim tensors with gradients when ``learn_rates``."""
        if self.learn_rates:
            return th.sigmoid(self.decay_logit), self.log_fast_learning_rate.exp()
        return self.decay_rate, self.fast_learning_rate

    # ----------------------------------------------------------------- state packing
    def pack(self, h: th.Tensor, fast_weights: th.Tensor) -> th.Tensor:
        """``h`` ``(B, H)`` and symmetric ``A`` ``(B, H, H)`` -> packed state ``(B, state_size)``."""
        tri = fast_weights.reshape(h.shape[0], -1)[:, self.triu_index]
        return th.cat([h, tri], dim=1)

    def unpack(self, state: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Packed state ``(B, state_size)`` -> ``h`` ``(B, H)``, ``A`` ``(B, H, H)``."""
        H = self.hidden_size
        h, tri = state[:, :H], state[:, H:]
        return h, tri[:, self.sym_index].view(-1, H, H)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: th.Tensor, state: th.Tensor, episode_starts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Run a sequence: ``inputs`` ``(T, B, F)``, ``state`` ``(B, state_size)``, ``episode_starts``
        ``(T, B)`` -> outputs ``(T, B, H)``, packed state ``(B, state_size)``."""
        self.check_shapes(inputs, state, episode_starts)
        # The input term C x(t) + b of every step in one matrix product.
        input_terms = self.input_to_hidden(inputs)
        gate_terms = self.input_to_gate(inputs) if self.gated else None
        starts = episode_starts.to(inputs.dtype)
        path = self._choose_path(inputs, state)
        if path == "fused":
            outputs, state = self._run_fused(input_terms, gate_terms, state, starts)
            return self._scaled(outputs), state
        h, fast_weights = self.unpack(state)
        # One host sync for the whole sequence instead of one per step.
        any_reset = starts.any(dim=1).tolist()
        run = self._run_attention if path == "attention" else self._run_explicit
        outputs, h, fast_weights = run(input_terms, gate_terms, h, fast_weights, starts, any_reset)
        if self.collect_stats:
            self.stats["fast_weights_norm"] = th.linalg.matrix_norm(fast_weights).mean().item()
        return self._scaled(outputs), self.pack(h, fast_weights)

    def _scaled(self, outputs: th.Tensor) -> th.Tensor:
        """The heads' input ``(T, B, H)``: ``output_scale`` times the hidden states (the state keeps them as is)."""
        return outputs if self.output_scale == 1.0 else self.output_scale * outputs

    def _choose_path(self, inputs: th.Tensor, state: th.Tensor) -> str:
        """``fused`` where it can run (``auto`` or asked for), else ``explicit`` or ``attention``."""
        # collect_stats (a diagnostic that looks inside each step) and the normalised read (which the compiled op does
        # not implement) silently use the PyTorch paths.
        if self.compute_path in ("auto", "fused") and not self.collect_stats and self.read_gain is None:
            reason = _fused.unsupported_reason(inputs, state, *self._fused_parameters())
            if reason is None:
                return "fused"
            _fused.warn_once(f"FastWeightsRNN: {reason}; using the PyTorch path instead")
        if self.compute_path in ("explicit", "attention"):
            return self.compute_path
        return "attention" if 1 < inputs.shape[0] <= self.attention_max_len else "explicit"

    def _fused_weights(self) -> tuple[th.Tensor, th.Tensor | None, th.Tensor | None, th.Tensor | None]:
        """The stored weights the fused op reads: W, U (None: no gate), LN's gain and bias (None: no LN); W and U
        before ``recurrent_step_scale`` (:meth:`_run_fused` applies it, so the per-step path check does not)."""
        layer_norm = self.layer_norm if isinstance(self.layer_norm, nn.LayerNorm) else None
        return (
            self.hidden_to_hidden.weight,
            self.hidden_to_gate.weight if self.gated else None,
            None if layer_norm is None else layer_norm.weight,
            None if layer_norm is None else layer_norm.bias,
        )

    def _fused_parameters(self) -> tuple[th.Tensor | None, ...]:
        """The parameters the fused op reads, learned rates included (named, not ``self.parameters()``: this runs at
        every env step)."""
        rates = (self.decay_logit, self.log_fast_learning_rate) if self.learn_rates else ()
        return (*self._fused_weights(), *rates)

    def _run_fused(
        self, input_terms: th.Tensor, gate_terms: th.Tensor | None, state: th.Tensor, starts: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """The whole sequence in one compiled op (:mod:`fw_agents.memory._fused`): outputs, packed state."""
        lam, eta = self.rates()
        eps = self.layer_norm.eps if isinstance(self.layer_norm, nn.LayerNorm) else 1e-5
        W, U, gain, bias = self._fused_weights()
        U = None if U is None else self._recurrent(U)
        return _fused.run(
            input_terms, gate_terms, state, starts, self._recurrent(W), U, gain, bias, lam, eta, self.inner_steps,
            self.activation_name, eps,
        )  # fmt: skip

    def _inner_loop(
        self, slow: th.Tensor, read: Callable[[th.Tensor], th.Tensor], trace: th.Tensor | None = None
    ) -> th.Tensor:
        """``h_0 = f(slow)``; S times ``h_{s+1} = f(LN(slow + A h_s))``, where ``read(h_s) = A h_s``; with
        ``fast_read_gain``, ``g ⊙ A h_s / tr A`` (``trace`` ``(B, 1)``: tr A, given then)."""
        hs = self.activation(slow)
        for _ in range(self.inner_steps):
            fast = read(hs)
            if self.read_gain is not None:
                # A is a positive-weighted sum of outer products, so ‖A h_s‖ <= tr A ‖h_s‖: the quotient is bounded,
                # and where nothing is stored (A = 0) the read is 0 / ε = 0.
                fast = self.read_gain * fast / (trace + 1e-8)
            if self.collect_stats:
                self._fast_slow_ratios.append((fast.norm(dim=-1) / slow.norm(dim=-1).clamp_min(1e-8)).mean())
            hs = self.activation(self.layer_norm(slow + fast))
        return hs

    def _recurrent(self, tensor: th.Tensor) -> th.Tensor:
        """W or U (or its product with h) as the cell uses it: the stored one times ``recurrent_step_scale``."""
        return tensor if self.recurrent_step_scale == 1.0 else self.recurrent_step_scale * tensor

    def _update(self, h: th.Tensor, candidate: th.Tensor, gate_input: th.Tensor | None) -> th.Tensor:
        """The new state: the candidate itself (paper), or gated ``h + z ⊙ (candidate − h)``."""
        if gate_input is None:
            return candidate
        z = th.sigmoid(gate_input + self._recurrent(self.hidden_to_gate(h)))
        if self.collect_stats:
            self._gates.append(z)
        return h + z * (candidate - h)

    def _start_stats(self) -> None:
        self._fast_slow_ratios: list[th.Tensor] = []
        self._gates: list[th.Tensor] = []

    def _finish_stats(self) -> None:
        """The step's statistics: ‖A h‖ / ‖W h + C x‖; the gate's mean z and the share of units keeping their state
        for 10 steps or more (z < 0.1); λ and η as they are now (learned ones move)."""
        if self._fast_slow_ratios:
            self.stats["fast_slow_ratio"] = th.stack(self._fast_slow_ratios).mean().item()
        if self._gates:
            gates = th.stack(self._gates)
            self.stats.update(gate_mean=gates.mean().item(), gate_slow_fraction=(gates < 0.1).float().mean().item())
        lam, eta = (float(th.as_tensor(rate).detach()) for rate in self.rates())
        self.stats.update(decay_rate=lam, fast_learning_rate=eta)

    def _run_explicit(
        self,
        input_terms: th.Tensor,
        gate_terms: th.Tensor | None,
        h: th.Tensor,
        fast_weights: th.Tensor,
        starts: th.Tensor,
        any_reset: list[bool],
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Step by step with the matrix A ``(B, H, H)``."""
        self._start_stats()
        lam, eta = self.rates()
        outputs = []
        for t, slow_input in enumerate(input_terms):
            if any_reset[t]:  # selects, not products: 0 · NaN would carry a NaN into the new episode
                h, fast_weights = reset_state(h, starts[t]), reset_state(fast_weights, starts[t])
            slow = slow_input + self._recurrent(self.hidden_to_hidden(h))
            A = fast_weights  # A(t) is fixed over the inner loop

            trace = A.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) if self.read_gain is not None else None
            candidate = self._inner_loop(slow, lambda hs, A=A: th.bmm(A, hs.unsqueeze(-1)).squeeze(-1), trace)
            h = self._update(h, candidate, None if gate_terms is None else gate_terms[t])
            # Write after the new h: A(t+1) = λ A(t) + η h(t+1) h(t+1)ᵀ.
            # λ and η as factors (not baddbmm's beta/alpha, which take numbers only): learned rates are tensors.
            fast_weights = th.baddbmm(lam * fast_weights, (eta * h).unsqueeze(-1), h.unsqueeze(-2))
            outputs.append(h)
        self._finish_stats()
        return th.stack(outputs), h, fast_weights

    def _run_attention(
        self,
        input_terms: th.Tensor,
        gate_terms: th.Tensor | None,
        h: th.Tensor,
        initial_fast_weights: th.Tensor,
        starts: th.Tensor,
        any_reset: list[bool],
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Step by step without forming A: the read is attention over this sequence's hidden states.

        ``weights`` ``(B, τ)`` holds η λ^{t-τ} for each stored hidden state (zeroed before an episode
        start), ``carry`` ``(B, 1)`` holds λ^{t-t₀} for the memory A₀ carried into the sequence (zeroed
        likewise).
        """
        self._start_stats()
        batch = h.shape[0]
        lam, eta = self.rates()
        # A₀ of an env that starts an episode at step 0 is never read (carry is zeroed there), but carry · (A₀ h)
        # would still be 0 · NaN if A₀ held a NaN or inf from the last episode: select it away first.
        if any_reset[0]:
            initial_fast_weights = reset_state(initial_fast_weights, starts[0])
        # A carried in from before the sequence is read only if it holds anything (`!= 0` counts a NaN: an
        # env's non-finite memory must show, not be skipped because amax() of a NaN compares False).
        use_carry = bool((initial_fast_weights != 0).any()) if self.fast_learning_rate > 0 else False
        carry = h.new_ones(batch, 1)
        weights = h.new_zeros(batch, 0)
        history: list[th.Tensor] = []
        outputs = []
        # With fast_read_gain, tr A kept as A is (reset with it, λ tr A + η ‖h‖² at each write): O(H) a step.
        trace = None
        if self.read_gain is not None:
            trace = h.new_zeros(batch, 1)
            if use_carry:
                trace = trace + initial_fast_weights.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)
        for t, slow_input in enumerate(input_terms):
            if any_reset[t]:
                # h by a select (it may hold a NaN from the last episode); carry and weights are finite
                # multipliers of λ and η, so a product zeroes them. The keys (this sequence's earlier states)
                # and A₀ are read through those zeroed factors, and 0 · NaN is NaN: select them away too.
                keep = (starts[t] == 0).to(h.dtype).unsqueeze(-1)
                h, carry, weights = reset_state(h, starts[t]), carry * keep, weights * keep
                history = [reset_state(key, starts[t]) for key in history]
                if use_carry:
                    initial_fast_weights = reset_state(initial_fast_weights, starts[t])
                if trace is not None:
                    trace = reset_state(trace, starts[t])
            slow = slow_input + self._recurrent(self.hidden_to_hidden(h))

            def read(
                hs: th.Tensor, keys=tuple(history), weights=weights, carry=carry, carried=initial_fast_weights
            ) -> th.Tensor:
                # η Σ λ^{t-τ} h(τ)⟨h(τ), hs⟩ over this sequence's states (none yet at its first step).
                fast = AttentionRead.apply(weights, hs, *keys) if keys else th.zeros_like(hs)
                if use_carry:
                    fast = fast + carry * th.bmm(carried, hs.unsqueeze(-1)).squeeze(-1)
                return fast

            candidate = self._inner_loop(slow, read, trace)
            h = self._update(h, candidate, None if gate_terms is None else gate_terms[t])
            # The write, in attention form: older entries decay by λ, the new state enters with weight η.
            weights = th.cat([weights * lam, h.new_ones(batch, 1) * eta], dim=1)
            carry = carry * lam
            if trace is not None:
                trace = lam * trace + eta * h.square().sum(-1, keepdim=True)
            history.append(h)
            outputs.append(h)
        self._finish_stats()
        outputs_t = th.stack(outputs)
        # Final A = λ^{T} A₀ (if carried) + Σ_τ w_τ h(τ) h(τ)ᵀ, needed to continue after the sequence; over the
        # keys as reset (an env's states from before its last episode start are zeros there, not NaN).
        keys = th.stack(history, dim=1)  # (B, T, H)
        fast_weights = th.bmm(keys.transpose(1, 2) * weights.unsqueeze(1), keys)
        if use_carry:
            fast_weights = fast_weights + carry.unsqueeze(-1) * initial_fast_weights
        return outputs_t, h, fast_weights

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, decay_rate={self.decay_rate}, fast_learning_rate={self.fast_learning_rate}, "
            f"inner_steps={self.inner_steps}, activation={self.activation_name}, compute_path={self.compute_path}"
            + ("" if self.output_scale == 1.0 else f", output_scale={self.output_scale}")
        )
