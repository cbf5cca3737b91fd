// The int8 path of our CPU quantized product: x quantized per group to
// int8 (prepare_xq), each group's dot product summed in int32 by VNNI's
// vpdpbusd (u8 weights times s8 codes; AVX2's vpmaddubsw + vpmaddwd
// without VNNI), then scaled in float32:
//   y += s_w * d_x * sum(q * c) + b_w * xsum.
// A tile of C weight rows times R x rows shares each unpacked weight
// register among the R x rows and each x load among the C weight rows.

#include <algorithm>
#include <vector>

#include "cpu_qmm.h"
#include "qmm_internal.hpp"

namespace mlx_sys_qmm {

#if QMM_X86
namespace {

#define QMM_Q8_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QMM_Q8_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QMM_Q8_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define QMM_INLINE inline __attribute__((always_inline))

// The scales and biases of weight rows n..n+c as float32 rows: in place
// when float32, else converted into `buf` (2 * c * groups floats).
QMM_Q8_AVX2 void scale_rows(
    const Problem& p, int n, int c, float* buf, const float** s, const float** b) {
  const int groups = p.groups();
  for (int i = 0; i < c; ++i) {
    const size_t first = static_cast<size_t>(n + i) * groups;
    if (p.sdt == Half::F32) {
      s[i] = static_cast<const float*>(p.scales) + first;
      b[i] = static_cast<const float*>(p.biases) + first;
    } else {
      float* sd = buf + static_cast<size_t>(2 * i) * groups;
      row_to_f32_avx2(p.scales, p.sdt, first, groups, sd);
      row_to_f32_avx2(p.biases, p.sdt, first, groups, sd + groups);
      s[i] = sd;
      b[i] = sd + groups;
    }
  }
}

std::vector<float>& scale_buf(int floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int>(buf.size()) < floats) buf.resize(floats);
  return buf;
}

// ---------------------------------------------------------------- AVX-512 VNNI

// 64 weights from element offset e as u8 in the x codes' layout (4-bit: per
// 32 elements, the 16 low nibbles then the 16 high ones).
template <int BITS>
QMM_Q8_AVX512 QMM_INLINE __m512i load64_avx512(const uint8_t* row, int e) {
  if constexpr (BITS == 4) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + e / 2));
    const __m256i t = _mm256_srli_epi16(v, 4);
    // 128-bit lanes: v's first, t's first, v's second, t's second.
    const __m512i order = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i z =
        _mm512_permutex2var_epi64(_mm512_castsi256_si512(v), order, _mm512_castsi256_si512(t));
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
  } else {
    return _mm512_loadu_si512(row + e);
  }
}

// 32 weights from e in the low half, zeros above.
template <int BITS>
QMM_Q8_AVX512 QMM_INLINE __m512i load32_avx512(const uint8_t* row, int e) {
  __m256i y;
  if constexpr (BITS == 4) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + e / 2));
    y = _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
  } else {
    y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + e));
  }
  return _mm512_zextsi256_si512(y);
}

// Two floats: the first in lanes 0-7, the second in lanes 8-15.
QMM_Q8_AVX512 QMM_INLINE __m512 pair_avx512(const float* v) {
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m128 two = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v)));
  return _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(two));
}

// One step of the tile: `step` elements from e (64 at group 32 or 64: two
// groups or one; 128 at group 128), into acc.
template <int BITS, int R, int C>
QMM_Q8_AVX512 QMM_INLINE void step_avx512(
    const Problem& p,
    const uint8_t* const* wr,
    const int8_t* const* xr,
    const float* const* rs,
    const float* const* xd,
    int e,
    __m512 (&acc)[R][C]) {
  const int g = e / p.group;
  __m512 sv[C];
  __m512 dv[R];
  if (p.group == 32) {
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) sv[c] = pair_avx512(rs[c] + g);
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) dv[r] = pair_avx512(xd[r] + g);
  } else {
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) sv[c] = _mm512_set1_ps(rs[c][g]);
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) dv[r] = _mm512_set1_ps(xd[r][g]);
  }
  if (p.group <= 64) {
    __m512i wv[C];
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) wv[c] = load64_avx512<BITS>(wr[c], e);
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_loadu_si512(xr[r] + e);
      #pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[c], xv);
        acc[r][c] = _mm512_fmadd_ps(
            _mm512_mul_ps(_mm512_cvtepi32_ps(dot), dv[r]), sv[c], acc[r][c]);
      }
    }
  } else {
    __m512i dot[R][C];
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c) dot[r][c] = _mm512_setzero_si512();
    for (int h = 0; h < p.group; h += 64) {
      __m512i wv[C];
      #pragma GCC unroll 4
      for (int c = 0; c < C; ++c) wv[c] = load64_avx512<BITS>(wr[c], e + h);
      #pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512i xv = _mm512_loadu_si512(xr[r] + e + h);
        #pragma GCC unroll 4
        for (int c = 0; c < C; ++c) dot[r][c] = _mm512_dpbusd_epi32(dot[r][c], wv[c], xv);
      }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c)
        acc[r][c] = _mm512_fmadd_ps(
            _mm512_mul_ps(_mm512_cvtepi32_ps(dot[r][c]), dv[r]), sv[c], acc[r][c]);
  }
}

