//! [`convert_model`]: any model this crate loads (a Hugging Face / MLX
//! directory or a GGUF file) written as an MLX safetensors folder, the
//! layout `mlx_lm.convert` writes and both mlx-lm and this loader read.
//!
//! Design notes:
//! - The source is loaded through the normal path (so it is validated the
//!   same way) while every tensor the model takes is recorded under its
//!   Hugging Face name; those tensors are what is written. Already-quantized
//!   matrices (mlx-community checkpoints; GGUF Q4_0/Q4_1/Q8_0/Q4_K, which
//!   the GGUF loader maps exactly onto MLX affine group-32 matrices) are
//!   written as they are, never re-quantized.
//! - `dtype` casts every floating-point tensor (scales and biases too), then
//!   `quantize` quantizes every dense matrix (embedding, projections, LM
//!   head) whose width is a multiple of the group size, as mlx-lm does.
//! - config.json: the source's (for a directory, every field kept) or one
//!   built from the GGUF metadata, with mlx-lm's `quantization` block (and
//!   the same under `quantization_config`): the default parameters, an entry
//!   for every quantized matrix whose parameters differ, and `false` for
//!   every matrix left dense, which both loaders read the same way.
//! - Weights go to `model.safetensors`, or to 5 GB shards plus
//!   `model.safetensors.index.json` (mlx-lm's limit).
//! - Tokenizer: a directory's tokenizer files are copied; a GGUF file's
//!   tokenizer is saved as `tokenizer.json`, with `tokenizer_config.json`
//!   (BOS/EOS texts, add-BOS) and `chat_template.jinja`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use mistral_model::{MistralConfig, QuantParams};
use mlx_rs::{ops::quantize, Array, Dtype};
use serde_json::{json, Map, Value};

use crate::error::{LoadError, Result};
use crate::gguf::{self, GgufFile};
use crate::load::{load_with_tensors, LoadOptions};
use crate::safetensors_files::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::tokenizer::TOKENIZER_CONFIG_FILE;

/// Tokenizer and generation files copied from a source directory.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "tokenizer.model",
];

/// The largest weights file written before sharding (mlx-lm's 5 GB).
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// What to change while converting.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvertOptions {
    /// Cast floating-point tensors to this dtype.
    pub dtype: Option<Dtype>,
    /// Quantize the dense matrices with these parameters.
    pub quantize: Option<QuantParams>,
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// The files written, in the output folder.
    pub files: Vec<PathBuf>,
    /// Number of tensors written.
    pub tensors: usize,
    /// Matrices written quantized (kept or newly quantized).
    pub quantized: usize,
    /// Matrices newly quantized by this conversion.
    pub newly_quantized: usize,
    /// Matrices written dense.
    pub dense: usize,
}

