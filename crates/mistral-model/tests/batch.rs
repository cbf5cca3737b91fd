//! Continuous batching: rows that join and leave a [`BatchKVCache`] get,
//! step by step, the logits of their solo runs over a [`KVCache`], for
//! every model of the shared test configurations (full attention, sliding
//! windows, mixed layer types, tied head, RoPE scaling, Mixtral's experts,
//! Ministral 3's YaRN and position-dependent query scale).

mod common;

use common::{all_configs, assert_close, host, random_weights, tiny_config};
use mistral_model::{Mistral, MistralConfig};
use mlx_rs::{ops::indexing::IndexOp, Array};
use mlx_rs_core::{
    BatchGenerate, BatchKVCache, BatchToken, Generate, GenerateOptions, KVCache, KeyValueCache,
    Prefill, RepetitionPenalty, SamplingOptions,
};
use serde_json::json;

const PROMPTS: [&[i32]; 3] = [&[5, 17, 3], &[1, 0, 95, 60, 2, 33, 11], &[9, 8, 7, 6, 50]];
/// The tokens each row is fed after its prompt, one per step.
const FED: [i32; 9] = [4, 44, 12, 80, 3, 3, 61, 20, 7];

/// Last-position logits of one row: after its prompt, then after each fed
/// token.
fn solo(model: &Mistral, prompt: &[i32], steps: usize) -> Vec<Vec<f32>> {
    let mut cache: Vec<Option<KVCache>> = model.new_cache();
    let mut out = Vec::new();
    let inputs = std::iter::once(prompt.to_vec()).chain(FED[..steps].iter().map(|&t| vec![t]));
    for input in inputs {
        let logits = model
            .forward(
                &Array::from_slice(&input, &[1, input.len() as i32]),
                &mut cache,
            )
            .unwrap();
        out.push(last(&logits, 0));
    }
    out
}

/// Appends `cache`'s rows to `batch` (taking it whole while empty).
fn join(batch: &mut Vec<Option<BatchKVCache>>, cache: Vec<Option<BatchKVCache>>) {
    if batch.is_empty() {
        *batch = cache;
        return;
    }
    for (mine, theirs) in batch.iter_mut().zip(&cache) {
        mine.as_mut()
            .unwrap()
            .extend(theirs.as_ref().unwrap())
            .unwrap();
    }
}

fn last(logits: &Array, row: i32) -> Vec<f32> {
    let l = logits.dim(1);
    host(&logits.index((row, l - 1)))
}

/// One row's cache after its prompt, and its logits.
fn prefill(model: &Mistral, prompt: &[i32]) -> (Vec<Option<BatchKVCache>>, Vec<f32>) {
    let mut cache: Vec<Option<BatchKVCache>> = model.new_cache();
    let logits = model
        .forward(
            &Array::from_slice(prompt, &[1, prompt.len() as i32]),
            &mut cache,
        )
        .unwrap();
    (cache, last(&logits, 0))
}

