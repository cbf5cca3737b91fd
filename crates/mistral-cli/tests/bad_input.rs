//! Bad input, one test per case, through the library (`load_model_config`,
//! `load_tokenizer`, `load_special_tokens`, `load_model`, `Generate`: what
//! the CLI calls, in its order) and through `mistral-cli generate`: every
//! case is an error naming the file (and the field or tensor where there is
//! one), the CLI prints it as one `error:` line and exits non-zero, and
//! nothing panics or hangs.
//!
//! Each broken model is a copy of the generated `gqa4_f32` test model
//! (files hard-linked, edited files replaced).

mod common;

use std::path::{Path, PathBuf};

use common::reject::{both_reject, cli_rejects};
use mistral_loader::{load_model, load_tokenizer};
use mlx_rs::Array;
use mlx_rs_core::{Generate, KVCache, SamplingOptions};
use serde_json::{json, Value};

fn source() -> PathBuf {
    common::test_models_root().join("gqa4_f32")
}

/// A copy of the test model (hard links), then `edit` applied to it.
fn broken(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(source()).expect("test model") {
        let path = entry.expect("entry").path();
        let target = tmp.path().join(path.file_name().expect("name"));
        std::fs::hard_link(&path, &target)
            .or_else(|_| std::fs::copy(&path, &target).map(|_| ()))
            .expect("copy");
    }
    edit(tmp.path());
    tmp
}

/// Replaces `name` in `dir` (never writes through a hard link).
fn replace(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, bytes).expect("write");
}

fn edit_json(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(dir.join(name)).expect("json file");
    let mut value: Value = serde_json::from_str(&text).expect("json");
    edit(&mut value);
    replace(dir, name, value.to_string());
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    edit_json(dir, "config.json", edit);
}

/// The weights file as (header JSON, data bytes).
fn weights(dir: &Path) -> (Value, Vec<u8>) {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    (header, bytes[8 + n..].to_vec())
}

/// Writes `model.safetensors` from a header (as given, no checks) and data.
fn write_weights(dir: &Path, header: &Value, data: &[u8]) {
    let text = header.to_string();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    replace(dir, "model.safetensors", bytes);
}

fn edit_header(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let (mut header, data) = weights(dir);
    edit(&mut header);
    write_weights(dir, &header, &data);
}

/// The name and entry of the tensor stored first in the data.
fn first_tensor(header: &Value) -> (String, Value) {
    header
        .as_object()
        .expect("object")
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .min_by_key(|(_, t)| t["data_offsets"][0].as_u64())
        .map(|(name, t)| (name.clone(), t.clone()))
        .expect("a tensor")
}

/// The tensors of `model.safetensors` in data order, as (name, entry
/// without offsets, bytes); `edit` changes the list and the file is written
/// back with consistent offsets.
fn rewrite_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Value, Vec<u8>)>)) {
    let (header, data) = weights(dir);
    let mut tensors: Vec<(String, Value, Vec<u8>)> = header
        .as_object()
        .expect("object")
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, t)| {
            let (start, end) = (
                t["data_offsets"][0].as_u64().expect("start") as usize,
                t["data_offsets"][1].as_u64().expect("end") as usize,
            );
            let entry = json!({"dtype": t["dtype"], "shape": t["shape"]});
            (name.clone(), entry, data[start..end].to_vec())
        })
        .collect();
    tensors.sort_by_key(|(name, _, _)| header[name]["data_offsets"][0].as_u64());
    edit(&mut tensors);
    let mut out = serde_json::Map::new();
    let mut bytes = Vec::new();
    for (name, mut entry, data) in tensors {
        entry["data_offsets"] = json!([bytes.len(), bytes.len() + data.len()]);
        bytes.extend_from_slice(&data);
        out.insert(name, entry);
    }
    write_weights(dir, &Value::Object(out), &bytes);
}

// --- the model directory and config.json ---

#[test]
fn missing_model_directory() {
    let dir = Path::new("/no/such/model-dir");
    both_reject(dir, &["/no/such/model-dir"]);
}

#[test]
fn missing_config() {
    let dir = broken(|d| std::fs::remove_file(d.join("config.json")).expect("rm"));
    both_reject(dir.path(), &["config.json"]);
}

