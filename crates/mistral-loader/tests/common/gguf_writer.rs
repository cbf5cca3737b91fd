//! A small GGUF v3 writer for tests (header, metadata, tensor directory,
//! 32-byte aligned data), written from the format description, independent
//! of the loader's reader. Also a tiny valid llama model to break one thing
//! of at a time: hidden 32, one layer, two heads, vocabulary of 8.

#![allow(dead_code)]

use std::path::Path;

/// ggml type ids.
pub const F32: u32 = 0;
pub const Q4_0: u32 = 2;
pub const Q8_0: u32 = 8;
pub const IQ4_NL: u32 = 20;

/// A metadata value.
#[derive(Clone, Debug)]
pub enum Meta {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

/// Metadata entries, in file order.
pub type MetaList = Vec<(String, Meta)>;

/// One tensor: name, ggml dimensions (fastest first), type id, raw bytes.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn array(out: &mut Vec<u8>, item_type: u32, n: usize) {
    out.extend(9u32.to_le_bytes());
    out.extend(item_type.to_le_bytes());
    out.extend((n as u64).to_le_bytes());
}

fn value(out: &mut Vec<u8>, value: &Meta) {
    match value {
        Meta::U32(v) => {
            out.extend(4u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::I32(v) => {
            out.extend(5u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::F32(v) => {
            out.extend(6u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::Bool(v) => {
            out.extend(7u32.to_le_bytes());
            out.push(u8::from(*v));
        }
        Meta::Str(s) => {
            out.extend(8u32.to_le_bytes());
            string(out, s);
        }
        Meta::Strs(items) => {
            array(out, 8, items.len());
            for s in items {
                string(out, s);
            }
        }
        Meta::F32s(items) => {
            array(out, 6, items.len());
            items.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
        Meta::I32s(items) => {
            array(out, 5, items.len());
            items.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
    }
}

/// The bytes of a GGUF v3 file.
pub fn gguf_bytes(meta: &[(String, Meta)], tensors: &[Tensor]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, v) in meta {
        string(&mut out, key);
        value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        string(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for t in tensors {
        out.extend(&t.data);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    out
}

/// Writes a GGUF v3 file.
pub fn write_gguf(path: &Path, meta: &[(String, Meta)], tensors: &[Tensor]) {
    std::fs::write(path, gguf_bytes(meta, tensors)).expect("write gguf");
}

/// Sets `key` (replacing it where present, else appending it).
pub fn set_meta(meta: &mut MetaList, key: &str, v: Meta) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = v,
        None => meta.push((key.to_owned(), v)),
    }
}

/// Removes `key`.
pub fn remove_meta(meta: &mut MetaList, key: &str) {
    meta.retain(|(k, _)| k != key);
}

/// The metadata of the tiny llama model, with a byte-level BPE tokenizer.
pub fn tiny_meta() -> MetaList {
    let tokens: Vec<String> = ["t", "0", "t0", "a", "b", "c", "d", "e"]
        .map(String::from)
        .to_vec();
    [
        ("general.architecture", Meta::Str("llama".into())),
        ("llama.block_count", Meta::U32(1)),
        ("llama.embedding_length", Meta::U32(32)),
        ("llama.feed_forward_length", Meta::U32(64)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.merges", Meta::Strs(vec!["t 0".into()])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The tiny model's metadata with a SentencePiece (`llama`) tokenizer:
/// scores, token types, byte tokens and special-token ids.
pub fn tiny_meta_sentencepiece() -> MetaList {
    let mut meta = tiny_meta();
    remove_meta(&mut meta, "tokenizer.ggml.merges");
    let tokens = ["<unk>", "<s>", "</s>", "<0x41>", "▁", "▁a", "b", "▁ab"];
    set_meta(&mut meta, "tokenizer.ggml.model", Meta::Str("llama".into()));
    set_meta(
        &mut meta,
        "tokenizer.ggml.tokens",
        Meta::Strs(tokens.map(String::from).to_vec()),
    );
    set_meta(
        &mut meta,
        "tokenizer.ggml.scores",
        Meta::F32s(vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0]),
    );
    set_meta(
        &mut meta,
        "tokenizer.ggml.token_type",
        Meta::I32s(vec![2, 3, 3, 6, 1, 1, 1, 1]),
    );
    set_meta(&mut meta, "tokenizer.ggml.bos_token_id", Meta::U32(1));
    set_meta(&mut meta, "tokenizer.ggml.eos_token_id", Meta::U32(2));
    set_meta(&mut meta, "tokenizer.ggml.add_bos_token", Meta::Bool(true));
    meta
}

/// Bytes of `n` elements of ggml type `ty` (zeros: valid for every type
/// listed here).
fn zeros(ty: u32, n: u64) -> Vec<u8> {
    let bytes = match ty {
        F32 => n * 4,
        Q4_0 => n / 32 * 18,
        Q8_0 => n / 32 * 34,
        IQ4_NL => n / 32 * 18,
        _ => n,
    };
    vec![0u8; bytes as usize]
}

/// Every tensor of the tiny model; `types` gives a ggml type per tensor
/// name (F32 for the others).
pub fn tiny_tensors_typed(types: &[(&str, u32)]) -> Vec<Tensor> {
    let shapes: [(&str, Vec<u64>); 11] = [
        ("token_embd.weight", vec![32, 8]),
        ("output_norm.weight", vec![32]),
        ("blk.0.attn_norm.weight", vec![32]),
        ("blk.0.ffn_norm.weight", vec![32]),
        ("blk.0.attn_q.weight", vec![32, 32]),
        ("blk.0.attn_k.weight", vec![32, 32]),
        ("blk.0.attn_v.weight", vec![32, 32]),
        ("blk.0.attn_output.weight", vec![32, 32]),
        ("blk.0.ffn_gate.weight", vec![32, 64]),
        ("blk.0.ffn_up.weight", vec![32, 64]),
        ("blk.0.ffn_down.weight", vec![64, 32]),
    ];
    shapes
        .into_iter()
        .map(|(name, dims)| {
            let ty = types
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(F32, |(_, ty)| *ty);
            let data = zeros(ty, dims.iter().product());
            Tensor {
                name: name.to_owned(),
                dims,
                ty,
                data,
            }
        })
        .collect()
}

/// Every tensor of the tiny model as F32 zeros.
pub fn tiny_tensors() -> Vec<Tensor> {
    tiny_tensors_typed(&[])
}

/// The tiny model as one file.
pub fn tiny_gguf() -> Vec<u8> {
    gguf_bytes(&tiny_meta(), &tiny_tensors())
}

/// The offset of the `u64` length written before the first occurrence of
/// the string `s` in `bytes`.
pub fn length_before(bytes: &[u8], s: &str) -> usize {
    let at = bytes
        .windows(s.len())
        .position(|w| w == s.as_bytes())
        .unwrap_or_else(|| panic!("{s} not in the file"));
    at - 8
}
