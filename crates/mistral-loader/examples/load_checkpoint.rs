//! Loads every tensor of a model directory and reports sizes, time and peak
//! memory: `cargo run -p mistral-loader --example load_checkpoint -- DIR`.
//!
//! Prints the checkpoint layout, tensor count, bytes on disk, the BOS/EOS
//! ids if a tokenizer is present, and (Linux) the peak RSS growth while
//! loading relative to the weights' size.

use std::time::Instant;

use mistral_loader::{
    discover_checkpoint, load_special_tokens, load_tokenizer, SafetensorsWeights, WeightSource,
};

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or("usage: load_checkpoint MODEL_DIR")?;
    let dir = std::path::Path::new(&dir);

    let checkpoint = discover_checkpoint(dir)?;
    println!(
        "layout {:?}, {} file(s)",
        checkpoint.layout,
        checkpoint.files.len()
    );
    if dir.join("tokenizer.json").is_file() {
        let tok = load_tokenizer(dir)?;
        println!("special tokens {:?}", load_special_tokens(dir, Some(&tok))?);
    }

    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = status_kib("VmRSS:");
    let start = Instant::now();
    let mut weights = SafetensorsWeights::from_checkpoint(&checkpoint)?;
    let bytes = weights.remaining_bytes();
    let mut arrays = Vec::new();
    for name in weights.names() {
        if let Some(a) = weights.take(&name) {
            a.eval()?;
            arrays.push(a);
        }
    }
    let elapsed = start.elapsed();
    let failures = weights.failures().len();
    weights.finish()?;
    println!(
        "{} tensors, {:.1} MiB, {:.2} s ({:.0} MiB/s), {failures} failure(s)",
        arrays.len(),
        bytes as f64 / 1048576.0,
        elapsed.as_secs_f64(),
        bytes as f64 / 1048576.0 / elapsed.as_secs_f64()
    );
    if let (Some(base), Some(peak)) = (base, status_kib("VmHWM:")) {
        let growth = peak.saturating_sub(base) as f64 * 1024.0;
        println!(
            "peak RSS growth {:.1} MiB = {:.3}x the weights",
            growth / 1048576.0,
            growth / bytes.max(1) as f64
        );
    }
    Ok(())
}
