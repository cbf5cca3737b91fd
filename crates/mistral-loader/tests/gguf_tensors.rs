//! Every tensor we load from a GGUF file equals gguf-py's dequantization of
//! it (`gguf_to_hf.py`'s float32 conversion, q/k rows put back in Python):
//! dense tensors as handed to the model, kept-quantized ones (Q4_0, Q4_1,
//! Q8_0, Q4_K) through MLX's `dequantize` of the packed, scale and bias
//! arrays. Equality is numeric (`==`): Q4_0/Q8_0 blocks with a negative
//! scale give +0 where ggml gives -0. Mixtral's stacked experts
//! (`ffn_gate_exps`, handed over as `switch_mlp.gate_proj`) are compared with
//! the conversion's per-expert matrices (`experts.E.w1`) laid end to end.

mod reference;

use mistral_loader::gguf::{gguf_config, GgufFile, GgufWeights};
use mistral_model::LayerQuantization;
use mlx_rs::ops::dequantize;
use mlx_rs::{Array, Dtype};
use reference::gguf_models;
use safetensors::SafeTensors;
use std::collections::BTreeMap;

fn values(a: &Array) -> Vec<f32> {
    let a = a.as_dtype(Dtype::Float32).expect("cast");
    a.eval().expect("eval");
    a.as_slice::<f32>().to_vec()
}

#[test]
fn every_gguf_tensor_equals_gguf_py_dequantization() {
    let mut checked = 0;
    for gguf in gguf_models() {
        let file = GgufFile::open(&gguf.file).expect("open");
        let config = gguf_config(&file).expect("config");
        let mut weights = GgufWeights::new(
            file,
            config.num_attention_heads,
            config.num_key_value_heads(),
        );
        let stacked = weights
            .file()
            .tensor("blk.0.ffn_gate_exps.weight")
            .is_some();
        for (name, want) in expected(&gguf.hf_dir().join("model.safetensors"), stacked) {
            let name = name.as_str();
            let module = name.trim_end_matches(".weight");
            // Matrices kept quantized have their own entry (norms have none).
            let entry = config.quantization().and_then(|q| q.layers.get(module));
            let ours = match entry.filter(|_| name.ends_with(".weight")) {
                Some(LayerQuantization::Quantized(q)) => {
                    let scales = weights
                        .try_take(&format!("{module}.scales"))
                        .expect("convert");
                    let scales = scales.unwrap_or_else(|| panic!("{}: {module} scales", gguf.name));
                    let packed = weights.try_take(name).expect("packed").expect("packed");
                    let biases = weights
                        .try_take(&format!("{module}.biases"))
                        .expect("biases")
                        .expect("biases");
                    dequantize(&packed, &scales, &biases, q.group_size, q.bits).expect("dequantize")
                }
                _ => weights
                    .try_take(name)
                    .expect("convert")
                    .unwrap_or_else(|| panic!("{}: no tensor {name}", gguf.name)),
            };
            let ours = values(&ours);
            assert_eq!(ours.len(), want.len(), "{}: {name} size", gguf.name);
            let bad = ours.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "{}: {name} differs from gguf-py at element {bad:?}",
                gguf.name
            );
            checked += 1;
        }
        let unused = weights.finish().expect("finish");
        assert!(
            unused.is_empty(),
            "{}: tensors not compared: {unused:?}",
            gguf.name
        );
    }
    eprintln!("{checked} tensors equal gguf-py's dequantization");
}

/// The conversion's float32 tensors by name; with `stacked`, each
/// projection's per-expert matrices (`block_sparse_moe.experts.E.w1`) laid
/// end to end in expert order under the stacked name (`switch_mlp.gate_proj`).
fn expected(path: &std::path::Path, stacked: bool) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).expect("read conversion");
    let hf = SafeTensors::deserialize(&bytes).expect("parse conversion");
    let mut parts: BTreeMap<String, Vec<(usize, Vec<f32>)>> = BTreeMap::new();
    for name in hf.names() {
        let values: Vec<f32> = hf
            .tensor(name)
            .expect("tensor")
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let expert = name
            .split_once(".block_sparse_moe.experts.")
            .filter(|_| stacked)
            .and_then(|(prefix, rest)| {
                let (e, w) = rest.split_once('.')?;
                let proj = match w {
                    "w1.weight" => "gate_proj",
                    "w3.weight" => "up_proj",
                    "w2.weight" => "down_proj",
                    _ => return None,
                };
                let name = format!("{prefix}.block_sparse_moe.switch_mlp.{proj}.weight");
                Some((name, e.parse::<usize>().expect("expert index")))
            });
        let (key, index) = expert.unwrap_or_else(|| (name.to_owned(), 0));
        parts.entry(key).or_default().push((index, values));
    }
    parts
        .into_iter()
        .map(|(name, mut p)| {
            p.sort_by_key(|(e, _)| *e);
            (name, p.into_iter().flat_map(|(_, v)| v).collect())
        })
        .collect()
}
