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
// - many rows (prefill): on CPUs with AMX-BF16, by its tiles at float32's
//   accuracy (qmm_amx.cpp); elsewhere tiles of W are dequantized to
//   float32 (on the pool) and multiplied by the BLAS `cblas_sgemm` MLX
//   itself links (OpenBLAS on our Linux builds), looked up in the process
//   at run time; without it, the SIMD path takes them four rows of x at a
//   time.
// Accumulation is float32 throughout; no activation is quantized, except
// on the int8 path (asked for per product; qmm_q8_x86.cpp): x quantized
// per group to int8, integer dot products (AVX512-VNNI, AVX-VNNI or AVX2),
// for decode and prefill alike.
//
// Files: this one (the primitive, the product's plan, the C entry points),
// qmm_internal.hpp (the problem's layout), qmm_scalar.cpp (portable code),
// qmm_x86.cpp (the SIMD kernels and their choice), qmm_q8_x86.cpp (the
// int8 path's kernels), qmm_amx.cpp (many rows by AMX tiles),
// qmm_pool.{hpp,cpp} (the
// threads).

#include "cpu_qmm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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

#include "qmm_internal.hpp"
#include "shim_common.hpp"
#include "qmm_pool.hpp"

namespace {

using mlx::core::array;
using mlx::core::Dtype;
using namespace mlx_sys_qmm;

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
// The same for AMX tiles: from 7 rows they beat the row kernel (which
// reads the weights once per 4 rows of x; BENCHMARKS.md, "CPU: many rows
// by AMX tiles").
constexpr int kDefaultTileRows = 7;
// The fewest weights (rows x columns) a tile of W must have for its
// dequantization to be shared among the pool's threads (see Pool): a BLAS
// call of far more work follows it.
constexpr int64_t kTileParallelElements = int64_t{1} << 19;
// The same for a product of the few-row path, whose workers stay awake
// between products (see Pool), and how long they do (BENCHMARKS.md, "CPU
// decode threads").
constexpr int64_t kRowsParallelElements = int64_t{1} << 16;

Half half_kind(Dtype t) {
  if (t == mlx::core::float32) return Half::F32;
  if (t == mlx::core::float16) return Half::F16;
  if (t == mlx::core::bfloat16) return Half::BF16;
  throw std::invalid_argument("cpu_qmm: expected float32, float16 or bfloat16");
}

// x's elements in row-major order: its own buffer where it is laid out so,
// else gathered row by row through its strides into `gathered` (a view
// that was not copied when the graph was built).
const void* row_major(const array& x, std::vector<uint8_t>& gathered) {
  if (x.flags().row_contiguous) return x.data<void>();
  const size_t item = x.itemsize();
  const int k = x.shape().back();
  const int64_t step = x.strides().back();
  const int64_t rows = k == 0 ? 0 : static_cast<int64_t>(x.size() / k);
  gathered.resize(x.size() * item);
  auto base = x.data<uint8_t>();
  uint8_t* dst = gathered.data();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = base + mlx_sys_shim::row_offset(x, r) * static_cast<int64_t>(item);
    for (int j = 0; j < k; ++j, dst += item) {
      std::memcpy(dst, row + j * step * static_cast<int64_t>(item), item);
    }
  }
  return gathered.data();
}

