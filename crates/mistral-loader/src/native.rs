//! Mistral's own layout: `params.json` beside `consolidated.safetensors`
//! (or `consolidated-0000N-of-0000M.safetensors`), as Mistral publishes a
//! model first.
//!
//! Design notes:
//! - [`native_config_json`] turns `params.json` into the `config.json`
//!   transformers' converter writes for it (`dim` -> `hidden_size`, ...);
//!   the model is then built from that as from any `config.json`, and
//!   `convert` writes it out. `yarn` with `llama_4_scaling` (Ministral 3,
//!   Mistral Small 3.2, Devstral 2) makes a `ministral3` config as
//!   transformers' `convert_ministral3_weights_to_hf.py` does. Fields whose
//!   meaning here is not checked against a reference (`q_lora_rank`,
//!   `yarn.apply_scale: true`, ...) are refused by name rather than guessed;
//!   a `vision_encoder` is set aside (its weights are never read, as for
//!   `mistral3`).
//! - [`NativeWeights`] hands the tensors to the model under Hugging Face
//!   names (`layers.0.attention.wq` is `model.layers.0.self_attn.q_proj`),
//!   and puts `wq`/`wk` rows in the rotate-half order the model's RoPE
//!   uses: Mistral stores each head's rows interleaved in pairs, as
//!   transformers' `convert_mistral_weights_to_hf.py` undoes with its
//!   `permute` (the same order llama.cpp stores, `rope_rows`).
//! - Which layout a folder holding both is read in is the caller's choice
//!   ([`WeightsLayout`]); by default the Hugging Face one.

use std::path::{Path, PathBuf};

use mistral_model::{Block, WeightSource};
use mlx_rs::Array;
use serde_json::{json, Map, Value};

use crate::error::{LoadError, Result};
use crate::rope_rows::hf_row_order;
use crate::safetensors_files::{CheckpointFiles, CheckpointLayout};
use crate::safetensors_weights::SafetensorsWeights;

/// Mistral's configuration file.
pub const PARAMS_FILE: &str = "params.json";

/// Which of a folder's weight layouts to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightsLayout {
    /// `config.json` and `model*.safetensors` when present, else Mistral's.
    #[default]
    Auto,
    /// `config.json` and `model*.safetensors`.
    HuggingFace,
    /// `params.json` and `consolidated*.safetensors`.
    Mistral,
}

/// The `consolidated*.safetensors` files of `dir`, sorted; empty when none.
pub fn consolidated_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("consolidated") && n.ends_with(".safetensors"))
        })
        .collect();
    files.sort();
    files
}

/// The consolidated files of `dir` as one checkpoint; an error naming
/// `params.json` when there are none.
pub fn consolidated_checkpoint(dir: &Path) -> Result<CheckpointFiles> {
    let files = consolidated_files(dir);
    if files.is_empty() {
        return Err(LoadError::InvalidField {
            path: dir.join(PARAMS_FILE),
            field: "(weights)".to_owned(),
            reason: "no consolidated*.safetensors beside it".to_owned(),
        });
    }
    Ok(CheckpointFiles {
        dir: dir.to_path_buf(),
        layout: CheckpointLayout::ShardsWithoutIndex,
        files,
        index: None,
        weight_map: None,
    })
}

/// Whether `dir` is read in Mistral's layout under `layout`: asked for, or
/// (`Auto`) it has `params.json` and consolidated weights but no
/// `config.json`.
pub fn use_native(dir: &Path, layout: WeightsLayout) -> bool {
    match layout {
        WeightsLayout::Mistral => true,
        WeightsLayout::HuggingFace => false,
        WeightsLayout::Auto => {
            dir.is_dir()
                && !dir.join(crate::safetensors_files::CONFIG_FILE).is_file()
                && dir.join(PARAMS_FILE).is_file()
                && !consolidated_files(dir).is_empty()
        }
    }
}

/// `dir/params.json` as the `config.json` transformers' converter writes
/// for it (see the module notes); errors name the file and the field.
pub fn native_config_json(dir: &Path) -> Result<Value> {
    let path = dir.join(PARAMS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let params: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.clone(),
        source,
    })?;
    params_to_config(&params).map_err(|(field, reason)| LoadError::InvalidField {
        path,
        field,
        reason,
    })
}

