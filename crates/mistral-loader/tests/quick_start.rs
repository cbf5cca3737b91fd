//! The README's Quick Start, verbatim in its generation loop, on a test
//! model: at temperature 0.7 it yields 50 tokens; the same code at
//! temperature 0 yields mlx-lm's greedy ids for the same prompt (live).

mod reference;

use mistral_loader::{load_model, load_tokenizer};
use mlx_rs::ops::indexing::{IndexOp, NewAxis};
use mlx_rs_core::{Generate, KVCache};
use reference::live::{mlx_lm_generate, LiveRun};
use reference::test_model;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Quick Start: returns the ids and the printed text.
// `Array::item` is what the README shows; mlx-rs 0.33 marks it deprecated in
// favour of `item_cast`, which it forwards to.
#[allow(deprecated)]
fn quick_start(dir: &std::path::Path, temp: f32) -> Result<(Vec<u32>, String), BoxError> {
    let tokenizer = load_tokenizer(dir)?;
    let mut model = load_model(dir)?;

    let encoding = tokenizer.encode("Hello, ", true)?;
    let prompt = mlx_rs::Array::from(encoding.get_ids()).index(NewAxis);
    let mut cache = Vec::new();
    let generator = Generate::<KVCache>::new(&mut model, &mut cache, temp, &prompt);
    let (mut ids, mut text) = (Vec::new(), String::new());
    for token in generator.take(50) {
        let token = token?;
        text.push_str(&tokenizer.decode(&[token.item::<u32>()], true)?);
        ids.push(token.item::<u32>());
    }
    Ok((ids, text))
}

#[test]
fn quick_start_runs_and_is_greedy_at_temperature_zero() {
    let spec = test_model("gqa4_f32");
    let (ids, _text) = quick_start(&spec.dir, 0.7).expect("quick start at 0.7");
    assert_eq!(ids.len(), 50);

    let (greedy, _) = quick_start(&spec.dir, 0.0).expect("quick start at 0");
    let tokenizer = load_tokenizer(&spec.dir).expect("tokenizer");
    let prompt: Vec<i32> = tokenizer
        .encode("Hello, ", true)
        .expect("encode")
        .get_ids()
        .iter()
        .map(|&id| id as i32)
        .collect();
    let (theirs, _) = mlx_lm_generate(&spec.dir, &prompt, 50, &LiveRun::default(), false);
    let ours: Vec<i32> = greedy.iter().map(|&id| id as i32).collect();
    assert_eq!(ours, theirs);
}