// The whole product, plus `residual` (float32, out's shape) where given;
// runs on MLX's CPU stream thread.
void compute(
    const array& x,
    const array& w,
    const array& scales,
    const array& biases,
    const array* residual,
    array& out,
    int group,
    int bits,
    int isa,
    int gemm_rows,
    bool int8_x) {
  const int k = x.shape().back();
  const int m = k == 0 ? 0 : static_cast<int>(x.size() / k);
  const int n = w.shape(0);
  if (m == 0 || n == 0) return;
  const Half x_kind = half_kind(x.dtype());
  const bool out_f32 = out.dtype() == mlx::core::float32;
  thread_local std::vector<uint8_t> gathered;
  const void* x_data = row_major(x, gathered);

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

  // Many rows: AMX tiles where the CPU has them, else the BLAS (gemm_rows
  // 0: each path's default).
  const bool tiles = isa >= MLX_SYS_CPU_QMM_ISA_AVX512_AMX;
  const int many = gemm_rows > 0 ? gemm_rows : tiles ? kDefaultTileRows : kDefaultGemmRows;
  const bool use_tiles = tiles && m >= many;
  const bool use_gemm = !tiles && gemm != nullptr && m >= many;
  // x as float32 [m, k], row-major: in place, or widened into xf.
  auto float32_x = [&]() -> const float* {
    if (x_kind == Half::F32) return static_cast<const float*>(x_data);
    xf.resize(static_cast<size_t>(m) * k);
    row_to_f32_scalar(x_data, x_kind, 0, m * k, xf.data());
    return xf.data();
  };
  if (use_tiles) {
    p.x = float32_x();
    gemm_amx(p, threads);
  } else if (int8_x && !use_gemm) {
    // The int8 path: tasks of weight rows, each with every row of x (a
    // task's weights stay in cache while x streams by). Many rows still
    // take AMX tiles or the BLAS by default: faster on our machine
    // (BENCHMARKS.md).
    thread_local std::vector<int8_t> xq;
    thread_local std::vector<float> xd;
    prepare_xq(x_data, x_kind, m, k, group,
               bits == 4 && isa != MLX_SYS_CPU_QMM_ISA_SCALAR, xq, xd, xsum);
    p.xq = xq.data();
    p.xd = xd.data();
    p.xsum = xsum.data();
    if (int64_t{n} * k * m < kRowsParallelElements) {
      rows_q8(p, isa, 0, n, 0, m);
    } else {
      // About 8 tasks per thread, whole multiples of 4 rows, at least 8.
      int per = std::max(8, n / (threads.size() * 8));
      per = (per + 3) / 4 * 4;
      const int tasks = (n + per - 1) / per;
      threads.run(
          tasks, [&](int i) { rows_q8(p, isa, i * per, std::min(n, (i + 1) * per), 0, m); },
          m <= 4 ? kDecodeSpinUs : 0);
    }
  } else if (use_gemm) {
    // Many rows: float32 tiles of W through the BLAS.
    const float* xp = float32_x();
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
      if (int64_t{t1 - t0} * k >= kTileParallelElements) {
        threads.run(tasks, part);
      } else {
        for (int i = 0; i < tasks; ++i) part(i);
      }
      gemm(kCblasRowMajor, kCblasNoTrans, kCblasTrans, m, t1 - t0, k, 1.0f, xp, k, tp, k, 0.0f,
           y + t0, n);
    }
  } else {
    const XLayout layout = bits != 4 || isa == MLX_SYS_CPU_QMM_ISA_SCALAR ? XLayout::AsIs
        : isa >= MLX_SYS_CPU_QMM_ISA_AVX512                              ? XLayout::Nibbles128
                                                                         : XLayout::Pairs32;
    prepare_x(x_data, x_kind, m, k, group, layout, xf, xsum);
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
      threads.run(tasks, [&](int i) { part(i * per, std::min(n, (i + 1) * per)); }, kDecodeSpinUs);
    }
  }
  if (residual != nullptr) {
    // The layer's residual sum in the same pass (out is float32): the
    // float32 add MLX's Add would make, one rounding per element.
    thread_local std::vector<uint8_t> gathered_r;
    auto r = static_cast<const float*>(row_major(*residual, gathered_r));
    const size_t count = static_cast<size_t>(m) * n;
    for (size_t i = 0; i < count; ++i) y[i] = r[i] + y[i];
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
  CpuQmm(mlx::core::Stream stream, int group, int bits, int isa, int gemm_rows, bool int8_x, bool plus)
      : UnaryPrimitive(stream),
        group_(group),
        bits_(bits),
        isa_(isa),
        gemm_rows_(gemm_rows),
        int8_x_(int8_x),
        plus_(plus) {}

  void eval_cpu(const std::vector<array>& inputs, array& out) override {
    out.set_data(mlx::core::allocator::malloc(out.nbytes()));
    auto& encoder = mlx::core::cpu::get_command_encoder(stream());
    for (auto& in : inputs) encoder.set_input_array(in);
    encoder.set_output_array(out);
    encoder.dispatch([x = array::unsafe_weak_copy(inputs[0]),
                      w = array::unsafe_weak_copy(inputs[1]),
                      s = array::unsafe_weak_copy(inputs[2]),
                      b = array::unsafe_weak_copy(inputs[3]),
                      // The residual where there is one (else x, unread).
                      r = array::unsafe_weak_copy(inputs[plus_ ? 4 : 0]), plus = plus_,
                      out = array::unsafe_weak_copy(out), group = group_, bits = bits_,
                      isa = isa_, gemm_rows = gemm_rows_, int8_x = int8_x_]() mutable {
      compute(x, w, s, b, plus ? &r : nullptr, out, group, bits, isa, gemm_rows, int8_x);
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
        o->gemm_rows_ == gemm_rows_ && o->int8_x_ == int8_x_ && o->plus_ == plus_;
  }

 private:
  int group_, bits_, isa_, gemm_rows_;
  bool int8_x_, plus_;
};

using mlx_sys_shim::is_float;

array build(
    const array& x_in,
    const array& w_in,
    const array& s_in,
    const array& b_in,
    const array* residual,
    int group,
    int bits,
    int isa,
    int gemm_rows,
    bool int8_x,
    mlx::core::Stream stream) {
  using mlx::core::contiguous;
  mlx_sys_shim::require_cpu(stream, "cpu_qmm");
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
  // No Contiguous node where none is needed (each costs a step time): x
  // is read through its strides at evaluation, and weights already laid
  // out row-major (evaluated at load) go in as they are.
  auto laid_out = [&](const array& a) {
    return a.is_available() && a.flags().row_contiguous ? a : contiguous(a, false, stream);
  };
  std::vector<array> inputs = {x_in, laid_out(w_in), laid_out(s_in), laid_out(b_in)};
  if (residual != nullptr) {
    if (dtype != mlx::core::float32 || residual->dtype() != mlx::core::float32 ||
        residual->shape() != shape) {
      throw std::invalid_argument(
          "cpu_qmm: the residual must be float32 and of the product's shape, "
          "which must be float32");
    }
    inputs.push_back(*residual);
  }
  return array(
      std::move(shape), dtype,
      std::make_shared<CpuQmm>(
          stream, group, bits, isa_under(isa), gemm_rows, int8_x, residual != nullptr),
      std::move(inputs));
}

}  // namespace

extern "C" int mlx_sys_cpu_qmm(
    mlx_array* res,
    const mlx_array x,
    const mlx_array w,
    const mlx_array scales,
    const mlx_array biases,
    const mlx_array* residual,
    int group_size,
    int bits,
    int max_isa,
    int gemm_min_rows,
    int int8_x,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return mlx_sys_shim::guarded(res, err, err_len, [&] {
    const array* r = residual != nullptr ? &mlx_array_get_(*residual) : nullptr;
    return build(mlx_array_get_(x), mlx_array_get_(w), mlx_array_get_(scales),
                 mlx_array_get_(biases), r, group_size, bits, max_isa,
                 std::max(gemm_min_rows, 0), int8_x != 0, mlx_stream_get_(stream));
  });
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

extern "C" int mlx_sys_cpu_qmm_default_tile_rows(void) {
  return kDefaultTileRows;
}
