// One decode step of a layer's attention as one MLX primitive on the CPU
// stream: RoPE on the new row's queries and keys, the keys and values
// written into the cache's buffers at `offset`, and one-query attention
// over positions 0..=offset.
//
// Why: as separate operations the same step is ten graph nodes per layer
// (a reshape, two splits, RoPE, two slice updates, two slices, the
// attention, a reshape), and on a narrow, deep model each node's host cost
// outweighs its arithmetic. The arithmetic is that of our separate
// primitives (fused_math.hpp), so the results are the same bits. Like
// MLX's slice update, the buffers' memory is reused where MLX can donate
// it (no other array holds it), else copied first.

#include "cpu_decode_row.h"

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

#include "mlx/c/private/array.h"
#include "mlx/c/private/stream.h"

#include "fused_math.hpp"
#include "qmm_pool.hpp"
#include "shim_common.hpp"

namespace {

using mlx::core::array;

using namespace mlx_sys_fused;

// `src` (float32, 4-D, any strides) into contiguous `dst`.
void copy_rows(const array& src, float* dst) {
  const auto& sh = src.shape();
  const auto& st = src.strides();
  const float* s = src.data<float>();
  for (int a = 0; a < sh[0]; ++a) {
    for (int b = 0; b < sh[1]; ++b) {
      for (int c = 0; c < sh[2]; ++c) {
        const float* row = s + a * st[0] + b * st[1] + c * st[2];
        load_f32(row, st[3], sh[3], dst);
        dst += sh[3];
      }
    }
  }
}

class DecodeRow : public mlx::core::Primitive {
 public:
  struct Params {
    int n_heads, n_kv_heads, offset;
    int rope_dims;
    bool rope_traditional;
    float rope_base, rope_scale;
    bool has_freqs;
    float scale;

    bool operator==(const Params& o) const {
      return n_heads == o.n_heads && n_kv_heads == o.n_kv_heads && offset == o.offset &&
          rope_dims == o.rope_dims && rope_traditional == o.rope_traditional &&
          rope_base == o.rope_base && rope_scale == o.rope_scale && has_freqs == o.has_freqs &&
          scale == o.scale;
    }
  };

  DecodeRow(mlx::core::Stream s, Params p) : Primitive(s), p_(p) {}

  void eval_cpu(const std::vector<array>& inputs, std::vector<array>& outputs) override {
    outputs[0].set_data(mlx::core::allocator::malloc(outputs[0].nbytes()));
    // Each buffer: donated (its memory becomes the output's) or copied by
    // the task.
    bool copy[2];
    for (int i = 0; i < 2; ++i) {
      const array& buf = inputs[1 + i];
      array& out = outputs[1 + i];
      copy[i] = !(buf.is_donatable() && buf.flags().row_contiguous);
      if (copy[i]) {
        out.set_data(mlx::core::allocator::malloc(out.nbytes()));
      } else {
        out.copy_shared_buffer(buf);
      }
    }
    auto& encoder = mlx::core::cpu::get_command_encoder(stream());
    std::vector<array> ins, outs;
    for (auto& in : inputs) {
      encoder.set_input_array(in);
      ins.push_back(array::unsafe_weak_copy(in));
    }
    for (auto& out : outputs) {
      encoder.set_output_array(out);
      outs.push_back(array::unsafe_weak_copy(out));
    }
    // The primitive is held by the task: MLX may detach the outputs from
    // it before the stream thread runs the task.
    auto self = std::static_pointer_cast<DecodeRow>(outputs[0].primitive_ptr());
    encoder.dispatch([self = std::move(self), ins = std::move(ins), outs = std::move(outs),
                      copy_k = copy[0], copy_v = copy[1]]() mutable {
      self->compute(ins, outs, copy_k, copy_v);
    });
  }

  void eval_gpu(const std::vector<array>&, std::vector<array>&) override {
    throw std::runtime_error("cpu_decode_row: our fused decode step runs on the CPU only");
  }