// Outputs of weight rows n..n+C for x rows m..m+R.
template <int BITS, int R, int C>
QMM_Q8_AVX512 void tile_avx512(const Problem& p, int n, int m, const float* const* rs, const float* const* rb) {
  const int groups = p.groups();
  const int step = std::max(64, p.group);
  const int full = p.k / step * step;
  const uint8_t* wr[C];
  const int8_t* xr[R];
  const float* xd[R];
  #pragma GCC unroll 4
  for (int c = 0; c < C; ++c) wr[c] = p.w + (n + c) * p.row_bytes();
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    xr[r] = p.xq + static_cast<size_t>(m + r) * p.k;
    xd[r] = p.xd + static_cast<size_t>(m + r) * groups;
  }
  // Two sets of accumulators where the tile is small: one chain of
  // dependent FMAs would wait on their latency.
  constexpr int NA = R * C <= 2 ? 2 : 1;
  __m512 acc[NA][R][C];
  #pragma GCC unroll 4
  for (int t = 0; t < NA; ++t)
    _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[t][r][c] = _mm512_setzero_ps();
  int e = 0;
  for (; e + NA * step <= full; e += NA * step) {
#pragma GCC unroll 2
    for (int t = 0; t < NA; ++t) step_avx512<BITS, R, C>(p, wr, xr, rs, xd, e + t * step, acc[t]);
  }
  for (; e < full; e += step) step_avx512<BITS, R, C>(p, wr, xr, rs, xd, e, acc[0]);
  if (e < p.k) {
    // K = 32 mod 64 at group 32: the last group alone.
    const int g = e / 32;
    __m512i wv[C];
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) wv[c] = load32_avx512<BITS>(wr[c], e);
    #pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512i xv = _mm512_zextsi256_si512(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[r] + e)));
      const __m512 dv = _mm512_set1_ps(xd[r][g]);
      #pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[c], xv);
        acc[0][r][c] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), dv),
                                       _mm512_set1_ps(rs[c][g]), acc[0][r][c]);
      }
    }
  }
  #pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const float* xs = p.xsum + static_cast<size_t>(m + r) * groups;
    #pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      // The biases' share, sum_g b_g * xsum_g, 16 groups at a time.
      __m512 sum = acc[0][r][c];
      #pragma GCC unroll 4
      for (int t = 1; t < NA; ++t) sum = _mm512_add_ps(sum, acc[t][r][c]);
      for (int g = 0; g < groups; g += 16) {
        const __mmask16 live = groups - g >= 16 ? 0xffff : (1u << (groups - g)) - 1;
        sum = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, rb[c] + g),
                              _mm512_maskz_loadu_ps(live, xs + g), sum);
      }
      p.y[static_cast<size_t>(m + r) * p.n + n + c] = _mm512_reduce_add_ps(sum);
    }
  }
}

template <int BITS>
QMM_Q8_AVX512 void rows_avx512(const Problem& p, int n0, int n1, int m0, int m1) {
  using Tile = void (*)(const Problem&, int, int, const float* const*, const float* const*);
  static constexpr Tile by4[4] = {
      tile_avx512<BITS, 1, 4>, tile_avx512<BITS, 2, 4>, tile_avx512<BITS, 3, 4>,
      tile_avx512<BITS, 4, 4>};
  static constexpr Tile by1[4] = {
      tile_avx512<BITS, 1, 1>, tile_avx512<BITS, 2, 1>, tile_avx512<BITS, 3, 1>,
      tile_avx512<BITS, 4, 1>};
  float* buf = scale_buf(8 * p.groups()).data();
  const float *rs[4], *rb[4];
  for (int n = n0; n < n1;) {
    const int c = n1 - n >= 4 ? 4 : 1;
    scale_rows(p, n, c, buf, rs, rb);
    for (int m = m0; m < m1; m += 4) {
      const int r = std::min(4, m1 - m);
      (c == 4 ? by4 : by1)[r - 1](p, n, m, rs, rb);
    }
    n += c;
  }
}

