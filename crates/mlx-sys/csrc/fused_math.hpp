// Shared by our fused CPU primitives (cpu_fused.cpp, cpu_decode_row.cpp):
// reading strided rows into float32, dot products and y += w x, RoPE's
// angles and rotation, and one query head's attention. Both files call
// these same functions, so a fused step rounds exactly as the separate
// primitives do.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "mlx/array.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mlx_sys_fused {

using mlx::core::bfloat16_t;
using mlx::core::Dtype;
using mlx::core::float16_t;

// Calls f with a null pointer of the element type of `t` (float32, float16
// or bfloat16).
template <typename F>
void by_dtype(Dtype t, F&& f) {
  if (t == mlx::core::float32) {
    f(static_cast<float*>(nullptr));
  } else if (t == mlx::core::float16) {
    f(static_cast<float16_t*>(nullptr));
  } else {
    f(static_cast<bfloat16_t*>(nullptr));
  }
}

// Reads `n` elements of stride `stride` into float32.
template <typename T>
inline void load_f32(const T* src, int64_t stride, int n, float* dst) {
  if (stride == 1) {
    for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  } else {
    for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i * stride]);
  }
}

// Dot products and y += w x over float32 rows: AVX2+FMA where the CPU has
// it (chosen at run time), else 16 independent sums the compiler can
// vectorize without reassociating.
inline float dot_portable(const float* a, const float* b, int n) {
  float acc[16] = {};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

#if defined(__x86_64__) || defined(_M_X64)
#define FUSED_AVX2 __attribute__((target("avx2,fma")))

FUSED_AVX2 inline float dot_avx2(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  }
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float s = _mm_cvtss_f32(h);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

FUSED_AVX2 inline void axpy_avx2(float w, const float* x, float* y, int n) {
  const __m256 wv = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += w * x[i];
}

inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

inline float dot(const float* a, const float* b, int n) {
#if defined(__x86_64__) || defined(_M_X64)
  if (has_avx2()) return dot_avx2(a, b, n);
#endif
  return dot_portable(a, b, n);
}

inline void axpy(float w, const float* x, float* y, int n) {
#if defined(__x86_64__) || defined(_M_X64)
  if (has_avx2()) return axpy_avx2(w, x, y, n);
#endif
  for (int i = 0; i < n; ++i) y[i] += w * x[i];
}

// RoPE's inverse frequencies, one per rotated pair: base^(-2i / dims), or
// 1 / freqs[i] where the model gives its own frequencies (`freqs`, float32
// [dims / 2], else null).
inline std::vector<float> rope_inverse_freqs(int dims, float base, const float* freqs) {
  const int half = dims / 2;
  std::vector<float> inv(half);
  if (freqs != nullptr) {
    for (int i = 0; i < half; ++i) inv[i] = 1.0f / freqs[i];
  } else {
    const float c = -std::log(base) / static_cast<float>(half);
    for (int i = 0; i < half; ++i) inv[i] = std::exp(static_cast<float>(i) * c);
  }
  return inv;
}

// cos and sin of the angles (position * scale) * inv[i] of one position.
inline void rope_angles(
    const std::vector<float>& inv, int position, float scale, float* cs, float* sn) {
  const float p = static_cast<float>(position) * scale;
  for (size_t i = 0; i < inv.size(); ++i) {
    const float t = p * inv[i];
    cs[i] = std::cos(t);
    sn[i] = std::sin(t);
  }
}

// One head's features `x` [d] rotated into `o`: pairs (i, i + dims/2) or,
// traditional, (2i, 2i + 1); features past `dims` copied.
template <typename O>
inline void rope_rotate(
    const float* x, O* o, const float* c, const float* s, int dims, int d, bool traditional) {
  const int half = dims / 2;
  if (traditional) {
    for (int i = 0; i < half; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1];
      o[2 * i] = static_cast<O>(a * c[i] - b * s[i]);
      o[2 * i + 1] = static_cast<O>(a * s[i] + b * c[i]);
    }
  } else {
    for (int i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      o[i] = static_cast<O>(a * c[i] - b * s[i]);
      o[i + half] = static_cast<O>(a * s[i] + b * c[i]);
    }
  }
  for (int i = dims; i < d; ++i) o[i] = static_cast<O>(x[i]);
}

// Keys or values of one kv head: position j's `d` features start at
// `data + j * pos_stride`, `elem_stride` apart.
template <typename T>
struct HeadRows {
  const T* data;
  int64_t pos_stride;
  int64_t elem_stride;
};

// softmax(q k^T) v of one query head over `n` positions, `q` [d] already
// scaled, into `acc` [dv] (float32); `kf`, `vf`, `p` are scratch.
template <typename T>
void attend_head(
    const float* q, HeadRows<T> k, HeadRows<T> v, int n, int d, int dv, std::vector<float>& kf,
    std::vector<float>& vf, std::vector<float>& p, std::vector<float>& acc) {
  kf.resize(d);
  vf.resize(dv);
  p.resize(n);
  acc.assign(dv, 0.0f);
  float m = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < n; ++j) {
    const T* kr = k.data + j * k.pos_stride;
    if (k.elem_stride == 1 && std::is_same_v<T, float>) {
      p[j] = dot(q, reinterpret_cast<const float*>(kr), d);
    } else {
      load_f32(kr, k.elem_stride, d, kf.data());
      p[j] = dot(q, kf.data(), d);
    }
    m = std::max(m, p[j]);
  }
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - m);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < n; ++j) {
    const float w = p[j] * inv;
    const T* vr = v.data + j * v.pos_stride;
    if (v.elem_stride == 1 && std::is_same_v<T, float>) {
      axpy(w, reinterpret_cast<const float*>(vr), acc.data(), dv);
    } else {
      load_f32(vr, v.elem_stride, dv, vf.data());
      axpy(w, vf.data(), acc.data(), dv);
    }
  }
}

}  // namespace mlx_sys_fused
