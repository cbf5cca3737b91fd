//! Generate text with a Mistral model directory.
//!
//! ```text
//! cargo run --release --example generate_mistral -- <model dir> "prompt" [max tokens]
//! ```

use std::io::Write;
use std::time::Instant;

use mistral_mlx::{load_model, load_special_tokens, load_tokenizer, Generate, KVCache};
use mistral_mlx::{StopChecker, StopCriteria, StreamingDetokenizer};
use mlx_rs::ops::indexing::{IndexOp, NewAxis};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model_dir), Some(prompt)) = (args.first(), args.get(1)) else {
        eprintln!("usage: generate_mistral <model dir> \"prompt\" [max tokens]");
        std::process::exit(2);
    };
    let max_tokens: usize = match args.get(2) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("max tokens: `{text}` is not a count"))?,
        None => 100,
    };

    let tokenizer = load_tokenizer(model_dir)?;
    let special = load_special_tokens(model_dir, Some(&tokenizer))?;
    let mut model = load_model(model_dir)?;

    let encoding = tokenizer.encode(prompt.as_str(), true)?;
    let prompt_ids = mlx_rs::Array::from(encoding.get_ids()).index(NewAxis);
    let criteria = StopCriteria {
        eos_token_ids: special.eos.clone(),
        stop_strings: Vec::new(),
        max_tokens: Some(max_tokens),
    };
    let mut stop = StopChecker::new(criteria, StreamingDetokenizer::new(&tokenizer, true))?;

    let mut cache = Vec::new();
    let start = Instant::now();
    let mut count = 0;
    let mut stdout = std::io::stdout();
    for token in Generate::<KVCache>::new(&mut model, &mut cache, 0.0, &prompt_ids) {
        let step = stop.push(token?.item_exact::<u32>())?;
        count += 1;
        print!("{}", step.text);
        stdout.flush()?;
        if step.stop.is_some() {
            break;
        }
    }
    println!("{}", stop.finish()?);
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{count} tokens in {seconds:.2} s ({:.1} tok/s)",
        count as f64 / seconds
    );
    Ok(())
}
