//! Our CPU kernels for the fast ops (`mlx_rs_core::cpu_fused`) against
//! MLX's own `fast::rms_norm`, `fast::rope` and
//! `fast::scaled_dot_product_attention`, which on the CPU compute their
//! decomposed fallback graphs, on random inputs.
//!
//! Cases: float32, float16 and bfloat16 inputs; rows of several widths;
//! RoPE traditional and not, partial `dims`, a base or given frequencies,
//! a position scale, offsets 0 to 4000, one and several positions;
//! attention with as many kv heads as query heads or a third of them,
//! 1 to 300 keys, batch 2; strided inputs (transposed heads, slices of a
//! larger cache).
//!
//! Tolerances, as a fraction of the reference's largest magnitude, with
//! `eps` the dtype's machine epsilon (2^-23, 2^-10, 2^-7):
//! - RMSNorm: 8 eps. Float32: the sum of squares in another order and
//!   1/sqrt against MLX's rsqrt, a few roundings. Half types: the result
//!   is rounded twice on both sides (after normalizing, after the weight).
//! - RoPE: 8 eps + 4 p eps_f32 for positions up to p: both sides compute
//!   the angle p / freq in float32 as the product of a rounded frequency
//!   (exp, or 1 / freqs) and p, so its error grows with p (libm's exp
//!   against MLX's approximation: measured 1.2e-4 at p = 4000, where each
//!   side is 6e-5 from the exact cosine); then one rounding to the dtype.
//! - Attention: 8 eps for half types (MLX rounds the scaled queries, the
//!   scores and the probabilities to the dtype; ours rounds once), 64 eps
//!   in float32 (sums of 64 products and of up to 300 weights in another
//!   order, libm's exp against MLX's).
//! - SwiGLU (float32 only): 8 eps. Both sides round exp (ours a Cephes
//!   polynomial, MLX its own approximation; about 1 ulp each), the
//!   sigmoid's sum and quotient and two products.
//! - Log-sum-exp (float32 only): 16 eps of max(1, |result|). Both sides
//!   round exp (about 1 ulp each) and sum up to 49152 terms in another
//!   order; the log then adds the sum's relative error as an absolute
//!   one.
//!   A wrong head, pair or sign gives errors of order 1.

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{fast, nn::silu, random, Array, Dtype, Stream};
use mlx_rs_core::cpu_fused::{
    cpu_decode_attention, cpu_logsumexp, cpu_rms_norm, cpu_rope, cpu_swiglu,
};

fn normal(shape: &[i32], seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::normal::<f32>(shape, None, None, &key).unwrap()
}

fn eps(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Float32 => f64::from(f32::EPSILON),
        Dtype::Float16 => 2f64.powi(-10),
        _ => 2f64.powi(-7),
    }
}

/// max |a - b| / max |b|, both read as float32.
fn relative(a: &Array, b: &Array) -> f64 {
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.dtype(), b.dtype());
    let f = |x: &Array| x.as_dtype(Dtype::Float32).unwrap();
    let (a, b) = (f(a), f(b));
    let diff = a.subtract(&b).unwrap().abs().unwrap().max(None).unwrap();
    let scale = b.abs().unwrap().max(None).unwrap();
    f64::from(diff.item_exact::<f32>()) / f64::from(scale.item_exact::<f32>()).max(1e-30)
}

const DTYPES: [Dtype; 3] = [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16];

#[test]
fn rms_norm_matches_mlx() {
    let cpu = Stream::cpu();
    for dtype in DTYPES {
        for (rows, d) in [(1, 576), (3, 64), (5, 100), (2, 4096)] {
            let x = normal(&[rows, d], 1)
                .multiply(Array::from_f32(3.0))
                .unwrap();
            let x = x.as_dtype(dtype).unwrap();
            let w = normal(&[d], 2).as_dtype(dtype).unwrap();
            for eps_ in [1e-5f32, 1e-6] {
                let ours = cpu_rms_norm(&x, &w, eps_, &cpu).unwrap();
                let theirs = fast::rms_norm(&x, Some(&w), eps_).unwrap();
                let err = relative(&ours, &theirs);
                eprintln!("rms_norm {dtype:?} [{rows}, {d}]: {err:.2e}");
                assert!(
                    err <= 8.0 * eps(dtype),
                    "rms_norm {dtype:?} [{rows}, {d}]: {err:e}"
                );
            }
        }
        // A strided input: the columns of a transposed matrix.
        let x = normal(&[64, 3], 3)
            .as_dtype(dtype)
            .unwrap()
            .transpose()
            .unwrap();
        let w = normal(&[64], 4).as_dtype(dtype).unwrap();
        let err = relative(
            &cpu_rms_norm(&x, &w, 1e-5, &cpu).unwrap(),
            &fast::rms_norm(&x, Some(&w), 1e-5).unwrap(),
        );
        assert!(
            err <= 8.0 * eps(dtype),
            "rms_norm {dtype:?} transposed: {err:e}"
        );
    }
}

