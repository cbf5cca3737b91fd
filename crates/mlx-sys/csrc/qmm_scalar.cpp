// The portable parts of our CPU quantized product: conversions, the
// scalar kernels, the activations' preparation.

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qmm_internal.hpp"

namespace mlx_sys_qmm {

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

RowScratch& row_scratch() {
  thread_local RowScratch scratch;
  return scratch;
}

namespace {

// Calls body(n, q, s, b) for each weight row n in [n0, n1): q(j) unpacks
// the row's element j, s and b are its groups' scales and biases in
// float32 (the calling thread's scratch).
template <typename Body>
void each_weight_row(const Problem& p, int n0, int n1, Body body) {
  const int groups = p.groups();
  const uint32_t mask = (1u << p.bits) - 1;
  const int per_word = 32 / p.bits;
  auto& sc = row_scratch();
  sc.fit(groups);
  for (int n = n0; n < n1; ++n) {
    row_to_f32_scalar(p.scales, p.sdt, static_cast<size_t>(n) * groups, groups, sc.s.data());
    row_to_f32_scalar(p.biases, p.sdt, static_cast<size_t>(n) * groups, groups, sc.b.data());
    auto words = reinterpret_cast<const uint32_t*>(p.w + n * p.row_bytes());
    auto q = [&](int j) { return (words[j / per_word] >> ((j % per_word) * p.bits)) & mask; };
    body(n, q, sc.s.data(), sc.b.data());
  }
}

// `k` values of `src` into `dst` in the row kernel's layout: per 32, the
// even ones then the odd ones where `permute4`, else as they are.
template <typename T>
void lay_out(const T* src, T* dst, int k, bool permute4) {
  if (!permute4) {
    std::memcpy(dst, src, static_cast<size_t>(k) * sizeof(T));
    return;
  }
  for (int b = 0; b < k; b += 32) {
    for (int j = 0; j < 16; ++j) {
      dst[b + j] = src[b + 2 * j];
      dst[b + 16 + j] = src[b + 2 * j + 1];
    }
  }
}

}  // namespace

void rows_scalar(const Problem& p, int n0, int n1, int m0, int r) {
  const int groups = p.groups();
  each_weight_row(p, n0, n1, [&](int n, auto q, const float* s, const float* b) {
    for (int i = 0; i < r; ++i) {
      const float* x = p.x + static_cast<size_t>(m0 + i) * p.k;
      const float* xs = p.xsum + static_cast<size_t>(m0 + i) * groups;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        float dot = 0.0f;
        for (int j = g * p.group; j < (g + 1) * p.group; ++j) dot += x[j] * static_cast<float>(q(j));
        acc += s[g] * dot + b[g] * xs[g];
      }
      p.y[static_cast<size_t>(m0 + i) * p.n + n] = acc;
    }
  });
}

void dequant_scalar(const Problem& p, int n0, int n1, float* out) {
  each_weight_row(p, n0, n1, [&](int n, auto q, const float* s, const float* b) {
    float* o = out + static_cast<size_t>(n - n0) * p.k;
    for (int j = 0; j < p.k; ++j) {
      o[j] = s[j / p.group] * static_cast<float>(q(j)) + b[j / p.group];
    }
  });
}

void prepare_x(
    const void* x,
    Half x_kind,
    int m,
    int k,
    int group,
    XLayout layout,
    std::vector<float>& xf,
    std::vector<float>& xsum) {
  xf.resize(static_cast<size_t>(m) * k);
  xsum.resize(static_cast<size_t>(m) * (k / group));
  thread_local std::vector<float> row;
  row.resize(k);
  for (int i = 0; i < m; ++i) {
    row_to_f32_scalar(x, x_kind, static_cast<size_t>(i) * k, k, row.data());
    float* dst = xf.data() + static_cast<size_t>(i) * k;
    if (layout == XLayout::Nibbles128) {
      const int main = k / 128 * 128;
      for (int b = 0; b < main; b += 128) {
        for (int j = 0; j < 8; ++j) {
          for (int l = 0; l < 16; ++l) dst[b + 16 * j + l] = row[b + 8 * l + j];
        }
      }
      lay_out(row.data() + main, dst + main, k - main, true);
    } else {
      lay_out(row.data(), dst, k, layout == XLayout::Pairs32);
    }
    for (int g = 0; g < k / group; ++g) {
      float s = 0.0f;
      for (int j = g * group; j < (g + 1) * group; ++j) s += row[j];
      xsum[static_cast<size_t>(i) * (k / group) + g] = s;
    }
  }
}

void rows_q8_scalar(const Problem& p, int n0, int n1, int m0, int m1) {
  const int groups = p.groups();
  each_weight_row(p, n0, n1, [&](int n, auto q, const float* s, const float* b) {
    for (int i = m0; i < m1; ++i) {
      const int8_t* x = p.xq + static_cast<size_t>(i) * p.k;
      const float* xd = p.xd + static_cast<size_t>(i) * groups;
      const float* xs = p.xsum + static_cast<size_t>(i) * groups;
      float acc = 0.0f;
      for (int g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int j = g * p.group; j < (g + 1) * p.group; ++j) {
          dot += static_cast<int32_t>(q(j)) * x[j];
        }
        acc += static_cast<float>(dot) * xd[g] * s[g] + b[g] * xs[g];
      }
      p.y[static_cast<size_t>(i) * p.n + n] = acc;
    }
  });
}

void prepare_xq(
    const void* x,
    Half x_kind,
    int m,
    int k,
    int group,
    bool permute4,
    std::vector<int8_t>& xq,
    std::vector<float>& xd,
    std::vector<float>& xsum) {
  const int groups = k / group;
  xq.resize(static_cast<size_t>(m) * k);
  xd.resize(static_cast<size_t>(m) * groups);
  xsum.resize(static_cast<size_t>(m) * groups);
  thread_local std::vector<float> row;
  thread_local std::vector<int8_t> codes;
  row.resize(k);
  codes.resize(k);
  for (int i = 0; i < m; ++i) {
    row_to_f32_scalar(x, x_kind, static_cast<size_t>(i) * k, k, row.data());
    for (int g = 0; g < groups; ++g) {
      const float* v = row.data() + static_cast<size_t>(g) * group;
      float amax = 0.0f;
      for (int j = 0; j < group; ++j) amax = std::max(amax, std::fabs(v[j]));
      // x * (127 / amax) is within [-127, 127]: no clamp needed.
      const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int j = 0; j < group; ++j) {
        const int8_t c = static_cast<int8_t>(std::nearbyint(v[j] * inv));
        codes[static_cast<size_t>(g) * group + j] = c;
        sum += c;
      }
      const float d = amax / 127.0f;
      xd[static_cast<size_t>(i) * groups + g] = d;
      xsum[static_cast<size_t>(i) * groups + g] = d * static_cast<float>(sum);
    }
    lay_out(codes.data(), xq.data() + static_cast<size_t>(i) * k, k, permute4);
  }
}

}  // namespace mlx_sys_qmm
