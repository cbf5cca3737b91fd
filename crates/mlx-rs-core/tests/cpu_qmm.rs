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
    cpu_quantized_matmul, cpu_quantized_matmul_add, cpu_quantized_matmul_with, isa_under, CpuQmm,
    Isa, Tuning,
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

/// Every instruction set this CPU has (the scalar fallback included).
fn isas() -> Vec<Isa> {
    [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx2Vnni,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Avx512Amx,
    ]
    .into_iter()
    .filter(|isa| isa_under(*isa) == *isa)
    .collect()
}

/// The float path's tunings: every instruction set this CPU has, each with
/// the row kernel only and with the many-row path (AMX tiles or `sgemm`)
/// from 2 rows.
fn float_tunings() -> Vec<Tuning> {
    isas()
        .into_iter()
        .flat_map(|max_isa| {
            [i32::MAX, 2].map(|gemm_rows| Tuning {
                max_isa,
                gemm_rows,
                int8: false,
            })
        })
        .collect()
}

#[test]
fn every_format_matches_dequantize_and_matmul() {
    let mut worst = 0.0f32;
    let mut seed = 0;
    for bits in [4, 8] {
        for group in [32, 64, 128] {
            // Rows shorter than 128 values; and whole blocks of 128 (1 to
            // 4 groups each) with a rest of one group (the AVX-512 4-bit
            // kernel's two parts).
            let ks = [3 * group, 256 + group];
            for (dtype, k) in [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16]
                .into_iter()
                .flat_map(|d| ks.map(|k| (d, k)))
            {
                let n = 75;
                seed += 1;
                let q = Quantized::new(n, k, group, bits, dtype, seed);
                for m in [1, 2, 7, 67] {
                    let x = normal(&[m, k], 1000 + seed);
                    let reference = q.reference(&x);
                    for tuning in float_tunings() {
                        let y = q.ours(&x, tuning);
                        assert_eq!(y.dtype(), Dtype::Float32);
                        let err = relative(&y, &reference);
                        worst = worst.max(err);
                        assert!(
                            err <= 1e-5,
                            "{bits}-bit, group {group}, k {k}, scales {dtype:?}, {m} \
                             rows, {tuning:?}: relative error {err:e}"
                        );
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

#[test]
fn residual_sum_is_the_product_plus_mlx_add_bit_for_bit() {
    // Rows through the row kernel (1, 3) and the many-row path (9, 20);
    // x with a leading axis; a residual that is a transposed view.
    for (bits, dtype) in [(4, Dtype::Float16), (8, Dtype::Float32)] {
        let q = Quantized::new(75, 96, 32, bits, dtype, 30);
        for m in [1, 3, 9, 20] {
            let x = normal(&[1, m, 96], 31);
            let residual = normal(&[1, 75, m], 32).transpose_axes(&[0, 2, 1]).unwrap();
            let fused = cpu_quantized_matmul_add(
                &x,
                &q.w,
                &q.scales,
                &q.biases,
                32,
                bits,
                CpuQmm::Ours,
                &residual,
            )
            .unwrap()
            .expect("taken: float32 on the CPU");
            let product =
                cpu_quantized_matmul(&x, &q.w, &q.scales, &q.biases, 32, bits, CpuQmm::Ours)
                    .unwrap()
                    .expect("taken on the CPU");
            let added = residual.add(&product).unwrap();
            assert_eq!(fused.shape(), added.shape());
            assert!(
                fused.eq_values(&added).unwrap(),
                "{bits}-bit, {m} rows: fused sum differs from product + add"
            );
        }
    }
    // Left to the caller: not asked for, a half-precision product or
    // residual, a residual that only broadcasts.
    let q = Quantized::new(75, 96, 32, 4, Dtype::Float32, 33);
    let x = normal(&[2, 96], 34);
    let residual = normal(&[2, 75], 35);
    let add = |x: &Array, r: &Array, scales: &Array, kernel| {
        cpu_quantized_matmul_add(x, &q.w, scales, &q.biases, 32, 4, kernel, r).unwrap()
    };
    assert!(add(&x, &residual, &q.scales, CpuQmm::Mlx).is_none());
    let half = |a: &Array| a.as_dtype(Dtype::Float16).unwrap();
    assert!(add(&x, &half(&residual), &q.scales, CpuQmm::Ours).is_none());
    let half_q = Quantized::new(75, 96, 32, 4, Dtype::Float16, 33);
    let half_product = cpu_quantized_matmul_add(
        &half(&x),
        &half_q.w,
        &half_q.scales,
        &half_q.biases,
        32,
        4,
        CpuQmm::Ours,
        &residual,
    );
    assert!(half_product.unwrap().is_none());
    assert!(add(&x, &normal(&[75], 36), &q.scales, CpuQmm::Ours).is_none());
}

/// The int8 path's x: per group, scale d = max|x| / 127 and codes
/// round-half-even(x * (127 / max|x|)), in float32 as the kernel computes
/// them. Returns (codes, d per group).
fn int8_codes(x: &[f32], group: usize) -> (Vec<i32>, Vec<f32>) {
    let mut codes = Vec::with_capacity(x.len());
    let mut scales = Vec::new();
    for g in x.chunks(group) {
        let amax = g.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let inv = if amax > 0.0 { 127.0f32 / amax } else { 0.0 };
        codes.extend(g.iter().map(|v| (v * inv).round_ties_even() as i32));
        scales.push(amax / 127.0f32);
    }
    (codes, scales)
}

/// The quantized matrix as integers q [n, k] and float32 scales and
/// biases [n, k / group].
fn unpacked(q: &Quantized, n: usize, k: usize) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let words = q.w.as_slice::<u32>().to_vec();
    let per_word = 32 / q.bits as usize;
    let mask = (1u32 << q.bits) - 1;
    let mut ints = Vec::with_capacity(n * k);
    for row in 0..n {
        for j in 0..k {
            let word = words[row * k / per_word + j / per_word];
            ints.push((word >> ((j % per_word) * q.bits as usize)) & mask);
        }
    }
    let f32s = |a: &Array| {
        a.as_dtype(Dtype::Float32)
            .unwrap()
            .as_slice::<f32>()
            .to_vec()
    };
    (ints, f32s(&q.scales), f32s(&q.biases))
}

/// The int8 path (`Tuning::int8`) against two references computed here in
/// float64 from the same quantized weights (w = s * q + b per group):
///
/// 1. W x̂, x̂ = d * codes (the int8 x above): the kernel's integer sums
///    are exact, so only its float32 arithmetic differs. Per output it
///    rounds each group's two terms (s * d * dot, b * xsum) a few times and
///    adds about 2G + 16 of them (G groups, 16 lanes): at most
///    (2G + 20) * 2^-24 * A (A: the sum of the terms' magnitudes, computed
///    here); allowed twice that. One wrong code or weight moves an output
///    by |s q d| (about A / sqrt(group) here), far above it; the test also
///    checks that x itself, unquantized, would fail it.
/// 2. W x, the exact product: the int8 rounding moves each x by at most
///    d / 2 (plus float32 error in x * (127 / max|x|), under 400 * 2^-24 d),
///    so |W x̂ - W x| <= sum_g d_g (1/2 + 400 * 2^-24) sum_j |w_j|, plus
///    the first bound.
///
/// For 4 and 8 bits, groups 32, 64 and 128, K = 3 and 8 groups (K = 32 mod
/// 64 at group 32: the AVX-512 kernel's half-step tail), 37 output rows
/// (not a multiple of the 4- and 2-row tiles), 1, 3, 4 and 17 rows of x
/// (the tiles of 4 x rows and their tails), scales in float32 and
/// bfloat16, and every instruction set this CPU has.
#[test]
fn int8_path_matches_float64_references_within_rounding_bounds() {
    let n = 37usize;
    let mut seed = 100;
    let mut worst_tight = 0.0f64;
    let mut worst_exact = 0.0f64;
    let mut unquantized_fails = false;
    for bits in [4, 8] {
        for group in [32usize, 64, 128] {
            for groups in [3usize, 8] {
                for dtype in [Dtype::Float32, Dtype::Bfloat16] {
                    let k = groups * group;
                    seed += 1;
                    let q = Quantized::new(n as i32, k as i32, group as i32, bits, dtype, seed);
                    let (ints, s, b) = unpacked(&q, n, k);
                    for m in [1usize, 3, 4, 17] {
                        let x = normal(&[m as i32, k as i32], 500 + seed);
                        let xs = x.as_slice::<f32>().to_vec();
                        let (codes, d) = int8_codes(&xs, group);
                        // [m, n] bounds and references.
                        let mut tight = vec![0.0f64; m * n];
                        let mut exact_tol = vec![0.0f64; m * n];
                        let mut ref_q = vec![0.0f64; m * n];
                        let mut ref_x = vec![0.0f64; m * n];
                        for i in 0..m {
                            for o in 0..n {
                                let (mut a, mut wabs_d) = (0.0f64, 0.0f64);
                                for g in 0..groups {
                                    let (sg, bg) =
                                        (s[o * groups + g] as f64, b[o * groups + g] as f64);
                                    let dg = d[i * groups + g] as f64;
                                    let (mut dot, mut csum, mut wabs) = (0i64, 0i64, 0.0f64);
                                    for j in g * group..(g + 1) * group {
                                        let qj = ints[o * k + j] as i64;
                                        let c = codes[i * k + j] as i64;
                                        dot += qj * c;
                                        csum += c;
                                        let w = sg * qj as f64 + bg;
                                        wabs += w.abs();
                                        ref_x[i * n + o] += w * xs[i * k + j] as f64;
                                    }
                                    let t1 = sg * dg * dot as f64;
                                    let t2 = bg * dg * csum as f64;
                                    ref_q[i * n + o] += t1 + t2;
                                    a += t1.abs() + t2.abs();
                                    wabs_d += dg * wabs;
                                }
                                let u = 2f64.powi(-24);
                                tight[i * n + o] = 2.0 * (2.0 * groups as f64 + 20.0) * u * a;
                                exact_tol[i * n + o] =
                                    wabs_d * (0.5 + 400.0 * u) + tight[i * n + o];
                            }
                        }
                        for i in 0..m * n {
                            if (ref_x[i] - ref_q[i]).abs() > tight[i] {
                                unquantized_fails = true;
                            }
                        }
                        for max_isa in isas() {
                            // Every row count through the int8 kernel.
                            let tuning = Tuning {
                                max_isa,
                                int8: true,
                                gemm_rows: i32::MAX,
                            };
                            let y = q.ours(&x, tuning);
                            assert_eq!(y.dtype(), Dtype::Float32);
                            let ys = y.as_slice::<f32>();
                            for i in 0..m * n {
                                let v = ys[i] as f64;
                                let e1 = (v - ref_q[i]).abs();
                                let e2 = (v - ref_x[i]).abs();
                                assert!(
                                    e1 <= tight[i] && e2 <= exact_tol[i],
                                    "{bits}-bit, group {group}, K {k}, scales {dtype:?}, \
                                     {m} rows, {max_isa:?}, output {i}: {v} vs W x̂ {} \
                                     (allowed {:e}) and W x {} (allowed {:e})",
                                    ref_q[i],
                                    tight[i],
                                    ref_x[i],
                                    exact_tol[i]
                                );
                                worst_tight = worst_tight.max(e1 / tight[i].max(1e-300));
                                worst_exact = worst_exact.max(e2 / exact_tol[i]);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        unquantized_fails,
        "the tight bound must tell x̂ from x, or it tests nothing"
    );
    eprintln!("int8 path: largest error / bound: {worst_tight:.3} (W x̂), {worst_exact:.3} (W x)");
}

/// Large products (shared among the pool's threads, tiles of 4 x 4) on
/// the int8 path: within 1% of the largest output of the float path's (the
/// int8 rounding of x moves outputs by about 0.3% of it here: codes of
/// 1/127 of each group's largest x, errors averaging out over K).
#[test]
fn int8_path_large_products_shared_among_threads() {
    for bits in [4, 8] {
        let q = Quantized::new(1100, 2048, 32, bits, Dtype::Float32, 40 + bits as u64);
        for m in [1, 3, 20, 70] {
            let x = normal(&[m, 2048], 50);
            let int8 = Tuning {
                int8: true,
                gemm_rows: i32::MAX,
                ..Tuning::default()
            };
            let err = relative(&q.ours(&x, int8), &q.reference(&x));
            assert!(err <= 1e-2, "{bits}-bit, {m} rows: {err:e}");
            assert!(
                err >= 1e-5,
                "{bits}-bit, {m} rows: x was not quantized ({err:e})"
            );
        }
    }
}

#[test]
fn ours_q8_is_a_choice_of_its_own() {
    assert_eq!("ours-q8".parse::<CpuQmm>(), Ok(CpuQmm::OursQ8));
    assert!(CpuQmm::OursQ8.is_ours() && CpuQmm::Ours.is_ours() && !CpuQmm::Mlx.is_ours());
    let q = Quantized::new(16, 128, 32, 4, Dtype::Float32, 60);
    let x = normal(&[1, 128], 61);
    let y = cpu_quantized_matmul(&x, &q.w, &q.scales, &q.biases, 32, 4, CpuQmm::OursQ8)
        .unwrap()
        .expect("taken on the CPU");
    let int8 = Tuning {
        int8: true,
        ..Tuning::default()
    };
    assert_eq!(y.as_slice::<f32>(), q.ours(&x, int8).as_slice::<f32>());
}

/// The many-row paths (AMX tiles where the CPU has them, `sgemm`) as
/// accurate as the float32 rows kernel on long rows: AMX's x in three
/// bfloat16 parts is float32's 24 bits (two parts would give about 6e-6
/// here, ten times the rows kernel's error).
#[test]
fn many_rows_keep_float32_accuracy() {
    for bits in [4, 8] {
        for group in [32, 128] {
            let k = 2048;
            let q = Quantized::new(300, k, group, bits, Dtype::Float16, 9 + bits as u64);
            // 300 rows: the AMX path takes them 256 at a time.
            let x = normal(&[300, k], 31);
            let reference = q.reference(&x);
            for tuning in float_tunings() {
                let err = relative(&q.ours(&x, tuning), &reference);
                assert!(
                    err <= 2e-6,
                    "{bits}-bit, group {group}, {tuning:?}: relative error {err:e}"
                );
            }
        }
    }
}
