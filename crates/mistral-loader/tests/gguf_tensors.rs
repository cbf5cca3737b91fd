//! Every tensor we load from a GGUF file equals gguf-py's dequantization of
//! it (`gguf_to_hf.py`'s float32 conversion, q/k rows put back in Python):
//! dense tensors as handed to the model, kept-quantized ones (Q4_0, Q4_1,
//! Q8_0, Q4_K) through MLX's `dequantize` of the packed, scale and bias
//! arrays. Equality is numeric (`==`): Q4_0/Q8_0 blocks with a negative
//! scale give +0 where ggml gives -0.

mod reference;

use mistral_loader::gguf::{gguf_config, GgufFile, GgufWeights};
use mistral_model::LayerQuantization;
use mlx_rs::ops::dequantize;
use mlx_rs::{Array, Dtype};
use reference::gguf_models;
use safetensors::SafeTensors;

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
        let hf = std::fs::read(gguf.hf_dir().join("model.safetensors")).expect("read conversion");
        let hf = SafeTensors::deserialize(&hf).expect("parse conversion");
        let mut names = hf.names();
        names.sort();
        for name in names {
            let want = hf.tensor(name).expect("tensor");
            let want: Vec<f32> = want
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
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
