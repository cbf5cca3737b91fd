"""The shared tokenizer corpus: `corpus.json` beside this module, also read
by the Rust tokenizer tests (crates/mistral-loader/tests/python/mod.rs)."""

from __future__ import annotations

import json
from importlib import resources


def texts() -> list[str]:
    """The corpus strings, in file order."""
    return json.loads(resources.files(__package__).joinpath("corpus.json").read_text(encoding="utf-8"))["texts"]