#[test]
fn joining_and_leaving_rows_get_their_solo_logits() {
    for (name, cfg) in all_configs() {
        let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
        let want: Vec<Vec<Vec<f32>>> = PROMPTS.iter().map(|p| solo(&model, p, FED.len())).collect();
        // Schedule: row 0 alone for 2 steps, row 1 joins, 2 steps, row 2
        // joins, 2 steps, row 0 leaves, 3 steps.
        let mut batch: Vec<Option<BatchKVCache>> = Vec::new();
        let mut rows: Vec<(usize, usize)> = Vec::new(); // (prompt, steps fed)
        let add_row =
            |batch: &mut Vec<Option<BatchKVCache>>, rows: &mut Vec<(usize, usize)>, p: usize| {
                let (cache, logits) = prefill(&model, PROMPTS[p]);
                assert_close(
                    &logits,
                    &want[p][0],
                    1e-5,
                    1e-5,
                    &format!("{name}: row {p} prefill"),
                );
                join(batch, cache);
                rows.push((p, 0));
            };
        let step = |batch: &mut Vec<Option<BatchKVCache>>, rows: &mut Vec<(usize, usize)>| {
            let fed: Vec<i32> = rows.iter().map(|&(_, s)| FED[s]).collect();
            let logits = model
                .forward(&Array::from_slice(&fed, &[fed.len() as i32, 1]), batch)
                .unwrap();
            for (i, (p, s)) in rows.iter_mut().enumerate() {
                *s += 1;
                let what = format!("{name}: row {p} step {s} in a batch of {}", fed.len());
                assert_close(&last(&logits, i as i32), &want[*p][*s], 1e-5, 1e-5, &what);
            }
        };
        add_row(&mut batch, &mut rows, 0);
        for _ in 0..2 {
            step(&mut batch, &mut rows);
        }
        add_row(&mut batch, &mut rows, 1);
        for _ in 0..2 {
            step(&mut batch, &mut rows);
        }
        add_row(&mut batch, &mut rows, 2);
        for _ in 0..2 {
            step(&mut batch, &mut rows);
        }
        for cache in batch.iter_mut().flatten() {
            cache.retain(&[1, 2]).unwrap();
        }
        rows.remove(0);
        assert_eq!(batch[0].as_ref().unwrap().rows(), 2, "{name}: rows kept");
        for _ in 0..3 {
            step(&mut batch, &mut rows);
        }
        // Each row taken out alone (its own buffers) goes on
        // as its solo run; trimmed back one position, it redoes that step.
        for (i, &(p, s)) in rows.iter().enumerate() {
            let mut alone: Vec<Option<BatchKVCache>> = batch
                .iter()
                .map(|c| Some(c.as_ref().unwrap().row(i).unwrap()))
                .collect();
            let feed = |cache: &mut Vec<Option<BatchKVCache>>, token: i32| {
                last(
                    &model
                        .forward(&Array::from_slice(&[token], &[1, 1]), cache)
                        .unwrap(),
                    0,
                )
            };
            let what = format!("{name}: row {p} alone after step {s}");
            for trimmed in [false, true] {
                if trimmed {
                    for cache in alone.iter_mut().flatten() {
                        assert_eq!(cache.trim(1).unwrap(), 1, "{what}: trim");
                    }
                }
                let got = feed(&mut alone, FED[s]);
                assert_close(&got, &want[p][s + 1], 1e-5, 1e-5, &what);
            }
        }
    }
}

/// Bytes of one position in a layer's cache: keys and values of
/// `num_key_value_heads × head_dim` float32 each.
fn position_bytes(cfg: &MistralConfig) -> usize {
    (cfg.num_key_value_heads() * cfg.head_dim() * 2 * 4) as usize
}

/// A batch of a long row and two short ones stores, per layer, each row's
/// own positions (capped at the window on sliding-window layers), not
/// rows × longest as a padded layout would, while every row gets its solo
/// logits at each step, the short rows generating past the window.
#[test]
fn rows_hold_their_own_positions_and_windowed_rows_only_their_window() {
    let long: Vec<i32> = (0..1000).map(|i| (i * 37 + 11) % 96).collect();
    let prompts: [&[i32]; 3] = [&long, PROMPTS[0], PROMPTS[1]];
    let steps = FED.len();
    let configs = [
        ("full", tiny_config(json!({}))),
        ("window 8", tiny_config(json!({"sliding_window": 8}))),
        (
            "layer types",
            tiny_config(json!({"sliding_window": 8,
                "layer_types": ["sliding_attention", "full_attention"]})),
        ),
    ];
    for (name, cfg) in configs {
        let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
        let mut batch: Vec<Option<BatchKVCache>> = Vec::new();
        let mut want = Vec::new();
        for (p, prompt) in prompts.iter().enumerate() {
            want.push(solo(&model, prompt, steps));
            let (cache, logits) = prefill(&model, prompt);
            assert_close(&logits, &want[p][0], 1e-4, 1e-4, &format!("{name}: {p}"));
            join(&mut batch, cache);
        }
        for s in 0..steps {
            let fed = [FED[s]; 3];
            let logits = model
                .forward(&Array::from_slice(&fed, &[3, 1]), &mut batch)
                .unwrap();
            for (p, want) in want.iter().enumerate() {
                let what = format!("{name}: row {p} step {s}");
                assert_close(&last(&logits, p as i32), &want[s + 1], 1e-4, 1e-4, &what);
            }
        }
        let lens: Vec<usize> = prompts.iter().map(|p| p.len() + steps).collect();
        let per = position_bytes(&cfg);
        let padded = lens.len() * lens.iter().max().unwrap() * per;
        for (layer, cache) in batch.iter().enumerate() {
            let cache = cache.as_ref().unwrap();
            let window = cfg.attention_mask(layer).window();
            let what = format!("{name}: layer {layer} (window {window:?})");
            // Positions each row must hold; a row copy holds exactly those.
            let own: Vec<usize> = lens
                .iter()
                .map(|&n| window.map_or(n, |w| n.min(w as usize)))
                .collect();
            for (i, &n) in own.iter().enumerate() {
                assert_eq!(cache.row(i).unwrap().nbytes(), n * per, "{what}: row {i}");
            }
            // The batch: a windowed row's ring is exactly its window; an
            // unbounded row (prefilled in one chunk, then fed one token at
            // a time) grows in whole steps of KVCache::STEP from empty.
            let step = KVCache::STEP as usize;
            let held: usize = match window {
                Some(_) => own.iter().sum(),
                None => own.iter().map(|n| n.div_ceil(step) * step).sum(),
            };
            assert_eq!(cache.nbytes(), held * per, "{what}: batch");
            assert!(cache.nbytes() < padded, "{what}: below rows × longest");
        }
    }
}