/// The `config.json` of `params` (see [`native_config_json`]).
fn params_to_config(params: &Value) -> std::result::Result<Value, (String, String)> {
    let p = params.as_object().ok_or_else(|| {
        (
            "(top level)".to_owned(),
            "params.json must be a JSON object".to_owned(),
        )
    })?;
    const REFUSED: [&str; 4] = ["q_lora_rank", "kv_lora_rank", "lora", "quantization"];
    if let Some(field) = REFUSED
        .iter()
        .find(|f| p.get(**f).is_some_and(|v| !v.is_null()))
    {
        return Err((
            (*field).to_owned(),
            "is not supported in Mistral's layout yet; the Hugging Face layout of the same \
             model (config.json) is"
                .to_owned(),
        ));
    }
    let int = |key: &str| -> std::result::Result<Option<Value>, (String, String)> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if v.is_i64() || v.is_u64() => Ok(Some(v.clone())),
            Some(v) => Err((key.to_owned(), format!("must be an integer, got {v}"))),
        }
    };
    let required = |key: &str| int(key)?.ok_or_else(|| (key.to_owned(), "is missing".to_owned()));
    let number = |key: &str| -> std::result::Result<Option<Value>, (String, String)> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) if v.is_number() => Ok(Some(v.clone())),
            Some(v) => Err((key.to_owned(), format!("must be a number, got {v}"))),
        }
    };
    let mut c = Map::new();
    let moe = p.get("moe").filter(|m| !m.is_null());
    let theta = number("rope_theta")?;
    let yarn = yarn_rope(p, theta.clone())?;
    let (model_type, arch) = match (&yarn, moe) {
        (Some(_), Some(_)) => {
            return Err((
                "yarn".to_owned(),
                "together with moe is not supported in Mistral's layout yet".to_owned(),
            ))
        }
        (Some(_), None) => ("ministral3", "Ministral3ForCausalLM"),
        (None, Some(_)) => ("mixtral", "MixtralForCausalLM"),
        (None, None) => ("mistral", "MistralForCausalLM"),
    };
    c.insert("architectures".into(), json!([arch]));
    c.insert("model_type".into(), json!(model_type));
    c.insert("hidden_size".into(), required("dim")?);
    c.insert("num_hidden_layers".into(), required("n_layers")?);
    c.insert("num_attention_heads".into(), required("n_heads")?);
    c.insert("intermediate_size".into(), required("hidden_dim")?);
    c.insert("vocab_size".into(), required("vocab_size")?);
    if let Some(kv) = int("n_kv_heads")? {
        c.insert("num_key_value_heads".into(), kv);
    }
    if let Some(hd) = int("head_dim")? {
        c.insert("head_dim".into(), hd);
    }
    c.insert(
        "rms_norm_eps".into(),
        number("norm_eps")?.ok_or(("norm_eps".to_owned(), "is missing".to_owned()))?,
    );
    // mistral-inference's default base when params.json has none
    // (transformers' Ministral 3 converter's with yarn).
    if let Some(rope) = yarn {
        c.insert("rope_parameters".into(), Value::Object(rope));
        let layers = c["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
        c.insert("layer_types".into(), json!(vec!["full_attention"; layers]));
        // The converter's default: Ministral 3's params.json has no length.
        if int("max_position_embeddings")?
            .or(int("max_seq_len")?)
            .is_none()
        {
            c.insert("max_position_embeddings".into(), json!(262144));
        }
        if p.get("sliding_window").is_some_and(|v| !v.is_null()) {
            return Err((
                "sliding_window".into(),
                "together with yarn is not supported in Mistral's layout yet".to_owned(),
            ));
        }
    } else {
        c.insert("rope_theta".into(), theta.unwrap_or(json!(10000.0)));
    }
    if let Some(window) = int("sliding_window")? {
        c.insert("sliding_window".into(), window);
    } else if let Some(v) = p.get("sliding_window").filter(|v| !v.is_null()) {
        return Err((
            "sliding_window".into(),
            format!("must be an integer, got {v}"),
        ));
    }
    if let Some(n) = int("max_position_embeddings")?.or(int("max_seq_len")?) {
        c.insert("max_position_embeddings".into(), n);
    }
    let tied = match p.get("tied_embeddings") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err((
                "tied_embeddings".into(),
                format!("must be true or false, got {v}"),
            ))
        }
    };
    c.insert("tie_word_embeddings".into(), json!(tied));
    if let Some(moe) = moe {
        let field = |key: &str| {
            moe.get(key).and_then(Value::as_i64).ok_or_else(|| {
                (
                    format!("moe.{key}"),
                    "is missing or not an integer".to_owned(),
                )
            })
        };
        c.insert("num_local_experts".into(), json!(field("num_experts")?));
        c.insert(
            "num_experts_per_tok".into(),
            json!(field("num_experts_per_tok")?),
        );
    }
    // Mistral's control tokens: <s> is 1 and </s> is 2 in every tokenizer.
    c.insert("bos_token_id".into(), json!(1));
    c.insert("eos_token_id".into(), json!(2));
    c.insert("hidden_act".into(), json!("silu"));
    Ok(Value::Object(c))
}

