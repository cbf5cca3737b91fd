//! Our fused decode step (`DecodeRow`, through
//! `KeyValueCache::attend_decode_row`) against the same step as separate
//! operations with our CPU kernels (RoPE on queries and keys, the cache's
//! update, one-query attention), which `tests/cpu_fused.rs` checks against
//! MLX's. The fused kernel does the same arithmetic, so the heads and the
//! cache's contents must be the same bits.
//!
//! Cases: as many kv heads as query heads or a third of them; head
//! dimensions 64 and 128; RoPE traditional and not, partial, with given
//! frequencies (llama3) and a position scale; caches of 1, 5 and 250
//! positions, stepped until full; a cache whose buffers another array
//! still holds (then copied, the held one left as it was); and the cases
//! it refuses (a full buffer, MLX's kernels asked for, YaRN's input scale).

use mlx_rs::{ops::split_at_indices, random, transforms::eval, Array, Dtype};
use mlx_rs_core::cpu_decode_row::{decode_row, DecodeRow};
use mlx_rs_core::cpu_fused::{self, CpuFast};
use mlx_rs_core::{initialize_rope, KVCache, KeyValueCache, Rope, RopeScaling, SdpaMask};

fn normal(shape: &[i32], seed: u64) -> Array {
    let key = random::key(seed).unwrap();
    random::normal::<f32>(shape, None, None, &key).unwrap()
}

fn bits(a: &Array) -> Vec<u32> {
    // A contiguous copy (cache prefixes are strided views).
    let a = a.as_dtype(Dtype::Float32).unwrap().reshape(&[-1]).unwrap();
    a.eval().unwrap();
    a.as_slice::<f32>().iter().map(|v| v.to_bits()).collect()
}

struct Layer {
    hq: i32,
    hkv: i32,
    d: i32,
    rope: Rope,
}

impl Layer {
    fn row<'a>(&'a self, qkv: &'a Array, kind: CpuFast) -> DecodeRow<'a> {
        DecodeRow {
            qkv,
            n_heads: self.hq,
            n_kv_heads: self.hkv,
            rope: &self.rope,
            scale: (self.d as f32).powf(-0.5),
            kind,
        }
    }

    /// The step as separate operations, our kernels where they apply.
    fn separate(&self, qkv: &Array, cache: &mut KVCache) -> Array {
        let heads = qkv
            .reshape(&[1, self.hq + 2 * self.hkv, 1, self.d])
            .unwrap();
        let parts = split_at_indices(&heads, &[self.hq, self.hq + self.hkv], 1).unwrap();
        let offset = cache.offset();
        let q = self.rope.forward(&parts[0], offset).unwrap();
        let k = self.rope.forward(&parts[1], offset).unwrap();
        let scale = (self.d as f32).powf(-0.5);
        let mut attend =
            |q: &Array, kv: &_, m: &SdpaMask| cpu_fused::attention(q, kv, scale, m, CpuFast::Ours);
        let out = cache
            .attend(&q, &k, &parts[2], &SdpaMask::None, None, &mut attend)
            .unwrap();
        out.reshape(&[1, self.hq * self.d]).unwrap()
    }

    /// Two caches holding the same `n` random positions.
    fn caches(&self, n: i32, seed: u64) -> (KVCache, KVCache) {
        let k = normal(&[1, self.hkv, n, self.d], seed);
        let v = normal(&[1, self.hkv, n, self.d], seed + 1);
        let (mut a, mut b) = (KVCache::new(), KVCache::new());
        a.update_and_fetch(&k, &v).unwrap();
        b.update_and_fetch(&k, &v).unwrap();
        eval(a.state().iter().chain(b.state().iter())).unwrap();
        (a, b)
    }
}

fn rope(dims: i32, traditional: bool, scaling: RopeScaling) -> Rope {
    initialize_rope(dims, 10000.0, traditional, scaling)
        .unwrap()
        .with_cpu_fast(CpuFast::Ours)
}

fn layers() -> Vec<Layer> {
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    vec![
        Layer {
            hq: 9,
            hkv: 3,
            d: 64,
            rope: rope(64, false, RopeScaling::None),
        },
        Layer {
            hq: 4,
            hkv: 4,
            d: 128,
            rope: rope(128, true, RopeScaling::None),
        },
        Layer {
            hq: 8,
            hkv: 2,
            d: 64,
            rope: rope(32, false, RopeScaling::Linear { factor: 4.0 }),
        },
        Layer {
            hq: 6,
            hkv: 2,
            d: 128,
            rope: rope(128, false, llama3),
        },
    ]
}

