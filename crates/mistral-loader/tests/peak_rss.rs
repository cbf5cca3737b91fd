//! Peak resident memory while loading a >= 300 MB checkpoint.
//!
//! Writes a 320 MiB f32 safetensors file (streamed, so writing it does not
//! raise this process's RSS), resets the peak-RSS counter
//! (`/proc/self/clear_refs`), takes and evaluates every tensor, and compares
//! the peak (`VmHWM`) growth with the file's size. The bound is on memory,
//! not time. Its own test binary, so no other test shares the process.
//! Linux only (reads `/proc/self`).

#![cfg(target_os = "linux")]

mod common;

use std::io::Write;

use mistral_loader::{SafetensorsWeights, WeightSource};

const TENSORS: usize = 20;
const ROWS: usize = 2048;
const COLS: usize = 2048; // 16 MiB of f32 per tensor

/// The bytes of one tensor's worth of f32 values `0.0, 1.0, 2.0, ...`.
/// Tensor `t` holds this pattern rotated left by `t` elements, so every
/// tensor differs and checking it is two `memcmp`s.
fn pattern() -> Vec<u8> {
    (0..ROWS * COLS)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect()
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux >= 4.0).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn write_checkpoint(path: &std::path::Path) -> u64 {
    let bytes_per = ROWS * COLS * 4;
    let mut header = serde_json::Map::new();
    for t in 0..TENSORS {
        header.insert(
            format!("layers.{t:02}.weight"),
            serde_json::json!({
                "dtype": "F32",
                "shape": [ROWS, COLS],
                "data_offsets": [t * bytes_per, (t + 1) * bytes_per],
            }),
        );
    }
    let mut header = serde_json::to_string(&header).unwrap();
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    let pattern = pattern();
    for t in 0..TENSORS {
        f.write_all(&pattern[4 * t..]).unwrap();
        f.write_all(&pattern[..4 * t]).unwrap();
    }
    f.into_inner().unwrap().sync_all().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Returns freed heap memory to the OS. glibc keeps freed memory mapped
/// (large blocks too, once its dynamic mmap threshold has grown); a load
/// would reuse it without raising the peak, hiding part of its cost.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe { malloc_trim(0) };
    }
}

/// Loads every tensor (evaluated), returns (arrays, peak growth in bytes).
fn load_all(dir: &std::path::Path, release: bool) -> (Vec<(String, mlx_rs::Array)>, u64) {
    trim_heap();
    assert!(
        reset_peak(),
        "cannot reset VmHWM through /proc/self/clear_refs"
    );
    let base = proc_status_kib("VmRSS:").unwrap();
    let mut w = SafetensorsWeights::open(dir).unwrap();
    w.set_release_pages(release);
    let mut arrays = Vec::new();
    for name in w.names() {
        let a = w.take(&name).unwrap();
        a.eval().unwrap();
        arrays.push((name, a));
    }
    assert!(w.finish().unwrap().is_empty());
    let peak = proc_status_kib("VmHWM:").unwrap();
    (arrays, (peak.saturating_sub(base)) * 1024)
}

#[test]
fn peak_rss_stays_under_1_3x_checkpoint_size() {
    let dir = common::TempDir::new("peak-rss");
    let size = write_checkpoint(&dir.path().join("model.safetensors"));
    assert!(size >= 300_000_000);

    let (arrays, growth) = load_all(dir.path(), true);
    let ratio = growth as f64 / size as f64;
    println!(
        "file {:.1} MiB, peak RSS growth with page release {:.1} MiB, ratio {ratio:.3}",
        size as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );

    // The arrays really hold the file's values.
    let pattern = pattern();
    for (name, a) in &arrays {
        let t: usize = name["layers.".len()..name.len() - ".weight".len()]
            .parse()
            .unwrap();
        assert_eq!(a.shape(), &[ROWS as i32, COLS as i32]);
        let got = common::array_bytes(a);
        let split = pattern.len() - 4 * t;
        assert!(got[..split] == pattern[4 * t..], "{name}");
        assert!(got[split..] == pattern[..4 * t], "{name}");
    }
    drop(arrays);
    drop(pattern);
    mlx_rs::memory::clear_cache().unwrap();

    // For comparison only: without releasing the mapped pages.
    let (arrays, growth_no_release) = load_all(dir.path(), false);
    drop(arrays);
    println!(
        "peak RSS growth without page release {:.1} MiB, ratio {:.3}",
        growth_no_release as f64 / 1048576.0,
        growth_no_release as f64 / size as f64
    );

    assert!(
        ratio < 1.3,
        "peak RSS growth {ratio:.3}x the checkpoint size"
    );
}
