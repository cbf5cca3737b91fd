// The x86 kernels of our CPU quantized product (AVX2+FMA+F16C and AVX-512,
// each function compiled for its instruction set and chosen at run time),
// and the choice among them and the portable ones.

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include "cpu_qmm.h"
#include "qmm_internal.hpp"

namespace mlx_sys_qmm {

#if QMM_X86

#define QMM_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QMM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

QMM_AVX2 void row_to_f32_avx2(const void* src, Half kind, size_t first, int count, float* dst) {
  auto s = static_cast<const uint16_t*>(src) + first;
  int i = 0;
  for (; i + 8 <= count; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    __m256 f = kind == Half::F16
        ? _mm256_cvtph_ps(h)
        : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    _mm256_storeu_ps(dst + i, f);
  }
  for (; i < count; ++i) {
    dst[i] = kind == Half::F16 ? half_to_float(s[i]) : bf16_to_float(s[i]);
  }
}

namespace {

// ---------------------------------------------------------------- AVX2

// Row n's scales and biases as float32: read in place when they are
// float32, converted into the thread's scratch otherwise.
QMM_AVX2 void scale_rows_avx2(const Problem& p, int n, RowScratch& sc, const float*& s, const float*& b) {
  const int groups = p.groups();
  const size_t first = static_cast<size_t>(n) * groups;
  if (p.sdt == Half::F32) {
    s = static_cast<const float*>(p.scales) + first;
    b = static_cast<const float*>(p.biases) + first;
    return;
  }
  row_to_f32_avx2(p.scales, p.sdt, first, groups, sc.s.data());
  row_to_f32_avx2(p.biases, p.sdt, first, groups, sc.b.data());
  s = sc.s.data();
  b = sc.b.data();
}

QMM_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 32 elements of one block (BITS * 4 bytes) as 4 x 8 floats, in the
// kernel's x layout (4-bit: the 16 low nibbles, then the 16 high ones).
template <int BITS>
QMM_AVX2 inline void load32_avx2(const uint8_t* p, __m256 q[4]) {
  if constexpr (BITS == 4) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(v, m);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    q[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    q[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)));
    q[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    q[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)));
  } else {
    for (int i = 0; i < 4; ++i) {
      __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i));
      q[i] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
    }
  }
}

template <int BITS, int R>
QMM_AVX2 void rows_avx2(const Problem& p, int n0, int n1, int m0) {
  const int groups = p.groups();
  const int blocks = p.group / 32;
  auto& sc = row_scratch();
  sc.fit(groups);
  const float* xr[R];
  for (int i = 0; i < R; ++i) xr[i] = p.x + static_cast<size_t>(m0 + i) * p.k;
  for (int n = n0; n < n1; ++n) {
    const float *rs, *rb;
    scale_rows_avx2(p, n, sc, rs, rb);
    const uint8_t* wp = p.w + n * p.row_bytes();
    __m256 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
    int off = 0;
    for (int g = 0; g < groups; ++g) {
      __m256 d0[R], d1[R];
      for (int i = 0; i < R; ++i) d0[i] = d1[i] = _mm256_setzero_ps();
      for (int b = 0; b < blocks; ++b) {
        __m256 q[4];
        prefetch_ahead(wp);
        load32_avx2<BITS>(wp, q);
        wp += BITS * 4;
        for (int i = 0; i < R; ++i) {
          const float* x = xr[i] + off;
          d0[i] = _mm256_fmadd_ps(q[0], _mm256_loadu_ps(x), d0[i]);
          d1[i] = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(x + 8), d1[i]);
          d0[i] = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x + 16), d0[i]);
          d1[i] = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x + 24), d1[i]);
        }
        off += 32;
      }
      __m256 s = _mm256_set1_ps(rs[g]);
      for (int i = 0; i < R; ++i) acc[i] = _mm256_fmadd_ps(s, _mm256_add_ps(d0[i], d1[i]), acc[i]);
    }
    for (int i = 0; i < R; ++i) {
      const float* xs = p.xsum + static_cast<size_t>(m0 + i) * groups;
      float bias = 0.0f;
      for (int g = 0; g < groups; ++g) bias += rb[g] * xs[g];
      p.y[static_cast<size_t>(m0 + i) * p.n + n] = hsum256(acc[i]) + bias;
    }
  }
}