/// Rows of different lengths fed a chunk of several tokens at once each
/// attend with their own mask: every position's logits are those of their
/// solo runs fed one token at a time.
#[test]
fn a_ragged_batch_takes_chunks_with_each_rows_own_mask() {
    let chunk = 4;
    for (name, cfg) in all_configs() {
        let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
        let mut batch: Vec<Option<BatchKVCache>> = Vec::new();
        for prompt in PROMPTS {
            let (cache, _) = prefill(&model, prompt);
            join(&mut batch, cache);
        }
        let fed: Vec<i32> = (0..PROMPTS.len())
            .flat_map(|_| FED[..chunk].to_vec())
            .collect();
        let logits = model
            .forward(
                &Array::from_slice(&fed, &[PROMPTS.len() as i32, chunk as i32]),
                &mut batch,
            )
            .unwrap();
        for (p, prompt) in PROMPTS.iter().enumerate() {
            let want = solo(&model, prompt, chunk);
            for j in 0..chunk {
                let got = host(&logits.index((p as i32, j as i32)));
                let what = format!("{name}: row {p} chunk position {j}");
                assert_close(&got, &want[j + 1], 1e-4, 1e-4, &what);
            }
        }
    }
}

#[test]
fn retain_and_extend_report_bad_rows() {
    let cfg = tiny_config(json!({}));
    let model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
    let (mut cache, _) = prefill(&model, PROMPTS[0]);
    let layer = cache[0].as_mut().unwrap();
    assert!(layer.retain(&[1]).is_err());
    let other = BatchKVCache::new();
    layer.extend(&other).unwrap();
    assert_eq!(layer.rows(), 1);
}