#[test]
fn rope_matches_mlx() {
    let cpu = Stream::cpu();
    let freqs = normal(&[32], 9)
        .abs()
        .unwrap()
        .add(Array::from_f32(0.5))
        .unwrap();
    for dtype in DTYPES {
        for traditional in [false, true] {
            for (l, dims, offset, scale, with_freqs) in [
                (1, 64, 0, 1.0f32, false),
                (1, 64, 17, 1.0, false),
                (1, 64, 4000, 1.0, false),
                (7, 64, 100, 1.0, false),
                (5, 32, 3, 1.0, false),
                (3, 64, 250, 0.25, false),
                (2, 64, 40, 1.0, true),
            ] {
                let x = normal(&[2, 3, l, 64], 5).as_dtype(dtype).unwrap();
                let base = 10000.0f32;
                let f = with_freqs.then_some(&freqs);
                let b = (!with_freqs).then_some(base);
                let ours = cpu_rope(&x, dims, traditional, base, scale, offset, f, &cpu).unwrap();
                let theirs = fast::rope(&x, dims, traditional, b, scale, offset, f).unwrap();
                let err = relative(&ours, &theirs);
                let p = (offset + l) as f64 * f64::from(scale);
                let tol = 8.0 * eps(dtype) + 4.0 * p * eps(Dtype::Float32);
                eprintln!(
                    "rope {dtype:?} trad {traditional} L {l} dims {dims} offset {offset} \
                     scale {scale} freqs {with_freqs}: {err:.2e} (allowed {tol:.1e})"
                );
                assert!(
                    err <= tol,
                    "rope {dtype:?} {traditional} {l} {dims} {offset}: {err:e}"
                );
            }
        }
        // Heads as a decode step has them: [1, 1, H, D] transposed.
        let x = normal(&[1, 1, 9, 64], 6)
            .as_dtype(dtype)
            .unwrap()
            .transpose_axes(&[0, 2, 1, 3])
            .unwrap();
        let ours = cpu_rope(&x, 64, false, 1e5, 1.0, 12, None, &cpu).unwrap();
        let theirs = fast::rope(&x, 64, false, Some(1e5), 1.0, 12, None).unwrap();
        let err = relative(&ours, &theirs);
        assert!(
            err <= 64.0 * eps(dtype),
            "rope {dtype:?} transposed: {err:e}"
        );
        // Several positions through a transposed [B, L, H, D].
        let x = normal(&[2, 5, 4, 64], 7)
            .as_dtype(dtype)
            .unwrap()
            .transpose_axes(&[0, 2, 1, 3])
            .unwrap();
        let ours = cpu_rope(&x, 64, false, 1e4, 1.0, 3, None, &cpu).unwrap();
        let theirs = fast::rope(&x, 64, false, Some(1e4), 1.0, 3, None).unwrap();
        let err = relative(&ours, &theirs);
        assert!(
            err <= 64.0 * eps(dtype),
            "rope {dtype:?} [B, L, H, D]: {err:e}"
        );
    }
}

#[test]
fn decode_attention_matches_mlx() {
    let cpu = Stream::cpu();
    for dtype in DTYPES {
        let tol = if dtype == Dtype::Float32 { 64.0 } else { 8.0 } * eps(dtype);
        for (b, hq, hkv, n, d) in [
            (1, 9, 3, 1, 64),
            (1, 9, 3, 37, 64),
            (2, 4, 4, 300, 32),
            (1, 8, 2, 130, 128),
        ] {
            let q = normal(&[b, hq, 1, d], 11).as_dtype(dtype).unwrap();
            let k = normal(&[b, hkv, n, d], 12).as_dtype(dtype).unwrap();
            let v = normal(&[b, hkv, n, d], 13).as_dtype(dtype).unwrap();
            let scale = (d as f32).powf(-0.5);
            let ours = cpu_decode_attention(&q, &k, &v, scale, &cpu).unwrap();
            let theirs = fast::scaled_dot_product_attention(&q, &k, &v, scale, None, None).unwrap();
            let err = relative(&ours, &theirs);
            eprintln!("attention {dtype:?} B {b} Hq {hq} Hkv {hkv} N {n} D {d}: {err:.2e}");
            assert!(
                err <= tol,
                "attention {dtype:?} {b} {hq} {hkv} {n} {d}: {err:e}"
            );
        }
        // Keys and values as a cache returns them: the first n positions of
        // a larger buffer.
        let q = normal(&[1, 6, 1, 64], 14).as_dtype(dtype).unwrap();
        let kb = normal(&[1, 2, 256, 64], 15).as_dtype(dtype).unwrap();
        let vb = normal(&[1, 2, 256, 64], 16).as_dtype(dtype).unwrap();
        let (k, v) = (kb.index((.., .., ..75, ..)), vb.index((.., .., ..75, ..)));
        let ours = cpu_decode_attention(&q, &k, &v, 0.125, &cpu).unwrap();
        let theirs = fast::scaled_dot_product_attention(&q, &k, &v, 0.125, None, None).unwrap();
        let err = relative(&ours, &theirs);
        assert!(err <= tol, "attention {dtype:?} cache slice: {err:e}");
    }
}

