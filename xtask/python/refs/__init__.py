"""Reference producers: what mlx-lm, sentencepiece, mistral-common and
transformers answer, for the Rust tests to compare against (see ../README.md)."""
