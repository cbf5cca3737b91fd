// Shared by the files of our CPU quantized product (cpu_qmm.cpp): the
// problem's layout and the kernels' entry points.

#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define QMM_X86 1
#else
#define QMM_X86 0
#endif

namespace mlx_sys_qmm {

enum class Half { F32, F16, BF16 };

struct Problem {
  int m, n, k, group, bits;
  const uint8_t* w;  // row stride k * bits / 8 bytes
  const void* scales;
  const void* biases;
  Half sdt;
  const float* x;     // [m, k], prepared for the row kernel's layout
  const float* xsum;  // [m, k / group]
  float* y;           // [m, n]
  // The int8 path (prepare_xq): x's codes [m, k] in the row kernel's
  // layout and their scales [m, k / group]; xsum then sums the codes
  // times their scale.
  const int8_t* xq = nullptr;
  const float* xd = nullptr;
  size_t row_bytes() const {
    return static_cast<size_t>(k) * bits / 8;
  }
  int groups() const {
    return k / group;
  }
};

#if QMM_X86
// How far ahead of its reads a row kernel prefetches W. Decode streams
// every weight from memory once a token, a task at a time, and the
// hardware prefetcher alone left the kernels waiting on those loads
// (BENCHMARKS.md, "CPU decode: weights prefetched").
constexpr int kPrefetchBytes = 4096;

inline void prefetch_ahead(const uint8_t* w) {
  _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchBytes, _MM_HINT_T0);
}
#endif

// Scratch of one thread: a weight row's scales and biases as float32.
struct RowScratch {
  std::vector<float> s, b;
  void fit(int groups) {
    if (static_cast<int>(s.size()) < groups) {
      s.resize(groups);
      b.resize(groups);
    }
  }
};

// The calling thread's scratch.
RowScratch& row_scratch();

float half_to_float(uint16_t h);
float bf16_to_float(uint16_t h);

// `count` values of `src` (of kind `kind`) from element `first`, as float32.
void row_to_f32_scalar(const void* src, Half kind, size_t first, int count, float* dst);

#if QMM_X86
// `count` half-precision values (`kind` F16 or BF16) of `src` from element
// `first`, as float32 (AVX2 and F16C).
void row_to_f32_avx2(const void* src, Half kind, size_t first, int count, float* dst);

// Whether the CPU has AVX-VNNI (VEX-encoded int8 dot products).
bool has_avx_vnni();
#endif

// Whether this CPU and OS let us use AMX-BF16 tiles (and AVX512-BF16).
bool has_amx();

class Pool;

// All of p's rows by AMX tiles (qmm_amx.cpp; only where has_amx()): p.x
// as float32 [m, k], row-major (p.xsum is not read).
void gemm_amx(const Problem& p, Pool& pool);

// The best instruction set this CPU has (MLX_SYS_CPU_QMM_ISA_*), and that
// capped at `max_isa`.
int best_isa();
int isa_under(int max_isa);

// Output rows [n0, n1) for x rows [m0, m0 + r), r <= 4, with instruction
// set `isa`.
void rows(const Problem& p, int isa, int n0, int n1, int m0, int r);
void rows_scalar(const Problem& p, int n0, int n1, int m0, int r);

// Rows [n0, n1) of W dequantized into out (row stride k).
void dequant(const Problem& p, int isa, int n0, int n1, float* out);
void dequant_scalar(const Problem& p, int n0, int n1, float* out);

// How a row kernel wants x laid out (each row of x in place, k values).
enum class XLayout {
  // As it is.
  AsIs,
  // Per 32 values, the even ones then the odd ones (the 4-bit kernels
  // that split a 16-byte chunk's low and high nibbles).
  Pairs32,
  // The AVX-512 4-bit kernel's: per 128 values j-major, x'[16j + L] =
  // x[8L + j] (word L of a 64-byte block holds values 8L..8L+7, and its
  // nibble j is read by all 16 lanes at once); the last k % 128 as Pairs32.
  Nibbles128,
};

// x as float32 [m, k] (x_kind: its dtype) into `xf` in `layout`, and its
// per-group sums into `xsum`.
void prepare_x(
    const void* x,
    Half x_kind,
    int m,
    int k,
    int group,
    XLayout layout,
    std::vector<float>& xf,
    std::vector<float>& xsum);

// The int8 path: output rows [n0, n1) for x rows [m0, m1), x quantized
// by prepare_xq, with instruction set `isa`.
void rows_q8(const Problem& p, int isa, int n0, int n1, int m0, int m1);
void rows_q8_scalar(const Problem& p, int n0, int n1, int m0, int m1);

// x as int8 codes per group of `group` elements: scale d = max|x| / 127,
// code round-to-nearest-even(x * (127 / max|x|)), in the row kernel's
// layout (`permute4`: per 32 elements, the even ones then the odd ones);
// `xd` gets d, `xsum` d * (sum of the codes), the group's sum of the x
// that the codes stand for.
void prepare_xq(
    const void* x,
    Half x_kind,
    int m,
    int k,
    int group,
    bool permute4,
    std::vector<int8_t>& xq,
    std::vector<float>& xd,
    std::vector<float>& xsum);

}  // namespace mlx_sys_qmm
