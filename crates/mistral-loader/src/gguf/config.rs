//! The model configuration of a GGUF file: [`MistralConfig`] from the
//! `{arch}.*` metadata, with the quantization block derived from the tensor
//! types.
//!
//! Design notes:
//! - Architectures `llama` and `mistral` (Mistral is Llama plus a sliding
//!   window); anything else is refused naming `general.architecture`.
//! - Keys are llama.cpp's: `{arch}.embedding_length`, `.feed_forward_length`,
//!   `.block_count`, `.attention.head_count(_kv)`, `.attention.key_length`
//!   (head_dim), `.rope.freq_base`, `.rope.dimension_count` (must cover the
//!   whole head: partial RoPE is refused), `.rope.scaling.type/.factor`
//!   (linear only, as for config.json), `.attention.layer_norm_rms_epsilon`,
//!   `.attention.sliding_window`, `.context_length`, `.vocab_size` (else the
//!   token list's length).
//! - Mixtral: a `llama` file with `.expert_count` and `.expert_used_count`
//!   (as llama.cpp writes it) becomes model type `mixtral`.
//! - Tied embeddings: no `output.weight` tensor.
//! - Quantization: every linear/embedding module gets its own entry, from
//!   how [`super::weights`] hands its tensor to the model: MLX affine with
//!   group size 32 for the types kept quantized, `false` for the others.

use std::collections::BTreeMap;

use mistral_model::{
    EosTokenId, LayerQuantization, MistralConfig, QuantParams, QuantizationConfig,
};
use serde_json::json;

use super::dequant::{affine_bits, kept_quantized};
use super::metadata::Metadata;
use super::names::hf_module;
use super::reader::GgufFile;
use crate::error::Result;

/// Architectures this loader maps onto [`MistralConfig`].
pub const SUPPORTED_ARCHITECTURES: [&str; 2] = ["llama", "mistral"];

/// The group size of every GGUF type kept quantized (ggml blocks of 32).
pub const GGUF_GROUP_SIZE: i32 = 32;

