//! Fuzzing of the parsers of untrusted files, on the stable toolchain.
//!
//! cargo-fuzz needs a nightly compiler, which the CI machines cannot fetch,
//! so these are property tests (`proptest`): each target takes valid seed
//! inputs (the generated test models' files and the small committed corpus
//! in `tests/fuzz_corpus/`), mutates them (byte overwrites, insertions and
//! truncations; for JSON also structural edits that put random values at
//! random places), and feeds them to the parser. Any result is fine, an
//! `Err` included; a panic fails the test, and proptest shrinks the input and
//! prints it. Not coverage-guided (that is what libFuzzer would add).
//!
//! Each target runs for `MISTRAL_MLX_FUZZ_SECONDS` seconds (default 10, as
//! CI runs them). For a long run:
//! `MISTRAL_MLX_FUZZ_SECONDS=600 cargo xtask test -- -p mistral-loader --test fuzz -- --test-threads 1`.

mod common;
mod reference;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use common::{f32_tensor, gguf_writer, half_tensor, u32_tensor, write_safetensors, TempDir};
use mistral_loader::gguf::{gguf_config, gguf_tokenizer, special_tokens, GgufFile};
use mistral_loader::{
    discover_checkpoint, load_tokenizer, FileAccess, SafetensorsWeights, WeightSource,
};
use mistral_model::MistralConfig;

fn budget() -> Duration {
    let seconds = std::env::var("MISTRAL_MLX_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds)
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(name)
}

/// Runs `test` on inputs from `strategy` until the time budget is spent,
/// in rounds of fresh runners; panics with the shrunk input on a failure.
fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    let mut round = 0u32;
    while Instant::now() < deadline {
        let config = Config {
            cases: 32,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            ..Config::default()
        };
        let seed = {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&round.to_le_bytes());
            bytes[4..8].copy_from_slice(&0x6d69_7374u32.to_le_bytes());
            bytes
        };
        let rng = proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &seed,
        );
        let mut runner = TestRunner::new_with_rng(config, rng);
        if let Err(failure) = runner.run(&strategy, &test) {
            panic!("{target}: {failure}");
        }
        cases += 32;
        round += 1;
    }
    eprintln!("{target}: {cases} inputs in {:?}, no panic", budget());
}

/// Byte-level mutations of `seed`: up to 16 overwrites (in the first
/// `focus` bytes, where the headers are), an insertion, and sometimes a
/// truncation.
fn mutated_bytes(seed: Vec<u8>, focus: usize) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    let focus = focus.clamp(1, len.max(1));
    (
        prop::collection::vec((0..focus, any::<u8>()), 0..16),
        prop::collection::vec(any::<u8>(), 0..8),
        0..=focus,
        prop::option::weighted(0.15, 0..=len),
    )
        .prop_map(move |(edits, insert, at, cut)| {
            let mut bytes = seed.clone();
            for (i, v) in edits {
                if i < bytes.len() {
                    bytes[i] = v;
                }
            }
            let at = at.min(bytes.len());
            bytes.splice(at..at, insert);
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes
        })
}

/// A random JSON value: the kinds of values a hostile file would hold.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MAX) + 1),
            Just(i64::MIN)
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every node of `value`, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Structural mutations of a JSON `seed`: up to 4 nodes replaced by random
/// values or removed, serialized back to text.
fn mutated_json(seed: Value) -> impl Strategy<Value = String> {
    let mut all = Vec::new();
    pointers(&seed, String::new(), &mut all);
    let count = all.len();
    prop::collection::vec((0..count, prop::option::weighted(0.8, arb_json())), 1..4).prop_map(
        move |edits| {
            let mut value = seed.clone();
            for (node, replacement) in edits {
                let pointer = &all[node];
                match replacement {
                    Some(new) => {
                        if let Some(slot) = value.pointer_mut(pointer) {
                            *slot = new;
                        }
                    }
                    None => {
                        if let Some((parent, key)) = pointer.rsplit_once('/') {
                            if let Some(Value::Object(map)) = value.pointer_mut(parent) {
                                map.remove(&key.replace("~1", "/").replace("~0", "~"));
                            }
                        }
                    }
                }
            }
            value.to_string()
        },
    )
}

/// JSON seeds: structural mutations, plus byte mutations of the text.
fn json_inputs(seeds: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let structural: Vec<_> = seeds
        .iter()
        .map(|s| mutated_json(s.clone()).prop_map(String::into_bytes).boxed())
        .collect();
    let bytes: Vec<_> = seeds
        .iter()
        .map(|s| {
            let text = s.to_string().into_bytes();
            let focus = text.len();
            mutated_bytes(text, focus).boxed()
        })
        .collect();
    prop_oneof![
        3 => prop::strategy::Union::new(structural),
        1 => prop::strategy::Union::new(bytes),
    ]
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("seed file")).expect("seed JSON")
}

fn model_file(model: &str, file: &str) -> PathBuf {
    reference::models_dir().join(model).join(file)
}

#[test]
fn fuzz_config_parsing() {
    let seeds = vec![
        read_json(&corpus("config_mistral_7b_v01.json")),
        read_json(&corpus("config_quantized_layer_types.json")),
        read_json(&model_file("gqa4_q4_g64", "config.json")),
        read_json(&model_file("window_v01_f32", "config.json")),
    ];
    fuzz("config.json", json_inputs(seeds), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(config) = MistralConfig::from_json_str(&text) {
            let _ = config.validate();
        }
        Ok(())
    });
}