  void compute(const std::vector<array>& in, std::vector<array>& out, bool copy_k, bool copy_v)
      const {
    const array& qkv = in[0];
    if (copy_k) copy_rows(in[1], out[1].data<float>());
    if (copy_v) copy_rows(in[2], out[2].data<float>());
    const int hq = p_.n_heads, hkv = p_.n_kv_heads;
    const int cap = in[1].shape(2), d = in[1].shape(3);
    std::vector<float> row(static_cast<size_t>(hq + 2 * hkv) * d);
    load_f32(qkv.data<float>(), qkv.strides().back(), static_cast<int>(row.size()), row.data());
    std::vector<float> freqs;
    if (p_.has_freqs) {
      const array& f = in[3];
      freqs.resize(p_.rope_dims / 2);
      by_dtype(f.dtype(), [&](auto* ft) {
        using F = std::remove_pointer_t<decltype(ft)>;
        load_f32(f.data<F>(), f.strides().back(), static_cast<int>(freqs.size()), freqs.data());
      });
    }
    const auto inv =
        rope_inverse_freqs(p_.rope_dims, p_.rope_base, p_.has_freqs ? freqs.data() : nullptr);
    std::vector<float> cs(inv.size()), sn(inv.size());
    rope_angles(inv, p_.offset, p_.rope_scale, cs.data(), sn.data());
    float* kb = out[1].data<float>();
    float* vb = out[2].data<float>();
    const int dims = p_.rope_dims;
    const bool trad = p_.rope_traditional;
    for (int h = 0; h < hkv; ++h) {
      const int64_t at = (static_cast<int64_t>(h) * cap + p_.offset) * d;
      rope_rotate(row.data() + static_cast<size_t>(hq + h) * d, kb + at, cs.data(), sn.data(),
                  dims, d, trad);
      const float* v = row.data() + static_cast<size_t>(hq + hkv + h) * d;
      std::copy(v, v + d, vb + at);
    }
    const int rep = hq / hkv;
    float* heads = out[0].data<float>();
    // One task per query head, as our separate attention primitive.
    mlx_sys_qmm::pool().run(
        hq,
        [&](int h) {
          thread_local std::vector<float> qf, kf, vf, p, acc;
          qf.resize(d);
          rope_rotate(row.data() + static_cast<size_t>(h) * d, qf.data(), cs.data(), sn.data(),
                      dims, d, trad);
          for (auto& e : qf) e *= p_.scale;
          const int64_t kv_at = static_cast<int64_t>(h / rep) * cap * d;
          attend_head<float>(qf.data(), {kb + kv_at, d, 1}, {vb + kv_at, d, 1}, p_.offset + 1, d,
                             d, kf, vf, p, acc);
          std::copy(acc.begin(), acc.end(), heads + static_cast<int64_t>(h) * d);
        },
        mlx_sys_qmm::kDecodeSpinUs);
  }

  const char* name() const override {
    return "MistralMlxCpuDecodeRow";
  }

  bool is_equivalent(const mlx::core::Primitive& other) const override {
    auto o = dynamic_cast<const DecodeRow*>(&other);
    return o != nullptr && o->p_ == p_;
  }

 private:
  Params p_;
};

}  // namespace

extern "C" int mlx_sys_cpu_decode_row(
    mlx_array* heads,
    mlx_array* keys_out,
    mlx_array* values_out,
    const mlx_array qkv,
    const mlx_array keys,
    const mlx_array values,
    int n_heads,
    int n_kv_heads,
    int offset,
    int rope_dims,
    bool rope_traditional,
    float rope_base,
    float rope_scale,
    const mlx_array rope_freqs,
    bool has_freqs,
    float scale,
    const mlx_stream stream,
    char* err,
    size_t err_len) {
  return mlx_sys_shim::guarded_all({heads, keys_out, values_out}, err, err_len, [&] {
    const array& x = mlx_array_get_(qkv);
    const array& k = mlx_array_get_(keys);
    const array& v = mlx_array_get_(values);
    auto s = mlx_stream_get_(stream);
    mlx_sys_shim::require_cpu(s, "cpu_decode_row");
    const auto f32 = mlx::core::float32;
    if (x.dtype() != f32 || k.dtype() != f32 || v.dtype() != f32) {
      throw std::invalid_argument("cpu_decode_row: qkv, keys and values must be float32");
    }
    if (k.ndim() != 4 || k.shape() != v.shape() || k.shape(0) != 1 || k.shape(1) != n_kv_heads) {
      throw std::invalid_argument(
          "cpu_decode_row: keys and values must both be [1, n_kv_heads, C, D]");
    }
    const int d = k.shape(3);
    if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || d <= 0) {
      throw std::invalid_argument(
          "cpu_decode_row: n_heads must be a positive multiple of n_kv_heads");
    }
    if (x.ndim() != 2 || x.shape(0) != 1 ||
        static_cast<int64_t>(x.shape(1)) != static_cast<int64_t>(n_heads + 2 * n_kv_heads) * d) {
      throw std::invalid_argument("cpu_decode_row: qkv must be [1, (n_heads + 2 n_kv_heads) * D]");
    }
    if (offset < 0 || offset >= k.shape(2)) {
      throw std::invalid_argument("cpu_decode_row: offset must be a free position of the buffers");
    }
    if (rope_dims <= 0 || rope_dims % 2 != 0 || rope_dims > d) {
      throw std::invalid_argument("cpu_decode_row: RoPE dims must be even and at most D");
    }
    std::vector<array> inputs = {x, k, v};
    if (has_freqs) {
      const array& fa = mlx_array_get_(rope_freqs);
      if (fa.ndim() != 1 || fa.shape(0) != rope_dims / 2 || !mlx_sys_shim::is_float(fa.dtype())) {
        throw std::invalid_argument("cpu_decode_row: freqs must be [dims / 2] floating point");
      }
      inputs.push_back(fa);
    }
    DecodeRow::Params p{n_heads, n_kv_heads, offset, rope_dims, rope_traditional,
                        rope_base, rope_scale, has_freqs, scale};
    return array::make_arrays(
        {mlx::core::Shape{1, n_heads * d}, k.shape(), v.shape()}, {f32, f32, f32},
        std::make_shared<DecodeRow>(s, p), inputs);
  });
}