/// [`BatchGenerate`]: each sequence's tokens equal its solo [`Generate`]
/// run (greedy, seeded sampling with filters, a repetition penalty), while
/// others join and leave the batch, with prompts prefilled in chunks.
#[test]
fn batch_generation_gives_each_sequence_its_solo_tokens() {
    let n = 12;
    let greedy = GenerateOptions::default();
    let seeded = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 0.9,
            top_k: 40,
            min_p: 0.05,
            ..SamplingOptions::default()
        },
        seed: Some(3),
        ..GenerateOptions::default()
    };
    let penalized = GenerateOptions {
        repetition_penalty: Some(RepetitionPenalty {
            penalty: 1.3,
            context_size: 4,
        }),
        prefill_step_size: 2,
        ..GenerateOptions::default()
    };
    let options = [greedy, seeded, penalized];
    for (name, cfg) in all_configs() {
        let mut model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
        let solo: Vec<Vec<u32>> = PROMPTS
            .iter()
            .zip(&options)
            .map(|(p, o)| {
                let mut cache: Vec<Option<KVCache>> = Vec::new();
                let prompt = Array::from_slice(p, &[p.len() as i32]);
                Generate::with_options(&mut model, &mut cache, &prompt, o.clone())
                    .take(n)
                    .map(|t| t.unwrap().item_exact::<u32>())
                    .collect()
            })
            .collect();
        let mut batch = BatchGenerate::new();
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); 3];
        let join = |model: &mut Mistral, batch: &mut BatchGenerate, i: usize| {
            let prompt = Array::from_slice(PROMPTS[i], &[PROMPTS[i].len() as i32]);
            let mut prefill = Prefill::new(model, i as u64, &prompt, &options[i]).unwrap();
            prefill.advance(model, 1).unwrap(); // a chunk now, the rest when joining
            batch.join(model, prefill).unwrap();
        };
        for step in 0..3 * n {
            match step {
                0 => join(&mut model, &mut batch, 0),
                3 => join(&mut model, &mut batch, 1),
                5 => join(&mut model, &mut batch, 2),
                _ => {}
            }
            for t in batch.step(&mut model).unwrap() {
                assert_eq!(t.logprobs, None, "none asked for");
                let row = &mut got[t.id as usize];
                row.push(t.token);
                if row.len() == n {
                    batch.remove(&[t.id]).unwrap();
                }
            }
            if batch.is_empty() && step > 5 {
                break;
            }
        }
        for i in 0..3 {
            assert_eq!(got[i], solo[i], "{name}: sequence {i} ({:?})", options[i]);
        }
    }
}

/// Log-softmax of `logits`, computed on the host in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// The log-probabilities a batch reports for a sequence (the sampled
/// token's and the top 5, most likely first) are the log-softmax of the
/// logits of one forward pass over its prompt and tokens, computed on the
/// host; a sequence that did not ask for them gets none, while both run in
/// one batch.
#[test]
fn batch_log_probabilities_are_the_log_softmax_of_the_solo_logits() {
    let n = 8;
    let top = 5;
    for (name, cfg) in all_configs() {
        let mut model = Mistral::new(&cfg, &mut random_weights(&cfg), None).unwrap();
        let mut batch = BatchGenerate::new();
        let mut got: Vec<Vec<BatchToken>> = vec![Vec::new(); 2];
        let options = GenerateOptions::default();
        for step in 0..2 * n {
            if step < 2 {
                let i = step;
                let prompt = Array::from_slice(PROMPTS[i], &[PROMPTS[i].len() as i32]);
                let mut prefill = Prefill::new(&model, i as u64, &prompt, &options).unwrap();
                if i == 0 {
                    prefill = prefill.with_logprobs(top);
                }
                batch.join(&mut model, prefill).unwrap();
            }
            for t in batch.step(&mut model).unwrap() {
                let (id, row) = (t.id, &mut got[t.id as usize]);
                row.push(t);
                if row.len() == n {
                    batch.remove(&[id]).unwrap();
                }
            }
        }
        assert!(got[1].iter().all(|t| t.logprobs.is_none()), "{name}");
        assert_eq!(got[0].len(), n, "{name}");
        let prompt = PROMPTS[0];
        let mut ids = prompt.to_vec();
        ids.extend(got[0].iter().map(|t| t.token as i32));
        let mut cache: Vec<Option<KVCache>> = model.new_cache();
        let logits = model
            .forward(&Array::from_slice(&ids, &[1, ids.len() as i32]), &mut cache)
            .unwrap();
        for (j, t) in got[0].iter().enumerate() {
            let what = format!("{name}: token {j}");
            let want = log_softmax(&host(&logits.index((0, (prompt.len() + j - 1) as i32))));
            let mut order: Vec<usize> = (0..want.len()).collect();
            order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
            let lp = t.logprobs.as_ref().expect("asked for");
            assert!(
                (lp.logprob as f64 - want[t.token as usize]).abs() < 1e-4,
                "{what}"
            );
            assert_eq!(
                t.token as usize, order[0],
                "{what}: greedy is the most likely"
            );
            let got_ids: Vec<usize> = lp.top.iter().map(|&(id, _)| id as usize).collect();
            assert_eq!(got_ids, order[..top], "{what}: top ids");
            for &(id, value) in &lp.top {
                assert!(
                    (value as f64 - want[id as usize]).abs() < 1e-4,
                    "{what}: id {id}"
                );
            }
        }
    }
}
