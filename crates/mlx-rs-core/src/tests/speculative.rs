//! The speculative verdict on a five-token vocabulary: over many
//! independent rows, the token each row yields (the draft where accepted,
//! the replacement where not) must follow the target distribution `p`,
//! whatever the draft distribution `q` (Leviathan et al.'s theorem); a
//! chi-square test against `p` checks it. Also prompt lookup's n-gram
//! search and the scorer's sampling distribution.

use mlx_rs::{ops::select, random, Array, Dtype};

use super::host;
use crate::generate::verify::{draw, judge, Scorer};
use crate::generate::GenerateOptions;
use crate::sample::SamplingOptions;
use crate::PromptLookup;

const P: [f32; 5] = [0.40, 0.25, 0.15, 0.12, 0.08];
const Q: [f32; 5] = [0.10, 0.40, 0.10, 0.30, 0.10];
const ROWS: i32 = 40_000;
/// Chi-square with 4 degrees of freedom exceeds this with probability 0.001.
const CHI2_4_P001: f64 = 18.47;

/// `dist` repeated over `ROWS` rows, `[ROWS, 5]`.
fn rows(dist: &[f32; 5]) -> Array {
    let one = Array::from_slice(dist, &[1, 5]);
    mlx_rs::ops::broadcast_to(&one, &[ROWS, 5]).unwrap()
}

/// The token each row yields, counted per token.
fn yielded(drafts: &Array, accepted: &Array, replacement: &Array) -> [u64; 5] {
    let out = select(accepted, drafts, replacement).unwrap();
    let out = out.as_dtype(Dtype::Int32).unwrap();
    out.eval().unwrap();
    let mut counts = [0u64; 5];
    for &t in out.as_slice::<i32>() {
        counts[t as usize] += 1;
    }
    counts
}

fn chi_square(counts: &[u64; 5], p: &[f32; 5]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(p)
        .map(|(&c, &p)| {
            let expected = n as f64 * f64::from(p);
            (c as f64 - expected).powi(2) / expected
        })
        .sum()
}

fn accept_rate(accepted: &Array) -> f64 {
    let a = accepted
        .as_dtype(Dtype::Float32)
        .unwrap()
        .mean(None)
        .unwrap();
    f64::from(host(&a)[0])
}

#[test]
fn sampled_drafts_yield_the_target_distribution() {
    let (p, q) = (rows(&P), rows(&Q));
    let drafts = draw(&q, &random::key(1).unwrap()).unwrap();
    let (accepted, replacement) = judge(&p, Some(&q), &drafts, &random::key(2).unwrap()).unwrap();
    let counts = yielded(&drafts, &accepted, &replacement);
    let chi2 = chi_square(&counts, &P);
    assert!(
        chi2 < CHI2_4_P001,
        "counts {counts:?} do not follow p: chi2 {chi2}"
    );
    // The drafts themselves follow q, far from p: the test can tell.
    let drafted = yielded(&drafts, &accepted, &drafts);
    assert!(chi_square(&drafted, &P) > 10.0 * CHI2_4_P001);
    // Acceptance is sum(min(p, q)) in expectation.
    let expected: f32 = P.iter().zip(&Q).map(|(p, q)| p.min(*q)).sum();
    let rate = accept_rate(&accepted);
    assert!(
        (rate - f64::from(expected)).abs() < 0.01,
        "acceptance {rate}, expected {expected}"
    );
}

#[test]
fn deterministic_drafts_yield_the_target_distribution() {
    let p = rows(&P);
    // Each row drafts one token with certainty, as prompt lookup does; the
    // tokens vary over rows as Q has them (not uniformly: uniform drafts
    // would hide a replacement that forgot to leave the draft out).
    let drafts = draw(&rows(&Q), &random::key(6).unwrap()).unwrap();
    let (accepted, replacement) = judge(&p, None, &drafts, &random::key(3).unwrap()).unwrap();
    let counts = yielded(&drafts, &accepted, &replacement);
    let chi2 = chi_square(&counts, &P);
    assert!(
        chi2 < CHI2_4_P001,
        "counts {counts:?} do not follow p: chi2 {chi2}"
    );
    // A certain draft is accepted with probability p(draft).
    let expected: f32 = P.iter().zip(&Q).map(|(p, q)| p * q).sum();
    let rate = accept_rate(&accepted);
    assert!(
        (rate - f64::from(expected)).abs() < 0.01,
        "acceptance {rate}, expected {expected}"
    );
}

#[test]
fn a_draft_equal_to_the_target_is_always_accepted() {
    let p = rows(&P);
    let drafts = draw(&p, &random::key(4).unwrap()).unwrap();
    let (accepted, replacement) = judge(&p, Some(&p), &drafts, &random::key(5).unwrap()).unwrap();
    assert_eq!(accept_rate(&accepted), 1.0);
    let counts = yielded(&drafts, &accepted, &replacement);
    assert!(chi_square(&counts, &P) < CHI2_4_P001);
}

#[test]
fn scorer_distribution_is_tempered_softmax() {
    let options = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 0.5,
            ..Default::default()
        },
        ..Default::default()
    };
    let scorer = Scorer::new(&options).unwrap();
    let logprobs: Vec<f32> = P.iter().map(|p| p.ln()).collect();
    let probs = scorer
        .probabilities(&Array::from_slice(&logprobs, &[1, 5]))
        .unwrap();
    let squared: Vec<f64> = P.iter().map(|&p| f64::from(p).powi(2)).collect();
    let total: f64 = squared.iter().sum();
    for (got, want) in host(&probs).iter().zip(&squared) {
        assert!((f64::from(*got) - want / total).abs() < 1e-6);
    }
}

#[test]
fn prompt_lookup_continues_the_latest_longest_match() {
    let lookup = PromptLookup::new(3);
    // Suffix [1, 2] occurs at 0 (and [4, 1, 2] nowhere earlier).
    assert_eq!(lookup.propose(&[1, 2, 3, 4, 1, 2], 3), vec![3, 4, 1]);
    // The latest occurrence wins: [7] follows the second [5, 6].
    assert_eq!(lookup.propose(&[5, 6, 9, 5, 6, 7, 5, 6], 1), vec![7]);
    // A longer match beats a later shorter one.
    assert_eq!(lookup.propose(&[1, 2, 3, 8, 3, 9, 1, 2, 3], 2), vec![8, 3]);
    // The continuation stops at the end of the history.
    assert_eq!(lookup.propose(&[4, 5, 4, 5], 3), vec![4, 5]);
    // A one-token match is not enough by default; it is with min_ngram 1.
    assert!(lookup.propose(&[4, 5, 4], 3).is_empty());
    let single = PromptLookup {
        min_ngram: 1,
        ..lookup
    };
    assert_eq!(single.propose(&[4, 5, 4], 3), vec![5, 4]);
    assert!(lookup.propose(&[1, 2, 3], 3).is_empty());
    assert!(lookup.propose(&[1, 2, 1], 0).is_empty());
}
