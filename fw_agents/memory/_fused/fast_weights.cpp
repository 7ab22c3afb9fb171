// Fused sequence forward and backward of FastWeightsRNN (fw_agents/memory/fast_weights.py) on the CPU.
//
// One call runs the whole time loop. Environments are independent (each has its own A; only the slow weights
// are shared), so the loop is "for each env b: for each step t": env b's A stays in L1/L2 for all T steps
// instead of B matrices streaming through the cache once per step. Envs are spread over torch's threads with
// at::parallel_for; each env's arithmetic is the same whatever the thread count (deterministic results).
//
// Per env, with h and A zeroed before step t where starts[t] != 0 (shapes per env; H hidden units, S inner
// steps). Zeroed means overwritten (std::fill, or a select), never multiplied by 0: a NaN or inf left by the last
// episode must not survive into the next one, forward or backward:
//     slow  = in[t] + W h                       in = C x + c, precomputed by one GEMM outside
//     v_0   = f(slow)
//     u_s   = slow + A v_{s-1},  y_s = LN(u_s) (or u_s),  v_s = f(y_s)      s = 1..S
//     gated: z = σ(gin[t] + U h);  h' = h + z ⊙ (v_S − h)        else h' = v_S
//     A'    = λ A + η h' h'ᵀ
//
// Forward saves, per env-step: slow (H), the normalised x̂_s (or u_s without LN) (S·H), 1/σ_s (S) and z (H,
// gated). h_s and y_s are elementwise functions of these, recomputed in the backward pass. A(t) is not saved:
// the backward pass rebuilds it from the carried-in A and the outputs (writes only, no reads), keeping √T
// checkpoints and one segment of √T matrices per env in a thread-local buffer, so saved memory is O(T·B·S·H).
//
// A is symmetric, and the packed state is [h, triu(A)] (row-major upper triangle). A, its checkpoints and dL/dA
// stay in that packed form throughout: half the memory traffic of full matrices, and no unpacking.

// Registered as torch operators (torch.ops.fw_agents_fused.*) with ATen's headers only: no pybind11 and no
// torch/extension.h, which halves the first-use compile time.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <cmath>
#include <optional>
#include <vector>

namespace {

enum Activation { RELU = 0, TANH = 1, ELU = 2, GELU = 3, IDENTITY = 4 };

// ------------------------------------------------------------------ small vector kernels (length H)

// y (+)= Σ_i x_i M[i, :], i.e. Mᵀ x (= M x for symmetric M). Only rows with x_i != 0 are read (after a ReLU
// about half are zero), four at a time so that each load and store of y carries four FMAs.
template <typename T>
void combine_rows(const T* __restrict M, const T* __restrict x, T* __restrict y, int64_t H, bool accumulate) {
  if (!accumulate) std::fill(y, y + H, T(0));
  constexpr int64_t kMaxStack = 1024;
  int64_t stack_rows[kMaxStack];
  std::vector<int64_t> heap_rows(H > kMaxStack ? H : 0);
  int64_t* rows = H > kMaxStack ? heap_rows.data() : stack_rows;
  int64_t n = 0;
  for (int64_t i = 0; i < H; ++i) {
    rows[n] = i;
    n += x[i] != T(0);
  }
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const T x0 = x[rows[k]], x1 = x[rows[k + 1]], x2 = x[rows[k + 2]], x3 = x[rows[k + 3]];
    const T* m0 = M + rows[k] * H;
    const T* m1 = M + rows[k + 1] * H;
    const T* m2 = M + rows[k + 2] * H;
    const T* m3 = M + rows[k + 3] * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) y[j] += x0 * m0[j] + x1 * m1[j] + x2 * m2[j] + x3 * m3[j];
  }
  for (; k < n; ++k) {
    const T xi = x[rows[k]];
    const T* m = M + rows[k] * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) y[j] += xi * m[j];
  }
}

template <typename T>
T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) acc += a[j] * b[j];
  return acc;
}