/// Converts the model at `source` into an MLX safetensors folder `out`,
/// which must not exist yet (or be empty).
pub fn convert_model(source: &Path, out: &Path, options: &ConvertOptions) -> Result<ConvertReport> {
    check_out_dir(out)?;
    if let Some(q) = &options.quantize {
        q.validate("--q-bits/--q-group-size")
            .map_err(|source| LoadError::Config {
                path: out.to_path_buf(),
                source,
            })?;
    }
    let gguf_file = gguf::find_gguf(source)?;
    let (model, seen) = load_with_tensors(source, &LoadOptions::default())?;
    let config = model.config().clone();
    drop(model);

    let mut tensors: BTreeMap<String, Array> = BTreeMap::new();
    for (name, array) in seen {
        // What `Mistral::new` takes and drops: a tied model's stray head,
        // precomputed RoPE frequencies.
        let dropped = (config.tie_word_embeddings && name.starts_with("lm_head."))
            || name.ends_with("rotary_emb.inv_freq");
        if !dropped {
            tensors.insert(name, array);
        }
    }
    if let Some(dtype) = options.dtype {
        for (name, array) in tensors.iter_mut() {
            if array.dtype().is_float() && array.dtype() != dtype {
                *array = array
                    .as_dtype(dtype)
                    .map_err(|e| mlx_error(source, name, e))?;
            }
        }
    }

    // Matrices: module path -> how it is stored. A mixture of experts'
    // stacked projections (`[experts, out, in]`) are matrices too, quantized
    // per expert as mlx-lm's `QuantizedSwitchLinear`.
    let mut layout: BTreeMap<String, Option<QuantParams>> = BTreeMap::new();
    let mut newly_quantized = 0;
    let matrices: Vec<String> = tensors
        .iter()
        .filter(|(name, a)| name.ends_with(".weight") && (a.ndim() == 2 || a.ndim() == 3))
        .map(|(name, _)| name.trim_end_matches(".weight").to_owned())
        .collect();
    for module in matrices {
        let existing = config
            .quantization_for(&module)
            .filter(|_| tensors.contains_key(&format!("{module}.scales")));
        let params = match (existing, options.quantize) {
            (Some(p), _) => Some(p),
            (None, Some(q)) => {
                let key = format!("{module}.weight");
                let w = &tensors[&key];
                if w.dim(-1) % q.group_size == 0 {
                    let (wq, scales, biases) = quantize(w, q.group_size, q.bits)
                        .map_err(|e| mlx_error(source, &key, e))?;
                    tensors.insert(key, wq);
                    tensors.insert(format!("{module}.scales"), scales);
                    tensors.insert(format!("{module}.biases"), biases);
                    newly_quantized += 1;
                    Some(q)
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        layout.insert(module, params);
    }

    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let mut files = write_weights(out, &tensors)?;
    let mut config_json = match &gguf_file {
        Some(_) => config_to_json(&config),
        None if crate::native::use_native(source, crate::native::WeightsLayout::Auto) => {
            crate::native::native_config_json(source)?
        }
        None => crate::config::load_config(source)?,
    };
    set_quantization(&mut config_json, &layout, options.quantize);
    files.push(write_json(&out.join(CONFIG_FILE), &config_json)?);
    match &gguf_file {
        Some(file) => files.extend(write_gguf_tokenizer(file, out)?),
        None => files.extend(copy_tokenizer_files(source, out)?),
    }
    let quantized = layout.values().filter(|p| p.is_some()).count();
    Ok(ConvertReport {
        files,
        tensors: tensors.len(),
        quantized,
        newly_quantized,
        dense: layout.len() - quantized,
    })
}

fn io(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn mlx_error(path: &Path, tensor: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Mlx {
        path: path.to_path_buf(),
        tensor: tensor.to_owned(),
        message: e.to_string(),
    }
}

/// `out` must not exist, or be an empty directory.
fn check_out_dir(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty = out.is_dir()
        && std::fs::read_dir(out)
            .map_err(|e| io(out, e))?
            .next()
            .is_none();
    if empty {
        Ok(())
    } else {
        Err(LoadError::InvalidField {
            path: out.to_path_buf(),
            field: "(output folder)".to_owned(),
            reason: "already exists and is not empty; choose a new folder".to_owned(),
        })
    }
}

/// Writes the tensors as one file or 5 GB shards with an index.
fn write_weights(out: &Path, tensors: &BTreeMap<String, Array>) -> Result<Vec<PathBuf>> {
    let mut shards: Vec<Vec<(&String, &Array)>> = vec![Vec::new()];
    let mut size = 0usize;
    let mut total = 0usize;
    for (name, array) in tensors {
        let bytes = array.nbytes();
        if size > 0 && size + bytes > MAX_SHARD_BYTES {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        total += bytes;
        shards
            .last_mut()
            .expect("one shard at least")
            .push((name, array));
    }
    let metadata: HashMap<String, String> = [("format".to_owned(), "mlx".to_owned())].into();
    let n = shards.len();
    let mut files = Vec::new();
    let mut weight_map = Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = if n == 1 {
            SINGLE_FILE.to_owned()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = out.join(&name);
        Array::save_safetensors(
            shard.iter().map(|(k, v)| (k.as_str(), *v)),
            &metadata,
            &path,
        )
        .map_err(|e| mlx_error(&path, "", e))?;
        for (tensor, _) in shard {
            weight_map.insert((*tensor).clone(), json!(name));
        }
        files.push(path);
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let index_path = out.join(INDEX_FILE);
    files.push(write_json(&index_path, &index)?);
    Ok(files)
}

fn write_json(path: &Path, value: &Value) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(value).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|e| io(path, e))?;
    Ok(path.to_path_buf())
}

/// A Hugging Face config.json for a config built from GGUF metadata.
pub fn config_to_json(cfg: &MistralConfig) -> Value {
    let architecture = match cfg.model_type.as_str() {
        "llama" => "LlamaForCausalLM",
        "mixtral" => "MixtralForCausalLM",
        _ => "MistralForCausalLM",
    };
    let mut v = json!({
        "architectures": [architecture],
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads(),
        "head_dim": cfg.head_dim(),
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta(),
        "rope_scaling": cfg.rope_scaling,
        "sliding_window": cfg.sliding_window,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "hidden_act": "silu",
    });
    let map = v.as_object_mut().expect("built as an object");
    if let Some(n) = cfg.max_position_embeddings {
        map.insert("max_position_embeddings".into(), json!(n));
    }
    if let Some(bos) = cfg.bos_token_id {
        map.insert("bos_token_id".into(), json!(bos));
    }
    if let Some((experts, per_token)) = cfg.experts() {
        map.insert("num_local_experts".into(), json!(experts));
        map.insert("num_experts_per_tok".into(), json!(per_token));
    }
    let eos = cfg.eos_token_ids();
    match eos.as_slice() {
        [] => {}
        [one] => {
            map.insert("eos_token_id".into(), json!(one));
        }
        many => {
            map.insert("eos_token_id".into(), json!(many));
        }
    }
    v
}

/// Sets mlx-lm's `quantization` / `quantization_config` blocks for
/// `layout` (or removes them when nothing is quantized).
fn set_quantization(
    config: &mut Value,
    layout: &BTreeMap<String, Option<QuantParams>>,
    requested: Option<QuantParams>,
) {
    let Some(map) = config.as_object_mut() else {
        return;
    };
    map.remove("quantization");
    map.remove("quantization_config");
    // The default: what was asked for, else the most common parameters.
    let mut counts: BTreeMap<(i32, i32), usize> = BTreeMap::new();
    for p in layout.values().flatten() {
        *counts.entry((p.group_size, p.bits)).or_default() += 1;
    }
    let most_common = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| QuantParams {
            group_size: k.0,
            bits: k.1,
        });
    let Some(default) = requested.filter(|_| !counts.is_empty()).or(most_common) else {
        return;
    };
    let mut block =
        json!({"group_size": default.group_size, "bits": default.bits, "mode": "affine"});
    let entries = block.as_object_mut().expect("built as an object");
    for (module, params) in layout {
        match params {
            Some(p) if *p == default => {}
            Some(p) => {
                entries.insert(
                    module.clone(),
                    json!({"group_size": p.group_size, "bits": p.bits}),
                );
            }
            None => {
                entries.insert(module.clone(), json!(false));
            }
        }
    }
    map.insert("quantization".into(), block.clone());
    map.insert("quantization_config".into(), block);
}

/// Copies the tokenizer files a directory has.
fn copy_tokenizer_files(dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let from = dir.join(name);
        if from.is_file() {
            let to = out.join(name);
            std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
            files.push(to);
        }
    }
    Ok(files)
}

/// Writes a GGUF file's tokenizer, its settings and chat template.
fn write_gguf_tokenizer(file: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let gguf = GgufFile::open(file)?;
    let meta = gguf.metadata();
    let tokenizer = gguf::gguf_tokenizer(meta)?;
    let tokenizer_path = out.join(crate::tokenizer::TOKENIZER_FILE);
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| LoadError::Tokenizer {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
    let mut files = vec![tokenizer_path];
    let mut settings = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "add_bos_token": gguf::adds_bos(meta)?,
        "add_eos_token": meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
    });
    let map = settings.as_object_mut().expect("built as an object");
    for (field, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(text) = gguf::token_text(meta, key)? {
            map.insert(field.into(), json!(text));
        }
    }
    files.push(write_json(&out.join(TOKENIZER_CONFIG_FILE), &settings)?);
    if let Some(template) = meta.str(gguf::CHAT_TEMPLATE_KEY)? {
        let path = out.join(crate::chat_template::CHAT_TEMPLATE_FILE);
        std::fs::write(&path, template).map_err(|e| io(&path, e))?;
        files.push(path);
    }
    Ok(files)
}
