//! [`DecodeRow`]: one decode step of a layer's attention (RoPE on the new
//! row's queries and keys, the keys and values written into the cache's
//! buffers, one-query attention) as one MLX primitive on the CPU stream,
//! `crates/mlx-sys/csrc/cpu_decode_row.cpp`.
//!
//! Why: done as separate operations the step is ten graph nodes per layer
//! (a reshape, two splits, RoPE, two slice updates, two slices, the
//! attention, a reshape), and on a narrow, deep model each node's host
//! cost outweighs its arithmetic. The kernel does the arithmetic of our
//! separate RoPE and attention kernels ([`crate::cpu_fused`]), so its
//! results are the same bits (`tests/cpu_decode_row.rs`). A cache that
//! can run the step on its buffers does
//! ([`KeyValueCache::attend_decode_row`](crate::KeyValueCache::attend_decode_row)):
//! today [`KVCache`](crate::KVCache) while they are dense and have room for
//! the row.

use mlx_rs::Array;

use crate::cache::DecodeStep;
use crate::cpu_fused::{all_f32, build_all, ours_on, CpuFast};
use crate::error::Result;
use crate::rope::Rope;

/// A decode step's one row through a layer's stacked q/k/v projection,
/// and how the layer attends with it.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRow<'a> {
    /// `[1, (n_heads + 2 n_kv_heads) * head_dim]`: the queries' heads,
    /// then the keys' and the values'.
    pub qkv: &'a Array,
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads (dividing `n_heads`).
    pub n_kv_heads: i32,
    /// The layer's rotary embedding.
    pub rope: &'a Rope,
    /// The attention's scale on `q k^T`.
    pub scale: f32,
    /// Whether our CPU kernels are asked for (the load's option).
    pub kind: CpuFast,
}

/// The step by our kernel (a [`DecodeStepFn`](crate::DecodeStepFn)) over the buffers `keys` and `values` `[1,
/// n_kv_heads, C, head_dim]` whose positions `0..offset` are filled, where
/// it applies: `kind` asks for ours, the default stream is a CPU stream,
/// everything is float32, the shapes agree, `offset < C` and the RoPE has
/// no input scale. `None` otherwise: then the caller takes the separate
/// operations.
pub fn decode_row(
    row: &DecodeRow<'_>,
    keys: &Array,
    values: &Array,
    offset: i32,
) -> Result<Option<DecodeStep>> {
    let Some(stream) = ours_on(row.kind) else {
        return Ok(None);
    };
    let f32s = all_f32(&[row.qkv, keys, values]);
    let (hq, hkv) = (row.n_heads, row.n_kv_heads);
    let fits = keys.ndim() == 4
        && keys.shape() == values.shape()
        && keys.dim(0) == 1
        && keys.dim(1) == hkv
        && hkv > 0
        && hq % hkv == 0
        && (0..keys.dim(2)).contains(&offset)
        && row.qkv.ndim() == 2
        && row.qkv.dim(0) == 1
        && i64::from(row.qkv.dim(1)) == i64::from(hq + 2 * hkv) * i64::from(keys.dim(3));
    let Some(rope) = row.rope.row_settings(offset) else {
        return Ok(None);
    };
    if !(f32s && fits) {
        return Ok(None);
    }
    // The shim reads `freqs` only when given; a placeholder otherwise.
    let none = Array::from_f32(0.0);
    let freqs = rope.freqs.unwrap_or(&none);
    // SAFETY: live array and stream handles owned by the caller (the shim
    // copies what it keeps); `res`, `err` as `build_all` passes them.
    let [heads, keys, values] = build_all(|[heads, k_out, v_out], err, len| unsafe {
        mlx_sys::mlx_sys_cpu_decode_row(
            heads,
            k_out,
            v_out,
            row.qkv.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            hq,
            hkv,
            offset,
            rope.dims,
            rope.traditional,
            rope.base,
            rope.scale,
            freqs.as_ptr(),
            rope.freqs.is_some(),
            row.scale,
            stream.as_ptr(),
            err,
            len,
        )
    })?;
    Ok(Some(DecodeStep {
        heads,
        keys,
        values,
    }))
}
