//! Bytes a key/value cache holds after `N` positions, dense and quantized:
//! one layer's cache filled through the cache code in prefill chunks of
//! 2048 (quantized after the first, as the generator does with
//! `--quantized-kv-start 0`), its arrays' bytes read back, times the layers.
//!
//! ```sh
//! cargo run -p mlx-rs-core --example kv_cache_memory -- \
//!     [positions,... (8192,32768)] [layers (32)] [kv_heads (8)] [head_dim (128)]
//! ```
//! The defaults are Mistral 7B's attention shape, in bf16.

use mlx_rs::{random, Dtype};
use mlx_rs_core::{KVCache, KeyValueCache, KvQuantization, Result};

const CHUNK: i32 = 2048;

/// One layer's cache bytes after `positions`, keys and values of
/// `[1, kv_heads, _, head_dim]` bf16, quantized as `q` says.
fn layer_bytes(
    positions: i32,
    kv_heads: i32,
    head_dim: i32,
    q: Option<KvQuantization>,
) -> Result<usize> {
    let mut cache = KVCache::new();
    let key = random::key(0)?;
    let mut fed = 0;
    while fed < positions {
        let n = CHUNK.min(positions - fed);
        let k = random::normal::<f32>(&[1, kv_heads, n, head_dim], None, None, &key)?
            .as_dtype(Dtype::Bfloat16)?;
        cache.update_and_fetch_stored(&k, &k)?;
        if let Some(q) = &q {
            cache.quantize(q)?;
        }
        mlx_rs::transforms::eval(&cache.state())?;
        fed += n;
    }
    Ok(cache.state().iter().map(|a| a.nbytes()).sum())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: i32| -> i32 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
    };
    let positions: Vec<i32> = match args.first() {
        Some(list) => list.split(',').filter_map(|p| p.parse().ok()).collect(),
        None => vec![8192, 32768],
    };
    let (layers, kv_heads, head_dim) = (arg(1, 32), arg(2, 8), arg(3, 128));
    let settings = [
        ("bf16 (dense)", None),
        ("8-bit, group 64", Some(KvQuantization::new(8, 64, 0)?)),
        ("4-bit, group 64", Some(KvQuantization::new(4, 64, 0)?)),
        ("4-bit, group 32", Some(KvQuantization::new(4, 32, 0)?)),
    ];
    println!("| cache | positions | bytes (all {layers} layers) | MiB | of dense |");
    println!("|---|---:|---:|---:|---:|");
    for &n in &positions {
        let dense = layer_bytes(n, kv_heads, head_dim, None)? * layers as usize;
        for (name, q) in settings {
            let bytes = layer_bytes(n, kv_heads, head_dim, q)? * layers as usize;
            println!(
                "| {name} | {n} | {bytes} | {:.1} | {:.3} |",
                bytes as f64 / (1 << 20) as f64,
                bytes as f64 / dense as f64
            );
        }
    }
    Ok(())
}
