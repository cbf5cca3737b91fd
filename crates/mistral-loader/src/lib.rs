//! Loads Mistral model directories (config, safetensors shards, tokenizer).
