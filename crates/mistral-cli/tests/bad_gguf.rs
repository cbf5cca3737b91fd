//! Bad GGUF files, one test per case, through the library and through
//! `mistral-cli generate`: each is an error naming the file and the key,
//! tensor or field at fault, one `error:` line and a non-zero exit, no
//! panic, no hang. The files are the tiny llama model of the loader tests'
//! GGUF writer (written from the format description, not by our reader)
//! with one thing changed.

mod common;

#[path = "../../mistral-loader/tests/common/gguf_writer.rs"]
mod gguf_writer;

use std::path::PathBuf;

use common::reject::both_reject;
use gguf_writer::*;
use mistral_loader::{load_model, load_tokenizer};

/// A temporary folder holding `model.gguf` with `bytes`.
struct Case {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn case(bytes: Vec<u8>) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    Case { _dir: dir, path }
}

/// The tiny model with `change` applied to its metadata.
fn with_meta(change: impl FnOnce(&mut MetaList)) -> Case {
    let mut meta = tiny_meta();
    change(&mut meta);
    case(gguf_bytes(&meta, &tiny_tensors()))
}

/// The tiny model with `change` applied to its tensors.
fn with_tensors(change: impl FnOnce(&mut Vec<Tensor>)) -> Case {
    let mut tensors = tiny_tensors();
    change(&mut tensors);
    case(gguf_bytes(&tiny_meta(), &tensors))
}

/// The tiny model's bytes with `patch` applied.
fn patched(patch: impl FnOnce(&mut Vec<u8>)) -> Case {
    let mut bytes = tiny_gguf();
    patch(&mut bytes);
    case(bytes)
}

