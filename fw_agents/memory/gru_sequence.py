"""A one-layer GRU over a whole sequence, with a backward pass written out by hand.

``torch.nn.GRU`` on the CPU has no fused kernel for training (``torch.nn.LSTM`` has oneDNN's): autograd records
about a dozen nodes per step and replays them one by one, so a PPO update over 128-step sequences of a few
environments spends most of its time in that replay, and a GRU trained twice as slowly as an LSTM of the same
size. Here the forward pass is torch's own GRU run without a graph (outputs bit for bit ``torch.nn.GRU``'s), and
the backward pass keeps only what is sequential about it sequential:

    r = σ(W_ir x + b_ir + W_hr h + b_hr)          gi = W_i x + b_i,  gh = W_h h + b_h   ([r; z; n] blocks)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

Every gate of every step is recomputed at once from the saved outputs (two matrix products over all T·B rows),
and so are the factors that carry a gradient ``dh'`` back to ``h``: directly as ``dh' ⊙ z``, and through ``gh`` as
``(dh' ⊙ [k_r; k_z; k_n ⊙ r]) W_h``. The loop over time then does one multiply and one matrix product per step (the
direct term rides along as an identity block under ``W_h``); the weights' gradients are one product each over all
steps. The gradients equal autograd's up to float rounding (tests/memory/test_rnn_cores.py). Forward and backward
together take 0.5–0.9× ``torch.nn.GRU``'s time and a third to a quarter of its saved memory, except at large H over
short sequences, where recomputing the gates costs what the replay saved (docs/results.md §3).
"""

from __future__ import annotations

import torch as th
from torch.autograd.function import once_differentiable


class GRUSequence(th.autograd.Function):
    """``(x (T, B, F), h0 (B, H), w_ih (3H, F), w_hh (3H, H), b_ih (3H,), b_hh (3H,))`` -> ``(outputs (T, B, H),
    h_T (B, H))``, with torch's parameter layout (``torch.nn.GRU``'s ``weight_ih_l0`` etc.)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):  # noqa: ANN001, ANN205 (autograd's signature)
        # torch.gru(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        outputs, h_last = th.gru(x, h0.unsqueeze(0), (w_ih, w_hh, b_ih, b_hh), True, 1, 0.0, False, False, False)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, outputs)
        return outputs, h_last.squeeze(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs, d_h_last):  # noqa: ANN001, ANN205
        x, h0, w_ih, w_hh, b_ih, b_hh, outputs = ctx.saved_tensors
        T, B, H = outputs.shape
        rows_x = x.reshape(T * B, -1)
        h_before = th.cat([h0.unsqueeze(0), outputs[:-1]])  # h(t-1) for every step, (T, B, H)
        rows_h = h_before.reshape(T * B, H)
        gi = th.addmm(b_ih, rows_x, w_ih.t()).view(T, B, 3, H)
        gh = th.addmm(b_hh, rows_h, w_hh.t()).view(T, B, 3, H)
        r = th.sigmoid(gi[:, :, 0] + gh[:, :, 0])
        z = th.sigmoid(gi[:, :, 1] + gh[:, :, 1])
        n = th.tanh(gi[:, :, 2] + r * gh[:, :, 2])
        # dh' -> the pre-activations: k_n to n's (through tanh), k_r to r's (through n, then σ), k_z to z's.
        k_n = (1 - z) * (1 - n * n)
        k_r = k_n * gh[:, :, 2] * r * (1 - r)
        k_z = (h_before - n) * z * (1 - z)
        # dh' -> dh = [dh' ⊙ k_r, dh' ⊙ k_z, dh' ⊙ k_n ⊙ r, dh' ⊙ z] @ [W_h; I]: one product per step.
        to_before = th.stack([k_r, k_z, k_n * r, z], dim=2)  # (T, B, 4, H)
        w_back = th.cat([w_hh, th.eye(H, dtype=w_hh.dtype, device=w_hh.device)])  # (4H, H)

        dh = th.zeros_like(outputs) if d_outputs is None else d_outputs.clone()  # dh(t): every path into h(t)
        if d_h_last is not None:
            dh[-1] += d_h_last
        scaled = th.empty(B, 4, H, dtype=outputs.dtype, device=outputs.device)
        for t in range(T - 1, 0, -1):
            th.mul(dh[t].unsqueeze(1), to_before[t], out=scaled)
            dh[t - 1].addmm_(scaled.view(B, 4 * H), w_back)
        d_h0 = (dh[0].unsqueeze(1) * to_before[0]).view(B, 4 * H) @ w_back

        d_r, d_z, d_n = dh * k_r, dh * k_z, dh * k_n
        d_gi = th.stack([d_r, d_z, d_n], dim=2).view(T * B, 3 * H)
        d_gh = th.stack([d_r, d_z, d_n * r], dim=2).view(T * B, 3 * H)
        d_x = (d_gi @ w_ih).view_as(x)
        return d_x, d_h0, d_gi.t() @ rows_x, d_gh.t() @ rows_h, d_gi.sum(0), d_gh.sum(0)


def gru_sequence(
    x: th.Tensor, h0: th.Tensor, w_ih: th.Tensor, w_hh: th.Tensor, b_ih: th.Tensor, b_hh: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """:class:`GRUSequence`: ``x`` ``(T, B, F)``, ``h0`` ``(B, H)`` -> outputs ``(T, B, H)``, last state ``(B, H)``."""
    return GRUSequence.apply(x, h0, w_ih, w_hh, b_ih, b_hh)
