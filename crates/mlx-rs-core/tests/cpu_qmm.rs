//! Our CPU quantized product (`mlx_rs_core::cpu_qmm`) against MLX's own
//! `dequantize` followed by a float32 matmul, on random matrices.
//!
//! Every format the kernel takes (4 and 8 bits, groups of 32, 64 and 128,
//! scales in float32, float16 and bfloat16), rows of x 1, 2, 7 and 67 (the
//! SIMD kernel's 1-4 row blocks and its tail; 67 also through the
//! dequantize-and-sgemm path), 75 output rows (not a multiple of the
//! thread pool's chunks), K = 3 groups (not a multiple of 64 or of the
//! AVX-512 width at group 32), every instruction set this CPU has (the
//! scalar fallback included), and non-contiguous inputs (a transposed x,
//! row-offset slices of x and of the quantized matrix).
//!
//! Tolerance: the reference dequantizes into float32 (scales cast first,
//! so both sides use the same values) and multiplies in float32; ours
//! sums per group `s * (x . q) + b * sum(x)` in float32, another order of
//! the same terms. Measured differences are below 1e-6 of the output's
//! largest magnitude; allowed: 1e-5 of it (a wrong element, group or
//! scale moves outputs by 1e-2 and more). x in float16/bfloat16 gives an
//! output in that dtype: allowed one rounding of it (2^-10 / 2^-7 of the
//! largest magnitude).

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::{dequantize, quantize};
use mlx_rs::{random, Array, Dtype, Stream};
use mlx_rs_core::cpu_qmm::{
    best_isa, cpu_quantized_matmul, cpu_quantized_matmul_with, CpuQmm, Isa, Tuning,
};

fn normal(shape: &[i32], seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::normal::<f32>(shape, None, None, &key).unwrap()
}

struct Quantized {
    w: Array,
    scales: Array,
    biases: Array,
    group: i32,
    bits: i32,
}

impl Quantized {
    fn new(n: i32, k: i32, group: i32, bits: i32, dtype: Dtype, seed: u64) -> Quantized {
        let (w, scales, biases) = quantize(normal(&[n, k], seed), group, bits).unwrap();
        Quantized {
            w,
            scales: scales.as_dtype(dtype).unwrap(),
            biases: biases.as_dtype(dtype).unwrap(),
            group,
            bits,
        }
    }

    /// `x Wᵀ` by MLX: W dequantized into float32, a float32 matmul.
    fn reference(&self, x: &Array) -> Array {
        let f32 = |a: &Array| a.as_dtype(Dtype::Float32).unwrap();
        let dense = dequantize(
            &self.w,
            f32(&self.scales),
            &f32(&self.biases),
            self.group,
            self.bits,
        )
        .unwrap();
        f32(x).matmul(dense.transpose().unwrap()).unwrap()
    }

    fn ours(&self, x: &Array, tuning: Tuning) -> Array {
        cpu_quantized_matmul_with(
            x,
            &self.w,
            &self.scales,
            &self.biases,
            self.group,
            self.bits,
            tuning,
            &Stream::cpu(),
        )
        .unwrap()
    }
}

fn max_abs(a: &Array) -> f32 {
    a.abs().unwrap().max(None).unwrap().item_exact::<f32>()
}

/// max |ours - reference| / max |reference|.
fn relative(ours: &Array, reference: &Array) -> f32 {
    let ours = ours.as_dtype(Dtype::Float32).unwrap();
    assert_eq!(ours.shape(), reference.shape());
    max_abs(&ours.subtract(reference).unwrap()) / max_abs(reference).max(1e-30)
}

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|isa| *isa <= best_isa())
        .collect()
}

#[test]
fn every_format_matches_dequantize_and_matmul() {
    let mut worst = 0.0f32;
    let mut seed = 0;
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            for dtype in [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16] {
                let (n, k) = (75, 3 * group);
                seed += 1;
                let q = Quantized::new(n, k, group, bits, dtype, seed);
                for m in [1, 2, 7, 67] {
                    let x = normal(&[m, k], 1000 + seed);
                    let reference = q.reference(&x);
                    for max_isa in isas() {
                        // Both paths: SIMD rows only, and sgemm from 2 rows.
                        for gemm_rows in [i32::MAX, 2] {
                            let tuning = Tuning { max_isa, gemm_rows };
                            let y = q.ours(&x, tuning);
                            assert_eq!(y.dtype(), Dtype::Float32);
                            let err = relative(&y, &reference);
                            worst = worst.max(err);
                            assert!(
                                err <= 1e-5,
                                "{bits}-bit, group {group}, scales {dtype:?}, {m} rows, \
                                 {tuning:?}: relative error {err:e}"
                            );
                        }
                    }
                }
            }
        }
    }
    eprintln!("largest relative error: {worst:e}");
}

