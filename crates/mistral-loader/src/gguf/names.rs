//! llama.cpp tensor names to Hugging Face module paths.
//!
//! `blk.N.attn_q.weight` is `model.layers.N.self_attn.q_proj` + `weight`,
//! and so on for the Llama/Mistral decoder (the names llama.cpp's
//! `convert_hf_to_gguf.py` writes). Mixtral's experts come stacked
//! (`blk.N.ffn_gate_exps`, llama.cpp's names since April 2024, onto
//! mlx-community's `switch_mlp`) or one tensor per expert
//! (`blk.N.ffn_gate.E`, the older files, onto Mistral's `experts.E.w1`).
//! Unknown names map to nothing: the loader then reports them as tensors the
//! model does not use.

/// Top-level modules: (GGUF stem, Hugging Face module path).
const TOP_LEVEL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Per-layer modules: (GGUF part of `blk.N.<part>`, Hugging Face part of
/// `model.layers.N.<part>`).
const LAYER_PARTS: [(&str, &str); 13] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("ffn_gate_inp", "block_sparse_moe.gate"),
    ("ffn_gate_exps", "block_sparse_moe.switch_mlp.gate_proj"),
    ("ffn_up_exps", "block_sparse_moe.switch_mlp.up_proj"),
    ("ffn_down_exps", "block_sparse_moe.switch_mlp.down_proj"),
];

/// One expert's matrices in the older per-expert files: (GGUF role of
/// `blk.N.<role>.E`, Mistral's name in `block_sparse_moe.experts.E.<name>`).
const EXPERT_PARTS: [(&str, &str); 3] = [("ffn_gate", "w1"), ("ffn_down", "w2"), ("ffn_up", "w3")];

/// The Hugging Face name of the GGUF per-expert part `ffn_gate.E`
/// (`from` 0), or the reverse (`from` 1).
fn expert_part(part: &str, from: usize) -> Option<String> {
    let (expert, name) = if from == 0 {
        let (role, expert) = part.split_once('.')?;
        (expert, role)
    } else {
        let (expert, name) = part
            .strip_prefix("block_sparse_moe.experts.")?
            .split_once('.')?;
        (expert, name)
    };
    let expert: usize = expert.parse().ok()?;
    let pair = EXPERT_PARTS
        .iter()
        .find(|p| if from == 0 { p.0 } else { p.1 } == name)?;
    Some(if from == 0 {
        format!("block_sparse_moe.experts.{expert}.{}", pair.1)
    } else {
        format!("{}.{expert}", pair.0)
    })
}

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
    let other = match LAYER_PARTS.iter().find(|p| pick(p, from) == part) {
        Some(pair) => pick(pair, 1 - from).to_owned(),
        None => expert_part(part, from)?,
    };
    Some(format!("{}{layer}.{other}", prefixes[1 - from]))
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
            "blk.1.ffn_gate_inp.weight",
            "blk.1.ffn_gate_exps.weight",
            "blk.1.ffn_up_exps.weight",
            "blk.1.ffn_down_exps.weight",
            "blk.1.ffn_gate.0.weight",
            "blk.1.ffn_up.7.weight",
            "blk.1.ffn_down.12.weight",
        ] {
            let (module, kind) = hf_module(name).unwrap();
            assert_eq!(gguf_name(&module, kind).as_deref(), Some(name), "{module}");
        }
        assert_eq!(
            hf_module("blk.3.attn_q.weight"),
            Some(("model.layers.3.self_attn.q_proj".to_owned(), "weight"))
        );
        assert_eq!(
            hf_module("blk.2.ffn_down.5.weight"),
            Some((
                "model.layers.2.block_sparse_moe.experts.5.w2".to_owned(),
                "weight"
            ))
        );
        assert_eq!(
            hf_module("blk.2.ffn_up_exps.weight"),
            Some((
                "model.layers.2.block_sparse_moe.switch_mlp.up_proj".to_owned(),
                "weight"
            ))
        );
    }

    #[test]
    fn unknown_names_map_to_nothing() {
        for name in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "token_embd.scales",
            "blk.0.ffn_gate.x.weight",
            "blk.0.ffn_norm.0.weight",
            "blk.0.ffn_gate_exps.0.weight",
        ] {
            assert_eq!(hf_module(name), None, "{name}");
        }
    }
}