/// The `rope_parameters` of `yarn` and `llama_4_scaling` (both or
/// neither), as transformers' Ministral 3 converter writes them: `beta` is
/// `beta_fast`, `alpha` is `beta_slow`, `mscale` = `mscale_all_dim` = 1
/// (no attention factor, what `apply_scale: false` asks vLLM for), the
/// base `theta` or the converter's default.
fn yarn_rope(
    p: &Map<String, Value>,
    theta: Option<Value>,
) -> std::result::Result<Option<Map<String, Value>>, (String, String)> {
    let present = |key: &str| p.get(key).filter(|v| !v.is_null());
    let (yarn, scaling) = match (present("yarn"), present("llama_4_scaling")) {
        (None, None) => return Ok(None),
        (Some(y), Some(s)) => (y, s),
        (Some(_), None) => {
            return Err((
                "llama_4_scaling".to_owned(),
                "is missing (yarn is only read together with it)".to_owned(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "yarn".to_owned(),
                "is missing (llama_4_scaling is only read together with it)".to_owned(),
            ))
        }
    };
    let field = |obj: &Value, name: &str, key: &str, integer: bool| {
        let v = obj.get(key).filter(|v| !v.is_null());
        match v {
            Some(v) if v.is_number() && (!integer || v.is_u64()) => Ok(v.clone()),
            _ => Err((
                format!("{name}.{key}"),
                format!(
                    "is missing or not {}",
                    if integer {
                        "a positive integer"
                    } else {
                        "a number"
                    }
                ),
            )),
        }
    };
    if !yarn.is_object() || !scaling.is_object() {
        let name = if yarn.is_object() {
            "llama_4_scaling"
        } else {
            "yarn"
        };
        return Err((name.to_owned(), "must be a JSON object".to_owned()));
    }
    match yarn.get("apply_scale") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(v) => {
            return Err((
                "yarn.apply_scale".to_owned(),
                format!("{v} is not supported (only false, as Mistral's checkpoints have it)"),
            ))
        }
    }
    let original = field(yarn, "yarn", "original_max_position_embeddings", true)?;
    if let Some(n) = scaling.get("original_max_position_embeddings") {
        if n != &original {
            return Err((
                "llama_4_scaling.original_max_position_embeddings".to_owned(),
                format!("{n} differs from yarn's {original}"),
            ));
        }
    }
    let float = |v: Value| json!(v.as_f64().unwrap_or_default());
    let mut rope = Map::new();
    rope.insert("rope_type".into(), json!("yarn"));
    rope.insert("rope_theta".into(), theta.unwrap_or(json!(1000000.0)));
    rope.insert(
        "factor".into(),
        float(field(yarn, "yarn", "factor", false)?),
    );
    rope.insert("original_max_position_embeddings".into(), original);
    rope.insert(
        "beta_fast".into(),
        float(field(yarn, "yarn", "beta", false)?),
    );
    rope.insert(
        "beta_slow".into(),
        float(field(yarn, "yarn", "alpha", false)?),
    );
    rope.insert("mscale".into(), json!(1.0));
    rope.insert("mscale_all_dim".into(), json!(1.0));
    rope.insert(
        "llama_4_scaling_beta".into(),
        field(scaling, "llama_4_scaling", "beta", false)?,
    );
    Ok(Some(rope))
}