/// Products of at least 2^21 weights are shared among the kernel's
/// threads (smaller ones run on one): 1100 x 2048, both paths.
#[test]
fn large_products_shared_among_threads_match() {
    for bits in [4, 8] {
        let q = Quantized::new(1100, 2048, 64, bits, Dtype::Bfloat16, 20 + bits as u64);
        for m in [1, 3, 20] {
            let x = normal(&[m, 2048], 30);
            let err = relative(&q.ours(&x, Tuning::default()), &q.reference(&x));
            assert!(err <= 1e-5, "{bits}-bit, {m} rows: {err:e}");
        }
    }
}

#[test]
fn half_precision_inputs_give_their_dtype_within_one_rounding() {
    for (dtype, allowed) in [
        (Dtype::Float16, 2f32.powi(-10)),
        (Dtype::Bfloat16, 2f32.powi(-7)),
    ] {
        for bits in [4, 8] {
            let q = Quantized::new(40, 128, 64, bits, dtype, 7);
            let x = normal(&[3, 128], 8).as_dtype(dtype).unwrap();
            for gemm_rows in [i32::MAX, 2] {
                let tuning = Tuning {
                    gemm_rows,
                    ..Tuning::default()
                };
                let y = q.ours(&x, tuning);
                assert_eq!(y.dtype(), dtype, "the output keeps x's dtype");
                let err = relative(&y, &q.reference(&x));
                assert!(err <= allowed, "{dtype:?} {bits}-bit: {err:e}");
            }
        }
    }
    // Mixed: float32 x with bfloat16 scales gives float32, as MLX's does.
    let q = Quantized::new(16, 64, 32, 4, Dtype::Bfloat16, 9);
    let y = q.ours(&normal(&[1, 64], 10), Tuning::default());
    assert_eq!(y.dtype(), Dtype::Float32);
}

#[test]
fn non_contiguous_inputs_and_leading_axes() {
    let (n, k) = (48, 256);
    for bits in [4, 8] {
        let big = Quantized::new(n + 5, k, 64, bits, Dtype::Float16, 11);
        // Rows 3..3+n of the quantized matrix: views at an offset.
        let q = Quantized {
            w: big.w.index(3..3 + n),
            scales: big.scales.index(3..3 + n),
            biases: big.biases.index(3..3 + n),
            group: 64,
            bits,
        };
        for m in [1, 5, 20] {
            // A transposed view and a row-offset slice.
            let xt = normal(&[k, m], 12).transpose().unwrap();
            let xs = normal(&[m + 2, k], 13).index(2..);
            for x in [xt, xs] {
                for gemm_rows in [i32::MAX, 2] {
                    let tuning = Tuning {
                        gemm_rows,
                        ..Tuning::default()
                    };
                    let err = relative(&q.ours(&x, tuning), &q.reference(&x));
                    assert!(err <= 1e-5, "{bits}-bit, {m} rows: {err:e}");
                }
            }
        }
    }
    // x [2, 3, K]: the leading axes stay.
    let q = Quantized::new(24, 128, 32, 4, Dtype::Float32, 14);
    let x = normal(&[2, 3, 128], 15);
    let y = q.ours(&x, Tuning::default());
    assert_eq!(y.shape(), &[2, 3, 24]);
    assert!(relative(&y, &q.reference(&x)) <= 1e-5);
}

#[test]
fn refuses_what_it_does_not_compute_and_defers_when_not_asked() {
    let q = Quantized::new(16, 128, 64, 4, Dtype::Float32, 16);
    let x = normal(&[1, 128], 17);
    // A group size it does not take; x of the wrong width.
    let bad_group = Quantized {
        group: 16,
        ..Quantized::new(16, 128, 64, 4, Dtype::Float32, 16)
    };
    let refused = cpu_quantized_matmul_with(
        &x,
        &bad_group.w,
        &bad_group.scales,
        &bad_group.biases,
        16,
        4,
        Tuning::default(),
        &Stream::cpu(),
    );
    assert!(refused.is_err());
    let narrow = normal(&[1, 64], 18);
    let refused = cpu_quantized_matmul_with(
        &narrow,
        &q.w,
        &q.scales,
        &q.biases,
        64,
        4,
        Tuning::default(),
        &Stream::cpu(),
    );
    let message = refused.expect_err("mismatched shapes").to_string();
    assert!(message.contains("shapes"), "{message}");
    // Not asked for: None, the caller uses MLX's kernel.
    let none = cpu_quantized_matmul(&x, &q.w, &q.scales, &q.biases, 64, 4, CpuQmm::Mlx).unwrap();
    assert!(none.is_none());
    // Asked for, on this CPU build's default stream: ours.
    let ours = cpu_quantized_matmul(&x, &q.w, &q.scales, &q.biases, 64, 4, CpuQmm::Ours)
        .unwrap()
        .expect("taken on the CPU");
    assert!(relative(&ours, &q.reference(&x)) <= 1e-5);
}
