// CPU kernels for the fast ops a decode step calls per layer: RMS
// normalization, rotary embedding, one-query attention and the MLP's
// silu(gate) * up, and the sampler's log-sum-exp, each an MLX primitive of
// our own run on the CPU stream.
//
// Why: MLX 0.32 has no CPU kernels for fast::rms_norm, fast::rope and
// fast::scaled_dot_product_attention; on the CPU they expand into their
// fallback graphs (11, 29 and 12 primitives), and each primitive costs host
// time to build and dispatch on every step. One primitive each does the
// same arithmetic in one pass (float32 accumulation, results rounded once
// to the output dtype). MLX compiles silu(gate) * up into one primitive,
// but its CPU code is scalar (one libm-style exp and fmaf call per
// element); ours is vectorized. Attention's heads are shared among the
// quantized product's threads (qmm_pool.hpp).
//
// Inputs are read through their strides (cache slices and transposed heads
// are views), so no copy is added to the graph; outputs are contiguous.

#include "cpu_fused.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"

#include "fused_math.hpp"
#include "qmm_pool.hpp"
#include "shim_common.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace {

using mlx::core::array;

using namespace mlx_sys_fused;

using mlx_sys_shim::guarded;
using mlx_sys_shim::is_float;
using mlx_sys_shim::float_row;
using mlx_sys_shim::row_offset;

#if defined(__x86_64__) || defined(_M_X64)
#define FUSED_AVX512 __attribute__((target("avx512f,avx2,fma")))

bool has_avx512() {
  static const bool yes = has_avx2() && __builtin_cpu_supports("avx512f");
  return yes;
}

// exp(x) to about 1 ulp: 2^n exp(r) with n = round(x / ln 2), r = x - n ln 2
// (ln 2 in two parts) and exp(r) by Cephes' expf polynomial; overflows to
// +inf and underflows to 0 as expf does.
FUSED_AVX512 __m512 exp_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

// out[i] = g[i] * sigmoid(g[i]) * u[i], float32, contiguous.
FUSED_AVX512 void swiglu_avx512(const float* g, const float* u, float* out, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 gv = _mm512_maskz_loadu_ps(live, g + i);
    const __m512 uv = _mm512_maskz_loadu_ps(live, u + i);
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, live, _mm512_mul_ps(_mm512_mul_ps(gv, sig), uv));
  }
}

// log(sum(exp(x - m))) + m over x [n] with m its largest element, float32:
// -inf or +inf where m is (as MLX's logsumexp).
FUSED_AVX512 float logsumexp_avx512(const float* x, int64_t n) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mv = lowest;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(lowest, live, x + i));
  }
  const float m = _mm512_reduce_max_ps(mv);
  if (std::isinf(m)) return m;
  const __m512 mb = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_mask_loadu_ps(lowest, live, x + i), mb));
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(live, e));
  }
  return std::log(_mm512_reduce_add_ps(sum)) + m;
}
#endif

