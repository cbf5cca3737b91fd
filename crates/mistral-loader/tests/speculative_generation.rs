//! `SpeculativeGenerate` against plain greedy `Generate`: the same ids,
//! token for token, on every generated test model and on SmolLM2, with a
//! draft model (on the test models a sibling of another quantization or
//! dtype, so drafts are also rejected) and with prompt lookup; on the sliding-window model
//! with a prompt longer than its window, through the rotating cache.

mod reference;

use mistral_loader::{load_model_with, ComputeDtype, LoadOptions};
use mistral_model::Mistral;
use mlx_rs::{Array, Dtype};
use mlx_rs_core::{
    Drafter, Generate, GenerateOptions, KVCache, KeyValueCache, RotatingKVCache,
    SpeculativeGenerate, SpeculativeStats, TrimAhead,
};
use reference::{smollm2_path, test_models, TestModel};

/// Tokens generated per comparison on a test model (fewer on SmolLM2).
const TOKENS: usize = 24;
/// Tokens drafted per step.
const DRAFTS: usize = 4;

/// A prompt that repeats itself (so prompt lookup finds n-grams), 39
/// tokens: longer than the windowed model's window of 16.
fn prompt(vocab: u32) -> Vec<u32> {
    let phrase: Vec<u32> = (0..13u32)
        .map(|i| 100 + (i * 7919) % (vocab - 200))
        .collect();
    phrase.iter().cycle().take(39).copied().collect()
}

fn options(tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(tokens),
        ..Default::default()
    }
}

fn ids(tokens: impl Iterator<Item = mlx_rs_core::Result<Array>>) -> Vec<u32> {
    tokens
        .map(|t| t.expect("token").item_exact::<u32>())
        .collect()
}

fn greedy<C: KeyValueCache>(model: &mut Mistral, prompt: &[u32], tokens: usize) -> Vec<u32> {
    let prompt = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    let mut cache: Vec<Option<C>> = Vec::new();
    ids(Generate::with_options(
        model,
        &mut cache,
        &prompt,
        options(tokens),
    ))
}

/// Speculative ids with `draft` (prompt lookup when `None`), and the counts.
fn speculative<C: KeyValueCache + TrimAhead>(
    model: &mut Mistral,
    draft: Option<&mut Mistral>,
    prompt: &[u32],
    tokens: usize,
) -> (Vec<u32>, SpeculativeStats) {
    let prompt = Array::from_slice(prompt, &[1, prompt.len() as i32]);
    let mut cache: Vec<Option<C>> = Vec::new();
    let mut draft_cache: Vec<Option<C>> = Vec::new();
    let drafter = match draft {
        Some(draft) => Drafter::model(draft, &mut draft_cache, DRAFTS),
        None => Drafter::prompt_lookup(DRAFTS),
    };
    let mut run =
        SpeculativeGenerate::with_options(model, &mut cache, drafter, &prompt, options(tokens));
    let out = ids(run.by_ref());
    (out, run.stats())
}

fn load(spec: &TestModel, dtype: ComputeDtype) -> Mistral {
    let options = LoadOptions {
        dtype,
        ..Default::default()
    };
    load_model_with(&spec.dir, &options).unwrap_or_else(|e| panic!("{}: {e}", spec.name))
}

/// A draft for `spec` that differs from it: the 4-bit sibling of the
/// `gqa4` family (the float32 one for quantized members), else the model
/// itself in another dtype.
fn draft_for(spec: &TestModel, all: &[TestModel]) -> (String, Mistral) {
    if spec.name.starts_with("gqa4_") {
        let name = match spec.quantized {
            Some(_) => "gqa4_f32",
            None => "gqa4_q4_g64",
        };
        let sibling = all.iter().find(|m| m.name == name).expect("gqa4 sibling");
        return (name.to_owned(), load(sibling, ComputeDtype::Checkpoint));
    }
    let dtype = match spec.dtype.as_str() {
        "float32" => Dtype::Bfloat16,
        _ => Dtype::Float32,
    };
    (
        format!("{} as {dtype:?}", spec.name),
        load(spec, ComputeDtype::Exact(dtype)),
    )
}

/// Greedy `Generate`, the draft model and prompt lookup on `model` with
/// cache `C`: equal ids, and some drafts accepted.
fn compare<C: KeyValueCache + TrimAhead>(
    name: &str,
    model: &mut Mistral,
    draft: &mut Mistral,
    prompt: &[u32],
    tokens: usize,
) {
    let plain = greedy::<C>(model, prompt, tokens);
    assert_eq!(plain.len(), tokens, "{name}: plain run ended early");
    let (drafted, stats) = speculative::<C>(model, Some(draft), prompt, tokens);
    assert_eq!(drafted, plain, "{name}: draft-model ids differ from greedy");
    assert!(stats.accepted > 0, "{name}: no draft accepted: {stats:?}");
    let (looked_up, lookup_stats) = speculative::<C>(model, None, prompt, tokens);
    assert_eq!(
        looked_up, plain,
        "{name}: prompt-lookup ids differ from greedy"
    );
    eprintln!(
        "{name:<40} draft: {}/{} accepted in {} steps; lookup: {}/{} in {} steps",
        stats.accepted,
        stats.drafted,
        stats.steps,
        lookup_stats.accepted,
        lookup_stats.drafted,
        lookup_stats.steps
    );
}