/// Whether `name` (as stored) belongs to a vision encoder and its adapter,
/// which the text model never reads.
pub fn is_vision_tensor(name: &str) -> bool {
    [
        "vision_encoder.",
        "vision_language_adapter.",
        "patch_merger.",
        "pre_mm_projector_norm.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The name Mistral's layout stores the Hugging Face tensor `name` under.
pub fn native_name(name: &str) -> Option<String> {
    const TOP: [(&str, &str); 3] = [
        ("model.embed_tokens.", "tok_embeddings."),
        ("model.norm.", "norm."),
        ("lm_head.", "output."),
    ];
    const LAYER: [(&str, &str); 11] = [
        ("input_layernorm.", "attention_norm."),
        ("post_attention_layernorm.", "ffn_norm."),
        ("self_attn.q_proj.", "attention.wq."),
        ("self_attn.k_proj.", "attention.wk."),
        ("self_attn.v_proj.", "attention.wv."),
        ("self_attn.o_proj.", "attention.wo."),
        ("mlp.gate_proj.", "feed_forward.w1."),
        ("mlp.down_proj.", "feed_forward.w2."),
        ("mlp.up_proj.", "feed_forward.w3."),
        ("block_sparse_moe.gate.", "feed_forward.gate."),
        ("block_sparse_moe.experts.", "feed_forward.experts."),
    ];
    if let Some((hf, native)) = TOP.iter().find(|(hf, _)| name.starts_with(hf)) {
        return Some(format!("{native}{}", &name[hf.len()..]));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (hf, native) = LAYER.iter().find(|(hf, _)| part.starts_with(hf))?;
    Some(format!("layers.{layer}.{native}{}", &part[hf.len()..]))
}

/// The tensors of Mistral's layout under Hugging Face names (see the
/// module notes).
pub struct NativeWeights<'a> {
    /// The consolidated files.
    inner: &'a mut SafetensorsWeights,
    heads: i32,
    kv_heads: i32,
}

impl<'a> NativeWeights<'a> {
    /// Views `inner`; `heads`/`kv_heads` reorder `wq`/`wk` rows.
    pub fn new(inner: &'a mut SafetensorsWeights, heads: i32, kv_heads: i32) -> Self {
        Self {
            inner,
            heads,
            kv_heads,
        }
    }

    /// `wq`/`wk` rows in Hugging Face order; other tensors as they are.
    fn reorder(&mut self, name: &str, array: Array) -> Option<Array> {
        let heads = if name.ends_with("self_attn.q_proj.weight") {
            self.heads
        } else if name.ends_with("self_attn.k_proj.weight") {
            self.kv_heads
        } else {
            return Some(array);
        };
        let rows = usize::try_from(*array.shape().first()?).ok()?;
        let Some(order) = hf_row_order(rows, heads) else {
            // Left as stored: the model's shape check names the tensor.
            return Some(array);
        };
        let order: Vec<i32> = order.into_iter().map(|r| r as i32).collect();
        let index = Array::from_slice(&order, &[order.len() as i32]);
        array.take_axis(&index, 0).ok()
    }
}

impl WeightSource for NativeWeights<'_> {
    fn take(&mut self, name: &str) -> Option<Array> {
        let stored = native_name(name)?;
        let array = self.inner.take(&stored)?;
        self.reorder(name, array)
    }

    fn take_block(&mut self, name: &str, block: Block) -> Option<Array> {
        // Reordered rows stay within a head, and a block holds whole heads,
        // but the block is cut after the reorder to keep that out of sight.
        if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
            return self.take(name).map(|a| block.copy_of(a));
        }
        let stored = native_name(name)?;
        self.inner.take_block(&stored, block)
    }
}
