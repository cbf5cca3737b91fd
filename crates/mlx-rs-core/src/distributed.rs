//! MLX's distributed layer (`mx.distributed`): a [`Group`] of processes and
//! the collective operations over it, as arrays in MLX's lazy graph.
//!
//! Design:
//! - the bindings are mlx-c 0.7's `mlx_distributed_*` (our `mlx-sys`);
//!   `mlx-rs` 0.33 does not wrap them. No transport is written here: MLX's
//!   backends (`ring` over TCP, `mpi`, `nccl` on CUDA) carry the data, set
//!   up from the environment MLX's own launcher sets (`MLX_RANK` and
//!   `MLX_HOSTFILE` for the ring; `MLX_WORLD_SIZE`, `NCCL_HOST_IP`,
//!   `NCCL_PORT` for NCCL);
//! - the operations ([`all_sum`], [`all_gather`], [`sum_scatter`],
//!   [`send`], [`recv`], ...) return arrays like any other op: they run when
//!   evaluated, on the caller's default stream;
//! - failures come back as [`Error::Distributed`] naming the operation.
//!   (MLX's message for a failed call goes to `mlx-rs`'s error slot, which
//!   only `mlx-rs`'s own wrappers read; the arguments are checked here first
//!   so that a bad call says why. Errors while a collective runs surface,
//!   with MLX's message, from the `eval` that runs it.)

use std::ffi::CStr;
use std::os::raw::c_int;

use mlx_rs::{Array, Dtype, Stream};
use mlx_sys::{mlx_array, mlx_distributed_group, mlx_stream};

use crate::error::{Error, Result};

/// A distributed backend of MLX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Whichever MLX finds configured (its `"any"`).
    Any,
    /// The ring over TCP (`MLX_RANK`, `MLX_HOSTFILE`).
    Ring,
    /// MPI.
    Mpi,
    /// NCCL, on CUDA (`MLX_RANK`, `MLX_WORLD_SIZE`, `NCCL_HOST_IP`,
    /// `NCCL_PORT`).
    Nccl,
}

impl Backend {
    fn name(self) -> &'static CStr {
        match self {
            Backend::Any => c"any",
            Backend::Ring => c"ring",
            Backend::Mpi => c"mpi",
            Backend::Nccl => c"nccl",
        }
    }

    /// Whether this MLX build has the backend.
    pub fn is_available(self) -> bool {
        // SAFETY: the name is a static NUL-terminated string; mlx-c only reads it.
        unsafe { mlx_sys::mlx_distributed_is_available(self.name().as_ptr()) }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().to_string_lossy())
    }
}

/// A group of processes (ranks `0..size`).
#[derive(Debug)]
pub struct Group {
    raw: mlx_distributed_group,
}

// SAFETY: the group is an immutable handle on MLX's shared group object (a
// reference-counted C++ group); no operation mutates it, so it may move to
// and be read from any thread.
unsafe impl Send for Group {}
// SAFETY: as for `Send`: every use only reads the shared group.
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from a successful init or split, is owned by this
        // `Group` alone and is freed exactly once, here.
        unsafe {
            mlx_sys::mlx_distributed_group_free(self.raw);
        }
    }
}

impl Group {
    /// Joins the group `backend` describes (from the environment, see the
    /// module notes). An error if the backend is missing or not set up.
    pub fn init(backend: Backend) -> Result<Group> {
        Self::init_with(backend, true)
    }

