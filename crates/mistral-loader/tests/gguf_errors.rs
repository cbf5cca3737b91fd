//! Bad GGUF files give one clear error naming the file and the key, tensor
//! or field at fault, never a panic. The files are written here by a small
//! GGUF writer (header, metadata, tensor directory, aligned data).

use std::path::{Path, PathBuf};

use mistral_loader::{load_model, load_tokenizer, LoadError};

/// A metadata value for the writer.
enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<String>),
}

/// Metadata entries, in file order.
type MetaList = Vec<(&'static str, Meta)>;

/// A change to the tiny model's metadata.
type MetaChange = Box<dyn FnOnce(&mut MetaList)>;

/// A tiny GGUF v3 writer: `tensors` are (name, ggml dims, type id, bytes).
fn write_gguf(path: &Path, meta: &[(&str, Meta)], tensors: &[(String, Vec<u64>, u32, Vec<u8>)]) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        string(&mut out, key);
        match value {
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            Meta::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    string(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, data) in tensors {
        out.extend(data);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, out).expect("write gguf");
}

const F32: u32 = 0;
const IQ4_NL: u32 = 20;

/// The metadata of a tiny valid llama model (hidden 32, 1 layer, 2 heads,
/// vocab 8), with `change` applied.
fn tiny_meta(change: impl FnOnce(&mut MetaList)) -> MetaList {
    let tokens: Vec<String> = ["t", "0", "t0", "a", "b", "c", "d", "e"]
        .map(String::from)
        .to_vec();
    let mut meta = vec![
        ("general.architecture", Meta::Str("llama")),
        ("llama.block_count", Meta::U32(1)),
        ("llama.embedding_length", Meta::U32(32)),
        ("llama.feed_forward_length", Meta::U32(64)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::Str("gpt2")),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.merges", Meta::Strs(vec!["t 0".into()])),
    ];
    change(&mut meta);
    meta
}

/// Every tensor of the tiny model as F32 zeros; `odd` (if given) gets type
/// `ty` with `bytes` instead.
fn tiny_tensors(odd: Option<(&str, u32, usize)>) -> Vec<(String, Vec<u64>, u32, Vec<u8>)> {
    let shapes: Vec<(&str, Vec<u64>)> = vec![
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
            let n: u64 = dims.iter().product();
            match odd {
                Some((odd_name, ty, bytes)) if odd_name == name => {
                    (name.to_owned(), dims, ty, vec![0u8; bytes])
                }
                _ => (name.to_owned(), dims, F32, vec![0u8; n as usize * 4]),
            }
        })
        .collect()
}

fn temp_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn load_error(path: &Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_tiny_writer_makes_a_loadable_model() {
    // The baseline the other cases change one thing of.
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "tiny.gguf");
    write_gguf(&path, &tiny_meta(|_| {}), &tiny_tensors(None));
    let model = load_model(&path).expect("the tiny model loads");
    assert_eq!(model.config().num_hidden_layers, 1);
    assert!(model.config().tie_word_embeddings);
    load_tokenizer(&path).expect("its tokenizer loads");
}

#[test]
fn corrupt_and_truncated_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "bad.gguf");

    std::fs::write(&path, b"not a gguf file at all").unwrap();
    let err = load_error(&path);
    assert!(
        err.contains("bad.gguf") && err.contains("GGUF magic"),
        "{err}"
    );

    let mut v1 = b"GGUF".to_vec();
    v1.extend(1u32.to_le_bytes());
    v1.extend([0u8; 16]);
    std::fs::write(&path, &v1).unwrap();
    let err = load_error(&path);
    assert!(err.contains("version 1"), "{err}");

    write_gguf(&path, &tiny_meta(|_| {}), &tiny_tensors(None));
    let full = std::fs::read(&path).unwrap();
    for cut in [10, 40, 200, full.len() / 2, full.len() - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let err = load_error(&path);
        assert!(
            err.contains("bad.gguf") && err.contains("truncated"),
            "cut {cut}: {err}"
        );
    }

    // A count larger than the file can hold is refused before allocating.
    let mut huge = full.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    let err = load_error(&path);
    assert!(err.contains("tensor count"), "{err}");
}

#[test]
fn bad_metadata_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "meta.gguf");
    let cases: Vec<(MetaChange, &str)> = vec![
        (
            Box::new(|m| m[0].1 = Meta::Str("gemma")),
            "general.architecture",
        ),
        (
            Box::new(|m| m.retain(|(k, _)| *k != "llama.embedding_length")),
            "llama.embedding_length",
        ),
        (
            Box::new(|m| m[1].1 = Meta::Str("thirty")),
            "llama.block_count",
        ),
        (
            Box::new(|m| m.push(("llama.rope.dimension_count", Meta::U32(8)))),
            "llama.rope.dimension_count",
        ),
    ];
    for (change, key) in cases {
        write_gguf(&path, &tiny_meta(change), &tiny_tensors(None));
        let err = load_error(&path);
        assert!(
            err.contains("meta.gguf") && err.contains(key),
            "{key}: {err}"
        );
    }
    // The tokenizer: an unknown pre-tokenizer is refused by name.
    write_gguf(
        &path,
        &tiny_meta(|m| m.push(("tokenizer.ggml.pre", Meta::Str("no-such-pre")))),
        &tiny_tensors(None),
    );
    let err = load_tokenizer(&path).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.ggml.pre") && err.contains("no-such-pre"),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_types_name_tensor_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "types.gguf");
    // IQ4_NL: blocks of 32 elements in 18 bytes; 32x32 is 32 blocks.
    write_gguf(
        &path,
        &tiny_meta(|_| {}),
        &tiny_tensors(Some(("blk.0.attn_v.weight", IQ4_NL, 32 * 18))),
    );
    let err = load_error(&path);
    assert!(
        err.contains("types.gguf") && err.contains("blk.0.attn_v.weight") && err.contains("IQ4_NL"),
        "{err}"
    );
    assert!(matches!(
        load_model(&path),
        Err(LoadError::GgufTensor { .. })
    ));

    // An unknown type id.
    write_gguf(
        &path,
        &tiny_meta(|_| {}),
        &tiny_tensors(Some(("blk.0.ffn_up.weight", 999, 64))),
    );
    let err = load_error(&path);
    assert!(
        err.contains("blk.0.ffn_up.weight") && err.contains("999"),
        "{err}"
    );

    // A tensor the model does not know.
    let mut tensors = tiny_tensors(None);
    tensors.push(("rope_freqs.weight".to_owned(), vec![16], F32, vec![0u8; 64]));
    write_gguf(&path, &tiny_meta(|_| {}), &tensors);
    let err = load_error(&path);
    assert!(err.contains("rope_freqs.weight"), "{err}");

    // A matrix of the wrong shape names both its GGUF and Hugging Face names.
    let mut tensors = tiny_tensors(None);
    tensors[4] = (
        "blk.0.attn_q.weight".to_owned(),
        vec![32, 16],
        F32,
        vec![0u8; 32 * 16 * 4],
    );
    write_gguf(&path, &tiny_meta(|_| {}), &tensors);
    let err = load_error(&path);
    assert!(
        err.contains("blk.0.attn_q.weight")
            && err.contains("model.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
}

#[test]
fn a_folder_with_two_gguf_files_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.gguf", "b.gguf"] {
        write_gguf(
            &temp_file(&dir, name),
            &tiny_meta(|_| {}),
            &tiny_tensors(None),
        );
    }
    let err = load_error(dir.path());
    assert!(err.contains("a.gguf") && err.contains("b.gguf"), "{err}");
}
