//! Criterion benchmarks of mistral-mlx live in `benches/`; run them with
//! `cargo xtask bench` (or `cargo bench -p mistral-benches`).
//!
//! Each file under `benches/benches/` measures one piece of inference:
//! - `forward`: the whole model, prefill and one decode step;
//! - `layer`: one decoder layer, prefill and one decode step;
//! - `attention`: MLX's fused attention of one query over a long cache;
//! - `cache`: one step written into a key/value cache;
//! - `sampling`: drawing a token from log-probabilities;
//! - `tokenizer`: encoding, decoding and streaming detokenization.
//!
//! The model-based ones use the demo model (`cargo xtask demo-model`), or the
//! model directory named by `MISTRAL_MLX_BENCH_MODEL`. This library holds
//! what several of them share.

#![deny(missing_docs)]

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mistral_loader::{LoadError, Tokenizer};
use mistral_model::Mistral;
use mlx_rs::{random, Array, Dtype};

/// The model directory the benchmarks run: `MISTRAL_MLX_BENCH_MODEL`, else
/// the demo model at `<workspace>/models/smollm2`.
pub fn bench_model_dir() -> PathBuf {
    std::env::var_os("MISTRAL_MLX_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2"))
}

/// The benchmark model (or its tokenizer) could not be loaded from
/// [`bench_model_dir`].
///
/// `Debug` prints the same text as `Display`, so that a benchmark's
/// `.expect(...)` shows the hint on how to get the model.
pub struct BenchModelError {
    /// The directory that was tried.
    pub dir: PathBuf,
    /// Why loading failed (boxed: `LoadError` is large).
    pub source: Box<LoadError>,
}

impl fmt::Display for BenchModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load the benchmark model {}: {}\n\
             run `cargo xtask demo-model` or set MISTRAL_MLX_BENCH_MODEL",
            self.dir.display(),
            self.source
        )
    }
}

impl fmt::Debug for BenchModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BenchModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Loads the model in [`bench_model_dir`] in its checkpoint's dtype.
pub fn load_bench_model() -> Result<Mistral, BenchModelError> {
    let dir = bench_model_dir();
    mistral_loader::load_model(&dir).map_err(|source| BenchModelError {
        dir,
        source: Box::new(source),
    })
}

/// Loads the tokenizer of the model in [`bench_model_dir`].
pub fn load_bench_tokenizer() -> Result<Tokenizer, BenchModelError> {
    let dir = bench_model_dir();
    mistral_loader::load_tokenizer(&dir).map_err(|source| BenchModelError {
        dir,
        source: Box::new(source),
    })
}

/// A fixed prompt of `len` token ids below `vocab`, shape `[1, len]`, `int32`
/// (spread over the vocabulary, the same on every run).
pub fn prompt_ids(len: i32, vocab: i32) -> Array {
    let ids: Vec<i32> = (0..len)
        .map(|i| ((i64::from(i) * 7919 + 13) % i64::from(vocab.max(1))) as i32)
        .collect();
    Array::from_slice(&ids, &[1, len])
}

/// Standard normal values of `shape` drawn with the PRNG key of `seed`, cast
/// to `dtype` and evaluated, so that building inputs stays out of the timed
/// part of a benchmark.
pub fn random_normal(shape: &[i32], dtype: Dtype, seed: u64) -> mlx_rs::error::Result<Array> {
    let key = random::key(seed)?;
    let values = random::normal::<f32>(shape, None, None, &key)?.as_dtype(dtype)?;
    values.eval()?;
    Ok(values)
}

/// Criterion's default measurement time.
const DEFAULT_MEASUREMENT_TIME: Duration = Duration::from_secs(5);

/// Runs `routine` once (a warm-up, and the set-up a benchmark may need) and
/// returns a criterion measurement time that fits it: criterion's default of
/// 5 s, or room for 2.5 calls when one call takes longer than 2 s.
///
/// Why: with `--quick`, criterion first times a single call and, when that
/// alone exceeds the measurement time, reports that one sample, on which its
/// HTML plots panic (`assertion failed: slice.len() > 1`, criterion.rs issue
/// #658). With room for 2.5 calls it times one call, then two, and so has two
/// samples. A full prefill on a slow CPU takes that long.
pub fn measurement_time_for(routine: impl FnOnce()) -> Duration {
    let start = Instant::now();
    routine();
    measurement_time(start.elapsed())
}

/// The measurement time for a routine whose one call takes `once` (see
/// [`measurement_time_for`]).
fn measurement_time(once: Duration) -> Duration {
    DEFAULT_MEASUREMENT_TIME.max(once.mul_f64(2.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_the_model() {
        // Only this test touches the variable in this process.
        std::env::set_var("MISTRAL_MLX_BENCH_MODEL", "/some/model");
        assert_eq!(bench_model_dir(), PathBuf::from("/some/model"));
        std::env::remove_var("MISTRAL_MLX_BENCH_MODEL");
        assert!(bench_model_dir().ends_with("models/smollm2"));
    }

    #[test]
    fn prompt_ids_are_fixed_and_in_the_vocabulary() {
        let ids = prompt_ids(64, 100);
        assert_eq!(ids.shape(), &[1, 64]);
        assert_eq!(ids.dtype(), Dtype::Int32);
        let values = ids.as_slice::<i32>();
        assert!(values.iter().all(|&id| (0..100).contains(&id)));
        assert_eq!(values, prompt_ids(64, 100).as_slice::<i32>());
    }

    #[test]
    fn random_normal_is_seeded_and_cast() {
        let a = random_normal(&[2, 3], Dtype::Bfloat16, 7).expect("draw");
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.dtype(), Dtype::Bfloat16);
        let b = random_normal(&[2, 3], Dtype::Bfloat16, 7).expect("draw");
        assert!(a.eq_values(&b).expect("compare"));
    }

    #[test]
    fn measurement_time_leaves_room_for_two_calls() {
        let mut ran = false;
        assert_eq!(
            measurement_time_for(|| ran = true),
            DEFAULT_MEASUREMENT_TIME
        );
        assert!(ran);
        let secs = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(measurement_time(secs(2.0)), DEFAULT_MEASUREMENT_TIME);
        assert_eq!(measurement_time(secs(20.0)), secs(50.0));
    }

    #[test]
    fn a_missing_model_names_the_directory_and_the_fix() {
        let err = BenchModelError {
            dir: PathBuf::from("/no/such/model"),
            source: Box::new(LoadError::DirNotFound {
                dir: PathBuf::from("/no/such/model"),
            }),
        };
        let text = format!("{err:?}");
        assert!(text.contains("/no/such/model"), "{text}");
        assert!(text.contains("MISTRAL_MLX_BENCH_MODEL"), "{text}");
    }
}