// Base of the one-output primitives: allocation and dispatch on the CPU
// stream.
class CpuOp : public mlx::core::UnaryPrimitive {
 public:
  explicit CpuOp(mlx::core::Stream stream) : UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    out.set_data(mlx::core::allocator::malloc(out.nbytes()));
    auto& encoder = mlx::core::cpu::get_command_encoder(stream());
    for (auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    std::vector<array> ins;
    ins.reserve(inputs.size());
    for (auto& in : inputs) ins.push_back(array::unsafe_weak_copy(in));
    // The primitive is held by the task: MLX may detach `out` from it
    // before the stream thread runs the task.
    auto self = std::static_pointer_cast<CpuOp>(out.primitive_ptr());
    encoder.dispatch([self = std::move(self), ins = std::move(ins),
                      out = array::unsafe_weak_copy(out)]() mutable {
      self->compute(ins, out);
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override {
    throw std::runtime_error("cpu_fused: our fused ops run on the CPU only");
  }

  virtual void compute(const std::vector<array>& inputs, array& out) const = 0;
};

// ------------------------------------------------------------- RMSNorm

// out = round(round(x * rsqrt(mean(x^2) + eps)) * w), as MLX's fallback:
// normalized in float32, cast to the output dtype, then scaled by w.
class RmsNorm : public CpuOp {
 public:
  RmsNorm(mlx::core::Stream s, float eps) : CpuOp(s), eps_(eps) {}

  void compute(const std::vector<array>& in, array& out) const override {
    const array& x = in[0];
    const array& w = in[1];
    const int d = x.shape().back();
    const int64_t rows = d == 0 ? 0 : static_cast<int64_t>(x.size() / d);
    std::vector<float> xf(d), wf(d);
    by_dtype(w.dtype(), [&](auto* wt) {
      using W = std::remove_pointer_t<decltype(wt)>;
      load_f32(w.data<W>(), w.strides().back(), d, wf.data());
    });
    const float inv_d = static_cast<float>(1.0 / d);
    by_dtype(x.dtype(), [&](auto* xt) {
      using X = std::remove_pointer_t<decltype(xt)>;
      by_dtype(out.dtype(), [&](auto* ot) {
        using O = std::remove_pointer_t<decltype(ot)>;
        const X* xp = x.data<X>();
        O* op = out.data<O>();
        for (int64_t r = 0; r < rows; ++r) {
          load_f32(xp + row_offset(x, r), x.strides().back(), d, xf.data());
          const float ms = dot(xf.data(), xf.data(), d) * inv_d;
          const float k = 1.0f / std::sqrt(ms + eps_);
          O* o = op + r * d;
          for (int i = 0; i < d; ++i) {
            const float n = static_cast<float>(static_cast<O>(xf[i] * k));
            o[i] = static_cast<O>(n * wf[i]);
          }
        }
      });
    });
  }

  const char* name() const override {
    return "MistralMlxCpuRmsNorm";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    auto o = dynamic_cast<const RmsNorm*>(&other);
    return o != nullptr && o->eps_ == eps_;
  }

 private:
  float eps_;
};

// ---------------------------------------------------------------- RoPE

// MLX's fast::rope with one offset for every row: position p = (offset +
// l) * scale, angle p / freq_i with freq_i = base^(2i / dims) (or given
// freqs), pairs (i, i + dims/2) or, traditional, (2i, 2i + 1) rotated;
// features past `dims` copied.
class Rope : public CpuOp {
 public:
  Rope(mlx::core::Stream s, int dims, bool traditional, float base, float scale, int offset,
       bool has_freqs)
      : CpuOp(s), dims_(dims), traditional_(traditional), base_(base), scale_(scale),
        offset_(offset), has_freqs_(has_freqs) {}

  void compute(const std::vector<array>& in, array& out) const override {
    const array& x = in[0];
    const int d = x.shape().back();
    const int l_len = x.shape(-2);
    const int half = dims_ / 2;
    const int64_t rows = d == 0 ? 0 : static_cast<int64_t>(x.size() / d);
    // The inverse frequencies, then cos and sin per position and pair.
    std::vector<float> freqs;
    if (has_freqs_) {
      const array& f = in[1];
      freqs.resize(half);
      by_dtype(f.dtype(), [&](auto* ft) {
        using F = std::remove_pointer_t<decltype(ft)>;
        load_f32(f.data<F>(), f.strides().back(), half, freqs.data());
      });
    }
    const auto inv = rope_inverse_freqs(dims_, base_, has_freqs_ ? freqs.data() : nullptr);
    std::vector<float> cs(static_cast<size_t>(l_len) * half), sn(cs.size());
    for (int l = 0; l < l_len; ++l) {
      const size_t at = static_cast<size_t>(l) * half;
      rope_angles(inv, offset_ + l, scale_, cs.data() + at, sn.data() + at);
    }
    std::vector<float> xf(d);
    by_dtype(x.dtype(), [&](auto* xt) {
      using X = std::remove_pointer_t<decltype(xt)>;
      const X* xp = x.data<X>();
      X* op = out.data<X>();
      for (int64_t r = 0; r < rows; ++r) {
        const size_t at = static_cast<size_t>(r % l_len) * half;
        load_f32(xp + row_offset(x, r), x.strides().back(), d, xf.data());
        rope_rotate(xf.data(), op + r * d, cs.data() + at, sn.data() + at, dims_, d,
                    traditional_);
      }
    });
  }

  const char* name() const override {
    return "MistralMlxCpuRope";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    auto o = dynamic_cast<const Rope*>(&other);
    return o != nullptr && o->dims_ == dims_ && o->traditional_ == traditional_ &&
        o->base_ == base_ && o->scale_ == scale_ && o->offset_ == offset_ &&
        o->has_freqs_ == has_freqs_;
  }

 private:
  int dims_;
  bool traditional_;
  float base_, scale_;
  int offset_;
  bool has_freqs_;
};

// ----------------------------------------------------------- attention

// softmax(scale q k^T) v for one query position per head, q [B, Hq, 1, D],
// k [B, Hkv, N, D], v [B, Hkv, N, Dv], query head h reading kv head
// h / (Hq / Hkv); no mask (every stored key is visible).
class Attention : public CpuOp {
 public:
  Attention(mlx::core::Stream s, float scale) : CpuOp(s), scale_(scale) {}

  void compute(const std::vector<array>& in, array& out) const override {
    const array& q = in[0];
    const array& k = in[1];
    const array& v = in[2];
    const int b_len = q.shape(0), hq = q.shape(1);
    const int hkv = k.shape(1);
    const int rep = hq / hkv;
    // One task per batch row and query head, computed alone whichever
    // thread runs it; the workers then stay awake for the next product.
    by_dtype(q.dtype(), [&](auto* tt) {
      using T = std::remove_pointer_t<decltype(tt)>;
      mlx_sys_qmm::pool().run(
          b_len * hq,
          [&](int task) {
            const int b = task / hq, h = task % hq;
            head<T>(q, k, v, out, b, h, h / rep);
          },
          mlx_sys_qmm::kDecodeSpinUs);
    });
  }

  // Query head h of batch row b over kv head kh.
  template <typename T>
  void head(const array& q, const array& k, const array& v, array& out, int b, int h, int kh)
      const {
    const int hq = q.shape(1), d = q.shape(3);
    const int n = k.shape(2), dv = v.shape(3);
    thread_local std::vector<float> qf, kf, vf, p, acc;
    qf.resize(d);
    auto at = [](const array& a, int64_t i0, int64_t i1) {
      return i0 * a.strides()[0] + i1 * a.strides()[1];
    };
    load_f32(q.data<T>() + at(q, b, h), q.strides()[3], d, qf.data());
    for (auto& e : qf) e *= scale_;
    const HeadRows<T> keys{k.data<T>() + at(k, b, kh), k.strides()[2], k.strides()[3]};
    const HeadRows<T> values{v.data<T>() + at(v, b, kh), v.strides()[2], v.strides()[3]};
    attend_head(qf.data(), keys, values, n, d, dv, kf, vf, p, acc);
    T* o = out.data<T>() + (static_cast<int64_t>(b) * hq + h) * dv;
    for (int i = 0; i < dv; ++i) o[i] = static_cast<T>(acc[i]);
  }

  const char* name() const override {
    return "MistralMlxCpuAttention";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    auto o = dynamic_cast<const Attention*>(&other);
    return o != nullptr && o->scale_ == scale_;
  }

 private:
  float scale_;
};

// --------------------------------------------------------------- SwiGLU

// out = silu(gate) * up = gate * sigmoid(gate) * up, float32, with
// sigmoid(g) = 1 / (1 + exp(-g)); each product rounded as MLX's ops round
// them, exp to about 1 ulp (MLX's own CPU exp is an approximation too).
class SwiGlu : public CpuOp {
 public:
  explicit SwiGlu(mlx::core::Stream s) : CpuOp(s) {}

  void compute(const std::vector<array>& in, array& out) const override {
    const array& g = in[0];
    const array& u = in[1];
    const int d = out.shape().back();
    const int64_t rows = d == 0 ? 0 : static_cast<int64_t>(out.size() / d);
    // Rows of the last axis, read in place where contiguous (the halves of
    // the stacked gate/up product are), else gathered.
    std::vector<float> gs, us;
    for (int64_t r = 0; r < rows; ++r) {
      const float* gp = float_row(g, r, gs);
      const float* up = float_row(u, r, us);
      float* op = out.data<float>() + r * d;
#if defined(__x86_64__) || defined(_M_X64)
      if (has_avx512()) {
        swiglu_avx512(gp, up, op, d);
        continue;
      }
#endif
      for (int i = 0; i < d; ++i) {
        const float sig = 1.0f / (1.0f + std::exp(-gp[i]));
        op[i] = gp[i] * sig * up[i];
      }
    }
  }

  const char* name() const override {
    return "MistralMlxCpuSwiGlu";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    return dynamic_cast<const SwiGlu*>(&other) != nullptr;
  }
};

// -------------------------------------------------------- log-sum-exp

// log(sum(exp(x))) over the last axis (keeping it, of size 1), float32:
// the sampler's normalizer over a vocabulary of logits. MLX's CPU kernel
// is scalar, with an fmaf call per step of its exp; ours is AVX-512.
class LogSumExp : public CpuOp {
 public:
  explicit LogSumExp(mlx::core::Stream s) : CpuOp(s) {}

  void compute(const std::vector<array>& in, array& out) const override {
    const array& x = in[0];
    const int d = x.shape().back();
    const int64_t rows = d == 0 ? 0 : static_cast<int64_t>(x.size() / d);
    std::vector<float> scratch;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = float_row(x, r, scratch);
      out.data<float>()[r] = lse(row, d);
    }
  }

  static float lse(const float* x, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
    if (has_avx512()) return logsumexp_avx512(x, n);
#endif
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
    if (std::isinf(m)) return m;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - m);
    return std::log(sum) + m;
  }

  const char* name() const override {
    return "MistralMlxCpuLogSumExp";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    return dynamic_cast<const LogSumExp*>(&other) != nullptr;
  }
};

}  // namespace

