//! The parity checks shared by the tests against mlx-lm: one model's
//! logits (one pass and chunked through the cache) and greedy ids against
//! a [`Reference`], with the tolerances of `mlx_lm_parity.rs`'s note.

use mistral_model::Mistral;
use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::Array;
use mlx_rs_core::{Generate, KVCache, KeyValueCache};

use super::{gpu_noise, on_gpu, relative_error, Reference, TestModel};

pub fn tolerance(model: &TestModel) -> f64 {
    match model.dtype.as_str() {
        "float32" => 1e-4,
        "float16" => 1e-4,
        "bfloat16" => 1e-3,
        other => panic!("{}: unknown dtype {other}", model.name),
    }
}

pub fn logits_of(model: &Mistral, ids: &[i32], cache: &mut Vec<Option<KVCache>>) -> Vec<f32> {
    let tokens = Array::from_slice(ids, &[1, ids.len() as i32]);
    let logits = model.forward(&tokens, cache).expect("forward");
    let logits = logits
        .as_dtype(mlx_rs::Dtype::Float32)
        .expect("cast logits");
    logits.eval().expect("eval logits");
    logits.as_slice::<f32>().to_vec()
}

/// The tolerance for `reference`: [`tolerance`], and on a GPU at least
/// twice the GPU's measured noise there ([`gpu_noise`]).
pub fn allowed(spec: &TestModel, reference: &Reference) -> f64 {
    let cpu = tolerance(spec);
    gpu_noise(spec, reference).map_or(cpu, |noise| cpu.max(2.0 * noise))
}

pub fn check_prompt(model: &Mistral, spec: &TestModel, reference: &Reference) -> f64 {
    let what = format!("{} / {}", spec.name, reference.prompt);
    let one_pass = logits_of(model, &reference.prompt_ids, &mut Vec::new());
    let error = relative_error(&one_pass, &reference.logits);
    let allowed = allowed(spec, reference);
    assert!(
        error <= allowed,
        "{what}: one pass differs from mlx-lm by {error:e} (allowed {allowed:e})"
    );
    if spec.dtype != "float32" && !on_gpu() {
        // In bf16/f16 both engines run MLX's own CPU kernels (no BLAS) on
        // the same inputs in the same order: the one-pass logits are
        // bit-identical, and that is what is asserted.
        assert_eq!(
            one_pass, reference.logits,
            "{what}: half-precision logits are not bit-identical to mlx-lm's (relative error {error:e})"
        );
    }

    // The same prompt in two chunks through the cache (the second chunk's
    // queries see cached keys; for the windowed model the split is past
    // the window), against mlx-lm doing the same through its cache.
    let split = reference.prompt_ids.len() * 2 / 3;
    if split > 0 {
        let theirs = reference.chunked_logits.as_ref().unwrap_or_else(|| {
            panic!("{what}: the reference has no chunked logits: run `cargo xtask test-models`")
        });
        let mut cache = Vec::new();
        let mut chunked = logits_of(model, &reference.prompt_ids[..split], &mut cache);
        chunked.extend(logits_of(model, &reference.prompt_ids[split..], &mut cache));
        let chunk_error = relative_error(&chunked, theirs);
        assert!(
            chunk_error <= allowed,
            "{what}: chunked prompt differs from mlx-lm by {chunk_error:e} (allowed {allowed:e})"
        );
    }
    error
}

/// Greedy decoding through the cache, compared with mlx-lm's ids, step by
/// step, along mlx-lm's path (`generate_step`: the prompt less its last
/// token, then that token alone, then one token per step; on a GPU a
/// one-pass prompt runs other kernels for the last position than a
/// one-token step, and both engines agree bit for bit only on the same
/// path). The two may part only at a step whose reference top-2 margin is
/// within `tie` (a few times the logit difference measured on the prompt),
/// where rounding may break the tie either way; there mlx-lm's id is fed
/// instead of ours and the comparison goes on, so every step is compared.
/// Returns how many steps agreed.
pub fn check_greedy(model: &Mistral, spec: &TestModel, reference: &Reference, tie: f64) -> usize {
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let (last, head) = reference
        .prompt_ids
        .split_last()
        .expect("a reference prompt is not empty");
    if !head.is_empty() {
        let head = Array::from_slice(head, &[1, head.len() as i32]);
        model.forward(&head, &mut cache).expect("prefill");
    }
    let tokens = Array::from_slice(&[*last], &[1, 1]);
    assert_eq!(
        reference.greedy_ids.len(),
        reference.greedy_margin.len(),
        "{}: reference ids and margins",
        spec.name
    );
    let mut logits = model.forward(&tokens, &mut cache).expect("prefill");
    let mut agreed = 0;
    for (step, (&want, &margin)) in reference
        .greedy_ids
        .iter()
        .zip(&reference.greedy_margin)
        .enumerate()
    {
        // As mlx-lm: argmax of the log-probabilities, computed in the model's
        // dtype (in bf16 the subtraction can create ties the logits lack).
        let last = logits.index((.., -1, ..));
        let logprobs = last
            .subtract(last.logsumexp_axis(-1, true).expect("logsumexp"))
            .expect("logprobs");
        let next = argmax_axis(&logprobs, -1, None).expect("argmax");
        let id = next
            .as_dtype(mlx_rs::Dtype::Int32)
            .expect("cast")
            .item_exact::<i32>();
        if id == want {
            agreed += 1;
        } else {
            // One unit in the last place of the log-probabilities' dtype is
            // a tie whatever the prompt showed: any rounding breaks it.
            let top = logprobs
                .max(None)
                .expect("max")
                .as_dtype(mlx_rs::Dtype::Float32)
                .expect("cast")
                .item_exact::<f32>();
            let tie = tie.max(ulp(logprobs.dtype(), f64::from(top)));
            assert!(
                f64::from(margin) <= tie,
                "{} / {}: greedy step {step} gives {id}, mlx-lm {want} (margin {margin:e})",
                spec.name,
                reference.prompt
            );
        }
        let input = Array::from_slice(&[want], &[1, 1]);
        logits = model.forward(&input, &mut cache).expect("decode step");
    }
    agreed
}