// The forward pass keeps A as the packed state does: its upper triangle, row by row (row i holds A[i, i:]),
// half the memory traffic of the full matrix and no unpacking.

// y += A v for symmetric A given by its packed upper triangle. Row i's entries right of the diagonal serve
// twice: as row i (y_i += A_ij v_j, a dot product) and as column i (y_j += A_ij v_i). Four rows go together, so
// that each load and store of y carries four FMAs and the per-row overhead (a horizontal sum) is shared.
template <typename T>
void triangle_matvec(const T* __restrict tri, const T* __restrict v, T* __restrict y, int64_t H) {
  int64_t i = 0;
  for (; i + 4 <= H; i += 4) {
    const T* r[4];
    r[0] = tri;
    for (int m = 1; m < 4; ++m) r[m] = r[m - 1] + (H - i - m + 1);  // r[m] points at A[i+m, i+m]
    // The 4×4 block on the diagonal.
    T acc[4] = {0, 0, 0, 0};
    for (int a = 0; a < 4; ++a) {
      for (int c = a; c < 4; ++c) {
        const T value = r[a][c - a];
        acc[a] += value * v[i + c];
        if (c != a) acc[c] += value * v[i + a];
      }
    }
    // Columns i+4 .. H-1 of the four rows.
    const int64_t n = H - i - 4;
    const T* r0 = r[0] + 4;
    const T* r1 = r[1] + 3;
    const T* r2 = r[2] + 2;
    const T* r3 = r[3] + 1;
    const T v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
    const T* vr = v + i + 4;
    T* yr = y + i + 4;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t k = 0; k < n; ++k) {
      a0 += r0[k] * vr[k];
      a1 += r1[k] * vr[k];
      a2 += r2[k] * vr[k];
      a3 += r3[k] * vr[k];
      yr[k] += v0 * r0[k] + v1 * r1[k] + v2 * r2[k] + v3 * r3[k];
    }
    y[i] += acc[0] + a0;
    y[i + 1] += acc[1] + a1;
    y[i + 2] += acc[2] + a2;
    y[i + 3] += acc[3] + a3;
    tri = r[3] + (H - i - 3);
  }
  for (; i < H; ++i) {  // the last H mod 4 rows
    const int64_t n = H - i - 1;
    const T vi = v[i];
    T acc = tri[0] * vi;
    for (int64_t k = 0; k < n; ++k) {
      acc += tri[1 + k] * v[i + 1 + k];
      y[i + 1 + k] += vi * tri[1 + k];
    }
    y[i] += acc;
    tri += n + 1;
  }
}

// dst = λ src + η h hᵀ on packed upper triangles (src == dst: in place).
template <typename T>
void triangle_write(const T* src, T* dst, const T* __restrict h, T lam, T eta, int64_t H) {
  for (int64_t i = 0; i < H; ++i) {
    const int64_t n = H - i;
    const T c = eta * h[i];
    const T* hr = h + i;
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) dst[k] = lam * src[k] + c * hr[k];
    src += n;
    dst += n;
  }
}

// Multiplies the off-diagonal entries of a packed triangle by `factor` (the diagonal stays).
template <typename T>
void scale_off_diagonal(T* tri, T factor, int64_t H) {
  for (int64_t i = 0; i < H; ++i) {
    const int64_t n = H - i;
    for (int64_t k = 1; k < n; ++k) tri[k] *= factor;
    tri += n;
  }
}

// ⟨X, Y⟩ = Σ_ij X_ij Y_ij of two symmetric matrices given by their packed upper triangles.
template <typename T>
T symmetric_inner(const T* x, const T* y, int64_t H) {
  T diagonal = 0;
  const T* xi = x;
  const T* yi = y;
  for (int64_t i = 0; i < H; ++i) {
    diagonal += xi[0] * yi[0];
    xi += H - i;
    yi += H - i;
  }
  return T(2) * dot(x, y, H * (H + 1) / 2) - diagonal;
}

template <typename T>
T gelu_cdf(T y) {
  return T(0.5) * (T(1) + std::erf(y * T(M_SQRT1_2)));
}