// Rows [n0, n1) of W dequantized (natural element order) into out.
template <int BITS>
QMM_AVX2 void dequant_avx2(const Problem& p, int n0, int n1, float* out) {
  const int groups = p.groups();
  const int blocks = p.group / 32;
  auto& sc = row_scratch();
  sc.fit(groups);
  for (int n = n0; n < n1; ++n) {
    const float *rs, *rb;
    scale_rows_avx2(p, n, sc, rs, rb);
    const uint8_t* wp = p.w + n * p.row_bytes();
    float* o = out + static_cast<size_t>(n - n0) * p.k;
    for (int g = 0; g < groups; ++g) {
      __m256 s = _mm256_set1_ps(rs[g]);
      __m256 b = _mm256_set1_ps(rb[g]);
      for (int blk = 0; blk < blocks; ++blk) {
        __m128i v[2];
        if constexpr (BITS == 4) {
          __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp));
          __m128i m = _mm_set1_epi8(0x0f);
          __m128i lo = _mm_and_si128(raw, m);
          __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
          v[0] = _mm_unpacklo_epi8(lo, hi);
          v[1] = _mm_unpackhi_epi8(lo, hi);
        } else {
          v[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp));
          v[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp + 16));
        }
        wp += BITS * 4;
        for (int h = 0; h < 2; ++h) {
          __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v[h]));
          __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v[h], v[h])));
          _mm256_storeu_ps(o, _mm256_fmadd_ps(s, a, b));
          _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(s, c, b));
          o += 16;
        }
      }
    }
  }
}

// ---------------------------------------------------------------- AVX-512

template <int BITS>
QMM_AVX512 inline void load32_avx512(const uint8_t* p, __m512& a, __m512& c) {
  if constexpr (BITS == 4) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i m = _mm_set1_epi8(0x0f);
    a = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(v, m)));
    c = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(v, 4), m)));
  } else {
    a = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    c = _mm512_cvtepi32_ps(
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  }
}

