//! Side streams: extra MLX CPU streams, so that independent pieces of one
//! graph run on different cores.
//!
//! Design note: MLX's CPU backend runs every stream on its own worker thread,
//! and most of its CPU kernels (the bfloat16/float16 matmul, the quantized
//! matmul) are single-threaded, so a graph on one stream uses one core
//! whatever the machine has. Work put on another stream runs concurrently;
//! MLX orders it against the rest of the graph with its cross-stream events.
//! A stream, once made, lives as long as the process (MLX keeps its thread),
//! so each thread makes its side streams once and reuses them; they are
//! thread-local like MLX's default stream.

use std::cell::RefCell;

use mlx_rs::{Device, Stream};

thread_local! {
    static SIDE_STREAMS: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the calling thread's CPU side stream number `index` as the
/// default stream, so the operations `f` builds run on it. The stream is
/// made on first use.
pub fn on_side_stream<T>(index: usize, f: impl FnOnce() -> T) -> T {
    let stream = SIDE_STREAMS.with_borrow_mut(|streams| {
        while streams.len() <= index {
            streams.push(Stream::new_with_device(&Device::cpu()));
        }
        streams[index].clone()
    });
    mlx_rs::with_stream(&stream, f)
}

/// How many streams CPU work is best spread over here: the number of cores
/// this process may use, at most 8 (every part of a split costs one more
/// operation and one more event per step).
pub fn cpu_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Whether `stream` computes on the CPU.
pub(crate) fn is_cpu(stream: &Stream) -> bool {
    // SAFETY: mlx-c fills `device` (a handle we free) from a valid stream
    // and `kind` from that device; both calls report failure by status.
    unsafe {
        let mut device = mlx_sys::mlx_device_new();
        let mut kind = mlx_sys::mlx_device_type__MLX_GPU;
        let ok = mlx_sys::mlx_stream_get_device(&mut device, stream.as_ptr()) == 0
            && mlx_sys::mlx_device_get_type(&mut kind, device) == 0;
        mlx_sys::mlx_device_free(device);
        ok && kind == mlx_sys::mlx_device_type__MLX_CPU
    }
}