// out = f(y), elementwise.
template <typename T>
void activate(const T* __restrict y, T* __restrict out, int64_t H, int act) {
  switch (act) {
    case RELU:
      for (int64_t j = 0; j < H; ++j) out[j] = y[j] > T(0) ? y[j] : T(0);
      break;
    case TANH:
      for (int64_t j = 0; j < H; ++j) out[j] = std::tanh(y[j]);
      break;
    case ELU:
      for (int64_t j = 0; j < H; ++j) out[j] = y[j] > T(0) ? y[j] : std::expm1(y[j]);
      break;
    case GELU:
      for (int64_t j = 0; j < H; ++j) out[j] = y[j] * gelu_cdf(y[j]);
      break;
    default:
      std::copy(y, y + H, out);
  }
}

// g *= f'(y), elementwise (f' from the pre-activation y).
template <typename T>
void times_activation_grad(const T* __restrict y, T* __restrict g, int64_t H, int act) {
  switch (act) {
    case RELU:
      for (int64_t j = 0; j < H; ++j) g[j] = y[j] > T(0) ? g[j] : T(0);
      break;
    case TANH:
      for (int64_t j = 0; j < H; ++j) {
        const T f = std::tanh(y[j]);
        g[j] *= T(1) - f * f;
      }
      break;
    case ELU:
      for (int64_t j = 0; j < H; ++j) g[j] *= y[j] > T(0) ? T(1) : std::exp(y[j]);
      break;
    case GELU: {
      const T inv_sqrt_2pi = T(0.3989422804014327);
      for (int64_t j = 0; j < H; ++j) g[j] *= gelu_cdf(y[j]) + y[j] * inv_sqrt_2pi * std::exp(T(-0.5) * y[j] * y[j]);
      break;
    }
    default:
      break;
  }
}

struct Config {
  int64_t T, B, H, S, D;
  int act;
  bool layer_norm, gated;
  double lam, eta, eps;
};

// Whether env b's state is reset before step t + 1 (false at the last step: nothing follows it).
template <typename T>
bool next_resets(const Config& c, const T* starts, int64_t t, int64_t b) {
  return t + 1 < c.T && starts[(t + 1) * c.B + b] != T(0);
}

// Everything one step's backward pass needs from the saved tensors, for env b at step t.
template <typename T>
struct StepSaved {
  const T* slow;   // (H,)
  const T* xhat;   // (S, H): x̂_s with LN, u_s without
  const T* rstd;   // (S,) with LN
  const T* z;      // (H,) gated
};

// y_s = x̂_s ⊙ gain + bias (LN) or u_s; then v_s = f(y_s).
template <typename T>
void inner_preactivation(const Config& c, const T* xhat, const T* gain, const T* bias, T* y) {
  if (c.layer_norm) {
    for (int64_t j = 0; j < c.H; ++j) y[j] = xhat[j] * gain[j] + bias[j];
  } else if (xhat != y) {
    std::copy(xhat, xhat + c.H, y);
  }
}

// ------------------------------------------------------------------ forward