// The `live` values of 16 from `g` of a row of kind S, as float32, zeros
// elsewhere.
template <Half S>
QMM_AVX512 inline __m512 load16_at(const void* row, int g, __mmask16 live) {
  if constexpr (S == Half::F32) {
    return _mm512_maskz_loadu_ps(live, static_cast<const float*>(row) + g);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(live, static_cast<const uint16_t*>(row) + g);
    if constexpr (S == Half::F16) {
      return _mm512_cvtph_ps(h);
    } else {
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}

// Row n's scales as float32: in place when they are float32, else widened
// 16 at a time into the thread's scratch `sc`.
template <Half S>
QMM_AVX512 inline const float* row_scales(const Problem& p, int n, RowScratch& sc) {
  constexpr size_t SB = S == Half::F32 ? 4 : 2;
  const int groups = p.groups();
  const void* row = static_cast<const uint8_t*>(p.scales) + static_cast<size_t>(n) * groups * SB;
  if constexpr (S == Half::F32) {
    return static_cast<const float*>(row);
  } else {
    for (int g = 0; g < groups; g += 16) {
      const __mmask16 live = groups - g >= 16 ? 0xffff : (1u << (groups - g)) - 1;
      _mm512_storeu_ps(sc.s.data() + g, load16_at<S>(row, g, live));
    }
    return sc.s.data();
  }
}

// Output (x row m, W row n): the lanes of `sum` plus the biases' share,
// sum_g b_g * sum(x in g), 16 groups at a time.
template <Half S>
QMM_AVX512 inline void store_row(const Problem& p, int m, int n, __m512 sum) {
  constexpr size_t SB = S == Half::F32 ? 4 : 2;
  const int groups = p.groups();
  const void* rb = static_cast<const uint8_t*>(p.biases) + static_cast<size_t>(n) * groups * SB;
  const float* xs = p.xsum + static_cast<size_t>(m) * groups;
  for (int g = 0; g < groups; g += 16) {
    const __mmask16 live = groups - g >= 16 ? 0xffff : (1u << (groups - g)) - 1;
    sum = _mm512_fmadd_ps(load16_at<S>(rb, g, live), _mm512_maskz_loadu_ps(live, xs + g), sum);
  }
  p.y[static_cast<size_t>(m) * p.n + n] = _mm512_reduce_add_ps(sum);
}

// The 8-bit rows (4-bit ones: rows4_avx512). The scales and biases are
// read in their own dtype (S): half-precision ones are half the bytes, and
// a row's are widened 16 at a time.
template <int R, Half S>
QMM_AVX512 void rows8_avx512(const Problem& p, int n0, int n1, int m0) {
  // Groups take turns among NA accumulators per x row: one chain of
  // dependent FMAs per row would make a short row wait on its latency.
  constexpr int NA = R <= 2 ? 4 : 2;
  const int groups = p.groups();
  const int blocks = p.group / 32;
  auto& sc = row_scratch();
  sc.fit(groups + 16);
  const float* xr[R];
  for (int i = 0; i < R; ++i) xr[i] = p.x + static_cast<size_t>(m0 + i) * p.k;
  for (int n = n0; n < n1; ++n) {
    const float* rs = row_scales<S>(p, n, sc);
    const uint8_t* wp = p.w + n * p.row_bytes();
    __m512 acc[NA][R];
    for (int t = 0; t < NA; ++t)
      for (int i = 0; i < R; ++i) acc[t][i] = _mm512_setzero_ps();
    int off = 0;
    for (int g0 = 0; g0 < groups; g0 += NA) {
#pragma GCC unroll 4
      for (int t = 0; t < NA; ++t) {
        const int g = g0 + t;
        if (g >= groups) break;
        // The group's products in one sum per x row, started by a
        // multiply (no zeroed sums, no final add).
        __m512 d[R];
        for (int b = 0; b < blocks; ++b) {
          __m512 a, c;
          if ((b & 1) == 0) prefetch_ahead(wp);
          load32_avx512<8>(wp, a, c);
          wp += 32;
          for (int i = 0; i < R; ++i) {
            const __m512 lo = _mm512_loadu_ps(xr[i] + off);
            d[i] = b == 0 ? _mm512_mul_ps(a, lo) : _mm512_fmadd_ps(a, lo, d[i]);
            d[i] = _mm512_fmadd_ps(c, _mm512_loadu_ps(xr[i] + off + 16), d[i]);
          }
          off += 32;
        }
        __m512 s = _mm512_set1_ps(rs[g]);
        for (int i = 0; i < R; ++i) acc[t][i] = _mm512_fmadd_ps(s, d[i], acc[t][i]);
      }
    }
    for (int i = 0; i < R; ++i) {
      __m512 sum = acc[0][i];
      for (int t = 1; t < NA; ++t) sum = _mm512_add_ps(sum, acc[t][i]);
      store_row<S>(p, m0 + i, n, sum);
    }
  }
}

// The 4-bit rows, each in blocks of 128 values: a 64-byte load holds 16
// packed words, word L the values 8L..8L+7, and nibble j of every word
// (shifted down by 4j) indexes a register table of the floats 0..15
// (vpermps reads an index's low 4 bits): one shift, one permute and one
// FMA per 16 values, no widening or conversion. x is laid out to match
// (XLayout::Nibbles128). Lanes take their group's scale (a block spans 1
// to 4 groups); a row's last k % 128 values go 32 at a time, widened and
// converted (load32_avx512<4>). Sums in float32, as before this kernel:
// only their order differs.
template <int R, Half S>
QMM_AVX512 void rows4_avx512(const Problem& p, int n0, int n1, int m0) {
  const int groups = p.groups();
  const int full = p.k / 128;
  const int per_block = 128 / p.group;
  const __mmask16 block_groups = static_cast<__mmask16>((1u << per_block) - 1);
  // Lane L's values 8L..8L+7 lie in the block's group 8L / group.
  alignas(64) int lane_group[16];
  for (int l = 0; l < 16; ++l) lane_group[l] = 8 * l / p.group;
  const __m512i to_group = _mm512_load_si512(lane_group);
  const __m512 table = _mm512_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f,
                                      11.f, 12.f, 13.f, 14.f, 15.f);
  auto& sc = row_scratch();
  sc.fit(groups + 16);
  const float* xr[R];
  for (int i = 0; i < R; ++i) xr[i] = p.x + static_cast<size_t>(m0 + i) * p.k;
  for (int n = n0; n < n1; ++n) {
    const float* rs = row_scales<S>(p, n, sc);
    const uint8_t* wp = p.w + n * p.row_bytes();
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    for (int blk = 0; blk < full; ++blk) {
      prefetch_ahead(wp);
      const __m512i v = _mm512_loadu_si512(wp);
      wp += 64;
      const __m512 s = _mm512_permutexvar_ps(
          to_group, _mm512_maskz_loadu_ps(block_groups, rs + blk * per_block));
      __m512 d0[R], d1[R];
      for (int i = 0; i < R; ++i) d0[i] = d1[i] = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int j = 0; j < 8; j += 2) {
        const __m512 w0 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4 * j), table);
        const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4 * j + 4), table);
        for (int i = 0; i < R; ++i) {
          const float* xb = xr[i] + blk * 128 + 16 * j;
          d0[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), d0[i]);
          d1[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), d1[i]);
        }
      }
      for (int i = 0; i < R; ++i) acc[i] = _mm512_fmadd_ps(s, _mm512_add_ps(d0[i], d1[i]), acc[i]);
    }
    for (int off = full * 128; off < p.k; off += 32) {
      __m512 a, c;
      load32_avx512<4>(wp, a, c);
      wp += 16;
      const __m512 s = _mm512_set1_ps(rs[off / p.group]);
      for (int i = 0; i < R; ++i) {
        const __m512 d = _mm512_fmadd_ps(c, _mm512_loadu_ps(xr[i] + off + 16),
                                         _mm512_mul_ps(a, _mm512_loadu_ps(xr[i] + off)));
        acc[i] = _mm512_fmadd_ps(s, d, acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) store_row<S>(p, m0 + i, n, acc[i]);
  }
}

