//! Our CPU quantized product on a prefill's many rows, by path.
//!
//! `x [128, K] Wᵀ` for the 1B benchmark model's widest products (W
//! `[8192, 2048]`, the gate or up projection, and `[2048, 8192]`, the down
//! projection), 4- and 8-bit with groups of 32 (GGUF Q4_0 and Q8_0 as our
//! loader gives them), float16 scales. Paths: `sgemm` (tiles of W
//! dequantized for the BLAS, the kernel capped at AVX512-VNNI) and `best`
//! (what this CPU gets by default: AMX-BF16 tiles where it has them, else
//! the same `sgemm`). And where the many-row path starts: `x [m, 2048]`
//! for W `[2048, 2048]` 4-bit at 6 to 8 rows, by the row kernel (`rows`)
//! and by `best` from 2 rows. Group `cpu_qmv`: decode's one-row products
//! at SmolLM2's and the 1B model's shapes (4- and 8-bit). Each iteration
//! builds and evaluates one product; the weights are evaluated once,
//! before (so a small W stays in cache between iterations, as it does not
//! in a decode step).

use criterion::{criterion_group, criterion_main, Criterion};
use mistral_benches::measurement_time_for;
use mlx_rs::{ops::quantize, random, Array, Dtype, Stream};
use mlx_rs_core::cpu_qmm::{cpu_quantized_matmul_with, Isa, Tuning};

const ROWS: i32 = 128;

struct Product {
    w: Array,
    scales: Array,
    biases: Array,
    bits: i32,
}

fn product(n: i32, k: i32, bits: i32) -> Product {
    let key = random::key(u64::from(n as u32 + k as u32)).expect("key");
    let dense = random::normal::<f32>(&[n, k], None, None, &key).expect("weights");
    let (w, scales, biases) = quantize(&dense, 32, bits).expect("quantize");
    let scales = scales.as_dtype(Dtype::Float16).expect("scales");
    let biases = biases.as_dtype(Dtype::Float16).expect("biases");
    mlx_rs::transforms::eval([&w, &scales, &biases]).expect("eval weights");
    Product {
        w,
        scales,
        biases,
        bits,
    }
}

fn run(p: &Product, x: &Array, max_isa: Isa, gemm_rows: i32) {
    let tuning = Tuning {
        max_isa,
        gemm_rows,
        ..Tuning::default()
    };
    let y = cpu_quantized_matmul_with(
        x,
        &p.w,
        &p.scales,
        &p.biases,
        32,
        p.bits,
        tuning,
        &Stream::cpu(),
    )
    .expect("product");
    y.eval().expect("eval");
}

fn cpu_qmm(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_qmm");
    group.sample_size(10);
    for (n, k) in [(8192, 2048), (2048, 8192)] {
        let key = random::key(1).expect("key");
        let x = random::normal::<f32>(&[ROWS, k], None, None, &key).expect("x");
        x.eval().expect("eval x");
        for bits in [4, 8] {
            let p = product(n, k, bits);
            for (name, isa) in [("sgemm", Isa::Avx512Vnni), ("best", Isa::Avx512Amx)] {
                group.measurement_time(measurement_time_for(|| run(&p, &x, isa, 0)));
                group.bench_function(format!("{bits}bit_g32_{ROWS}x{k}x{n}/{name}"), |b| {
                    b.iter(|| run(&p, &x, isa, 0))
                });
            }
        }
    }
    let p = product(2048, 2048, 4);
    for m in [6, 7, 8] {
        let key = random::key(2).expect("key");
        let x = random::normal::<f32>(&[m, 2048], None, None, &key).expect("x");
        x.eval().expect("eval x");
        for (name, rows) in [("rows", i32::MAX), ("best", 2)] {
            group.measurement_time(measurement_time_for(|| run(&p, &x, Isa::Avx512Amx, rows)));
            group.bench_function(format!("4bit_g32_{m}x2048x2048/{name}"), |b| {
                b.iter(|| run(&p, &x, Isa::Avx512Amx, rows))
            });
        }
    }
    group.finish();
}

/// Decode's products (one row of x) at SmolLM2's and the 1B model's
/// shapes: the row kernel, each thread streaming its share of W.
fn cpu_qmv(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu_qmv");
    group.sample_size(20);
    for (n, k, bits) in [
        (1536, 576, 4),
        (576, 1536, 4),
        (49152, 576, 8),
        (8192, 2048, 4),
        (8192, 2048, 8),
    ] {
        let key = random::key(3).expect("key");
        let x = random::normal::<f32>(&[1, k], None, None, &key).expect("x");
        x.eval().expect("eval x");
        let p = product(n, k, bits);
        group.measurement_time(measurement_time_for(|| run(&p, &x, Isa::Avx512Amx, 0)));
        group.bench_function(format!("{bits}bit_g32_1x{k}x{n}"), |b| {
            b.iter(|| run(&p, &x, Isa::Avx512Amx, 0))
        });
    }
    group.finish();
}

criterion_group!(benches, cpu_qmm, cpu_qmv);
criterion_main!(benches);