    /// As [`Group::init`], but an error if the other ranks have not all
    /// joined within `timeout`. MLX's ring waits for every peer without a
    /// limit, so a rank that never starts would hang the others; here the
    /// join runs on a helper thread and the caller gets an error in time
    /// (the helper stays blocked: end the process after this error).
    pub fn init_within(backend: Backend, timeout: std::time::Duration) -> Result<Group> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mlx-distributed-init".into())
            .spawn(move || {
                let _ = tx.send(Group::init(backend));
            })
            .map_err(|e| Error::Distributed(format!("starting the join: {e}")))?;
        rx.recv_timeout(timeout).unwrap_or_else(|_| {
            Err(Error::Distributed(format!(
                "the other ranks of the `{backend}` group did not all join within {:.0} s \
                 (MLX_RANK={:?}, MLX_HOSTFILE={:?}); is every rank running?",
                timeout.as_secs_f64(),
                std::env::var("MLX_RANK").ok(),
                std::env::var("MLX_HOSTFILE").ok(),
            )))
        })
    }

    /// As [`Group::init`], but a process with no backend set up gets a
    /// group of its own (size 1), as MLX's non-strict `init`.
    pub fn init_or_single(backend: Backend) -> Result<Group> {
        Self::init_with(backend, false)
    }

    fn init_with(backend: Backend, strict: bool) -> Result<Group> {
        if backend != Backend::Any && !backend.is_available() {
            return Err(Error::Distributed(format!(
                "MLX's `{backend}` backend is not available in this build"
            )));
        }
        if strict && backend == Backend::Ring {
            check_ring_environment()?;
        }
        let mut raw = mlx_distributed_group {
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: `raw` is a valid out-handle and the backend name a static
        // NUL-terminated string; on failure the status and null ctx say so.
        let status =
            unsafe { mlx_sys::mlx_distributed_init(&mut raw, strict, backend.name().as_ptr()) };
        if status != 0 || raw.ctx.is_null() {
            return Err(Error::Distributed(format!(
                "joining the `{backend}` group failed (MLX_RANK={:?}, MLX_HOSTFILE={:?}, \
                 MLX_WORLD_SIZE={:?})",
                std::env::var("MLX_RANK").ok(),
                std::env::var("MLX_HOSTFILE").ok(),
                std::env::var("MLX_WORLD_SIZE").ok(),
            )));
        }
        Ok(Group { raw })
    }

    /// This process's rank.
    pub fn rank(&self) -> i32 {
        // SAFETY: `self.raw` is a live group handle (freed only on drop).
        unsafe { mlx_sys::mlx_distributed_group_rank(self.raw) }
    }

    /// The number of processes.
    pub fn size(&self) -> i32 {
        // SAFETY: `self.raw` is a live group handle (freed only on drop).
        unsafe { mlx_sys::mlx_distributed_group_size(self.raw) }
    }

    /// Splits the group: processes with the same `color` form a new group,
    /// ranked by `key` (MLX's `split`; not every backend supports it).
    pub fn split(&self, color: i32, key: i32) -> Result<Group> {
        let mut raw = mlx_distributed_group {
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: `raw` is a valid out-handle and `self.raw` a live group;
        // on failure the status and null ctx say so.
        let status =
            unsafe { mlx_sys::mlx_distributed_group_split(&mut raw, self.raw, color, key) };
        if status != 0 || raw.ctx.is_null() {
            return Err(Error::Distributed(format!(
                "splitting the group (color {color}, key {key}) failed; the backend may not support it"
            )));
        }
        Ok(Group { raw })
    }
}

/// Writes to `path` a ring hostfile for `n` ranks on this machine (one free
/// port on 127.0.0.1 each), the file `MLX_HOSTFILE` names.
pub fn write_loopback_hostfile(n: usize, path: &std::path::Path) -> Result<()> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Error::Distributed(format!("{what} for a loopback hostfile: {e}"))
    };
    let hosts = (0..n)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| failed("finding a free port on 127.0.0.1", &e))?
                .port();
            Ok(vec![format!("127.0.0.1:{port}")])
        })
        .collect::<Result<Vec<Vec<String>>>>()?;
    let text = serde_json::to_string(&hosts).map_err(|e| failed("writing JSON", &e))?;
    std::fs::write(path, text).map_err(|e| failed(&format!("writing {}", path.display()), &e))
}

/// The ring backend's environment, checked before MLX reads it: MLX
/// aborts the process on some malformed values.
fn check_ring_environment() -> Result<()> {
    let rank = std::env::var("MLX_RANK").map_err(|_| {
        Error::Distributed("the ring backend needs MLX_RANK (this process's rank)".into())
    })?;
    let rank: usize = rank
        .trim()
        .parse()
        .map_err(|_| Error::Distributed(format!("MLX_RANK must be a rank number, got {rank:?}")))?;
    let path = std::env::var("MLX_HOSTFILE").map_err(|_| {
        Error::Distributed(
            "the ring backend needs MLX_HOSTFILE (a JSON list, one list of \"ip:port\" per rank)"
                .into(),
        )
    })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Distributed(format!("MLX_HOSTFILE {path}: {e}")))?;
    let hosts: Vec<Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        Error::Distributed(format!(
            "MLX_HOSTFILE {path}: not a JSON list of lists of \"ip:port\" ({e})"
        ))
    })?;
    if rank >= hosts.len() {
        return Err(Error::Distributed(format!(
            "MLX_RANK {rank} is outside the {} ranks of MLX_HOSTFILE {path}",
            hosts.len()
        )));
    }
    if let Some(bad) = hosts
        .iter()
        .flatten()
        .find(|a| a.rsplit_once(':').is_none())
    {
        return Err(Error::Distributed(format!(
            "MLX_HOSTFILE {path}: {bad:?} is not \"ip:port\""
        )));
    }
    Ok(())
}

/// Runs one mlx-c operation that writes an array.
fn array_op(what: &str, op: impl FnOnce(*mut mlx_array, mlx_stream) -> c_int) -> Result<Array> {
    crate::runtime::ensure_mlx_error_handler();
    let stream = Stream::thread_local_or_default();
    // SAFETY: `res` is a fresh mlx-c array that `op` writes into; on failure
    // it is freed here, on success its ownership passes to the `Array`.
    // The stream outlives the call.
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        if op(&mut res, stream.as_ptr()) != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Distributed(format!("{what} failed")));
        }
        Ok(Array::from_ptr(res))
    }
}

/// The element-wise sum of `x` over every process of `group`.
pub fn all_sum(x: &Array, group: &Group) -> Result<Array> {
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("all_sum", |res, s| unsafe {
        mlx_sys::mlx_distributed_all_sum(res, x.as_ptr(), group.raw, s)
    })
}

