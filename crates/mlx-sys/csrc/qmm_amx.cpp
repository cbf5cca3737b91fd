// Many rows of our CPU quantized product by AMX tiles (Intel AMX-BF16),
// at float32's accuracy.
//
// Why it is exact enough: the weights' codes (0-15, 0-255) are exact in
// bfloat16, and x is split into three bfloat16 parts, x = h + m + l (8
// significant bits each, 24 together: float32's). The tile unit multiplies
// bfloat16 pairs exactly and sums in float32, so each group's sum of x
// times the codes is a float32 sum of exact products, as the SIMD rows
// kernel's; the group's scale and bias are then applied in float32:
// y += s * (x . q) + b * sum(x).
//
// Layout: the weights are the tiles' A side (16 weight rows by 32 codes,
// as stored), x the B side (pairs of k by 16 rows of x), so C holds 16
// weight rows by 16 x rows; for 4-bit, a row's 32 codes are taken low
// nibbles first, and x's k is laid out in that order to match. Per k
// chunk (x's part in L2 for all its rows), each thread's pairs of 16
// weight rows are converted to bfloat16 once and meet every row of x.

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define QMM_AMX 1
#else
#define QMM_AMX 0
#endif

#include "qmm_internal.hpp"
#include "qmm_pool.hpp"

