//! `float16_t`/`bfloat16_t` and their accessors where mlx-c leaves them out.
//!
//! The representations match what mlx-rs expects from the aarch64 bindings:
//! `float16_t` is a newtype whose `.0` holds the IEEE half bits, `bfloat16_t`
//! is the raw bfloat16 bits.

use crate::{mlx_array, mlx_array_data_uint16, mlx_array_item_uint16};
use std::os::raw::c_int;

/// An IEEE 754 half-precision value, as its 16 bits.
#[repr(transparent)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct float16_t(pub u16);

/// A bfloat16 value, as its 16 bits.
pub type bfloat16_t = u16;

/// Reads a scalar float16 array into `res`; returns non-zero on error.
///
/// # Safety
/// `res` must be valid for a write and `arr` a live mlx-c array.
pub unsafe fn mlx_array_item_float16(res: *mut float16_t, arr: mlx_array) -> c_int {
    mlx_array_item_uint16(res.cast::<u16>(), arr)
}

/// Reads a scalar bfloat16 array into `res`; returns non-zero on error.
///
/// # Safety
/// `res` must be valid for a write and `arr` a live mlx-c array.
pub unsafe fn mlx_array_item_bfloat16(res: *mut bfloat16_t, arr: mlx_array) -> c_int {
    mlx_array_item_uint16(res, arr)
}

/// The data of an evaluated float16 array, or null.
///
/// # Safety
/// `arr` must be a live mlx-c array.
pub unsafe fn mlx_array_data_float16(arr: mlx_array) -> *const float16_t {
    mlx_array_data_uint16(arr).cast::<float16_t>()
}

/// The data of an evaluated bfloat16 array, or null.
///
/// # Safety
/// `arr` must be a live mlx-c array.
pub unsafe fn mlx_array_data_bfloat16(arr: mlx_array) -> *const bfloat16_t {
    mlx_array_data_uint16(arr)
}
