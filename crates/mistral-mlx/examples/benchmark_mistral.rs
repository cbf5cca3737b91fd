//! Prefill and decode speed of a Mistral model directory, median of N runs.
//!
//! ```text
//! cargo run --release --example benchmark_mistral -- <model dir> --iterations 10
//! ```
//!
//! `mistral-cli bench` is the full tool (prompt lengths, depth, formats).

use std::time::Instant;

use mistral_mlx::{load_model, Generate, KVCache};

const PROMPT_TOKENS: usize = 128;
const GEN_TOKENS: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model_dir) = args.first() else {
        eprintln!("usage: benchmark_mistral <model dir> [--iterations N]");
        std::process::exit(2);
    };
    let iterations: usize = match args.iter().position(|a| a == "--iterations") {
        Some(i) => {
            let text = args.get(i + 1).ok_or("--iterations needs a count")?;
            text.parse()
                .map_err(|_| format!("--iterations: `{text}` is not a count"))?
        }
        None => 5,
    };
    if iterations == 0 {
        return Err("--iterations must be at least 1".into());
    }

    let mut model = load_model(model_dir)?;
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..PROMPT_TOKENS as u32)
        .map(|i| 1000 + (i * 7919) % (vocab - 1000))
        .collect();
    let prompt = mlx_rs::Array::from_slice(&ids, &[1, PROMPT_TOKENS as i32]);

    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=iterations {
        let mut cache = Vec::new();
        let start = Instant::now();
        let mut first = None;
        for token in Generate::<KVCache>::new(&mut model, &mut cache, 0.0, &prompt).take(GEN_TOKENS)
        {
            token?.eval()?;
            first.get_or_insert_with(Instant::now);
        }
        let end = Instant::now();
        let first = first.unwrap_or(end);
        if run > 0 {
            // Run 0 warms up.
            prefill.push(PROMPT_TOKENS as f64 / first.duration_since(start).as_secs_f64());
            decode.push((GEN_TOKENS - 1) as f64 / end.duration_since(first).as_secs_f64());
        }
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!("prompt {PROMPT_TOKENS} tokens, generation {GEN_TOKENS} tokens, {iterations} runs");
    println!("prefill: {:.1} tok/s (median)", median(&mut prefill));
    println!("decode:  {:.1} tok/s (median)", median(&mut decode));
    Ok(())
}