namespace mlx_sys_qmm {

bool has_amx() {
#if QMM_AMX
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    const bool tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    const bool avx512_bf16 = (a >> 5) & 1;
    if (!tile || !bf16 || !avx512_bf16) return false;
    // Linux hands out the tile registers' state per process, on request
    // (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

#if QMM_AMX

namespace {

#define QMM_AMX_FN                                                                        \
  __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16," \
                         "avx2,fma,f16c")))

constexpr int kTile = 16;        // rows of x, and weight rows, per tile
constexpr int kStep = 32;        // k per tile product
constexpr int kParts = 3;        // bfloat16 parts of x
constexpr int kChunk = 1024;     // k per chunk (a multiple of every group)
constexpr int kTileHalves = 512; // bfloat16 values in one tile
constexpr int kRowChunk = 256;   // rows of x per pass (bounds the scratch)

// GCC's tile intrinsics do not tell the compiler that ldtilecfg reads the
// whole configuration or that tileloadd reads memory: a barrier makes the
// stores before them happen first.
inline void memory_barrier() {
  __asm__ volatile("" ::: "memory");
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// x's split, laid out as B tiles: [row block][k step][part] tiles, each
// 16 pairs of k by 16 rows; and its group sums per row block, [block][group][16].
struct XTiles {
  std::vector<uint16_t> b;
  std::vector<float> sums;
  int blocks = 0, steps = 0;
  const uint16_t* tile(int block, int step, int part) const {
    return b.data() + ((static_cast<size_t>(block) * steps + step) * kParts + part) * kTileHalves;
  }
};

// Lane i holds i * 16: the offsets of a tile column's 16 elements (in
// 32-bit units, 64-byte rows).
QMM_AMX_FN inline __m512i column_offsets() {
  return _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(kTile));
}

QMM_AMX_FN inline __m512 bf16_low_to_f32(__m512i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// One row of x (32 values at `src`, float32) into its three parts' 16
// pairs each, scattered to column `col` of the block's three B tiles.
QMM_AMX_FN void split_row(const float* src, bool nibbles, uint16_t* tiles, int col) {
  __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
  if (nibbles) {
    // Positions 0-15 hold k = 0, 2, ..., 30 (the low nibbles), 16-31 the odd k.
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    __m512 e = _mm512_permutex2var_ps(a, even, b), o = _mm512_permutex2var_ps(a, odd, b);
    a = e;
    b = o;
  }
  const __m512i rows = column_offsets();
  for (int part = 0; part < kParts; ++part) {
    const __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    auto dst = reinterpret_cast<int*>(tiles + static_cast<size_t>(part) * kTileHalves) + col;
    _mm512_i32scatter_epi32(dst, rows, pairs, 4);
    // What this part leaves (exact: the part is x's leading bits, rounded).
    const __m512i lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(pairs));
    const __m512i hi = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(pairs, 1));
    a = _mm512_sub_ps(a, bf16_low_to_f32(lo));
    b = _mm512_sub_ps(b, bf16_low_to_f32(hi));
  }
}

// x (float32 [m, k], row-major) and its group sums into `t`.
QMM_AMX_FN void split_x(const Problem& p, Pool& pool, XTiles& t) {
  const int groups = p.groups();
  t.blocks = (p.m + kTile - 1) / kTile;
  t.steps = p.k / kStep;
  t.b.resize(static_cast<size_t>(t.blocks) * t.steps * kParts * kTileHalves);
  t.sums.resize(static_cast<size_t>(t.blocks) * groups * kTile);
  const bool nibbles = p.bits == 4;
  auto block = [&](int mb) {
    for (int c = 0; c < kTile; ++c) {
      const int i = mb * kTile + c;
      for (int s = 0; s < t.steps; ++s) {
        uint16_t* tiles = t.b.data() +
            (static_cast<size_t>(mb) * t.steps + s) * kParts * kTileHalves;
        if (i < p.m) {
          split_row(p.x + static_cast<size_t>(i) * p.k + s * kStep, nibbles, tiles, c);
        } else {
          for (int part = 0; part < kParts; ++part) {
            auto dst = reinterpret_cast<uint32_t*>(tiles + part * kTileHalves);
            for (int r = 0; r < kTile; ++r) dst[r * kTile + c] = 0;
          }
        }
      }
      for (int g = 0; g < groups; ++g) {
        float sum = 0.0f;
        for (int j = 0; i < p.m && j < p.group; ++j) {
          sum += p.x[static_cast<size_t>(i) * p.k + g * p.group + j];
        }
        t.sums[(static_cast<size_t>(mb) * groups + g) * kTile + c] = sum;
      }
    }
  };
  if (int64_t{p.m} * p.k >= (int64_t{1} << 16)) {
    pool.run(t.blocks, block);
  } else {
    for (int mb = 0; mb < t.blocks; ++mb) block(mb);
  }
}

// 32 codes of weight row `row` from k = k0 as bfloat16, into `dst` (4-bit:
// the low nibbles first).
QMM_AMX_FN inline void codes_to_bf16(const Problem& p, int row, int k0, uint16_t* dst) {
  const uint8_t* src = p.w + row * p.row_bytes() + static_cast<size_t>(k0) * p.bits / 8;
  if (p.bits == 4) {
    // Words 0-15: bfloat16 of 0..15.
    const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(
        _mm512_setzero_ps(), _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    const __m256i lo = _mm256_and_si256(w, _mm256_set1_epi16(0x0F));
    const __m256i hi = _mm256_srli_epi16(w, 4);
    const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    _mm512_store_si512(dst, _mm512_permutexvar_epi16(idx, table));
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(b)));
    const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(b, 1)));
    _mm512_store_si512(dst, (__m512i)_mm512_cvtne2ps_pbh(f1, f0));
  }
}