// The AVX-512 rows for p's bit width and scales' kind, R x rows.
template <int R>
void rows_avx512_for(const Problem& p, int n0, int n1, int m0) {
  switch (p.sdt) {
    case Half::F32:
      return (p.bits == 8 ? rows8_avx512<R, Half::F32> : rows4_avx512<R, Half::F32>)(p, n0, n1, m0);
    case Half::F16:
      return (p.bits == 8 ? rows8_avx512<R, Half::F16> : rows4_avx512<R, Half::F16>)(p, n0, n1, m0);
    case Half::BF16:
      return (p.bits == 8 ? rows8_avx512<R, Half::BF16> : rows4_avx512<R, Half::BF16>)(p, n0, n1, m0);
  }
}

}  // namespace
#endif  // QMM_X86

namespace {

// Whether the CPU has instruction set `isa` (an MLX_SYS_CPU_QMM_ISA_*).
bool has_isa(int isa) {
#if QMM_X86
  static const bool avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c");
  }();
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  switch (isa) {
    case MLX_SYS_CPU_QMM_ISA_AVX2:
      return avx2;
    case MLX_SYS_CPU_QMM_ISA_AVX2_VNNI:
      return avx2 && has_avx_vnni();
    case MLX_SYS_CPU_QMM_ISA_AVX512:
      return avx512;
    case MLX_SYS_CPU_QMM_ISA_AVX512_VNNI:
      return avx512 && __builtin_cpu_supports("avx512vnni");
    case MLX_SYS_CPU_QMM_ISA_AVX512_AMX:
      return has_isa(MLX_SYS_CPU_QMM_ISA_AVX512_VNNI) && has_amx();
    default:
      return isa == MLX_SYS_CPU_QMM_ISA_SCALAR;
  }
#else
  return isa == MLX_SYS_CPU_QMM_ISA_SCALAR;
#endif
}

}  // namespace

#if QMM_X86
bool has_avx_vnni() {
  // CPUID leaf 7, sub-leaf 1: EAX bit 4 (GCC 12's __builtin_cpu_supports
  // does not know "avxvnni").
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 1, a, b, c, d);
  return (a >> 4) & 1;
}
#endif

int best_isa() {
  return isa_under(MLX_SYS_CPU_QMM_ISA_BEST);
}

int isa_under(int max_isa) {
  for (int isa = std::clamp(max_isa, 0, MLX_SYS_CPU_QMM_ISA_AVX512_AMX); isa > 0; --isa) {
    if (has_isa(isa)) return isa;
  }
  return MLX_SYS_CPU_QMM_ISA_SCALAR;
}

void rows(const Problem& p, int isa, int n0, int n1, int m0, int r) {
#if QMM_X86
  if (isa != MLX_SYS_CPU_QMM_ISA_SCALAR) {
    using Fn = void (*)(const Problem&, int, int, int);
    static constexpr Fn k512[4] = {
        rows_avx512_for<1>, rows_avx512_for<2>, rows_avx512_for<3>, rows_avx512_for<4>};
    static constexpr Fn k2[2][4] = {
        {rows_avx2<4, 1>, rows_avx2<4, 2>, rows_avx2<4, 3>, rows_avx2<4, 4>},
        {rows_avx2<8, 1>, rows_avx2<8, 2>, rows_avx2<8, 3>, rows_avx2<8, 4>}};
    if (isa >= MLX_SYS_CPU_QMM_ISA_AVX512) {
      k512[r - 1](p, n0, n1, m0);
    } else {
      k2[p.bits == 8][r - 1](p, n0, n1, m0);
    }
    return;
  }
#endif
  rows_scalar(p, n0, n1, m0, r);
}

void dequant(const Problem& p, int isa, int n0, int n1, float* out) {
#if QMM_X86
  if (isa != MLX_SYS_CPU_QMM_ISA_SCALAR) {
    (p.bits == 4 ? dequant_avx2<4> : dequant_avx2<8>)(p, n0, n1, out);
    return;
  }
#endif
  dequant_scalar(p, n0, n1, out);
}

}  // namespace mlx_sys_qmm