#[test]
fn greedy_speculative_equals_greedy_on_every_test_model() {
    let all = test_models();
    assert!(all.len() >= 14, "expected the full set of test models");
    for spec in &all {
        let mut model = load(spec, ComputeDtype::Checkpoint);
        let (draft_name, mut draft) = draft_for(spec, &all);
        let vocab = model.config().vocab_size as u32;
        let prompt = prompt(vocab);
        let name = format!("{} (draft {draft_name})", spec.name);
        compare::<KVCache>(&name, &mut model, &mut draft, &prompt, TOKENS);
        if let Some(window) = spec.sliding_window {
            assert!(prompt.len() as i64 > window, "prompt within the window");
            let name = format!("{name}, rotating cache");
            compare::<RotatingKVCache>(&name, &mut model, &mut draft, &prompt, TOKENS);
        }
    }
}

#[test]
fn greedy_speculative_equals_greedy_on_smollm2() {
    let file = smollm2_path();
    let tokenizer = mistral_loader::load_tokenizer(&file).expect("tokenizer");
    let text = "Repeat this text exactly: The quick brown fox jumps over the lazy dog \
                near the river bank, and the dog does not move at all.";
    let prompt = tokenizer
        .encode(text, true)
        .expect("encode")
        .get_ids()
        .to_vec();
    let load = |dtype| {
        let options = LoadOptions {
            dtype,
            ..Default::default()
        };
        load_model_with(&file, &options).expect("load SmolLM2")
    };
    // Half-precision drafts are slow on the CPU: the draft is the file's
    // own dtypes, the target float32.
    let mut model = load(ComputeDtype::Exact(Dtype::Float32));
    let mut draft = load(ComputeDtype::Checkpoint);
    let name = "SmolLM2 (draft: its checkpoint dtypes)";
    compare::<RotatingKVCache>(name, &mut model, &mut draft, &prompt, 16);
}

/// The sampled path end to end: with top-k 1 the target's distribution is
/// a point mass on its greedy token, so sampled speculative output (draft
/// model and prompt lookup, temperature 1) must be the greedy output; and
/// greedy with a repetition penalty must match `Generate`'s.
#[test]
fn sampled_and_penalized_speculative_follow_the_target() {
    let all = test_models();
    let spec = all.iter().find(|m| m.name == "gqa4_f32").expect("gqa4_f32");
    let mut model = load(spec, ComputeDtype::Checkpoint);
    let (_, mut draft) = draft_for(spec, &all);
    let prompt_ids = prompt(model.config().vocab_size as u32);
    let prompt = Array::from_slice(&prompt_ids, &[1, prompt_ids.len() as i32]);
    let run = |model: &mut Mistral, draft: Option<&mut Mistral>, options: GenerateOptions| {
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        let mut draft_cache: Vec<Option<KVCache>> = Vec::new();
        let drafter = match draft {
            Some(draft) => Drafter::model(draft, &mut draft_cache, DRAFTS),
            None => Drafter::prompt_lookup(DRAFTS),
        };
        ids(SpeculativeGenerate::with_options(
            model, &mut cache, drafter, &prompt, options,
        ))
    };
    let plain = greedy::<KVCache>(&mut model, &prompt_ids, TOKENS);
    let mut top1 = options(TOKENS);
    top1.sampling.temperature = 1.0;
    top1.sampling.top_k = 1;
    top1.seed = Some(7);
    assert_eq!(run(&mut model, Some(&mut draft), top1.clone()), plain);
    assert_eq!(run(&mut model, None, top1), plain);

    let mut penalized = options(TOKENS);
    penalized.repetition_penalty = Some(mlx_rs_core::RepetitionPenalty {
        penalty: 1.5,
        context_size: 20,
    });
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let expected = ids(Generate::with_options(
        &mut model,
        &mut cache,
        &prompt,
        penalized.clone(),
    ));
    assert_ne!(expected, plain, "the penalty changes nothing here");
    assert_eq!(
        run(&mut model, Some(&mut draft), penalized.clone()),
        expected
    );
    assert_eq!(run(&mut model, None, penalized), expected);
}

/// With a quantized KV cache (8 bits, groups of 32, from the first
/// position) on both sides, speculative greedy ids are the plain greedy
/// ids: the target's cache is quantized as `Generate` quantizes it.
#[test]
fn greedy_speculative_with_a_quantized_cache_equals_greedy() {
    let all = test_models();
    let spec = all
        .iter()
        .find(|m| m.name == "headdim_f32")
        .expect("headdim_f32");
    let mut model = load(spec, ComputeDtype::Checkpoint);
    let prompt_ids = prompt(model.config().vocab_size as u32);
    let prompt = Array::from_slice(&prompt_ids, &[1, prompt_ids.len() as i32]);
    let quantized = GenerateOptions {
        kv_quantization: Some(mlx_rs_core::KvQuantization::new(8, 32, 0).expect("settings")),
        ..options(TOKENS)
    };
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let plain = ids(Generate::with_options(
        &mut model,
        &mut cache,
        &prompt,
        quantized.clone(),
    ));
    assert!(
        cache.iter().flatten().all(|c| c.quantization().is_some()),
        "the plain run's cache is not quantized"
    );
    let mut cache: Vec<Option<KVCache>> = Vec::new();
    let drafter = Drafter::prompt_lookup(DRAFTS);
    let mut run =
        SpeculativeGenerate::with_options(&mut model, &mut cache, drafter, &prompt, quantized);
    let looked_up = ids(run.by_ref());
    assert!(run.stats().accepted > 0, "no draft accepted");
    drop(run);
    assert!(
        cache.iter().flatten().all(|c| c.quantization().is_some()),
        "the speculative run's cache is not quantized"
    );
    assert_eq!(looked_up, plain, "quantized-cache ids differ from greedy");
}