// The chunk's sums for one pair of weight blocks (A tiles at `wa`, their
// rows' scales `sc` and biases `bi`, [32 rows][gs groups]) and x blocks
// mb to mb + MBS - 1, added to acc[j] (j: weight block j % 2, x block
// mb + j / 2). Tiles: C 0-3 (as acc), A 4-5, B 6-7 (one part of x at a
// time), so four independent sums hide the tile product's latency.
template <int MBS>
QMM_AMX_FN void group_sums(
    const Problem& p,
    const XTiles& xt,
    const uint16_t* wa,
    const float* sc,
    const float* bi,
    int gs,
    int k0,
    int mb,
    float* const* acc) {
  alignas(64) float c[4][kTile * kTile];
  const int per_group = p.group / kStep, groups = p.groups(), g0 = k0 / p.group;
  for (int g = 0; g < gs; ++g) {
    _tile_zero(0);
    _tile_zero(1);
    if (MBS == 2) {
      _tile_zero(2);
      _tile_zero(3);
    }
    for (int s = g * per_group; s < (g + 1) * per_group; ++s) {
      const int step = k0 / kStep + s;
      const uint16_t* a = wa + static_cast<size_t>(s) * 2 * kTile * kStep;
      _tile_loadd(4, a, 64);
      _tile_loadd(5, a + kTile * kStep, 64);
      for (int part = 0; part < kParts; ++part) {
        _tile_loadd(6, xt.tile(mb, step, part), 64);
        if (MBS == 2) _tile_loadd(7, xt.tile(mb + 1, step, part), 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 5, 6);
        if (MBS == 2) {
          _tile_dpbf16ps(2, 4, 7);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    if (MBS == 2) {
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
    }
    for (int j = 0; j < 2 * MBS; ++j) {
      const __m512 xs = _mm512_loadu_ps(
          xt.sums.data() + (static_cast<size_t>(mb + j / 2) * groups + g0 + g) * kTile);
      const float* s_row = sc + static_cast<size_t>(j % 2) * kTile * gs + g;
      const float* b_row = bi + static_cast<size_t>(j % 2) * kTile * gs + g;
      for (int r = 0; r < kTile; ++r) {
        __m512 y = _mm512_loadu_ps(acc[j] + r * kTile);
        y = _mm512_fmadd_ps(_mm512_set1_ps(s_row[r * gs]), _mm512_load_ps(c[j] + r * kTile), y);
        y = _mm512_fmadd_ps(_mm512_set1_ps(b_row[r * gs]), xs, y);
        _mm512_storeu_ps(acc[j] + r * kTile, y);
      }
    }
  }
}

// A thread's share: weight-row pairs [pair0, pair1) for every row of x,
// summed into yt ([weight block][x block][16 weight rows][16 x rows]).
QMM_AMX_FN void pairs(const Problem& p, const XTiles& xt, int pair0, int pair1, float* yt) {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = kTile;
  }
  memory_barrier();
  _tile_loadconfig(&cfg);
  const int groups = p.groups();
  thread_local std::vector<uint16_t> wa_store;
  thread_local std::vector<float> sc, bi;
  wa_store.resize(static_cast<size_t>(kChunk / kStep) * 2 * kTile * kStep + 32);
  // 64-byte aligned A tiles: [step][32 weight rows][32 codes].
  uint16_t* wa = reinterpret_cast<uint16_t*>(
      (reinterpret_cast<uintptr_t>(wa_store.data()) + 63) & ~uintptr_t{63});
  const size_t block_floats = static_cast<size_t>(kTile) * kTile;
  std::fill(yt + static_cast<size_t>(pair0) * 2 * xt.blocks * block_floats,
            yt + static_cast<size_t>(pair1) * 2 * xt.blocks * block_floats, 0.0f);
  for (int k0 = 0; k0 < p.k; k0 += kChunk) {
    const int k1 = std::min(p.k, k0 + kChunk);
    const int steps = (k1 - k0) / kStep, g0 = k0 / p.group, gs = (k1 - k0) / p.group;
    sc.resize(static_cast<size_t>(2 * kTile) * gs);
    bi.resize(sc.size());
    for (int pr = pair0; pr < pair1; ++pr) {
      // The pair's codes as bfloat16 and its scales as float32 (rows past
      // n: zero).
      for (int r = 0; r < 2 * kTile; ++r) {
        const int row = pr * 2 * kTile + r;
        if (row < p.n) {
          for (int s = 0; s < steps; ++s) {
            codes_to_bf16(p, row, k0 + s * kStep, wa + (static_cast<size_t>(s) * 2 * kTile + r) * kStep);
          }
          if (row + 1 < p.n) {
            // The next row's part: these loads wait on memory otherwise.
            const uint8_t* next = p.w + (row + 1) * p.row_bytes();
            for (size_t b = static_cast<size_t>(k0) * p.bits / 8; b < static_cast<size_t>(k1) * p.bits / 8; b += 64) {
              _mm_prefetch(reinterpret_cast<const char*>(next + b), _MM_HINT_T0);
            }
          }
          const size_t at = static_cast<size_t>(row) * groups + g0;
          row_to_f32_scalar(p.scales, p.sdt, at, gs, sc.data() + static_cast<size_t>(r) * gs);
          row_to_f32_scalar(p.biases, p.sdt, at, gs, bi.data() + static_cast<size_t>(r) * gs);
        } else {
          for (int s = 0; s < steps; ++s) {
            std::memset(wa + (static_cast<size_t>(s) * 2 * kTile + r) * kStep, 0, kStep * 2);
          }
          std::fill(sc.begin() + static_cast<size_t>(r) * gs, sc.begin() + (r + 1) * gs, 0.0f);
          std::fill(bi.begin() + static_cast<size_t>(r) * gs, bi.begin() + (r + 1) * gs, 0.0f);
        }
      }
      memory_barrier();
      for (int mb = 0; mb < xt.blocks; mb += 2) {
        float* acc[4];
        for (int j = 0; j < 4; ++j) {
          // C tile j: weight block j % 2 of the pair, x block mb + j / 2.
          acc[j] = yt + (static_cast<size_t>(pr * 2 + j % 2) * xt.blocks + mb + j / 2) * block_floats;
        }
        if (mb + 1 < xt.blocks) {
          group_sums<2>(p, xt, wa, sc.data(), bi.data(), gs, k0, mb, acc);
        } else {
          group_sums<1>(p, xt, wa, sc.data(), bi.data(), gs, k0, mb, acc);
        }
      }
    }
  }
  _tile_release();
  // The pairs' sums into y [m, n]: column c of a block (16 weight rows)
  // is a piece of y's row.
  const __m512i column = column_offsets();
  for (int nb = pair0 * 2; nb < pair1 * 2 && nb * kTile < p.n; ++nb) {
    const __mmask16 valid = static_cast<__mmask16>((1u << std::min(kTile, p.n - nb * kTile)) - 1);
    for (int mb = 0; mb < xt.blocks; ++mb) {
      const float* acc = yt + (static_cast<size_t>(nb) * xt.blocks + mb) * block_floats;
      for (int c = 0; c < kTile && mb * kTile + c < p.m; ++c) {
        float* row = p.y + static_cast<size_t>(mb * kTile + c) * p.n + nb * kTile;
        _mm512_mask_storeu_ps(row, valid, _mm512_i32gather_ps(column, acc + c, 4));
      }
    }
  }
}

// At most kRowChunk rows of x: their split and sums stay within 6 * k *
// kRowChunk bytes of scratch however long the prompt.
void rows_of_x(const Problem& p, Pool& pool) {
  // The caller's scratch, named by reference: a lambda does not capture a
  // thread_local (a worker would see its own).
  thread_local XTiles xt_store;
  thread_local std::vector<float> yt_store;
  XTiles& xt = xt_store;
  std::vector<float>& yt = yt_store;
  split_x(p, pool, xt);
  const int pair_count = (p.n + 2 * kTile - 1) / (2 * kTile);
  yt.resize(static_cast<size_t>(pair_count) * 2 * xt.blocks * kTile * kTile);
  const int tasks = std::min(pool.size(), pair_count);
  const int per = (pair_count + tasks - 1) / tasks;
  auto share = [&](int i) {
    const int a = i * per, b = std::min(pair_count, a + per);
    if (a < b) pairs(p, xt, a, b, yt.data());
  };
  if (int64_t{p.n} * p.k * p.m >= (int64_t{1} << 21)) {
    pool.run(tasks, share);
  } else {
    for (int i = 0; i < tasks; ++i) share(i);
  }
}

}  // namespace

void gemm_amx(const Problem& p, Pool& pool) {
  for (int m0 = 0; m0 < p.m; m0 += kRowChunk) {
    Problem part = p;
    part.m = std::min(kRowChunk, p.m - m0);
    part.x = p.x + static_cast<size_t>(m0) * p.k;
    part.y = p.y + static_cast<size_t>(m0) * p.n;
    rows_of_x(part, pool);
  }
}

#else

void gemm_amx(const Problem&, Pool&) {}

#endif  // QMM_AMX

}  // namespace mlx_sys_qmm
