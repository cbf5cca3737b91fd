// Shared by our C++ MLX primitives (cpu_qmm.cpp, cpu_fused.cpp): dtype and
// stream checks, strided rows, and the C entry points' error convention.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

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

// Row `r` of float32 `a` (rows of its last axis): in place where that axis
// is contiguous, else gathered into `scratch`.
inline const float* float_row(const mlx::core::array& a, int64_t r, std::vector<float>& scratch) {
  const float* p = a.data<float>() + row_offset(a, r);
  const int64_t d = a.shape().back();
  const int64_t stride = a.strides().back();
  if (stride == 1) return p;
  scratch.resize(d);
  for (int64_t i = 0; i < d; ++i) scratch[i] = p[i * stride];
  return scratch.data();
}

// A C entry point's body of several results: `*res[i]` = f()[i], 0; or
// the exception's message in `err` (at most err_len bytes) and 1.
template <typename F>
int guarded_all(std::initializer_list<mlx_array*> res, char* err, size_t err_len, F&& f) {
  try {
    const std::vector<mlx::core::array> outs = f();
    if (outs.size() != res.size()) throw std::logic_error("a builder gave too few results");
    size_t i = 0;
    for (mlx_array* r : res) mlx_array_set_(*r, outs[i++]);
    return 0;
  } catch (const std::exception& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

// The same for one result: `*res` = f().
template <typename F>
int guarded(mlx_array* res, char* err, size_t err_len, F&& f) {
  return guarded_all({res}, err, err_len, [&] { return std::vector<mlx::core::array>{f()}; });
}

}  // namespace mlx_sys_shim
