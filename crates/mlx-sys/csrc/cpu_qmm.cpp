// A CPU quantized matrix product for MLX's affine 4- and 8-bit format: an
// MLX primitive of our own, so that it runs inside MLX's lazy graph on the
// CPU stream.
//
// Why: MLX 0.32's CPU `quantized_matmul` is scalar code on one thread
// (0.1-0.2 GB/s of weights). This one:
// - few rows of x (decode): each output row's groups are unpacked to
//   float32 in SIMD registers (AVX-512 or AVX2+FMA+F16C, chosen at run
//   time; a portable scalar path elsewhere) and multiplied with x by FMA:
//   per group, y += s * (x . q) + b * sum(x). For 4-bit, x is first
//   permuted per 32-element block (even elements, then odd) so that the
//   low and high nibbles of 16 bytes meet their x without a shuffle.
//   Output rows are shared among a small persistent thread pool.
// - many rows (prefill): tiles of W are dequantized to float32 (on the
//   pool) and multiplied by the BLAS `cblas_sgemm` MLX itself links
//   (OpenBLAS on our Linux builds), looked up in the process at run time;
//   without it, the SIMD path takes them four rows of x at a time.
// Accumulation is float32 throughout; no activation is quantized.

#include "cpu_qmm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define QMM_X86 1
#else
#define QMM_X86 0
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"

#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"