template <typename T>
void forward_env(const Config& c, int64_t b, const T* in, const T* gin, const T* state, const T* starts, const T* Wt,
                 const T* Ut, const T* gain, const T* bias, T* out, T* new_state, T* s_slow, T* s_xhat, T* s_rstd,
                 T* s_z) {
  const int64_t H = c.H, B = c.B, S = c.S, n_tri = c.D - H;
  std::vector<T> buf(6 * H);
  T* h = buf.data();
  T* slow = h + H;
  T* v = slow + H;
  T* u = v + H;
  T* y = u + H;
  T* gate = y + H;
  // A(t) is read from the carried-in state's triangle until the first write, which goes to the new state's
  // triangle; from then on A is updated there in place (no copy of the state, no unpacking).
  const T* A = state + b * c.D + H;
  T* A_new = new_state + b * c.D + H;
  std::copy(state + b * c.D, state + b * c.D + H, h);
  const T lam = T(c.lam), eta = T(c.eta);
  // A is zero at the start (a fresh state) and after a reset until the next write: skip the reads then.
  bool A_zero = std::all_of(A, A + n_tri, [](T a) { return a == T(0); });
  bool A_new_zero = false;  // the new state's triangle holds zeros (filled at a reset, not written since)
  for (int64_t t = 0; t < c.T; ++t) {
    const int64_t tb = t * B + b;
    if (starts[tb] != T(0)) {
      std::fill(h, h + H, T(0));
      if (!A_new_zero) std::fill(A_new, A_new + n_tri, T(0));
      A = A_new;
      A_zero = A_new_zero = true;
    }
    std::copy(in + tb * H, in + (tb + 1) * H, slow);
    combine_rows(Wt, h, slow, H, true);  // + W h
    activate(slow, v, H, c.act);        // v_0 = f(slow)
    for (int64_t s = 0; s < S; ++s) {
      std::copy(slow, slow + H, u);
      if (!A_zero) triangle_matvec(A, v, u, H);  // u = slow + A v
      T* xhat = s_xhat ? s_xhat + (tb * S + s) * H : y;
      if (c.layer_norm) {
        T mean = 0;
        for (int64_t j = 0; j < H; ++j) mean += u[j];
        mean /= T(H);
        T var = 0;
        for (int64_t j = 0; j < H; ++j) var += (u[j] - mean) * (u[j] - mean);
        const T rstd = T(1) / std::sqrt(var / T(H) + T(c.eps));
        for (int64_t j = 0; j < H; ++j) xhat[j] = (u[j] - mean) * rstd;
        if (s_rstd) s_rstd[tb * S + s] = rstd;
      } else {
        std::copy(u, u + H, xhat);
      }
      inner_preactivation(c, xhat, gain, bias, y);
      activate(y, v, H, c.act);
    }
    T* h_new = out + tb * H;
    if (c.gated) {
      std::copy(gin + tb * H, gin + (tb + 1) * H, gate);
      combine_rows(Ut, h, gate, H, true);  // + U h
      for (int64_t j = 0; j < H; ++j) {
        const T z = T(1) / (T(1) + std::exp(-gate[j]));
        if (s_z) s_z[tb * H + j] = z;
        h_new[j] = h[j] + z * (v[j] - h[j]);
      }
    } else {
      std::copy(v, v + H, h_new);
    }
    std::copy(h_new, h_new + H, h);
    // A(t+1) is overwritten by the next step's reset: no write (a run of resets, such as the padding after a
    // replayed sequence, then costs O(H) a step). The last step always writes: it is the new state.
    if (!next_resets(c, starts, t, b)) {
      triangle_write(A, A_new, h, lam, eta, H);
      A = A_new;
      A_zero = A_new_zero = false;
    }
    if (s_slow) std::copy(slow, slow + H, s_slow + tb * H);
  }
  std::copy(h, h + H, new_state + b * c.D);
}