extern "C" int mlx_sys_cpu_logsumexp(
    mlx_array* res,
    const mlx_array x,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return guarded(res, err, err_len, [&] {
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_fused");
    const array& xa = mlx_array_get_(x);
    if (xa.dtype() != mlx::core::float32 || xa.ndim() < 1 || xa.shape().back() == 0) {
      throw std::invalid_argument("cpu_logsumexp: x must be float32 [..., N], N > 0");
    }
    auto shape = xa.shape();
    shape.back() = 1;
    return array(std::move(shape), xa.dtype(), std::make_shared<LogSumExp>(s), {xa});
  });
}

extern "C" int mlx_sys_cpu_swiglu(
    mlx_array* res,
    const mlx_array gate,
    const mlx_array up,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return guarded(res, err, err_len, [&] {
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_fused");
    const array& ga = mlx_array_get_(gate);
    const array& ua = mlx_array_get_(up);
    if (ga.shape() != ua.shape()) {
      throw std::invalid_argument("cpu_swiglu: gate and up must have one shape");
    }
    if (ga.dtype() != mlx::core::float32 || ua.dtype() != mlx::core::float32) {
      throw std::invalid_argument("cpu_swiglu: gate and up must be float32");
    }
    if (ga.ndim() < 1) throw std::invalid_argument("cpu_swiglu: gate and up need 1+ dims");
    return array(ga.shape(), ga.dtype(), std::make_shared<SwiGlu>(s), {ga, ua});
  });
}