namespace {

using mlx::core::array;
using mlx::core::Dtype;

enum class Half { F32, F16, BF16 };

// ---------------------------------------------------------------- threads

// A persistent pool: `run(n, fn)` calls fn(0..n-1) on the caller and the
// workers. Waking a sleeping worker costs tens of microseconds (far more on
// a loaded machine), about what a small product takes on one core, so
// after a few-row product (decode's, which come one after another) the
// workers wait awake for the next job for a while before they sleep.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) {
      std::thread([this] { worker(); }).detach();
    }
    workers_ = workers;
  }

  int size() const {
    return workers_ + 1;
  }

  // `spin_us`: how long the workers then wait awake for the next job
  // before they sleep (see kRowsSpinUs).
  void run(int tasks, const std::function<void(int)>& fn, int spin_us = 0) {
    if (workers_ == 0 || tasks <= 1) {
      for (int i = 0; i < tasks; ++i) {
        fn(i);
      }
      return;
    }
    std::lock_guard<std::mutex> one_job(job_mu_);
    fn_ = &fn;
    tasks_ = tasks;
    spin_us_.store(spin_us, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
    pending_.store(workers_, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    // Spin briefly, then let a worker that has not run yet have the core.
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 2000) {
        pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static void pause() {
#if QMM_X86
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }

  void work() {
    int i;
    while ((i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_) {
      (*fn_)(i);
    }
  }

  void worker() {
    // Generation 0 is the pool's start: a job posted before this thread
    // first runs is still seen as new.
    uint64_t seen = 0;
    int spin_us = 0;
    for (;;) {
      if (spin_us > 0) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
        while (gen_.load(std::memory_order_acquire) == seen) {
          for (int i = 0; i < 16; ++i) pause();
          if (std::chrono::steady_clock::now() > until) break;
        }
      }
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return gen_.load(std::memory_order_acquire) != seen;
        });
      }
      seen = gen_.load(std::memory_order_acquire);
      spin_us = spin_us_.load(std::memory_order_relaxed);
      work();
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int workers_ = 0;
  std::mutex job_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> spin_us_{0};
  const std::function<void(int)>* fn_ = nullptr;
  int tasks_ = 0;
};

Pool& pool() {
  // Never destroyed: its detached workers outlive static destructors.
  static Pool* p = [] {
    unsigned hw = std::thread::hardware_concurrency();
    int threads = std::clamp<int>(hw == 0 ? 1 : static_cast<int>(hw), 1, 16);
    return new Pool(threads - 1);
  }();
  return *p;
}

// ---------------------------------------------------------------- BLAS

using SgemmFn = void (*)(
    int, int, int, int, int, int, float, const float*, int, const float*,
    int, float, float*, int);

SgemmFn sgemm() {
  static SgemmFn fn = [] {
#if defined(__unix__) || defined(__APPLE__)
    return reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
#else
    return static_cast<SgemmFn>(nullptr);
#endif
  }();
  return fn;
}

constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;
constexpr int kDefaultGemmRows = 16;
// The fewest weights (rows x columns) a product, or a tile of one, must
// have to be shared among the pool's threads (see Pool).
constexpr int64_t kParallelElements = int64_t{1} << 21;
// The same for the few-row path, whose workers stay awake between products
// (see Pool), and how long they do (BENCHMARKS.md, "CPU decode threads").
constexpr int64_t kRowsParallelElements = int64_t{1} << 16;
constexpr int kRowsSpinUs = 2000;

// ---------------------------------------------------------------- scalars

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      bits = sign | ((112u - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// `count` values of `src` (of kind `kind`) from element `first`, as float32.
void row_to_f32_scalar(const void* src, Half kind, size_t first, int count, float* dst) {
  switch (kind) {
    case Half::F32:
      std::memcpy(dst, static_cast<const float*>(src) + first, count * sizeof(float));
      break;
    case Half::F16: {
      auto s = static_cast<const uint16_t*>(src) + first;
      for (int i = 0; i < count; ++i) dst[i] = half_to_float(s[i]);
      break;
    }
    case Half::BF16: {
      auto s = static_cast<const uint16_t*>(src) + first;
      for (int i = 0; i < count; ++i) dst[i] = bf16_to_float(s[i]);
      break;
    }
  }
}

// ---------------------------------------------------------------- problem

struct Problem {
  int m, n, k, group, bits;
  const uint8_t* w;  // row stride k * bits / 8 bytes
  const void* scales;
  const void* biases;
  Half sdt;
  const float* x;     // [m, k], prepared for the row kernel's layout
  const float* xsum;  // [m, k / group]
  float* y;           // [m, n]
  size_t row_bytes() const {
    return static_cast<size_t>(k) * bits / 8;
  }
  int groups() const {
    return k / group;
  }
};

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

RowScratch& row_scratch() {
  thread_local RowScratch scratch;
  return scratch;
}

// Output rows [n0, n1) for x rows [m0, m0 + r), portable.
void rows_scalar(const Problem& p, int n0, int n1, int m0, int r) {
  const int groups = p.groups();
  const uint32_t mask = (1u << p.bits) - 1;
  const int per_word = 32 / p.bits;
  auto& sc = row_scratch();
  sc.fit(groups);
  for (int n = n0; n < n1; ++n) {
    row_to_f32_scalar(p.scales, p.sdt, static_cast<size_t>(n) * groups, groups, sc.s.data());
    row_to_f32_scalar(p.biases, p.sdt, static_cast<size_t>(n) * groups, groups, sc.b.data());
    auto words = reinterpret_cast<const uint32_t*>(p.w + n * p.row_bytes());
    for (int i = 0; i < r; ++i) {
      const float* x = p.x + static_cast<size_t>(m0 + i) * p.k;
      const float* xs = p.xsum + static_cast<size_t>(m0 + i) * groups;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        float dot = 0.0f;
        for (int j = g * p.group; j < (g + 1) * p.group; ++j) {
          uint32_t q = (words[j / per_word] >> ((j % per_word) * p.bits)) & mask;
          dot += x[j] * static_cast<float>(q);
        }
        acc += sc.s[g] * dot + sc.b[g] * xs[g];
      }
      p.y[static_cast<size_t>(m0 + i) * p.n + n] = acc;
    }
  }
}

// Rows [n0, n1) of W dequantized into out (row stride k), portable.
void dequant_scalar(const Problem& p, int n0, int n1, float* out) {
  const int groups = p.groups();
  const uint32_t mask = (1u << p.bits) - 1;
  const int per_word = 32 / p.bits;
  auto& sc = row_scratch();
  sc.fit(groups);
  for (int n = n0; n < n1; ++n) {
    row_to_f32_scalar(p.scales, p.sdt, static_cast<size_t>(n) * groups, groups, sc.s.data());
    row_to_f32_scalar(p.biases, p.sdt, static_cast<size_t>(n) * groups, groups, sc.b.data());
    auto words = reinterpret_cast<const uint32_t*>(p.w + n * p.row_bytes());
    float* o = out + static_cast<size_t>(n - n0) * p.k;
    for (int j = 0; j < p.k; ++j) {
      uint32_t q = (words[j / per_word] >> ((j % per_word) * p.bits)) & mask;
      o[j] = sc.s[j / p.group] * static_cast<float>(q) + sc.b[j / p.group];
    }
  }
}

#if QMM_X86
// ---------------------------------------------------------------- AVX2

#define QMM_AVX2 __attribute__((target("avx2,fma,f16c")))
#define QMM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

QMM_AVX2 void row_to_f32_avx2(const void* src, Half kind, size_t first, int count, float* dst) {
  if (kind == Half::F32) {
    std::memcpy(dst, static_cast<const float*>(src) + first, count * sizeof(float));
    return;
  }
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

template <int BITS, int R>
QMM_AVX512 void rows_avx512(const Problem& p, int n0, int n1, int m0) {
  // Groups take turns among NA accumulators per x row: one chain of
  // dependent FMAs per row would make a short row wait on its latency.
  constexpr int NA = R <= 2 ? 4 : 2;
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
    __m512 acc[NA][R];
    for (int t = 0; t < NA; ++t)
      for (int i = 0; i < R; ++i) acc[t][i] = _mm512_setzero_ps();
    int off = 0;
    for (int g0 = 0; g0 < groups; g0 += NA) {
#pragma GCC unroll 4
      for (int t = 0; t < NA; ++t) {
        const int g = g0 + t;
        if (g >= groups) break;
        __m512 d0[R], d1[R];
        for (int i = 0; i < R; ++i) d0[i] = d1[i] = _mm512_setzero_ps();
        for (int b = 0; b < blocks; ++b) {
          __m512 a, c;
          load32_avx512<BITS>(wp, a, c);
          wp += BITS * 4;
          for (int i = 0; i < R; ++i) {
            d0[i] = _mm512_fmadd_ps(a, _mm512_loadu_ps(xr[i] + off), d0[i]);
            d1[i] = _mm512_fmadd_ps(c, _mm512_loadu_ps(xr[i] + off + 16), d1[i]);
          }
          off += 32;
        }
        __m512 s = _mm512_set1_ps(rs[g]);
        for (int i = 0; i < R; ++i)
          acc[t][i] = _mm512_fmadd_ps(s, _mm512_add_ps(d0[i], d1[i]), acc[t][i]);
      }
    }
    for (int i = 0; i < R; ++i) {
      const float* xs = p.xsum + static_cast<size_t>(m0 + i) * groups;
      // The biases' share, sum_g b_g * sum(x in g), 16 groups at a time.
      __m512 bias = _mm512_setzero_ps();
      for (int g = 0; g < groups; g += 16) {
        const __mmask16 live = groups - g >= 16 ? 0xffff : (1u << (groups - g)) - 1;
        bias = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(live, rb + g),
                               _mm512_maskz_loadu_ps(live, xs + g), bias);
      }
      __m512 sum = bias;
      for (int t = 0; t < NA; ++t) sum = _mm512_add_ps(sum, acc[t][i]);
      p.y[static_cast<size_t>(m0 + i) * p.n + n] = _mm512_reduce_add_ps(sum);
    }
  }
}
#endif  // QMM_X86

// ---------------------------------------------------------------- dispatch

int best_isa() {
#if QMM_X86
  static int isa = [] {
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return avx512 ? MLX_SYS_CPU_QMM_ISA_AVX512
                  : avx2 ? MLX_SYS_CPU_QMM_ISA_AVX2 : MLX_SYS_CPU_QMM_ISA_SCALAR;
  }();
  return isa;
#else
  return MLX_SYS_CPU_QMM_ISA_SCALAR;
#endif
}

int isa_under(int max_isa) {
  return std::min(best_isa(), std::clamp(max_isa, 0, 2));
}

// Output rows [n0, n1) for x rows [m0, m0 + r), r <= 4.
void rows(const Problem& p, int isa, int n0, int n1, int m0, int r) {
#if QMM_X86
  if (isa != MLX_SYS_CPU_QMM_ISA_SCALAR) {
    using Fn = void (*)(const Problem&, int, int, int);
    static constexpr Fn k512[2][4] = {
        {rows_avx512<4, 1>, rows_avx512<4, 2>, rows_avx512<4, 3>, rows_avx512<4, 4>},
        {rows_avx512<8, 1>, rows_avx512<8, 2>, rows_avx512<8, 3>, rows_avx512<8, 4>}};
    static constexpr Fn k2[2][4] = {
        {rows_avx2<4, 1>, rows_avx2<4, 2>, rows_avx2<4, 3>, rows_avx2<4, 4>},
        {rows_avx2<8, 1>, rows_avx2<8, 2>, rows_avx2<8, 3>, rows_avx2<8, 4>}};
    const auto& table = isa == MLX_SYS_CPU_QMM_ISA_AVX512 ? k512 : k2;
    table[p.bits == 8][r - 1](p, n0, n1, m0);
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

// x as float32 [m, k] (x_kind: its dtype) into `xf` in the row kernel's
// layout, and its per-group sums into `xsum`.
void prepare_x(
    const void* x,
    Half x_kind,
    int m,
    int k,
    int group,
    bool permute4,
    std::vector<float>& xf,
    std::vector<float>& xsum) {
  xf.resize(static_cast<size_t>(m) * k);
  xsum.resize(static_cast<size_t>(m) * (k / group));
  thread_local std::vector<float> row;
  row.resize(k);
  for (int i = 0; i < m; ++i) {
    row_to_f32_scalar(x, x_kind, static_cast<size_t>(i) * k, k, row.data());
    float* dst = xf.data() + static_cast<size_t>(i) * k;
    if (permute4) {
      for (int b = 0; b < k; b += 32) {
        for (int j = 0; j < 16; ++j) {
          dst[b + j] = row[b + 2 * j];
          dst[b + 16 + j] = row[b + 2 * j + 1];
        }
      }
    } else {
      std::memcpy(dst, row.data(), k * sizeof(float));
    }
    for (int g = 0; g < k / group; ++g) {
      float s = 0.0f;
      for (int j = g * group; j < (g + 1) * group; ++j) s += row[j];
      xsum[static_cast<size_t>(i) * (k / group) + g] = s;
    }
  }
}

Half half_kind(Dtype t) {
  if (t == mlx::core::float32) return Half::F32;
  if (t == mlx::core::float16) return Half::F16;
  if (t == mlx::core::bfloat16) return Half::BF16;
  throw std::invalid_argument("cpu_qmm: expected float32, float16 or bfloat16");
}

// The whole product; runs on MLX's CPU stream thread.
void compute(
    const array& x,
    const array& w,
    const array& scales,
    const array& biases,
    array& out,
    int group,
    int bits,
    int isa,
    int gemm_rows) {
  const int k = x.shape().back();
  const int m = k == 0 ? 0 : static_cast<int>(x.size() / k);
  const int n = w.shape(0);
  if (m == 0 || n == 0) return;
  const Half x_kind = half_kind(x.dtype());
  const bool out_f32 = out.dtype() == mlx::core::float32;

  thread_local std::vector<float> xf, xsum, yf, tile;
  float* y = out_f32 ? out.data<float>() : nullptr;
  if (!out_f32) {
    yf.resize(static_cast<size_t>(m) * n);
    y = yf.data();
  }
  Problem p{
      m, n, k, group, bits, w.data<uint8_t>(), scales.data<void>(), biases.data<void>(),
      half_kind(scales.dtype()), nullptr, nullptr, y};
  Pool& threads = pool();
  SgemmFn gemm = sgemm();

  if (gemm != nullptr && m >= gemm_rows) {
    // Many rows: float32 tiles of W through the BLAS.
    const float* xp;
    if (x_kind == Half::F32) {
      xp = x.data<float>();
    } else {
      xf.resize(static_cast<size_t>(m) * k);
      row_to_f32_scalar(x.data<void>(), x_kind, 0, m * k, xf.data());
      xp = xf.data();
    }
    // About 4 MB of float32 per tile, whole multiples of 16 rows.
    int tile_rows = std::clamp<int>((1 << 20) / std::max(k, 1), 16, n);
    tile_rows = std::max(16, tile_rows / 16 * 16);
    tile.resize(static_cast<size_t>(std::min(tile_rows, n)) * k);
    for (int t0 = 0; t0 < n; t0 += tile_rows) {
      const int t1 = std::min(n, t0 + tile_rows);
      const int chunk = 16;
      const int tasks = (t1 - t0 + chunk - 1) / chunk;
      float* tp = tile.data();
      auto part = [&](int i) {
        int a = t0 + i * chunk, b = std::min(t1, a + chunk);
        dequant(p, isa, a, b, tp + static_cast<size_t>(a - t0) * k);
      };
      // A tile is followed by a BLAS call of far more work: worth sharing
      // from a quarter of the threshold.
      if (int64_t{t1 - t0} * k >= kParallelElements / 4) {
        threads.run(tasks, part);
      } else {
        for (int i = 0; i < tasks; ++i) part(i);
      }
      gemm(kCblasRowMajor, kCblasNoTrans, kCblasTrans, m, t1 - t0, k, 1.0f, xp, k, tp, k, 0.0f,
           y + t0, n);
    }
  } else {
    prepare_x(x.data<void>(), x_kind, m, k, group,
              bits == 4 && isa != MLX_SYS_CPU_QMM_ISA_SCALAR, xf, xsum);
    p.x = xf.data();
    p.xsum = xsum.data();
    auto part = [&](int a, int b) {
      for (int m0 = 0; m0 < m; m0 += 4) {
        rows(p, isa, a, b, m0, std::min(4, m - m0));
      }
    };
    if (int64_t{n} * k < kRowsParallelElements) {
      part(0, n);
    } else {
      // About 8 tasks per thread, at least 8 rows each.
      const int per = std::max(8, n / (threads.size() * 8));
      const int tasks = (n + per - 1) / per;
      threads.run(tasks, [&](int i) { part(i * per, std::min(n, (i + 1) * per)); }, kRowsSpinUs);
    }
  }
  if (!out_f32) {
    const size_t count = static_cast<size_t>(m) * n;
    if (out.dtype() == mlx::core::float16) {
      auto o = out.data<mlx::core::float16_t>();
      for (size_t i = 0; i < count; ++i) o[i] = mlx::core::float16_t(yf[i]);
    } else {
      auto o = out.data<mlx::core::bfloat16_t>();
      for (size_t i = 0; i < count; ++i) o[i] = mlx::core::bfloat16_t(yf[i]);
    }
  }
}

class CpuQmm : public mlx::core::UnaryPrimitive {
 public:
  CpuQmm(mlx::core::Stream stream, int group, int bits, int isa, int gemm_rows)
      : UnaryPrimitive(stream), group_(group), bits_(bits), isa_(isa), gemm_rows_(gemm_rows) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    out.set_data(mlx::core::allocator::malloc(out.nbytes()));
    auto& encoder = mlx::core::cpu::get_command_encoder(stream());
    for (auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    encoder.dispatch([x = array::unsafe_weak_copy(inputs[0]),
                      w = array::unsafe_weak_copy(inputs[1]),
                      s = array::unsafe_weak_copy(inputs[2]),
                      b = array::unsafe_weak_copy(inputs[3]),
                      out = array::unsafe_weak_copy(out), group = group_, bits = bits_,
                      isa = isa_, gemm_rows = gemm_rows_]() mutable {
      compute(x, w, s, b, out, group, bits, isa, gemm_rows);
    });
  }

  void eval_gpu(const std::vector<array>&, array&) override {
    throw std::runtime_error("cpu_qmm: our quantized product runs on the CPU only");
  }

  const char* name() const override {
    return "MistralMlxCpuQmm";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    auto o = dynamic_cast<const CpuQmm*>(&other);
    return o != nullptr && o->group_ == group_ && o->bits_ == bits_ && o->isa_ == isa_ &&
        o->gemm_rows_ == gemm_rows_;
  }

 private:
  int group_, bits_, isa_, gemm_rows_;
};

bool is_float(Dtype t) {
  return t == mlx::core::float32 || t == mlx::core::float16 || t == mlx::core::bfloat16;
}

array build(
    const array& x_in,
    const array& w_in,
    const array& s_in,
    const array& b_in,
    int group,
    int bits,
    int isa,
    int gemm_rows,
    mlx::core::Stream stream) {
  using mlx::core::contiguous;
  if (stream.device != mlx::core::Device::cpu) {
    throw std::invalid_argument("cpu_qmm: the stream is not a CPU stream");
  }
  if (bits != 4 && bits != 8) throw std::invalid_argument("cpu_qmm: bits must be 4 or 8");
  if (group != 32 && group != 64 && group != 128) {
    throw std::invalid_argument("cpu_qmm: group_size must be 32, 64 or 128");
  }
  if (x_in.ndim() < 1 || w_in.ndim() != 2 || s_in.ndim() != 2 || b_in.ndim() != 2) {
    throw std::invalid_argument("cpu_qmm: x needs 1+ dims, w/scales/biases 2");
  }
  if (w_in.dtype() != mlx::core::uint32) throw std::invalid_argument("cpu_qmm: w must be uint32");
  if (!is_float(x_in.dtype()) || !is_float(s_in.dtype()) || b_in.dtype() != s_in.dtype()) {
    throw std::invalid_argument(
        "cpu_qmm: x, scales and biases must be float32/float16/bfloat16 "
        "(scales and biases alike)");
  }
  const int k = x_in.shape().back();
  const int n = w_in.shape(0);
  if (k % group != 0 || w_in.shape(1) != k * bits / 32 || s_in.shape(0) != n ||
      s_in.shape(1) != k / group || b_in.shape() != s_in.shape()) {
    throw std::invalid_argument("cpu_qmm: shapes of x, w, scales and biases do not agree");
  }
  auto shape = x_in.shape();
  shape.back() = n;
  auto dtype = mlx::core::promote_types(x_in.dtype(), s_in.dtype());
  std::vector<array> inputs = {
      contiguous(x_in, false, stream), contiguous(w_in, false, stream),
      contiguous(s_in, false, stream), contiguous(b_in, false, stream)};
  return array(
      std::move(shape), dtype,
      std::make_shared<CpuQmm>(stream, group, bits, isa_under(isa), gemm_rows), std::move(inputs));
}

void write_error(char* err, size_t err_len, const char* msg) {
  if (err != nullptr && err_len > 0) {
    std::snprintf(err, err_len, "%s", msg);
  }
}

}  // namespace

extern "C" int mlx_sys_cpu_qmm(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const mlx_array scales,
    const mlx_array biases,
    int group_size,
    int bits,
    int max_isa,
    int gemm_min_rows,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  try {
    int gemm_rows = gemm_min_rows > 0 ? gemm_min_rows : kDefaultGemmRows;
    mlx_array_set_(
        *res,
        build(mlx_array_get_(x), mlx_array_get_(w), mlx_array_get_(scales),
              mlx_array_get_(biases), group_size, bits, max_isa, gemm_rows,
              mlx_stream_get_(stream)));
    return 0;
  } catch (const std::exception& e) {
    write_error(err, err_len, e.what());
    return 1;
  }
}

extern "C" int mlx_sys_cpu_qmm_isa(int max_isa) {
  return isa_under(max_isa);
}

extern "C" int mlx_sys_cpu_qmm_has_sgemm(void) {
  return sgemm() != nullptr;
}

extern "C" int mlx_sys_cpu_qmm_default_gemm_rows(void) {
  return kDefaultGemmRows;
}
