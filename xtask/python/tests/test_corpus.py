"""common.corpus: the tokenizer corpus the Python checks and the Rust tests share."""

from __future__ import annotations

import json
import os
import unittest

from common import corpus


class Corpus(unittest.TestCase):
    def test_texts(self):
        texts = corpus.texts()
        with open(os.path.join(os.path.dirname(corpus.__file__), "corpus.json"), encoding="utf-8") as f:
            self.assertEqual(texts, json.load(f)["texts"])
        self.assertTrue(texts and all(isinstance(t, str) for t in texts))
        self.assertIn("", texts)
        self.assertTrue(any(not t.isascii() for t in texts))


if __name__ == "__main__":
    unittest.main()