/// Library and CLI reject the file, naming it and every needle.
fn rejects(case: &Case, needles: &[&str]) {
    let mut all = vec!["model.gguf"];
    all.extend_from_slice(needles);
    both_reject(&case.path, &all);
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The offset just past the string `s` (its first occurrence).
fn after(bytes: &[u8], s: &str) -> usize {
    length_before(bytes, s) + 8 + s.len()
}

#[test]
fn the_tiny_model_loads_and_generates() {
    // The baseline every other case changes one thing of.
    let ok = case(tiny_gguf());
    let model = load_model(&ok.path).expect("the tiny model loads");
    assert_eq!(model.config().num_hidden_layers, 1);
    load_tokenizer(&ok.path).expect("its tokenizer loads");
    let path = ok.path.display().to_string();
    let output = common::cli(&[
        "generate",
        "--model",
        &path,
        "--prompt",
        "t0",
        "--no-chat",
        "--max-tokens",
        "2",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The SentencePiece variant of the tokenizer loads too.
    let sp = case(gguf_bytes(&tiny_meta_sentencepiece(), &tiny_tensors()));
    load_tokenizer(&sp.path).expect("the SentencePiece tokenizer loads");
}

// --- the header ---

#[test]
fn not_a_gguf_file() {
    rejects(&case(b"not a gguf file at all".to_vec()), &["GGUF magic"]);
}

#[test]
fn gguf_version_1() {
    rejects(&patched(|b| put_u32(b, 4, 1)), &["version 1"]);
}

#[test]
fn unknown_gguf_version() {
    rejects(&patched(|b| put_u32(b, 4, 77)), &["version 77"]);
}

#[test]
fn truncated_inside_the_header() {
    rejects(&patched(|b| b.truncate(40)), &["truncated"]);
}

#[test]
fn truncated_inside_the_tensor_data() {
    let case = patched(|b| {
        b.pop();
    });
    rejects(&case, &["truncated", "blk.0.ffn_down.weight"]);
}

#[test]
fn tensor_count_past_the_end() {
    rejects(&patched(|b| put_u64(b, 8, u64::MAX)), &["tensor count"]);
}

#[test]
fn metadata_count_past_the_end() {
    rejects(&patched(|b| put_u64(b, 16, 1 << 40)), &["metadata count"]);
}

#[test]
fn key_length_past_the_end() {
    let case = patched(|b| {
        let at = length_before(b, "llama.block_count");
        put_u64(b, at, 1 << 40);
    });
    rejects(&case, &["metadata key #1"]);
}

#[test]
fn string_value_length_past_the_end() {
    let case = patched(|b| {
        // general.architecture's value: type (4 bytes), then its length.
        let at = after(b, "general.architecture") + 4;
        put_u64(b, at, u64::MAX);
    });
    rejects(&case, &["general.architecture"]);
}

#[test]
fn array_length_past_the_end() {
    let case = patched(|b| {
        // Array: type 9, item type, then the count.
        let at = after(b, "tokenizer.ggml.tokens") + 8;
        put_u64(b, at, 1 << 50);
    });
    rejects(&case, &["the length of metadata `tokenizer.ggml.tokens`"]);
}

#[test]
fn unknown_metadata_value_type() {
    let case = patched(|b| {
        let at = after(b, "llama.block_count");
        put_u32(b, at, 99);
    });
    rejects(&case, &["llama.block_count", "unknown value type 99"]);
}

#[test]
fn metadata_key_twice() {
    let case = with_meta(|m| m.push(("llama.block_count".into(), Meta::U32(1))));
    rejects(&case, &["llama.block_count", "twice"]);
}

#[test]
fn tensor_name_length_past_the_end() {
    let case = patched(|b| {
        let at = length_before(b, "blk.0.attn_q.weight");
        put_u64(b, at, 1 << 40);
    });
    rejects(&case, &["the name of tensor #4"]);
}

#[test]
fn tensor_with_too_many_dimensions() {
    let case = patched(|b| {
        let at = after(b, "blk.0.attn_q.weight");
        put_u32(b, at, 7);
    });
    rejects(&case, &["blk.0.attn_q.weight", "7 dimensions"]);
}

#[test]
fn tensor_offset_past_the_end() {
    let case = patched(|b| {
        // Name, dimension count, two dimensions, type, then the offset.
        let at = after(b, "blk.0.attn_k.weight") + 4 + 16 + 4;
        put_u64(b, at, u64::MAX - 8);
    });
    rejects(&case, &["blk.0.attn_k.weight", "past the end"]);
}

#[test]
fn tensor_dimensions_that_do_not_fill_whole_blocks() {
    let case = with_tensors(|t| {
        t[5].ty = Q8_0;
        t[5].dims = vec![20, 32];
        t[5].data = vec![0u8; 34 * 20];
    });
    rejects(&case, &["blk.0.attn_k.weight", "Q8_0 blocks"]);
}

// --- the metadata the model needs ---

#[test]
fn unsupported_architecture() {
    let case = with_meta(|m| set_meta(m, "general.architecture", Meta::Str("gemma".into())));
    rejects(&case, &["general.architecture", "gemma"]);
}

#[test]
fn missing_required_key() {
    let case = with_meta(|m| remove_meta(m, "llama.embedding_length"));
    rejects(&case, &["llama.embedding_length"]);
}

#[test]
fn key_of_the_wrong_type() {
    let case = with_meta(|m| set_meta(m, "llama.block_count", Meta::Str("thirty".into())));
    rejects(&case, &["llama.block_count"]);
}

#[test]
fn zero_size() {
    let case = with_meta(|m| set_meta(m, "llama.attention.head_count", Meta::U32(0)));
    rejects(&case, &["num_attention_heads"]);
}

#[test]
fn contradictory_sizes() {
    let case = with_meta(|m| set_meta(m, "llama.rope.dimension_count", Meta::U32(8)));
    rejects(&case, &["llama.rope.dimension_count"]);
}

#[test]
fn unknown_pre_tokenizer() {
    let case = with_meta(|m| set_meta(m, "tokenizer.ggml.pre", Meta::Str("no-such-pre".into())));
    rejects(&case, &["tokenizer.ggml.pre", "no-such-pre"]);
}

#[test]
fn missing_tokenizer_tokens() {
    let case = with_meta(|m| remove_meta(m, "tokenizer.ggml.tokens"));
    rejects(&case, &["tokenizer.ggml.tokens"]);
}

#[test]
fn special_token_id_outside_the_vocabulary() {
    let case = with_meta(|m| set_meta(m, "tokenizer.ggml.eos_token_id", Meta::U32(100)));
    rejects(&case, &["tokenizer.ggml.eos_token_id", "100"]);
}

// --- the tensors ---

#[test]
fn unsupported_tensor_type() {
    // IQ4_NL: blocks of 32 elements in 18 bytes.
    let case = case(gguf_bytes(
        &tiny_meta(),
        &tiny_tensors_typed(&[("blk.0.attn_v.weight", IQ4_NL)]),
    ));
    rejects(&case, &["blk.0.attn_v.weight", "IQ4_NL"]);
}

#[test]
fn unknown_tensor_type() {
    let case = with_tensors(|t| {
        t[9].ty = 999;
        t[9].data = vec![0u8; 64];
    });
    rejects(&case, &["blk.0.ffn_up.weight", "999"]);
}

#[test]
fn unexpected_tensor() {
    let case = with_tensors(|t| {
        t.push(Tensor {
            name: "blk.0.mystery.weight".into(),
            dims: vec![16],
            ty: F32,
            data: vec![0u8; 64],
        })
    });
    rejects(&case, &["blk.0.mystery.weight"]);
}

#[test]
fn missing_tensor() {
    let case = with_tensors(|t| t.retain(|t| t.name != "blk.0.ffn_up.weight"));
    rejects(&case, &["model.layers.0.mlp.up_proj.weight"]);
}

#[test]
fn misshaped_tensor() {
    let case = with_tensors(|t| {
        t[4].dims = vec![32, 16];
        t[4].data = vec![0u8; 32 * 16 * 4];
    });
    rejects(
        &case,
        &[
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ],
    );
}

#[test]
fn a_folder_with_two_gguf_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["a.gguf", "b.gguf"] {
        std::fs::write(dir.path().join(name), tiny_gguf()).expect("write");
    }
    both_reject(dir.path(), &["a.gguf", "b.gguf"]);
}

// --- Mixtral's experts ---

#[test]
fn experts_without_a_count_per_token() {
    let case = with_meta(|m| set_meta(m, "llama.expert_count", Meta::U32(4)));
    rejects(&case, &["llama.expert_used_count"]);
}

#[test]
fn more_experts_per_token_than_experts() {
    let case = with_meta(|m| {
        set_meta(m, "llama.expert_count", Meta::U32(4));
        set_meta(m, "llama.expert_used_count", Meta::U32(5));
    });
    rejects(
        &case,
        &["llama.expert_used_count", "5 experts per token, of 4"],
    );
}

#[test]
fn experts_announced_but_a_dense_feed_forward_stored() {
    let case = with_meta(|m| {
        set_meta(m, "llama.expert_count", Meta::U32(4));
        set_meta(m, "llama.expert_used_count", Meta::U32(2));
    });
    rejects(&case, &["model.layers.0.block_sparse_moe"]);
}
