//! Host time to build one decode step's graph, without evaluating it: the
//! model's forward pass for one token after an 8-token prompt, and the
//! greedy pick, as lazy MLX operations. `xtask/python/bench/graph_build_time.py`
//! measures mlx-lm the same way.
//!
//! ```sh
//! cargo run --release -p mistral-loader --example graph_build_time -- MODEL_DIR
//! ```
//!
//! The model is loaded with a GPU load's weight options (no CPU row split or
//! transposed layout; q/k/v and gate/up stacked), so the graph is the one a GPU step builds, except
//! that on the CPU MLX's fast operations (RMSNorm, RoPE, attention) expand
//! into several primitives, as they do for mlx-lm. Each of 300 steps is
//! built on the same cache, which is trimmed back after it (and evaluated
//! every 50 steps, so the pending updates stay few). Prints one JSON object:
//! the median and the 10th and 90th percentiles, in milliseconds.

use std::time::Instant;

use mistral_loader::{load_model_config, SafetensorsWeights};
use mistral_model::{Mistral, WeightOptions};
use mlx_rs::{ops::indexing::argmax_axis, Array};
use mlx_rs_core::{KVCache, KeyValueCache, LanguageModel};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: graph_build_time MODEL_DIR")?;
    let config = load_model_config(&dir)?;
    let mut weights = SafetensorsWeights::open(&dir)?;
    let options = WeightOptions {
        dtype: None,
        dequantize: false,
        transpose_f32: false,
        row_split: 1,
        fuse_projections: true,
        ..WeightOptions::default()
    };
    let mut model = Mistral::with_options(&config, &mut weights, options)?;
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let prompt = Array::from_slice(&[1i32, 2, 3, 4, 5, 6, 7, 8], &[1, 8]);
    LanguageModel::<KVCache>::forward(&mut model, &prompt, &mut cache)?.eval()?;
    let settle = |cache: &Vec<Option<KVCache>>| -> Result<()> {
        for state in cache.iter().flatten().flat_map(|c| c.state()) {
            state.eval()?;
        }
        Ok(())
    };
    settle(&cache)?;
    let token = Array::from_slice(&[9i32], &[1, 1]);
    let steps = 300;
    let mut times = Vec::with_capacity(steps);
    for step in 0..steps {
        let start = Instant::now();
        let logits = LanguageModel::<KVCache>::forward(&mut model, &token, &mut cache)?;
        let next = argmax_axis(&logits, -1, None)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        drop(next);
        for c in cache.iter_mut().flatten() {
            c.trim(1)?;
        }
        if step % 50 == 49 {
            settle(&cache)?;
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "engine": "ours",
            "model": dir,
            "steps": steps,
            "build_ms_median": times[steps / 2],
            "build_ms_p10": times[steps / 10],
            "build_ms_p90": times[steps * 9 / 10],
        })
    );
    Ok(())
}