// ---------------------------------------------------------------- AVX2 / AVX-VNNI

// 32 weights from e as u8 in the x codes' layout.
template <int BITS>
QMM_Q8_AVX2 QMM_INLINE __m256i load32_avx2(const uint8_t* row, int e) {
  if constexpr (BITS == 4) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + e / 2));
    return _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + e));
  }
}

// acc + the sums of 4 products of u8 w and s8 x per int32 lane, by
// vpmaddubsw (its int16 pair sums saturate past 32767: 4-bit weights only,
// 15 * 127 * 2 = 3810; 8-bit ones come as w - 128, see tile_avx2) and
// vpmaddwd.
QMM_Q8_AVX2 QMM_INLINE __m256i dot_maddubs(__m256i acc, __m256i w, __m256i x) {
  const __m256i pairs = _mm256_maddubs_epi16(w, x);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

// The 256-bit tile's body for one dot-product flavour (VNNI: vpdpbusd).
// 8-bit weights without VNNI: w - 128 (-128..127) as |w - 128| (u8) times
// x with w - 128's sign, pair sums at most 128 * 127 * 2 = 32512; the
// caller adds 128 * s_w * xsum per group for the 128 taken off.
#define QMM_TILE_256(TARGET, NAME, DOT)                                                        \
  template <int BITS, int R, int C>                                                            \
  TARGET void NAME(const Problem& p, int n, int m, const float* const* rs,                     \
                   const float* const* rb) {                                                   \
    constexpr bool shift8 = BITS == 8 && !(DOT##_vnni);                                        \
    const int groups = p.groups();                                                             \
    const int blocks = p.group / 32;                                                           \
    const uint8_t* wr[C];                                                                      \
    const int8_t* xr[R];                                                                       \
    const float* xd[R];                                                                        \
    _Pragma("GCC unroll 4")                                                                    \
    for (int c = 0; c < C; ++c) wr[c] = p.w + (n + c) * p.row_bytes();                         \
    _Pragma("GCC unroll 4")                                                                    \
    for (int r = 0; r < R; ++r) {                                                              \
      xr[r] = p.xq + static_cast<size_t>(m + r) * p.k;                                         \
      xd[r] = p.xd + static_cast<size_t>(m + r) * groups;                                      \
    }                                                                                          \
    __m256 acc[R][C];                                                                          \
    _Pragma("GCC unroll 4")                                                                    \
    for (int r = 0; r < R; ++r)                                                                \
      _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();                             \
    int e = 0;                                                                                 \
    for (int g = 0; g < groups; ++g) {                                                         \
      __m256i dot[R][C];                                                                       \
      _Pragma("GCC unroll 4")                                                                  \
      for (int r = 0; r < R; ++r)                                                              \
        _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c) dot[r][c] = _mm256_setzero_si256();                        \
      for (int b = 0; b < blocks; ++b, e += 32) {                                              \
        __m256i wv[C];                                                                         \
        _Pragma("GCC unroll 4")                                                                \
        for (int c = 0; c < C; ++c) {                                                          \
          wv[c] = load32_avx2<BITS>(wr[c], e);                                                 \
          if constexpr (shift8) wv[c] = _mm256_xor_si256(wv[c], _mm256_set1_epi8(-128));       \
        }                                                                                      \
        _Pragma("GCC unroll 4")                                                                \
        for (int r = 0; r < R; ++r) {                                                          \
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[r] + e)); \
          _Pragma("GCC unroll 4")                                                              \
          for (int c = 0; c < C; ++c) {                                                        \
            if constexpr (shift8) {                                                            \
              dot[r][c] = DOT(dot[r][c], _mm256_sign_epi8(wv[c], wv[c]),                       \
                              _mm256_sign_epi8(xv, wv[c]));                                    \
            } else {                                                                           \
              dot[r][c] = DOT(dot[r][c], wv[c], xv);                                           \
            }                                                                                  \
          }                                                                                    \
        }                                                                                      \
      }                                                                                        \
      _Pragma("GCC unroll 4")                                                                  \
      for (int r = 0; r < R; ++r) {                                                            \
        const __m256 dv = _mm256_set1_ps(xd[r][g]);                                            \
        _Pragma("GCC unroll 4")                                                                \
        for (int c = 0; c < C; ++c)                                                            \
          acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot[r][c]), dv),        \
                                      _mm256_set1_ps(rs[c][g]), acc[r][c]);                    \
      }                                                                                        \
    }                                                                                          \
    _Pragma("GCC unroll 4")                                                                    \
    for (int r = 0; r < R; ++r) {                                                              \
      const float* xs = p.xsum + static_cast<size_t>(m + r) * groups;                          \
      _Pragma("GCC unroll 4")                                                                  \
      for (int c = 0; c < C; ++c) {                                                            \
        float bias = 0.0f;                                                                     \
        for (int g = 0; g < groups; ++g) {                                                     \
          const float b = shift8 ? rb[c][g] + 128.0f * rs[c][g] : rb[c][g];                    \
          bias += b * xs[g];                                                                   \
        }                                                                                      \
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r][c]),                               \
                              _mm256_extractf128_ps(acc[r][c], 1));                            \
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));                                                \
        h = _mm_add_ss(h, _mm_movehdup_ps(h));                                                 \
        p.y[static_cast<size_t>(m + r) * p.n + n + c] = _mm_cvtss_f32(h) + bias;               \
      }                                                                                        \
    }                                                                                          \
  }