Config make_config(const at::Tensor& in, const at::Tensor& state, int64_t S, int64_t act, bool layer_norm, bool gated,
                   double lam, double eta, double eps) {
  TORCH_CHECK(in.dim() == 3, "input_terms must be (T, B, H)");
  Config c{in.size(0), in.size(1), in.size(2), S, state.size(1), int(act), layer_norm, gated, lam, eta, eps};
  TORCH_CHECK(c.D == c.H + c.H * (c.H + 1) / 2, "state must be (B, H + H(H+1)/2)");
  TORCH_CHECK(state.size(0) == c.B, "state and input_terms disagree on B");
  return c;
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

// Returns outputs (T, B, H), new packed state (B, D) and, when `save`, slow (T, B, H), x̂ (T, B, S, H),
// 1/σ (T, B, S) and z (T, B, H) for the backward pass (empty tensors where not needed).
std::vector<at::Tensor> forward(const at::Tensor& input_terms, const std::optional<at::Tensor>& gate_terms,
                                const at::Tensor& state, const at::Tensor& starts, const at::Tensor& W,
                                const std::optional<at::Tensor>& U, const std::optional<at::Tensor>& gain,
                                const std::optional<at::Tensor>& bias, double lam, double eta, int64_t S, int64_t act,
                                bool layer_norm, bool gated, double eps, bool save) {
  const Config c = make_config(input_terms, state, S, act, layer_norm, gated, lam, eta, eps);
  const auto in = input_terms.contiguous();
  const auto st = state.contiguous();
  const auto sts = starts.to(in.scalar_type()).contiguous();
  const auto Wt = W.t().contiguous();
  const auto gin = gated ? gate_terms->contiguous() : at::Tensor();
  const auto Ut = gated ? U->t().contiguous() : at::Tensor();
  const auto g = layer_norm ? gain->contiguous() : at::Tensor();
  const auto bi = layer_norm ? bias->contiguous() : at::Tensor();
  auto out = at::empty({c.T, c.B, c.H}, in.options());
  auto new_state = at::empty({c.B, c.D}, in.options());
  auto empty = at::empty({0}, in.options());
  auto s_slow = save ? at::empty({c.T, c.B, c.H}, in.options()) : empty;
  auto s_xhat = save ? at::empty({c.T, c.B, c.S, c.H}, in.options()) : empty;
  auto s_rstd = save && layer_norm ? at::empty({c.T, c.B, c.S}, in.options()) : empty;
  auto s_z = save && gated ? at::empty({c.T, c.B, c.H}, in.options()) : empty;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "fused_fast_weights_forward", [&] {
    auto p = [](const at::Tensor& t) { return t.defined() && t.numel() ? t.data_ptr<scalar_t>() : nullptr; };
    at::parallel_for(0, c.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        forward_env<scalar_t>(c, b, p(in), p(gin), p(st), p(sts), p(Wt), p(Ut), p(g), p(bi), p(out), p(new_state),
                              p(s_slow), p(s_xhat), p(s_rstd), p(s_z));
      }
    });
  });
  return {out, new_state, s_slow, s_xhat, s_rstd, s_z};
}

// ------------------------------------------------------------------ backward

template <typename T>
struct EnvGrads {
  T* d_in;      // (T, B, H) -> dL/d slow(t), which is dL/d in[t]
  T* d_gin;     // (T, B, H) -> dL/d (gate pre-activation)
  T* d_state;   // (B, D)
  T* d_gain;    // (B, H) per env, summed outside
  T* d_bias;    // (B, H)
  T* d_lam;     // (B,)
  T* d_eta;     // (B,)
};

