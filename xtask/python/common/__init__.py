"""Helpers the scripts of several rooms import (see ../README.md): mlx-lm as
the references run it, SentencePiece to tokenizer.json, the GGUF reader and
converter, the tokenizer corpus."""