/// The tokenizer.json the GGUF converter makes from the tiny GGUF model's
/// metadata (byte-level BPE or SentencePiece BPE): small BPE seeds.
fn converted_tokenizer(meta: &gguf_writer::MetaList, dir: &Path) -> Value {
    let path = dir.join("seed.gguf");
    gguf_writer::write_gguf(&path, meta, &gguf_writer::tiny_tensors());
    let file = GgufFile::open(&path).expect("seed GGUF");
    mistral_loader::gguf::tokenizer_json(file.metadata()).expect("seed tokenizer")
}

#[test]
fn fuzz_tokenizer_loading() {
    let dir = TempDir::new("fuzz-tokenizer");
    let seeds = vec![
        read_json(&corpus("tokenizer_wordlevel.json")),
        converted_tokenizer(&gguf_writer::tiny_meta(), dir.path()),
        converted_tokenizer(&gguf_writer::tiny_meta_sentencepiece(), dir.path()),
    ];
    fuzz("tokenizer.json", json_inputs(seeds), |bytes| {
        std::fs::write(dir.path().join("tokenizer.json"), &bytes).expect("write");
        if let Ok(tokenizer) = load_tokenizer(dir.path()) {
            if let Ok(encoding) = tokenizer.encode("Hello  wörld, 1234 <s> 😀", true) {
                let _ = tokenizer.decode(encoding.get_ids(), false);
            }
            let _ = tokenizer.decode(&[0, 1, 2, 3, 4, 5, 1000, u32::MAX], true);
        }
        Ok(())
    });
}

/// A small checkpoint of every dtype the loader converts.
fn small_safetensors(path: &Path) {
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert("a.weight".to_owned(), f32_tensor(&[4, 3], 1));
    tensors.insert(
        "b.weight".to_owned(),
        half_tensor(safetensors::tensor::Dtype::BF16, &[2, 5], 2),
    );
    tensors.insert("c.weight".to_owned(), u32_tensor(&[3, 2], 3));
    write_safetensors(path, &tensors);
}

#[test]
fn fuzz_safetensors_header() {
    let dir = TempDir::new("fuzz-safetensors");
    let path = dir.path().join("model.safetensors");
    small_safetensors(&path);
    let seed = std::fs::read(&path).expect("seed");
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) as usize;
    fuzz("safetensors", mutated_bytes(seed, header), |bytes| {
        std::fs::write(&path, &bytes).expect("write");
        for access in [FileAccess::Mmap, FileAccess::Read] {
            if let Ok(mut weights) = SafetensorsWeights::open_with(dir.path(), access) {
                for name in weights.names() {
                    let _ = weights.try_take(&name);
                }
                let _ = weights.finish();
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_safetensors_index() {
    let dir = TempDir::new("fuzz-index");
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        small_safetensors(&dir.path().join(shard));
    }
    let seed = read_json(&corpus("index_two_shards.json"));
    fuzz(
        "model.safetensors.index.json",
        json_inputs(vec![seed]),
        |bytes| {
            std::fs::write(dir.path().join("model.safetensors.index.json"), &bytes).expect("write");
            if let Ok(checkpoint) = discover_checkpoint(dir.path()) {
                if let Ok(mut weights) = SafetensorsWeights::from_checkpoint(&checkpoint) {
                    for name in weights.names() {
                        let _ = weights.take(&name);
                    }
                }
            }
            Ok(())
        },
    );
}

/// A GGUF seed and the length of its header, metadata and tensor
/// directory (the tensors' data follows).
fn gguf_seed(meta: &gguf_writer::MetaList, tensors: Vec<gguf_writer::Tensor>) -> (Vec<u8>, usize) {
    let empty: Vec<_> = tensors
        .iter()
        .cloned()
        .map(|t| gguf_writer::Tensor {
            data: Vec::new(),
            ..t
        })
        .collect();
    let header = gguf_writer::gguf_bytes(meta, &empty).len();
    (gguf_writer::gguf_bytes(meta, &tensors), header)
}

#[test]
fn fuzz_gguf_header() {
    use gguf_writer::{tiny_meta, tiny_meta_sentencepiece, tiny_tensors, tiny_tensors_typed};
    // Small seeds (the tiny model of the GGUF writer, with F32, Q4_0 and
    // Q8_0 tensors and both tokenizer kinds), so that each input is cheap;
    // mutations land in the header, metadata and tensor directory.
    let seeds = [
        gguf_seed(&tiny_meta(), tiny_tensors()),
        gguf_seed(
            &tiny_meta_sentencepiece(),
            tiny_tensors_typed(&[
                ("blk.0.attn_q.weight", gguf_writer::Q4_0),
                ("blk.0.ffn_down.weight", gguf_writer::Q8_0),
            ]),
        ),
    ];
    let strategy = prop::sample::select(vec![0usize, 1])
        .prop_flat_map(move |i| mutated_bytes(seeds[i].0.clone(), seeds[i].1));
    let dir = TempDir::new("fuzz-gguf");
    let path = dir.path().join("model.gguf");
    fuzz("GGUF", strategy, |bytes| {
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(file) = GgufFile::open(&path) {
            let _ = gguf_config(&file);
            let _ = gguf_tokenizer(file.metadata());
            let _ = special_tokens(file.metadata());
            for info in file.tensors() {
                let _ = file.tensor_bytes(info);
            }
        }
        let _ = mistral_loader::load_model(&path);
        Ok(())
    });
}