template <typename T>
void backward_env(const Config& c, int64_t b, const T* grad_out, const T* grad_state, const T* out, const T* state,
                  const T* starts, const T* s_slow, const T* s_xhat, const T* s_rstd, const T* s_z, const T* W,
                  const T* U, const T* gain, const T* bias, bool want_lam, EnvGrads<T> g) {
  // A(t) and dL/dA are symmetric: like the forward pass, all of it works on packed upper triangles (HH floats).
  const int64_t H = c.H, B = c.B, S = c.S, TT = c.T, HH = c.D - H;
  const T lam = T(c.lam), eta = T(c.eta);
  // A(t) is rebuilt from A₀ and the outputs: checkpoints every K = ⌈√T⌉ steps, then one segment of K matrices at
  // a time (2√T triangles per thread; measured faster than smaller, cache-sized segments with more checkpoints).
  const int64_t K = std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(TT)))));
  const int64_t n_seg = (TT + K - 1) / K;
  std::unique_ptr<T[]> buf(new T[(n_seg + K + 2) * HH + (7 + 2 * S) * H]);  // uninitialised: all written first
  T* ckpt = buf.get();            // (n_seg, HH): A before step k·K (before its reset)
  T* seg = ckpt + n_seg * HH;     // (K, HH): A(t) as read at step t of the current segment
  T* dA = seg + K * HH;           // (HH,) dL/dA, symmetric
  T* A = dA + HH;                 // (HH,) sweep 1's running A
  T* h0 = A + HH;
  T* dh = h0 + H;
  T* dh_prev = dh + H;
  T* q = dh_prev + H;
  T* dv = q + H;
  T* y = dv + H;
  T* dslow = y + H;
  T* vs = dslow + H;              // (S, H): v_0 .. v_{S-1}, the vectors each read multiplied
  T* dus = vs + S * H;            // (S, H): dL/du_s

  // dL/d(new state): h part as is; triu part -> symmetric dA (off-diagonal entries stand for two of A's).
  std::copy(grad_state + b * c.D, grad_state + b * c.D + H, dh);
  std::copy(grad_state + b * c.D + H, grad_state + (b + 1) * c.D, dA);
  scale_off_diagonal(dA, T(0.5), H);
  bool dA_zero = std::all_of(dA, dA + HH, [](T a) { return a == T(0); });

  // Sweep 1: checkpoints (A before step k·K).
  std::copy(state + b * c.D, state + b * c.D + H, h0);
  std::copy(state + b * c.D + H, state + (b + 1) * c.D, A);
  // As in the forward pass, a write that the next step's reset overwrites is skipped, and so is the fill of an A
  // already zero; a checkpoint taken before a reset step is then stale, and never read (sweep 2 zeroes that A).
  const int64_t last_ckpt = (n_seg - 1) * K;
  bool A_is_zero = false;
  for (int64_t t = 0; t < last_ckpt; ++t) {
    if (t % K == 0) std::copy(A, A + HH, ckpt + (t / K) * HH);
    if (starts[t * B + b] != T(0) && !A_is_zero) {
      std::fill(A, A + HH, T(0));
      A_is_zero = true;
    }
    if (!next_resets(c, starts, t, b)) {
      triangle_write(A, A, out + (t * B + b) * H, lam, eta, H);
      A_is_zero = false;
    }
  }
  std::copy(A, A + HH, ckpt + last_ckpt / K * HH);

  for (int64_t k = n_seg - 1; k >= 0; --k) {
    const int64_t t0 = k * K, t1 = std::min(TT, t0 + K);
    // Sweep 2: the segment's A(t), t0 <= t < t1, each written from the one before. A reset step's A(t) is zero:
    // the step itself never reads it (below), so it is filled only where the next step's write reads it.
    for (int64_t t = t0; t < t1; ++t) {
      T* At = seg + (t - t0) * HH;
      const T* prev = t == t0 ? ckpt + k * HH : At - HH;
      if (starts[t * B + b] != T(0)) {
        if (t + 1 < t1 && !next_resets(c, starts, t, b)) std::fill(At, At + HH, T(0));
      } else if (t == t0) {
        std::copy(prev, prev + HH, At);
      } else {
        triangle_write(prev, At, out + ((t - 1) * B + b) * H, lam, eta, H);
      }
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t tb = t * B + b;
      const T* At = seg + (t - t0) * HH;
      const T* h_new = out + tb * H;
      const bool reset = starts[tb] != T(0);
      const T* h_prev = reset ? nullptr : (t == 0 ? h0 : out + (tb - B) * H);
      const T* go = grad_out + tb * H;
      for (int64_t j = 0; j < H; ++j) dh[j] += go[j];

      // The write A(t+1) = λ A(t) + η h' h'ᵀ: dh' += η (dA + dAᵀ) h' = 2η dA h'; dη = h'ᵀ dA h'; dλ = ⟨dA, A(t)⟩.
      // With dA zero (after a reset, or no gradient reaching the new state) these add zeros: skipped. So is dλ at
      // a reset step, where A(t) is zero (and not filled: sweep 2).
      if (!dA_zero) {
        std::fill(q, q + H, T(0));
        triangle_matvec(dA, h_new, q, H);
        for (int64_t j = 0; j < H; ++j) dh[j] += T(2) * eta * q[j];
        g.d_eta[b] += dot(h_new, q, H);
        if (want_lam && !reset) g.d_lam[b] += symmetric_inner(dA, At, H);
      }

      // Recompute v_0 .. v_S from the saved slow, x̂ (elementwise).
      const T* slow = s_slow + tb * H;
      const T* xhat = s_xhat + tb * S * H;
      activate(slow, vs, H, c.act);
      for (int64_t s = 1; s < S; ++s) {
        inner_preactivation(c, xhat + (s - 1) * H, gain, bias, y);
        activate(y, vs + s * H, H, c.act);
      }
      // The update: dv = dL/d v_S.
      std::fill(dh_prev, dh_prev + H, T(0));
      if (c.gated) {
        inner_preactivation(c, xhat + (S - 1) * H, gain, bias, y);
        activate(y, q, H, c.act);  // q = v_S (the candidate)
        const T* z = s_z + tb * H;
        T* dgate = g.d_gin + tb * H;
        for (int64_t j = 0; j < H; ++j) {
          const T hp = h_prev ? h_prev[j] : T(0);
          dv[j] = dh[j] * z[j];
          dgate[j] = dh[j] * (q[j] - hp) * z[j] * (T(1) - z[j]);
          dh_prev[j] = dh[j] * (T(1) - z[j]);
        }
        combine_rows(U, dgate, dh_prev, H, true);  // + Uᵀ dgate
      } else {
        std::copy(dh, dh + H, dv);
      }
      // Inner steps backwards: y_s = LN(u_s), u_s = slow + A(t) v_{s-1}.
      std::fill(dslow, dslow + H, T(0));
      for (int64_t s = S - 1; s >= 0; --s) {
        const T* xs = xhat + s * H;
        inner_preactivation(c, xs, gain, bias, y);
        times_activation_grad(y, dv, H, c.act);  // dv = dL/dy_s
        T* du = dus + s * H;
        if (c.layer_norm) {
          T* dgain = g.d_gain + b * H;
          T* dbias = g.d_bias + b * H;
          T mean_dx = 0, mean_dx_x = 0;
          for (int64_t j = 0; j < H; ++j) {
            dgain[j] += dv[j] * xs[j];
            dbias[j] += dv[j];
            const T dx = dv[j] * gain[j];
            mean_dx += dx;
            mean_dx_x += dx * xs[j];
          }
          mean_dx /= T(H);
          mean_dx_x /= T(H);
          const T rstd = s_rstd[tb * S + s];
          for (int64_t j = 0; j < H; ++j) du[j] = rstd * (dv[j] * gain[j] - mean_dx - xs[j] * mean_dx_x);
        } else {
          std::copy(dv, dv + H, du);
        }
        for (int64_t j = 0; j < H; ++j) dslow[j] += du[j];
        std::fill(dv, dv + H, T(0));
        if (!reset) triangle_matvec(At, du, dv, H);  // dL/dv_{s-1} = A(t)ᵀ du = A(t) du (A(t) = 0 at a reset)
      }
      times_activation_grad(slow, dv, H, c.act);  // v_0 = f(slow)
      T* d_in = g.d_in + tb * H;
      for (int64_t j = 0; j < H; ++j) d_in[j] = dslow[j] + dv[j];
      if (reset) {  // h and A were zeroed before this step: nothing flows further back
        std::fill(dh, dh + H, T(0));
        if (!dA_zero) std::fill(dA, dA + HH, T(0));
        dA_zero = true;
        continue;
      }
      combine_rows(W, d_in, dh_prev, H, true);  // + Wᵀ dslow
      std::copy(dh_prev, dh_prev + H, dh);
      // dL/dA(t) = λ dL/dA(t+1) + Σ_s sym(du_s v_{s-1}ᵀ), on the triangle: row i holds j = i .. H-1.
      dA_zero = false;
      T* a = dA;
      for (int64_t i = 0; i < H; ++i) {
        const int64_t n = H - i;
        for (int64_t s = 0; s < S; ++s) {
          const T* du = dus + s * H + i;
          const T* v = vs + s * H + i;
          const T cu = T(0.5) * du[0], cv = T(0.5) * v[0], decay = s == 0 ? lam : T(1);
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) a[k] = decay * a[k] + cu * v[k] + cv * du[k];
        }
        a += n;
      }
    }
  }
  // dL/d(carried-in state), packed: off-diagonal triu entries collect both of A's entries.
  scale_off_diagonal(dA, T(2), H);
  std::copy(dh, dh + H, g.d_state + b * c.D);
  std::copy(dA, dA + HH, g.d_state + b * c.D + H);
}