constexpr bool dot_maddubs_vnni = false;
QMM_TILE_256(QMM_Q8_AVX2, tile_avx2, dot_maddubs)

QMM_Q8_AVXVNNI QMM_INLINE __m256i dot_avxvnni(__m256i acc, __m256i w, __m256i x) {
  return _mm256_dpbusd_avx_epi32(acc, w, x);
}
constexpr bool dot_avxvnni_vnni = true;
QMM_TILE_256(QMM_Q8_AVXVNNI, tile_avxvnni, dot_avxvnni)

#undef QMM_TILE_256

// 2 x 2 tiles: AVX2 has 16 vector registers.
template <int BITS, bool VNNI>
void rows_256(const Problem& p, int n0, int n1, int m0, int m1) {
  using Tile = void (*)(const Problem&, int, int, const float* const*, const float* const*);
  static constexpr Tile plain[2][2] = {
      {tile_avx2<BITS, 1, 1>, tile_avx2<BITS, 1, 2>},
      {tile_avx2<BITS, 2, 1>, tile_avx2<BITS, 2, 2>}};
  static constexpr Tile vnni[2][2] = {
      {tile_avxvnni<BITS, 1, 1>, tile_avxvnni<BITS, 1, 2>},
      {tile_avxvnni<BITS, 2, 1>, tile_avxvnni<BITS, 2, 2>}};
  const auto& table = VNNI ? vnni : plain;
  float* buf = scale_buf(4 * p.groups()).data();
  const float *rs[2], *rb[2];
  for (int n = n0; n < n1;) {
    const int c = std::min(2, n1 - n);
    scale_rows(p, n, c, buf, rs, rb);
    for (int m = m0; m < m1; m += 2) {
      table[std::min(2, m1 - m) - 1][c - 1](p, n, m, rs, rb);
    }
    n += c;
  }
}

}  // namespace
#endif  // QMM_X86

void rows_q8(const Problem& p, int isa, int n0, int n1, int m0, int m1) {
#if QMM_X86
  const bool four = p.bits == 4;
  if (isa >= MLX_SYS_CPU_QMM_ISA_AVX512_VNNI) {
    (four ? rows_avx512<4> : rows_avx512<8>)(p, n0, n1, m0, m1);
    return;
  }
  if (isa != MLX_SYS_CPU_QMM_ISA_SCALAR) {
    // AVX-512 without its VNNI: AVX-VNNI where the CPU has it.
    const bool vnni = isa == MLX_SYS_CPU_QMM_ISA_AVX2_VNNI ||
        (isa == MLX_SYS_CPU_QMM_ISA_AVX512 && has_avx_vnni());
    if (vnni) {
      (four ? rows_256<4, true> : rows_256<8, true>)(p, n0, n1, m0, m1);
    } else {
      (four ? rows_256<4, false> : rows_256<8, false>)(p, n0, n1, m0, m1);
    }
    return;
  }
#endif
  rows_q8_scalar(p, n0, n1, m0, m1);
}

}  // namespace mlx_sys_qmm