#[test]
fn fused_step_is_the_separate_steps_bit_for_bit() {
    for (i, layer) in layers().iter().enumerate() {
        for (n, steps) in [(1, 3), (5, 2), (250, 6)] {
            let (mut fused, mut apart) = layer.caches(n, 10 * i as u64 + n as u64);
            for step in 0..steps {
                let what = format!("layer {i}, {n} positions, step {step}");
                let qkv = normal(&[1, (layer.hq + 2 * layer.hkv) * layer.d], 1000 + step);
                let ours = fused
                    .attend_decode_row(&mut |k, v, o| {
                        decode_row(&layer.row(&qkv, CpuFast::Ours), k, v, o)
                    })
                    .unwrap()
                    .unwrap_or_else(|| panic!("{what}: the fused step was refused"));
                let theirs = layer.separate(&qkv, &mut apart);
                assert_eq!(bits(&ours), bits(&theirs), "{what}: heads");
                assert_eq!(fused.offset(), apart.offset(), "{what}: offset");
                let (fk, fv) = fused.filled().unwrap().unwrap();
                let (ak, av) = apart.filled().unwrap().unwrap();
                assert_eq!(bits(&fk), bits(&ak), "{what}: keys");
                assert_eq!(bits(&fv), bits(&av), "{what}: values");
            }
        }
    }
}

#[test]
fn held_buffers_are_copied_not_written() {
    let layer = &layers()[0];
    let (mut fused, mut apart) = layer.caches(5, 77);
    let held = fused.state();
    let before: Vec<Vec<u32>> = held.iter().map(bits).collect();
    let qkv = normal(&[1, (layer.hq + 2 * layer.hkv) * layer.d], 78);
    let ours = fused
        .attend_decode_row(&mut |k, v, o| decode_row(&layer.row(&qkv, CpuFast::Ours), k, v, o))
        .unwrap()
        .unwrap();
    let theirs = layer.separate(&qkv, &mut apart);
    assert_eq!(bits(&ours), bits(&theirs));
    let after: Vec<Vec<u32>> = held.iter().map(bits).collect();
    assert_eq!(before, after, "a buffer another array holds was written");
    let (fk, _) = fused.filled().unwrap().unwrap();
    let (ak, _) = apart.filled().unwrap().unwrap();
    assert_eq!(bits(&fk), bits(&ak));
}

#[test]
fn refuses_what_it_does_not_compute() {
    let layer = &layers()[0];
    let qkv = normal(&[1, (layer.hq + 2 * layer.hkv) * layer.d], 5);
    // A full buffer: the separate update grows it.
    let (mut full, _) = layer.caches(KVCache::STEP, 6);
    assert!(full
        .attend_decode_row(&mut |k, v, o| decode_row(&layer.row(&qkv, CpuFast::Ours), k, v, o))
        .unwrap()
        .is_none());
    assert_eq!(
        full.offset(),
        KVCache::STEP,
        "a refused step stored something"
    );
    // MLX's kernels asked for, an empty cache, a half-precision row.
    let (mut cache, _) = layer.caches(3, 7);
    assert!(cache
        .attend_decode_row(&mut |k, v, o| decode_row(&layer.row(&qkv, CpuFast::Mlx), k, v, o))
        .unwrap()
        .is_none());
    assert!(KVCache::new()
        .attend_decode_row(&mut |k, v, o| decode_row(&layer.row(&qkv, CpuFast::Ours), k, v, o))
        .unwrap()
        .is_none());
    let half = qkv.as_dtype(Dtype::Float16).unwrap();
    assert!(cache
        .attend_decode_row(&mut |k, v, o| decode_row(&layer.row(&half, CpuFast::Ours), k, v, o))
        .unwrap()
        .is_none());
    // YaRN scales RoPE's input: left to the separate operations.
    let yarn = Layer {
        rope: rope(
            64,
            false,
            RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 4096.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 0.0,
            },
        ),
        hq: 9,
        hkv: 3,
        d: 64,
    };
    assert!(cache
        .attend_decode_row(&mut |k, v, o| decode_row(&yarn.row(&qkv, CpuFast::Ours), k, v, o))
        .unwrap()
        .is_none());
    assert_eq!(cache.offset(), 3, "a refused step stored something");
}