// Returns d input_terms (T, B, H), d gate_terms (T, B, H), d state (B, D), dW, dU, d gain, d bias, dλ, dη.
std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& grad_state, const at::Tensor& out,
                                 const at::Tensor& state, const at::Tensor& starts, const at::Tensor& s_slow,
                                 const at::Tensor& s_xhat, const at::Tensor& s_rstd, const at::Tensor& s_z,
                                 const at::Tensor& W, const std::optional<at::Tensor>& U,
                                 const std::optional<at::Tensor>& gain, const std::optional<at::Tensor>& bias,
                                 double lam, double eta, int64_t S, int64_t act, bool layer_norm, bool gated,
                                 double eps, bool want_lam) {
  const Config c = make_config(out, state, S, act, layer_norm, gated, lam, eta, eps);
  const auto opts = out.options();
  const auto go = grad_out.contiguous();
  const auto gs = grad_state.contiguous();
  const auto st = state.contiguous();
  const auto sts = starts.to(out.scalar_type()).contiguous();
  const auto Wc = W.contiguous();
  const auto Uc = gated ? U->contiguous() : at::Tensor();
  const auto gn = layer_norm ? gain->contiguous() : at::Tensor();
  const auto bi = layer_norm ? bias->contiguous() : at::Tensor();
  auto d_in = at::empty({c.T, c.B, c.H}, opts);
  auto d_gin = gated ? at::empty({c.T, c.B, c.H}, opts) : at::empty({0}, opts);
  auto d_state = at::empty({c.B, c.D}, opts);
  auto d_gain = at::zeros({c.B, c.H}, opts);
  auto d_bias = at::zeros({c.B, c.H}, opts);
  auto d_lam = at::zeros({c.B}, opts);
  auto d_eta = at::zeros({c.B}, opts);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "fused_fast_weights_backward", [&] {
    auto p = [](const at::Tensor& t) { return t.defined() && t.numel() ? t.data_ptr<scalar_t>() : nullptr; };
    EnvGrads<scalar_t> g{p(d_in), p(d_gin), p(d_state), p(d_gain), p(d_bias), p(d_lam), p(d_eta)};
    at::parallel_for(0, c.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        backward_env<scalar_t>(c, b, p(go), p(gs), p(out), p(st), p(sts), p(s_slow), p(s_xhat), p(s_rstd), p(s_z),
                               p(Wc), p(Uc), p(gn), p(bi), want_lam, g);
      }
    });
  });
  // The slow weights are shared by all envs: their gradients are one GEMM each over all env-steps,
  // dW = Σ_t dslow(t) h(t)ᵀ with h(t) the state each step started from (zero after a reset). Zeroed by a select,
  // not by multiplying with (1 - start): a NaN or inf left in a reset env's carried-in h would survive 0 · NaN.
  const auto h_first = st.narrow(1, 0, c.H).unsqueeze(0);
  auto h_prev = at::where((sts != 0).unsqueeze(-1), at::zeros({}, opts),
                          at::cat({h_first, out.narrow(0, 0, c.T - 1)}, 0));
  h_prev = h_prev.reshape({c.T * c.B, c.H});
  auto dW = at::mm(d_in.reshape({c.T * c.B, c.H}).t(), h_prev);
  auto dU = gated ? at::mm(d_gin.reshape({c.T * c.B, c.H}).t(), h_prev) : at::empty({0}, opts);
  return {d_in, d_gin, d_state, dW, dU, d_gain.sum(0), d_bias.sum(0), d_lam.sum(), d_eta.sum()};
}

}  // namespace

TORCH_LIBRARY(fw_agents_fused, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