#[test]
fn logsumexp_matches_mlx() {
    let cpu = Stream::cpu();
    let neg_inf = Array::from_f32(f32::NEG_INFINITY);
    let mut cases: Vec<(String, Array)> = Vec::new();
    for (rows, n, spread) in [
        (1, 49152, 5.0),
        (3, 100, 1.0),
        (2, 7, 30.0),
        (1, 1, 1.0),
        (2, 33, 1e4),
    ] {
        let x = normal(&[rows, n], 21)
            .multiply(Array::from_f32(spread))
            .unwrap();
        cases.push((format!("[{rows}, {n}] x {spread}"), x));
    }
    // Some entries -inf (masked logits), and a whole row of them.
    let x = normal(&[2, 40], 22);
    let idx = mlx_rs::ops::arange::<_, f32>(None, 40, None).unwrap();
    let masked = mlx_rs::ops::select(idx.lt(Array::from_f32(13.0)).unwrap(), &neg_inf, &x).unwrap();
    cases.push(("some -inf".into(), masked));
    let all = mlx_rs::ops::full::<f32>(&[1, 20], &neg_inf).unwrap();
    cases.push(("all -inf".into(), all));
    // A strided view: the columns of a transposed matrix.
    cases.push(("transposed".into(), normal(&[64, 3], 23).t()));
    for (what, x) in cases {
        let ours = cpu_logsumexp(&x, &cpu).unwrap();
        let theirs = x.logsumexp_axis(-1, true).unwrap();
        assert_eq!(ours.shape(), theirs.shape(), "{what}");
        let (o, t) = (
            ours.as_slice::<f32>().to_vec(),
            theirs.as_slice::<f32>().to_vec(),
        );
        for (a, b) in o.iter().zip(&t) {
            if b.is_infinite() {
                assert_eq!(a, b, "logsumexp {what}");
                continue;
            }
            let err = f64::from((a - b).abs()) / f64::from(b.abs()).max(1.0);
            eprintln!("logsumexp {what}: {err:.2e}");
            assert!(
                err <= 16.0 * eps(Dtype::Float32),
                "logsumexp {what}: {a} against {b}"
            );
        }
    }
}

#[test]
fn swiglu_matches_mlx() {
    let cpu = Stream::cpu();
    let tol = 8.0 * eps(Dtype::Float32);
    let check = |gate: &Array, up: &Array, what: &str| {
        let ours = cpu_swiglu(gate, up, &cpu).unwrap();
        let theirs = silu(gate).unwrap().multiply(up).unwrap();
        let err = relative(&ours, &theirs);
        eprintln!("swiglu {what}: {err:.2e}");
        assert!(err <= tol, "swiglu {what}: {err:e}");
    };
    // One decode row, rows whose width is not a multiple of 16, wide values.
    for (shape, spread) in [
        (vec![1, 1, 1536], 3.0),
        (vec![3, 100], 8.0),
        (vec![2, 7], 30.0),
    ] {
        let g = normal(&shape, 21)
            .multiply(Array::from_f32(spread))
            .unwrap();
        let u = normal(&shape, 22);
        check(&g, &u, &format!("{shape:?} x {spread}"));
    }
    // Past exp's range both ways (silu is then 0 or the gate itself).
    let g = Array::from_slice(
        &[
            -200.0f32, -104.5, -89.0, -88.5, -20.0, -1e-3, 0.0, 1e-3, 20.0, 88.5, 89.0, 200.0,
        ],
        &[1, 12],
    );
    check(&g, &normal(&[1, 12], 23), "edges");
    // The halves of a stacked gate/up product (views), and a transposed
    // (strided) gate.
    let both = normal(&[2, 64], 24);
    let (g, u) = (both.index((.., ..32)), both.index((.., 32..)));
    check(&g, &u, "halves of one product");
    let gt = normal(&[32, 2], 25).transpose().unwrap();
    check(&gt, &u, "transposed gate");
}

#[test]
fn refuses_what_it_does_not_compute() {
    let cpu = Stream::cpu();
    let x = normal(&[2, 64], 1);
    assert!(cpu_rms_norm(&x, &normal(&[32], 2), 1e-5, &cpu).is_err());
    let q = normal(&[1, 4, 2, 64], 3);
    let k = normal(&[1, 2, 5, 64], 4);
    assert!(cpu_decode_attention(&q, &k, &k, 0.1, &cpu).is_err());
    let x = normal(&[1, 2, 1, 64], 5);
    assert!(cpu_rope(&x, 65, false, 1e4, 1.0, 0, None, &cpu).is_err());
    let g = normal(&[2, 8], 6);
    assert!(cpu_swiglu(&g, &normal(&[2, 9], 7), &cpu).is_err(), "shapes");
    let half = g.as_dtype(Dtype::Float16).unwrap();
    assert!(cpu_swiglu(&half, &half, &cpu).is_err(), "float16");
    assert!(cpu_logsumexp(&half, &cpu).is_err(), "float16");
    assert!(
        cpu_logsumexp(&normal(&[2, 0], 8), &cpu).is_err(),
        "empty rows"
    );
}
