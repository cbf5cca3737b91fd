//! Filters, penalty and greedy choice against their definitions computed on
//! the host in f64 (mlx-lm's semantics; bit-level agreement with mlx-lm
//! itself is checked live in mistral-loader's generation tests).

use mlx_rs::{random, Array};

use super::host;
use crate::sample::{
    apply_min_p, apply_top_k, apply_top_p, RepetitionPenalty, Sampler, SamplingOptions,
};

const V: i32 = 200;

/// Random log-probabilities `[1, V]` and their host copy.
fn logprobs(seed: u64) -> (Array, Vec<f64>) {
    let key = random::key(seed).unwrap();
    let logits = random::normal::<f32>(&[1, V], None, None, &key)
        .unwrap()
        .multiply(Array::from_f32(2.0))
        .unwrap();
    let lp = logits.subtract(logits.logsumexp(true).unwrap()).unwrap();
    let h = host(&lp).iter().map(|&x| f64::from(x)).collect();
    (lp, h)
}

fn kept(filtered: &Array) -> Vec<bool> {
    host(filtered).iter().map(|x| x.is_finite()).collect()
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    for seed in 0..5 {
        let (lp, h) = logprobs(seed);
        let k = 7;
        let mut order: Vec<usize> = (0..h.len()).collect();
        order.sort_by(|&a, &b| h[b].total_cmp(&h[a]));
        let want: Vec<bool> = (0..h.len()).map(|i| order[..k].contains(&i)).collect();
        assert_eq!(kept(&apply_top_k(&lp, k as i32).unwrap()), want);
    }
    let (lp, _) = logprobs(0);
    assert!(apply_top_k(&lp, V).is_err());
    assert!(apply_top_k(&lp, 0).is_err());
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    for (seed, p) in [(1, 0.5), (2, 0.9), (3, 0.25), (4, 0.99)] {
        let (lp, h) = logprobs(seed);
        // Token i stays iff the mass of strictly more likely tokens is below
        // p (of the total): the nucleus includes the token that crosses p.
        let probs: Vec<f64> = h.iter().map(|x| x.exp()).collect();
        let total: f64 = probs.iter().sum();
        let want: Vec<bool> = (0..h.len())
            .map(|i| {
                let above: f64 = (0..h.len())
                    .filter(|&j| h[j] > h[i])
                    .map(|j| probs[j])
                    .sum();
                above < p * total
            })
            .collect();
        assert_eq!(kept(&apply_top_p(&lp, p as f32).unwrap()), want, "p {p}");
    }
}

#[test]
fn min_p_keeps_tokens_near_the_top() {
    for (seed, m) in [(5, 0.1), (6, 0.01), (7, 0.5)] {
        let (lp, h) = logprobs(seed);
        let top = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let want: Vec<bool> = h.iter().map(|&x| x.exp() >= m * top.exp()).collect();
        assert_eq!(
            kept(&apply_min_p(&lp, m as f32).unwrap()),
            want,
            "min_p {m}"
        );
    }
    let (lp, _) = logprobs(0);
    assert!(apply_min_p(&lp, 1.5).is_err());
}

#[test]
fn repetition_penalty_scales_recent_tokens_by_sign() {
    let logits = Array::from_slice(&[2.0f32, -1.0, 0.5, -3.0, 4.0, 1.0], &[1, 6]);
    let tokens = Array::from_slice(&[4u32, 0, 1, 1, 3], &[5]);
    let penalty = RepetitionPenalty {
        penalty: 2.0,
        context_size: 3,
    };
    let got = host(&penalty.apply(&tokens, &logits).unwrap());
    let raw = [2.0f32, -1.0, 0.5, -3.0, 4.0, 1.0];
    let recent = [1usize, 1, 3];
    let want: Vec<f32> = raw
        .iter()
        .enumerate()
        .map(|(i, &x)| match (recent.contains(&i), x < 0.0) {
            (false, _) => x,
            (true, true) => x * 2.0,
            (true, false) => x / 2.0,
        })
        .collect();
    assert_eq!(got, want);

    // mlx-lm's edge cases: context 0 is every token, penalty 0 is none.
    let all = RepetitionPenalty {
        penalty: 2.0,
        context_size: 0,
    };
    let got = host(&all.apply(&tokens, &logits).unwrap());
    let everywhere = [4usize, 0, 1, 3];
    let want: Vec<f32> = raw
        .iter()
        .enumerate()
        .map(|(i, &x)| match (everywhere.contains(&i), x < 0.0) {
            (false, _) => x,
            (true, true) => x * 2.0,
            (true, false) => x / 2.0,
        })
        .collect();
    assert_eq!(got, want);
    let none = RepetitionPenalty {
        penalty: 0.0,
        context_size: 20,
    };
    assert_eq!(host(&none.apply(&tokens, &logits).unwrap()), raw.to_vec());
}

#[test]
fn greedy_is_the_argmax_and_seeds_reproduce() {
    let (lp, h) = logprobs(9);
    let best = (0..h.len()).max_by(|&a, &b| h[a].total_cmp(&h[b])).unwrap();
    let mut greedy = Sampler::new(SamplingOptions::default(), None).unwrap();
    assert_eq!(
        greedy.sample(&lp).unwrap().item_exact::<u32>() as usize,
        best
    );

    let options = SamplingOptions {
        temperature: 1.0,
        ..SamplingOptions::default()
    };
    let draw = |seed| {
        let mut s = Sampler::new(options, Some(seed)).unwrap();
        (0..20)
            .map(|_| s.sample(&lp).unwrap().item_exact::<u32>())
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    assert!(Sampler::new(
        SamplingOptions {
            temperature: -1.0,
            ..options
        },
        None
    )
    .is_err());
}

/// The compiled stages (the default, as mlx-lm's are) draw the same ids as
/// the op-by-op ones on the CPU for these log-probabilities, for every
/// filter and in bf16 (at a near-tie they may not: see `sample/compiled.rs`),
/// and a clone goes on from the same random state.
#[test]
fn compiled_stages_draw_as_op_by_op_ones() {
    let base = SamplingOptions {
        temperature: 0.8,
        ..SamplingOptions::default()
    };
    let cases = [
        base,
        SamplingOptions { top_p: 0.9, ..base },
        SamplingOptions {
            min_p: 0.05,
            ..base
        },
        SamplingOptions { top_k: 20, ..base },
        SamplingOptions {
            temperature: 1.25,
            top_p: 0.95,
            min_p: 0.0625,
            top_k: 50,
        },
    ];
    let (lp, _) = logprobs(3);
    let bf16 = lp.as_dtype(mlx_rs::Dtype::Bfloat16).unwrap();
    for options in cases {
        for x in [&lp, &bf16] {
            let draw = |s: &mut Sampler| {
                (0..12)
                    .map(|_| s.sample(x).unwrap().item_exact::<u32>())
                    .collect::<Vec<_>>()
            };
            let mut plain = Sampler::with_compile(options, Some(7), false).unwrap();
            let mut compiled = Sampler::with_compile(options, Some(7), true).unwrap();
            let want = draw(&mut plain);
            assert_eq!(draw(&mut compiled), want, "{options:?} {:?}", x.dtype());
            assert_eq!(draw(&mut compiled.clone()), draw(&mut plain));
        }
    }
    let mut unseeded = Sampler::with_compile(base, None, true).unwrap();
    assert!(unseeded.sample(&lp).unwrap().item_exact::<u32>() < V as u32);
    let mut wide = Sampler::with_compile(SamplingOptions { top_k: V, ..base }, None, true).unwrap();
    assert!(wide.sample(&lp).is_err());
}
