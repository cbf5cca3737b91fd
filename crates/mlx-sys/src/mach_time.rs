//! `mach_approximate_time` for non-Apple targets.
//!
//! mlx-rs (through `mach-sys`) calls it to seed its default random key. Only
//! its variation matters, so a monotonic nanosecond count serves.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since the first call, plus a per-process offset from the wall clock.
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    let (start, offset) = START.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or_default();
        (Instant::now(), wall)
    });
    offset.wrapping_add(start.elapsed().as_nanos() as u64)
}
