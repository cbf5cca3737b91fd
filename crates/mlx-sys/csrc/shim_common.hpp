// Shared by our C++ MLX primitives (cpu_qmm.cpp, cpu_fused.cpp): dtype and
// stream checks, strided rows, and the C entry points' error convention.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "mlx/array.h"
#include "mlx/c/private/array.h"

namespace mlx_sys_shim {

// float32, float16 or bfloat16.
inline bool is_float(mlx::core::Dtype t) {
  return t == mlx::core::float32 || t == mlx::core::float16 || t == mlx::core::bfloat16;
}

// Throws unless `s` computes on the CPU (`who`: the op, for the message).
inline void require_cpu(const mlx::core::Stream& s, const char* who) {
  if (s.device != mlx::core::Device::cpu) {
    throw std::invalid_argument(std::string(who) + ": the stream is not a CPU stream");
  }
}

// Element offset of row `row` of `a` seen as rows of its last axis.
inline int64_t row_offset(const mlx::core::array& a, int64_t row) {
  int64_t off = 0;
  for (int ax = static_cast<int>(a.ndim()) - 2; ax >= 0 && row > 0; --ax) {
    const int64_t n = a.shape(ax);
    off += (row % n) * a.strides()[ax];
    row /= n;
  }
  return off;
}

// A C entry point's body: `*res` = f(), 0; or the exception's message in
// `err` (at most err_len bytes) and 1.
template <typename F>
int guarded(mlx_array* res, char* err, size_t err_len, F&& f) {
  try {
    mlx_array_set_(*res, f());
    return 0;
  } catch (const std::exception& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

}  // namespace mlx_sys_shim
