//! Masks and masked attention against plain-loop definitions.

use mlx_rs::{random, Array};

use super::{host, host_bool};
use crate::mask::{
    create_attention_mask, create_causal_mask, scaled_dot_product_attention, AttentionMask,
    SdpaMask,
};

/// The definition: query at absolute position `i` sees key `j` iff `j <= i`
/// and `i - j < window`.
fn visible(i: i32, j: i32, window: Option<i32>) -> bool {
    j <= i && window.is_none_or(|w| i - j < w)
}

const CASES: &[(i32, i32, Option<i32>)] = &[
    (1, 0, None),
    (4, 0, None),
    (4, 3, None),
    (1, 9, None),
    (5, 0, Some(5)),
    (6, 0, Some(5)),
    (3, 2, Some(5)),
    (3, 3, Some(5)),
    (1, 4, Some(5)),
    (1, 5, Some(5)),
    (1, 12, Some(3)),
    (7, 4, Some(1)),
    (8, 0, Some(2)),
];

#[test]
fn causal_mask_matches_definition() {
    for &(l, offset, window) in CASES {
        let m = create_causal_mask(l, offset, window).unwrap();
        let s = offset + l;
        assert_eq!(m.shape(), &[l, s]);
        let got = host_bool(&m);
        for q in 0..l {
            for j in 0..s {
                let expected = visible(offset + q, j, window);
                assert_eq!(
                    got[(q * s + j) as usize],
                    expected,
                    "L={l} offset={offset} window={window:?} q={q} j={j}"
                );
            }
        }
    }
}

#[test]
fn mask_form_is_cheapest_exact_one() {
    assert!(matches!(
        create_attention_mask(1, 7, None).unwrap(),
        SdpaMask::None
    ));
    assert!(matches!(
        create_attention_mask(4, 7, None).unwrap(),
        SdpaMask::Causal
    ));
    assert!(matches!(
        create_attention_mask(4, 1, Some(5)).unwrap(),
        SdpaMask::Causal
    ));
    assert!(matches!(
        create_attention_mask(1, 4, Some(5)).unwrap(),
        SdpaMask::None
    ));
    assert!(matches!(
        create_attention_mask(1, 5, Some(5)).unwrap(),
        SdpaMask::Array(_)
    ));
    assert!(matches!(
        AttentionMask::SlidingWindow(3).create(4, 0).unwrap(),
        SdpaMask::Array(_)
    ));
    assert!(create_attention_mask(2, 0, Some(0)).is_err());
    assert!(create_attention_mask(-1, 0, None).is_err());
    assert!(create_attention_mask(2, -3, None).is_err());
}

/// Attention with plain loops: q `[1, H, L, D]`, k/v `[1, KVH, S, D]`.
pub(super) fn reference_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    offset: i32,
    window: Option<i32>,
    scale: f32,
) -> Vec<f32> {
    let (h, l, d) = (q.dim(1), q.dim(2), q.dim(3));
    let (kvh, s) = (k.dim(1), k.dim(2));
    let (q, k, v) = (host(q), host(k), host(v));
    let group = h / kvh;
    let mut out = vec![0f32; (h * l * d) as usize];
    for hi in 0..h {
        let kv = hi / group;
        for qi in 0..l {
            let qrow = &q[((hi * l + qi) * d) as usize..][..d as usize];
            let mut scores = Vec::new();
            for j in 0..s {
                if visible(offset + qi, j, window) {
                    let krow = &k[((kv * s + j) * d) as usize..][..d as usize];
                    let dot: f32 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                    scores.push((j, dot * scale));
                }
            }
            let max = scores.iter().map(|s| s.1).fold(f32::NEG_INFINITY, f32::max);
            let denom: f32 = scores.iter().map(|s| (s.1 - max).exp()).sum();
            for (j, sc) in scores {
                let p = (sc - max).exp() / denom;
                let vrow = &v[((kv * s + j) * d) as usize..][..d as usize];
                for x in 0..d as usize {
                    out[((hi * l + qi) * d) as usize + x] += p * vrow[x];
                }
            }
        }
    }
    out
}

#[test]
fn masked_attention_matches_loops() {
    let (h, kvh, d) = (4, 2, 8);
    let scale = (d as f32).powf(-0.5);
    let key = random::key(3).unwrap();
    for (n, &(l, offset, window)) in CASES.iter().enumerate() {
        let s = offset + l;
        let keys = random::split(&key, 3).unwrap();
        let k3 = random::split(&keys.1, 2).unwrap();
        let q = random::normal::<f32>(&[1, h, l, d], None, None, &keys.0).unwrap();
        let k = random::normal::<f32>(&[1, kvh, s, d], None, None, &k3.0).unwrap();
        let v = random::normal::<f32>(&[1, kvh, s, d], None, None, &k3.1).unwrap();
        let mask = create_attention_mask(l, offset, window).unwrap();
        let out = scaled_dot_product_attention(&q, &k, &v, scale, &mask).unwrap();
        let expected = reference_attention(&q, &k, &v, offset, window, scale);
        let got = host(&out);
        assert_eq!(got.len(), expected.len());
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                "case {n} (L={l} offset={offset} window={window:?}) element {i}: {a} vs {b}"
            );
        }
    }
}