extern "C" int mlx_sys_cpu_rms_norm(
    mlx_array* res,
    const mlx_array x,
    const mlx_array weight,
    float eps,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return guarded(res, err, err_len, [&] {
    const array& xa = mlx_array_get_(x);
    const array& wa = mlx_array_get_(weight);
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_fused");
    if (xa.ndim() < 1 || wa.ndim() != 1 || wa.shape(0) != xa.shape().back()) {
      throw std::invalid_argument("cpu_rms_norm: weight must be [D] for x [..., D]");
    }
    if (!is_float(xa.dtype()) || !is_float(wa.dtype())) {
      throw std::invalid_argument("cpu_rms_norm: x and weight must be floating point");
    }
    auto dtype = mlx::core::promote_types(xa.dtype(), wa.dtype());
    return array(xa.shape(), dtype, std::make_shared<RmsNorm>(s, eps), {xa, wa});
  });
}

extern "C" int mlx_sys_cpu_rope(
    mlx_array* res,
    const mlx_array x,
    int dims,
    bool traditional,
    float base,
    float scale,
    int offset,
    const mlx_array freqs,
    bool has_freqs,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return guarded(res, err, err_len, [&] {
    const array& xa = mlx_array_get_(x);
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_fused");
    if (xa.ndim() < 2 || dims <= 0 || dims % 2 != 0 || dims > xa.shape().back()) {
      throw std::invalid_argument("cpu_rope: x must be [..., L, D] with even dims <= D");
    }
    if (!is_float(xa.dtype())) throw std::invalid_argument("cpu_rope: x must be floating point");
    std::vector<array> inputs = {xa};
    if (has_freqs) {
      const array& fa = mlx_array_get_(freqs);
      if (fa.ndim() != 1 || fa.shape(0) != dims / 2 || !is_float(fa.dtype())) {
        throw std::invalid_argument("cpu_rope: freqs must be [dims / 2] floating point");
      }
      inputs.push_back(fa);
    }
    return array(
        xa.shape(), xa.dtype(),
        std::make_shared<Rope>(s, dims, traditional, base, scale, offset, has_freqs),
        std::move(inputs));
  });
}

extern "C" int mlx_sys_cpu_decode_attention(
    mlx_array* res,
    const mlx_array queries,
    const mlx_array keys,
    const mlx_array values,
    float scale,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return guarded(res, err, err_len, [&] {
    const array& q = mlx_array_get_(queries);
    const array& k = mlx_array_get_(keys);
    const array& v = mlx_array_get_(values);
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_fused");
    if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 || q.shape(2) != 1) {
      throw std::invalid_argument("cpu_decode_attention: q [B, Hq, 1, D], k and v 4-D");
    }
    if (k.shape(0) != q.shape(0) || v.shape(0) != q.shape(0) || k.shape(3) != q.shape(3) ||
        v.shape(1) != k.shape(1) || v.shape(2) != k.shape(2) || k.shape(1) == 0 ||
        q.shape(1) % k.shape(1) != 0 || k.shape(2) == 0) {
      throw std::invalid_argument("cpu_decode_attention: shapes of q, k and v do not agree");
    }
    if (!is_float(q.dtype()) || k.dtype() != q.dtype() || v.dtype() != q.dtype()) {
      throw std::invalid_argument("cpu_decode_attention: q, k and v must share a float dtype");
    }
    auto shape = q.shape();
    shape.back() = v.shape(3);
    return array(std::move(shape), q.dtype(), std::make_shared<Attention>(s, scale), {q, k, v});
  });
}
