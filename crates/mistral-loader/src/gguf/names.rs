//! llama.cpp tensor names to Hugging Face module paths.
//!
//! `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj` + `weight`,
//! and so on for the Llama/Mistral decoder (the names llama.cpp's
//! `convert_hf_to_gguf.py` writes). Unknown names map to nothing: the
//! loader then reports them as tensors the model does not use.

/// Top-level modules: (GGUF stem, Hugging Face module path).
const TOP_LEVEL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Per-layer modules: (GGUF part of `blk.N.<part>`, Hugging Face part of
/// `model.layers.N.<part>`).
const LAYER_PARTS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Maps a module path between the two namings: `from` names the position
/// in the tables' pairs (0: GGUF, 1: Hugging Face) of `stem`'s naming.
fn translate(stem: &str, from: usize) -> Option<String> {
    let pick =
        |pair: &(&'static str, &'static str), side: usize| if side == 0 { pair.0 } else { pair.1 };
    if let Some(pair) = TOP_LEVEL.iter().find(|p| pick(p, from) == stem) {
        return Some(pick(pair, 1 - from).to_owned());
    }
    let prefixes = ["blk.", "model.layers."];
    let rest = stem.strip_prefix(prefixes[from])?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let pair = LAYER_PARTS.iter().find(|p| pick(p, from) == part)?;
    Some(format!(
        "{}{layer}.{}",
        prefixes[1 - from],
        pick(pair, 1 - from)
    ))
}

/// The Hugging Face module path and tensor kind (`weight` or `bias`) of the
/// GGUF tensor `name`, if it belongs to a Llama/Mistral decoder.
pub fn hf_module(name: &str) -> Option<(String, &str)> {
    let (stem, kind) = name.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    Some((translate(stem, 0)?, kind))
}

/// The GGUF tensor name of the Hugging Face module `module` and kind
/// (`weight` or `bias`): the inverse of [`hf_module`].
pub fn gguf_name(module: &str, kind: &str) -> Option<String> {
    Some(format!("{}.{kind}", translate(module, 1)?))
}

/// How many heads llama.cpp permuted the rows of this module's tensors by
/// (its rope layout): `q_proj` by the query heads, `k_proj` by the key/value
/// heads; `None` for every other module.
pub fn permuted_heads(module: &str, n_heads: i32, n_kv_heads: i32) -> Option<i32> {
    if module.ends_with(".self_attn.q_proj") {
        Some(n_heads)
    } else if module.ends_with(".self_attn.k_proj") {
        Some(n_kv_heads)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "blk.0.attn_norm.weight",
            "blk.12.ffn_norm.weight",
            "blk.3.attn_q.weight",
            "blk.3.attn_q.bias",
            "blk.3.attn_k.weight",
            "blk.3.attn_v.weight",
            "blk.3.attn_output.weight",
            "blk.29.ffn_gate.weight",
            "blk.29.ffn_up.weight",
            "blk.29.ffn_down.weight",
        ] {
            let (module, kind) = hf_module(name).unwrap();
            assert_eq!(gguf_name(&module, kind).as_deref(), Some(name), "{module}");
        }
        assert_eq!(
            hf_module("blk.3.attn_q.weight"),
            Some(("model.layers.3.self_attn.q_proj".to_owned(), "weight"))
        );
    }

    #[test]
    fn unknown_names_map_to_nothing() {
        for name in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "token_embd.scales",
        ] {
            assert_eq!(hf_module(name), None, "{name}");
        }
    }
}
