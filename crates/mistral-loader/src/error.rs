//! The loader's error type.
//!
//! Design notes:
//! - Every variant names the file it is about (`path`, `index`, `shard`), and
//!   where it applies the tensor or JSON field, so a user can fix a broken
//!   model directory without a debugger.
//! - Nothing in this crate panics on user data; all problems with files end
//!   up here.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The model directory does not exist.
    #[error("model directory {dir} does not exist")]
    DirNotFound {
        /// The directory that was asked for.
        dir: PathBuf,
    },

    /// The model path exists but is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path that was asked for.
        path: PathBuf,
    },

    /// A file the loader needs is absent.
    #[error("{what} file {path} does not exist")]
    MissingFile {
        /// The expected file.
        path: PathBuf,
        /// What the file is for ("config", "tokenizer", ...).
        what: &'static str,
    },

    /// The directory has no safetensors weights in any supported layout.
    #[error(
        "no weights in {dir}: expected model.safetensors, or \
         model.safetensors.index.json with its shards, or model-XXXXX-of-YYYYY.safetensors shards"
    )]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },

    /// Shard files without an index do not form one complete set.
    #[error("incomplete or inconsistent shards in {dir}: {reason}")]
    ShardSet {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong (e.g. which shard is absent).
        reason: String,
    },

    /// Reading, opening or memory-mapping a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// A JSON file is not valid JSON (or not of the expected overall shape).
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },

    /// A JSON field has a value the loader cannot use.
    #[error("{path}: field `{field}`: {reason}")]
    InvalidField {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `eos_token_id` or `weight_map.model.norm.weight`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The sharded checkpoint's index is inconsistent with the directory.
    #[error("{index}: {reason}")]
    InvalidIndex {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The index maps a tensor to a shard file that does not exist.
    #[error("{index} maps tensor `{tensor}` to shard {shard}, which does not exist")]
    MissingShard {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// The absent shard.
        shard: PathBuf,
        /// One tensor the index places in that shard.
        tensor: String,
    },

    /// The index lists a tensor that its shard does not contain.
    #[error("{index} places tensor `{tensor}` in {shard}, but that file has no such tensor")]
    TensorNotInShard {
        /// The `model.safetensors.index.json` file.
        index: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shard that should contain it.
        shard: PathBuf,
    },

    /// Two weight files (without an index to choose) both hold a tensor.
    #[error("tensor `{tensor}` is present in both {first} and {second}")]
    DuplicateTensor {
        /// The tensor name.
        tensor: String,
        /// The first file holding it.
        first: PathBuf,
        /// The second file holding it.
        second: PathBuf,
    },

    /// A safetensors file's header is corrupt, or the file is truncated.
    #[error("{path} is not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the `safetensors` crate found.
        source: safetensors::SafeTensorError,
    },

    /// A GGUF file's header, metadata or tensor directory is corrupt, or the
    /// file is truncated or of an unsupported version.
    #[error("{path} {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong ("is truncated: ...").
        message: String,
    },

    /// A GGUF tensor cannot be loaded (unsupported ggml type, bad data).
    #[error("{path}: tensor `{tensor}` {message}")]
    GgufTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// What is wrong.
        message: String,
    },

    /// A tensor's dtype has no MLX equivalent (e.g. F8 variants).
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, which MLX does not support")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The safetensors dtype, as written in the header.
        dtype: String,
    },

    /// A tensor's shape does not fit MLX's 32-bit dimensions.
    #[error("{path}: tensor `{tensor}` has shape {shape:?}; MLX dimensions must fit in i32")]
    ShapeTooLarge {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shape from the header.
        shape: Vec<usize>,
    },

    /// MLX failed to create the array (e.g. out of memory).
    #[error("{path}: MLX could not create tensor `{tensor}`: {message}")]
    Mlx {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// MLX's message, where it gave one.
        message: String,
    },

    /// `tokenizer.json` could not be loaded by the `tokenizers` crate.
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The `tokenizers` crate's message.
        message: String,
    },

    /// The tokenizer produces ids the model has no embedding row for.
    #[error(
        "{}: the tokenizer has {tokenizer_vocab} tokens, more than the model's `vocab_size` \
         ({model_vocab}); ids past the model's vocabulary would have no embedding",
        path.display()
    )]
    TokenizerVocab {
        /// The tokenizer's file (or the GGUF file holding it).
        path: PathBuf,
        /// Tokens the tokenizer can produce (added tokens included).
        tokenizer_vocab: usize,
        /// The model's `vocab_size`.
        model_vocab: i32,
    },

    /// A special token string is not in the tokenizer's vocabulary.
    #[error(
        "{path}: field `{field}` names token {token:?}, which is not in the tokenizer's vocabulary"
    )]
    UnknownToken {
        /// The file (usually `tokenizer_config.json`).
        path: PathBuf,
        /// The field (`bos_token` or `eos_token`).
        field: String,
        /// The token string.
        token: String,
    },

    /// A chat template does not compile.
    #[error("{}: {source}", path.display())]
    ChatTemplate {
        /// The file holding it (the model directory for the built-in one).
        path: PathBuf,
        /// minijinja's message.
        source: mistral_text::ChatError,
    },

    /// `config.json` is not a valid Mistral configuration.
    #[error("{}: {source}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the field.
        source: mistral_model::ConfigError,
    },

    /// A tensor does not fit the model the config describes.
    #[error("{}: {source}", path.display())]
    Model {
        /// The safetensors file holding the tensor; for a missing tensor,
        /// the checkpoint's single file or its shard index.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        source: mistral_model::ModelError,
    },

    /// The checkpoint holds tensors the model does not use.
    #[error("{} holds {} tensor(s) the model does not use, e.g. `{}`", first.1.display(), count, first.0)]
    UnexpectedTensors {
        /// The first unused tensor and its file.
        first: (String, PathBuf),
        /// How many tensors were left unused.
        count: usize,
    },
}

/// Short for `Result<T, LoadError>`.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;