/// Rank 0's `bytes` on every process of `group` (the other ranks' `bytes`
/// are ignored): the length and then the bytes, packed four to a `u32`,
/// summed over the group with the other ranks adding zeros. MLX has no
/// broadcast; this is how the ranks of a server learn rank 0's decisions.
pub fn broadcast_bytes(bytes: &[u8], group: &Group) -> Result<Vec<u8>> {
    let root = group.rank() == 0;
    let mine = if root { bytes.len() } else { 0 };
    let len = u32::try_from(mine)
        .map_err(|_| Error::Distributed(format!("{mine} bytes are too many to broadcast")))?;
    let len = all_sum(&Array::from_slice(&[len], &[1]), group)?;
    len.eval()?;
    let len = len.as_slice::<u32>()[0] as usize;
    let words = len.div_ceil(4);
    let packed: Vec<u32> = if root {
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    } else {
        vec![0; words]
    };
    if words == 0 {
        return Ok(Vec::new());
    }
    let summed = all_sum(&Array::from_slice(&packed, &[words as i32]), group)?;
    summed.eval()?;
    let mut out: Vec<u8> = summed
        .as_slice::<u32>()
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    out.truncate(len);
    Ok(out)
}

/// A seed that rank 0 takes from its clock ([`crate::sample::clock_seed`])
/// and every rank of `group` gets: the sampling of a split model must draw
/// the same numbers on every rank.
pub fn shared_seed(group: &Group) -> Result<u64> {
    let mine = if group.rank() == 0 {
        crate::sample::clock_seed()
    } else {
        0
    };
    let bytes = broadcast_bytes(&mine.to_le_bytes(), group)?;
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Distributed("the shared seed did not arrive whole".to_owned()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// The element-wise maximum of `x` over every process of `group`.
pub fn all_max(x: &Array, group: &Group) -> Result<Array> {
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("all_max", |res, s| unsafe {
        mlx_sys::mlx_distributed_all_max(res, x.as_ptr(), group.raw, s)
    })
}

/// The element-wise minimum of `x` over every process of `group`.
pub fn all_min(x: &Array, group: &Group) -> Result<Array> {
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("all_min", |res, s| unsafe {
        mlx_sys::mlx_distributed_all_min(res, x.as_ptr(), group.raw, s)
    })
}

/// Every process's `x`, concatenated along the first axis in rank order.
pub fn all_gather(x: &Array, group: &Group) -> Result<Array> {
    if x.ndim() == 0 {
        return Err(Error::Distributed(
            "all_gather needs an array with at least one axis".into(),
        ));
    }
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("all_gather", |res, s| unsafe {
        mlx_sys::mlx_distributed_all_gather(res, x.as_ptr(), group.raw, s)
    })
}

/// The sum of `x` over the group, of which this process keeps its slice of
/// the first axis (which must divide by the group's size). MLX 0.32.2's
/// ring backend does not have it (an error when evaluated).
pub fn sum_scatter(x: &Array, group: &Group) -> Result<Array> {
    let n = group.size();
    if x.ndim() == 0 || x.dim(0) % n != 0 {
        return Err(Error::Distributed(format!(
            "sum_scatter needs a first axis divisible by the group's {n} processes, got shape {:?}",
            x.shape()
        )));
    }
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("sum_scatter", |res, s| unsafe {
        mlx_sys::mlx_distributed_sum_scatter(res, x.as_ptr(), group.raw, s)
    })
}

fn check_peer(what: &str, peer: i32, group: &Group) -> Result<()> {
    if !(0..group.size()).contains(&peer) || peer == group.rank() {
        return Err(Error::Distributed(format!(
            "{what}: rank {peer} is not another process of this group of {} (this is rank {})",
            group.size(),
            group.rank()
        )));
    }
    Ok(())
}

/// Sends `x` to rank `dst`; evaluate the returned array to send.
pub fn send(x: &Array, dst: i32, group: &Group) -> Result<Array> {
    check_peer("send", dst, group)?;
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("send", |res, s| unsafe {
        mlx_sys::mlx_distributed_send(res, x.as_ptr(), dst, group.raw, s)
    })
}

/// Receives an array of `shape` and `dtype` from rank `src`.
pub fn recv(shape: &[i32], dtype: Dtype, src: i32, group: &Group) -> Result<Array> {
    check_peer("recv", src, group)?;
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("recv", |res, s| unsafe {
        mlx_sys::mlx_distributed_recv(
            res,
            shape.as_ptr(),
            shape.len(),
            u32::from(dtype) as mlx_sys::mlx_dtype,
            src,
            group.raw,
            s,
        )
    })
}

/// Receives an array shaped and typed as `like` from rank `src`.
pub fn recv_like(like: &Array, src: i32, group: &Group) -> Result<Array> {
    check_peer("recv_like", src, group)?;
    // SAFETY: `res` is the out-handle `array_op` owns; the inputs are live
    // arrays and `group.raw` a live group, all borrowed for the call.
    array_op("recv_like", |res, s| unsafe {
        mlx_sys::mlx_distributed_recv_like(res, like.as_ptr(), src, group.raw, s)
    })
}