#[test]
fn empty_config() {
    let dir = broken(|d| replace(d, "config.json", ""));
    both_reject(dir.path(), &["config.json"]);
}

#[test]
fn config_that_is_not_json() {
    let dir = broken(|d| replace(d, "config.json", "{\"model_type\": \"mistral\", "));
    both_reject(dir.path(), &["config.json"]);
}

#[test]
fn config_that_is_not_an_object() {
    let dir = broken(|d| replace(d, "config.json", "[1, 2, 3]"));
    both_reject(dir.path(), &["config.json"]);
}

#[test]
fn unknown_model_type() {
    let dir = broken(|d| edit_config(d, |c| c["model_type"] = json!("gpt2")));
    both_reject(dir.path(), &["config.json", "model_type", "gpt2"]);
}

/// The error line names the model type once (a library error that shows its
/// source is not followed by that source again), with what is supported.
#[test]
fn refused_model_types_are_named_once() {
    for (model_type, reason) in [("gpt2", "supported"), ("qwen3", "mistral4")] {
        let dir = broken(|d| edit_config(d, |c| c["model_type"] = json!(model_type)));
        let model = dir.path().display().to_string();
        let output = common::cli(&["generate", "--model", &model, "--prompt", "Hi"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert_eq!(
            stderr.matches(&format!("\"{model_type}\"")).count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains(reason), "{stderr}");
    }
}

#[test]
fn missing_required_field() {
    let dir = broken(|d| {
        edit_config(d, |c| {
            c.as_object_mut().expect("object").remove("hidden_size");
        })
    });
    both_reject(dir.path(), &["config.json", "hidden_size"]);
}

#[test]
fn field_of_the_wrong_type() {
    let dir = broken(|d| edit_config(d, |c| c["num_hidden_layers"] = json!("two")));
    both_reject(dir.path(), &["config.json", "num_hidden_layers"]);
}

#[test]
fn zero_size() {
    let dir = broken(|d| edit_config(d, |c| c["hidden_size"] = json!(0)));
    both_reject(dir.path(), &["config.json", "hidden_size"]);
}

#[test]
fn negative_size() {
    let dir = broken(|d| edit_config(d, |c| c["num_attention_heads"] = json!(-4)));
    both_reject(dir.path(), &["config.json", "num_attention_heads"]);
}

#[test]
fn size_beyond_i32() {
    let dir = broken(|d| edit_config(d, |c| c["intermediate_size"] = json!(1u64 << 40)));
    both_reject(dir.path(), &["config.json", "intermediate_size"]);
}

#[test]
fn sizes_whose_product_overflows() {
    let dir = broken(|d| {
        edit_config(d, |c| {
            c["num_attention_heads"] = json!(65536);
            c["num_key_value_heads"] = json!(65536);
            c["head_dim"] = json!(65536);
        })
    });
    both_reject(dir.path(), &["config.json", "head_dim", "overflows"]);
}

#[test]
fn contradictory_sizes() {
    let dir = broken(|d| edit_config(d, |c| c["num_key_value_heads"] = json!(3)));
    both_reject(dir.path(), &["config.json", "num_key_value_heads"]);
}

#[test]
fn unsupported_quantization_bits() {
    let dir = broken(|d| {
        edit_config(d, |c| {
            c["quantization"] = json!({"group_size": 64, "bits": 7})
        })
    });
    both_reject(dir.path(), &["config.json", "bits"]);
}

#[test]
fn unsupported_quantization_group_size() {
    let dir = broken(|d| {
        edit_config(d, |c| {
            c["quantization"] = json!({"group_size": 48, "bits": 4})
        })
    });
    both_reject(dir.path(), &["config.json", "group_size"]);
}

#[test]
fn special_token_id_outside_the_vocabulary_in_config() {
    let dir = broken(|d| edit_config(d, |c| c["bos_token_id"] = json!(40000)));
    both_reject(dir.path(), &["config.json", "bos_token_id", "40000"]);
}

#[test]
fn special_token_id_outside_the_vocabulary_in_generation_config() {
    let dir = broken(|d| {
        edit_json(d, "generation_config.json", |c| {
            c["eos_token_id"] = json!([2, 99999])
        })
    });
    both_reject(
        dir.path(),
        &["generation_config.json", "eos_token_id", "99999"],
    );
}

// --- tokenizer.json ---

#[test]
fn missing_tokenizer() {
    let dir = broken(|d| std::fs::remove_file(d.join("tokenizer.json")).expect("rm"));
    both_reject(dir.path(), &["tokenizer.json"]);
}

#[test]
fn tokenizer_that_is_not_a_tokenizer() {
    let dir = broken(|d| replace(d, "tokenizer.json", "{}"));
    both_reject(dir.path(), &["tokenizer.json"]);
}

#[test]
fn tokenizer_of_garbage_bytes() {
    let dir = broken(|d| replace(d, "tokenizer.json", [0xff, 0xfe, 0x00, 0x7b, 0x22]));
    both_reject(dir.path(), &["tokenizer.json"]);
}

#[test]
fn tokenizer_whose_decoder_panics_in_the_tokenizers_crate() {
    // A `Strip` decoder cutting more than a token holds makes `tokenizers`
    // slice out of range (a panic inside the crate): it must come back as
    // an error.
    let dir = broken(|d| {
        edit_json(d, "tokenizer.json", |t| {
            t["decoder"] = json!({"type": "Strip", "content": "▁", "start": 1, "stop": 1})
        })
    });
    let tokenizer = load_tokenizer(dir.path()).expect("the file itself parses");
    let id = tokenizer.token_to_id("▁").expect("a lone ▁ token");
    let err = tokenizer
        .decode(&[id], false)
        .expect_err("a panic turned into an error");
    assert!(err.to_string().contains("panicked"), "{err}");
}

// --- safetensors ---

#[test]
fn weights_truncated() {
    let dir = broken(|d| {
        let bytes = std::fs::read(d.join("model.safetensors")).expect("weights");
        replace(d, "model.safetensors", &bytes[..bytes.len() / 2]);
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn header_length_past_the_end_of_the_file() {
    let dir = broken(|d| {
        let mut bytes = std::fs::read(d.join("model.safetensors")).expect("weights");
        let past = (bytes.len() as u64 * 2).to_le_bytes();
        bytes[..8].copy_from_slice(&past);
        replace(d, "model.safetensors", bytes);
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn header_over_100_mb() {
    let dir = broken(|d| {
        let mut bytes = std::fs::read(d.join("model.safetensors")).expect("weights");
        bytes[..8].copy_from_slice(&200_000_000u64.to_le_bytes());
        replace(d, "model.safetensors", bytes);
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn header_that_is_not_json() {
    let dir = broken(|d| {
        let (_, data) = weights(d);
        let mut bytes = 16u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{\"a\": [1, 2, 3 ");
        bytes.push(b' ');
        bytes.extend_from_slice(&data);
        replace(d, "model.safetensors", bytes);
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn offsets_out_of_range() {
    let dir = broken(|d| {
        edit_header(d, |h| {
            let (name, t) = first_tensor(h);
            let end = t["data_offsets"][1].as_u64().expect("end");
            h[&name]["data_offsets"][1] = json!(end + (1 << 40));
        })
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn overlapping_offsets() {
    let dir = broken(|d| {
        edit_header(d, |h| {
            let (first, t) = first_tensor(h);
            let start = t["data_offsets"][0].as_u64().expect("start");
            // Another tensor claims the first one's bytes as well.
            let other = h
                .as_object()
                .expect("object")
                .keys()
                .find(|k| **k != first && *k != "__metadata__")
                .cloned()
                .expect("two tensors");
            let len = h[&other]["data_offsets"][1].as_u64().expect("end")
                - h[&other]["data_offsets"][0].as_u64().expect("start");
            h[&other]["data_offsets"] = json!([start, start + len]);
        })
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn gap_between_tensors() {
    let dir = broken(|d| {
        let (mut header, mut data) = weights(d);
        // Shift every tensor but the first by 8 bytes: a gap after the first.
        let (first, _) = first_tensor(&header);
        let t0_end = header[&first]["data_offsets"][1].as_u64().expect("end") as usize;
        for (name, t) in header.as_object_mut().expect("object") {
            if name == "__metadata__" || *name == first {
                continue;
            }
            for i in 0..2 {
                let v = t["data_offsets"][i].as_u64().expect("offset");
                t["data_offsets"][i] = json!(v + 8);
            }
        }
        let tail = data.split_off(t0_end);
        data.extend_from_slice(&[0u8; 8]);
        data.extend_from_slice(&tail);
        write_weights(d, &header, &data);
    });
    both_reject(dir.path(), &["model.safetensors"]);
}

#[test]
fn duplicate_tensor_names() {
    let dir = broken(|d| {
        let (header, data) = weights(d);
        let (name, t) = first_tensor(&header);
        // Hand-written JSON: the same name twice.
        let text = header.to_string();
        let duplicate = format!("{{{}:{},", json!(name), t);
        let text = text.replacen('{', &duplicate, 1);
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&data);
        replace(d, "model.safetensors", bytes);
    });
    both_reject(dir.path(), &["model.safetensors", "appears twice"]);
}

#[test]
fn tensor_of_a_dtype_the_model_cannot_use() {
    let dir = broken(|d| {
        edit_header(d, |h| {
            let norm = h["model.norm.weight"].clone();
            let bytes = norm["data_offsets"][1].as_u64().expect("end")
                - norm["data_offsets"][0].as_u64().expect("start");
            // Same bytes, read as int32.
            h["model.norm.weight"]["dtype"] = json!("I32");
            assert_eq!(bytes % 4, 0);
        })
    });
    both_reject(dir.path(), &["model.safetensors", "model.norm.weight"]);
}

#[test]
fn dimension_above_i32_max() {
    // Zero elements, so the file stays consistent; MLX shapes are i32.
    let dir = broken(|d| {
        rewrite_tensors(d, |tensors| {
            let norm = tensors
                .iter_mut()
                .find(|(name, _, _)| name == "model.norm.weight")
                .expect("norm");
            norm.1["shape"] = json!([2147483648u64, 0]);
            norm.2.clear();
        })
    });
    both_reject(
        dir.path(),
        &["model.safetensors", "model.norm.weight", "2147483648"],
    );
}

#[test]
fn missing_tensor() {
    let dir = broken(|d| {
        rewrite_tensors(d, |tensors| {
            tensors.retain(|(name, _, _)| name != "model.norm.weight")
        })
    });
    both_reject(dir.path(), &["model.norm.weight"]);
}

#[test]
fn misshaped_tensor() {
    let dir = broken(|d| {
        edit_header(d, |h| {
            let shape = h["model.norm.weight"]["shape"][0].as_u64().expect("dim");
            h["model.norm.weight"]["shape"] = json!([2, shape / 2]);
        })
    });
    both_reject(dir.path(), &["model.safetensors", "model.norm.weight"]);
}

#[test]
fn unexpected_tensor() {
    let dir = broken(|d| {
        rewrite_tensors(d, |tensors| {
            tensors.push((
                "model.layers.0.mystery.weight".to_owned(),
                json!({"dtype": "F32", "shape": [2]}),
                vec![0u8; 8],
            ))
        })
    });
    both_reject(dir.path(), &["model.layers.0.mystery.weight"]);
}

// --- sharded checkpoints and their index ---

/// The test model as two shards and an index, with `edit` applied to the
/// index's weight map.
fn sharded(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    broken(|d| {
        let file = std::fs::read(d.join("model.safetensors")).expect("weights");
        std::fs::remove_file(d.join("model.safetensors")).expect("rm");
        std::fs::write(d.join("model-00001-of-00001.safetensors"), file).expect("shard");
        let (header, _) = weights_of(&d.join("model-00001-of-00001.safetensors"));
        let mut map = serde_json::Map::new();
        for name in header.as_object().expect("object").keys() {
            if name != "__metadata__" {
                map.insert(name.clone(), json!("model-00001-of-00001.safetensors"));
            }
        }
        let mut index = json!({"metadata": {}, "weight_map": map});
        edit(&mut index["weight_map"]);
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).expect("index");
    })
}

fn weights_of(path: &Path) -> (Value, Vec<u8>) {
    let bytes = std::fs::read(path).expect("weights");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    (header, bytes[8 + n..].to_vec())
}

#[test]
fn index_naming_an_absent_shard() {
    let dir = sharded(|map| map["model.norm.weight"] = json!("model-00002-of-00002.safetensors"));
    both_reject(dir.path(), &["model-00002-of-00002.safetensors"]);
}

#[test]
fn index_naming_a_path_outside_the_model_directory() {
    let dir = sharded(|map| map["model.norm.weight"] = json!("../model.safetensors"));
    both_reject(
        dir.path(),
        &["model.safetensors.index.json", "../model.safetensors"],
    );
}

#[test]
fn index_naming_an_absolute_path() {
    let dir = sharded(|map| map["model.norm.weight"] = json!("/etc/passwd"));
    both_reject(dir.path(), &["model.safetensors.index.json", "/etc/passwd"]);
}

// --- prompts and sampling values ---

#[test]
fn prompt_longer_than_the_context() {
    let dir = broken(|d| edit_config(d, |c| c["max_position_embeddings"] = json!(8)));
    let long = "a b c d e f g h i j k l m n o p q r s t u v w x y z ".repeat(4);
    let path = dir.path().display().to_string();
    cli_rejects(
        &["generate", "--model", &path, "--prompt", &long, "--no-chat"],
        &["max_position_embeddings 8"],
    );
}

#[test]
fn prompt_file_that_is_not_utf8() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("prompt.txt");
    std::fs::write(&file, [b'h', b'i', 0xff, 0xfe]).expect("write");
    let model = source().display().to_string();
    let file = file.display().to_string();
    cli_rejects(
        &["generate", "--model", &model, "--prompt-file", &file],
        &["prompt.txt", "UTF-8"],
    );
}

/// Every invalid value of every sampling option: the CLI rejects it before
/// loading, and `Generate` rejects an invalid value before any forward pass
/// (the library keeps mlx-lm's meanings: `top_p` 0 or 1 and `min_p` 0
/// disable the filter, `min_p` 1 keeps only the most likely token, so those
/// are valid there).
#[test]
fn invalid_sampling_values() {
    let model = source().display().to_string();
    let cases: &[(&str, &str)] = &[
        ("--temp", "-1"),
        ("--temp", "nan"),
        ("--temp", "inf"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--top-p", "-0.5"),
        ("--min-p", "1"),
        ("--min-p", "-0.1"),
        ("--top-k", "-1"),
        ("--top-k", "4294967296"),
        ("--top-k", "32768"),
        ("--repetition-penalty", "0"),
        ("--repetition-penalty", "-1"),
        ("--repetition-context-size", "0"),
        ("--max-tokens", "0"),
        ("--max-tokens", "-3"),
        ("--seed", "-1"),
        ("--seed", "abc"),
    ];
    for (flag, value) in cases {
        cli_rejects(
            &["generate", "--model", &model, "--prompt", "Hi", flag, value],
            &[flag.trim_start_matches('-')],
        );
    }

    let mut model = load_model(source()).expect("the intact model loads");
    let prompt = Array::from_slice(&[1i32, 2, 3], &[3]);
    let bad = [
        SamplingOptions {
            temperature: -1.0,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            temperature: f32::NAN,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            top_p: 1.5,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            top_p: -0.5,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            min_p: 1.5,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            top_k: -1,
            ..SamplingOptions::default()
        },
        SamplingOptions {
            temperature: 0.7,
            top_k: 32768,
            ..SamplingOptions::default()
        },
    ];
    for options in bad {
        let mut cache: Vec<Option<KVCache>> = Vec::new();
        let result = Generate::<KVCache>::new(&mut model, &mut cache, options.temperature, &prompt)
            .top_p(options.top_p)
            .top_k(options.top_k)
            .min_p(options.min_p)
            .next()
            .expect("an item");
        assert!(result.is_err(), "{options:?} accepted");
        assert!(cache.is_empty(), "{options:?}: prefilled before rejecting");
    }
}