/// Builds the (unvalidated) config of `gguf`.
pub fn gguf_config(gguf: &GgufFile) -> Result<MistralConfig> {
    let meta = gguf.metadata();
    let arch_key = "general.architecture";
    let arch = meta
        .str(arch_key)?
        .ok_or_else(|| meta.invalid(arch_key, "is missing from the GGUF metadata"))?
        .to_owned();
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(meta.invalid(
            arch_key,
            format!(
                "architecture {arch:?} is not supported (supported: {SUPPORTED_ARCHITECTURES:?})"
            ),
        ));
    }
    let key = |name: &str| format!("{arch}.{name}");
    let int = |name: &str| meta.require_int::<i32>(&key(name));
    let opt_int = |name: &str| meta.int::<i32>(&key(name));

    let hidden_size = int("embedding_length")?;
    let num_attention_heads = int("attention.head_count")?;
    let head_dim = opt_int("attention.key_length")?;
    if let (Some(k), Some(v)) = (head_dim, opt_int("attention.value_length")?) {
        if k != v {
            return Err(meta.invalid(
                &key("attention.value_length"),
                format!("{v} differs from attention.key_length {k}; both must be the head size"),
            ));
        }
    }
    let effective_head_dim = head_dim.unwrap_or(if num_attention_heads > 0 {
        hidden_size / num_attention_heads
    } else {
        0
    });
    if let Some(rope_dim) = opt_int("rope.dimension_count")? {
        if rope_dim != effective_head_dim {
            return Err(meta.invalid(
                &key("rope.dimension_count"),
                format!("partial RoPE ({rope_dim} of {effective_head_dim} head dimensions) is not supported"),
            ));
        }
    }
    let vocab_size = match opt_int("vocab_size")? {
        Some(n) => n,
        None => match meta.array("tokenizer.ggml.tokens")? {
            Some(tokens) => i32::try_from(tokens.len())
                .map_err(|_| meta.invalid("tokenizer.ggml.tokens", "has too many entries"))?,
            None => {
                return Err(meta.invalid(
                    &key("vocab_size"),
                    "is missing, and there is no tokenizer.ggml.tokens to count",
                ))
            }
        },
    };
    let rope_scaling = match meta.str(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some(kind) => Some(json!({
            "type": kind,
            "factor": meta.float(&key("rope.scaling.factor"))?,
        })),
    };
    // Special-token ids must name a token of the vocabulary (named by their
    // GGUF key here rather than by the config field they become).
    let special_id = |key: &str| -> Result<Option<i32>> {
        match meta.int::<i32>(key)? {
            Some(id) if id < 0 || id >= vocab_size => Err(meta.invalid(
                key,
                format!("token id {id} is outside the vocabulary (vocab_size {vocab_size})"),
            )),
            id => Ok(id),
        }
    };
    let experts = experts(meta, &key)?;
    let bos_token_id = special_id("tokenizer.ggml.bos_token_id")?;
    let eos_token_id = special_id("tokenizer.ggml.eos_token_id")?.map(EosTokenId::Single);
    Ok(MistralConfig {
        // llama.cpp writes Mixtral as a `llama` file with experts.
        model_type: if experts.is_some() {
            "mixtral".to_owned()
        } else {
            arch.clone()
        },
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers: int("block_count")?,
        num_attention_heads,
        num_key_value_heads: opt_int("attention.head_count_kv")?,
        head_dim,
        vocab_size,
        max_position_embeddings: opt_int("context_length")?,
        rms_norm_eps: meta
            .float(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: meta.float(&key("rope.freq_base"))?,
        rope_traditional: false,
        rope_scaling,
        rope_parameters: None,
        sliding_window: opt_int("attention.sliding_window")?,
        layer_types: None,
        tie_word_embeddings: gguf.tensor("output.weight").is_none(),
        attention_bias: gguf.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: gguf.tensor("blk.0.ffn_up.bias").is_some(),
        bos_token_id,
        eos_token_id,
        quantization: quantization(gguf),
        quantization_config: None,
        num_local_experts: experts.map(|(n, _)| n),
        num_experts_per_tok: experts.map(|(_, k)| k),
        wrapper: None,
        fp8: None,
        latent: None,
    })
}

/// Mixtral's `{arch}.expert_count` and `.expert_used_count`, checked here
/// so that an error names the GGUF key; `None` for a dense model.
fn experts(meta: &Metadata, key: &dyn Fn(&str) -> String) -> Result<Option<(i32, i32)>> {
    let count_key = key("expert_count");
    let Some(count) = meta.int::<i32>(&count_key)?.filter(|&n| n != 0) else {
        return Ok(None);
    };
    if count < 0 {
        return Err(meta.invalid(&count_key, format!("{count} experts")));
    }
    let used_key = key("expert_used_count");
    let used = meta.require_int::<i32>(&used_key)?;
    if used < 1 || used > count {
        return Err(meta.invalid(
            &used_key,
            format!("{used} experts per token, of {count} (expert_count)"),
        ));
    }
    Ok(Some((count, used)))
}

/// The per-module quantization block: one entry per matrix, `None` when no
/// tensor is kept quantized.
fn quantization(gguf: &GgufFile) -> Option<QuantizationConfig> {
    let mut layers = BTreeMap::new();
    let mut any = false;
    for t in gguf.tensors() {
        let Some((module, "weight")) = hf_module(&t.name) else {
            continue;
        };
        if !kept_quantized(&t.dims) {
            continue;
        }
        let entry = match t.ggml_type().and_then(affine_bits) {
            Some(bits) => {
                any = true;
                LayerQuantization::Quantized(QuantParams {
                    group_size: GGUF_GROUP_SIZE,
                    bits,
                })
            }
            None => LayerQuantization::NotQuantized,
        };
        layers.insert(module, entry);
    }
    any.then(|| QuantizationConfig {
        default: QuantParams {
            group_size: GGUF_GROUP_SIZE,
            bits: 4,
        },
        mode: Some("affine".to_owned()),
        layers,
    })
}