/// The spacing of `dtype`'s values at `x` (bfloat16: 8 significant bits,
/// float16: 11, otherwise float32's 24).
fn ulp(dtype: mlx_rs::Dtype, x: f64) -> f64 {
    let bits = match dtype {
        mlx_rs::Dtype::Bfloat16 => 8,
        mlx_rs::Dtype::Float16 => 11,
        _ => 24,
    };
    let exponent = x.abs().max(f64::MIN_POSITIVE).log2().floor();
    2f64.powf(exponent - f64::from(bits - 1))
}

pub fn check_against(model: &Mistral, spec: &TestModel, refs: &[Reference], full_greedy: bool) {
    assert!(!refs.is_empty(), "{}: no reference prompts", spec.name);
    for reference in refs {
        let error = check_prompt(model, spec, reference);
        let scale = reference
            .logits
            .iter()
            .map(|v| f64::from(v.abs()))
            .fold(0.0, f64::max);
        let tie = (4.0 * error * scale).max(1e-6);
        let steps = check_greedy(model, spec, reference, tie);
        eprintln!(
            "{:<24} {:<7} logits rel err {error:.2e}, greedy equal at {steps}/{} steps",
            spec.name,
            reference.prompt,
            reference.greedy_ids.len()
        );
        let total = reference.greedy_ids.len();
        assert!(total >= 32, "{}: only {total} reference steps", spec.name);
        if full_greedy {
            assert_eq!(
                steps, total,
                "{}: a greedy step differed from mlx-lm at a near-tie",
                spec.name
            );
        } else {
            // Near-ties are rare: most steps must agree, not merely all
            // differences be excusable.
            assert!(
                steps * 8 >= total * 7,
                "{} / {}: only {steps} of {total} greedy steps equal mlx-lm's",
                spec.name,
                reference.prompt
            );
        }
    }
}

/// Our greedy ids from `Generate` after `prompt`, `n` of them.
pub fn greedy_ids<C: KeyValueCache>(
    model: &mut mistral_model::Mistral,
    prompt: &[i32],
    n: usize,
) -> Vec<i32> {
    let prompt = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    let mut cache: Vec<Option<C>> = Vec::new();
    Generate::<C>::new(model, &mut cache, 0.0, &prompt)
        .take(n)
        .map(|t| t.expect("generate").item_exact::<u32>() as i32)
        .collect()
}

/// Compares `Generate`'s greedy ids with mlx-lm's, step by step. In f32
/// they must be equal; in f16/bf16 a step may differ only where the
/// reference top-2 margin is within the rounding the parity test allows for
/// that dtype; generation then restarts from the prompt and mlx-lm's ids up
/// to that step, so every step is compared. Returns the number of equal
/// steps; most must be.
pub fn compare_greedy<C: KeyValueCache>(
    spec: &TestModel,
    reference: &Reference,
    what: &str,
) -> usize {
    let total = reference.greedy_ids.len();
    assert!(total >= 64, "{what}: only {total} reference steps");
    assert_eq!(reference.greedy_margin.len(), total, "{what}: margins");
    let scale = reference
        .logits
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max);
    let tie = match spec.dtype.as_str() {
        "float32" => 0.0,
        "float16" => 4e-4 * scale,
        _ => 4e-3 * scale,
    };
    // On a GPU: also near-ties within a few times its measured noise.
    let tie = gpu_noise(spec, reference).map_or(tie, |noise| tie.max(4.0 * noise * scale));
    let mut model = super::load(&spec.dir);
    let (mut start, mut agreed) = (0, 0);
    while start < total {
        let mut prompt = reference.prompt_ids.clone();
        prompt.extend_from_slice(&reference.greedy_ids[..start]);
        let ours = greedy_ids::<C>(&mut model, &prompt, total - start);
        assert_eq!(ours.len(), total - start, "{what}: too few ids");
        let mut next_start = total;
        for (i, &id) in ours.iter().enumerate() {
            let step = start + i;
            let (want, margin) = (reference.greedy_ids[step], reference.greedy_margin[step]);
            if id == want {
                agreed += 1;
                continue;
            }
            assert!(
                f64::from(margin) <= tie,
                "{} / {} ({what}): step {step} gives {id}, mlx-lm {want} (margin {margin:e})",
                spec.name,
                reference.prompt
            );
            next_start = step + 1;
            break;
        }
        start = next_start;
    }
    assert!(
        agreed * 8 >= total * 7,
        "{} / {} ({what}): only {agreed} of {total} greedy ids equal mlx-lm's",
        spec.name,
        reference.prompt
    );
    agreed
}
