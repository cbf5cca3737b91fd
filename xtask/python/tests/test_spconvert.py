"""common.spconvert: the tokenizer.json it builds from Mistral's SentencePiece
models (shipped in the mistral-common wheel) against sentencepiece and
mistral-common themselves."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from unittest import mock

import sentencepiece as spm
from tokenizers import Tokenizer

from common import spconvert

# A few corpus-like strings: spaces, accents, CJK, emoji (byte fallback), digits.
TEXTS = ["Hello, world!", " leading space", "multiple   spaces\tand tabs",
         "Café, naïve, Straße", "日本語のテキスト", "emoji 😀🎉", "x = 12345;\n"]


class Tokenizers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.paths = {v: spconvert.mistral_common_model_path(v) for v in ("v1", "v3")}
        cls.built = {v: spconvert.build_tokenizer(p) for v, p in cls.paths.items()}
        cls.sp = {v: spm.SentencePieceProcessor(model_file=p) for v, p in cls.paths.items()}

    def test_ids_and_decodes_are_sentencepieces(self):
        for version, tok in self.built.items():
            sp = self.sp[version]
            self.assertEqual(tok.get_vocab_size(), sp.get_piece_size(), version)
            for text in TEXTS:
                ids = tok.encode(text, add_special_tokens=False).ids
                self.assertEqual(ids, sp.encode(text), f"{version}: {text!r}")
                self.assertEqual(tok.encode(text).ids, [sp.bos_id()] + ids, f"{version}: BOS of {text!r}")
                self.assertEqual(tok.decode(ids), sp.decode(ids), f"{version}: decode of {text!r}")

    def test_special_pieces(self):
        for path in self.paths.values():
            self.assertEqual(spconvert.special_pieces(path),
                             {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})

    def test_the_saved_file_is_the_built_tokenizer(self):
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "tokenizer.json")
            spconvert.write_tokenizer_json(self.paths["v3"], out)
            with open(out, encoding="utf-8") as f:
                self.assertEqual(json.load(f)["model"]["type"], "BPE")
            loaded = Tokenizer.from_file(out)
        for text in TEXTS:
            self.assertEqual(loaded.encode(text).ids, self.built["v3"].encode(text).ids, text)

    def test_chat_templates_give_mistral_commons_ids(self):
        import jinja2
        from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

        self.assertFalse(spconvert.is_legacy(spconvert.load_proto(self.paths["v3"])))
        self.assertTrue(spconvert.is_legacy(spconvert.load_proto(self.paths["v1"])))
        kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
        conversation = [("system", "Be nice."), ("user", "Hello  there"), ("assistant", "Hi, you."),
                        ("user", "Again, café 日本 😀")]
        for version, path in self.paths.items():
            prompt = jinja2.Template(spconvert.chat_template(path)).render(
                messages=[{"role": r, "content": c} for r, c in conversation],
                bos_token="<s>", eos_token="</s>")
            ids = self.built[version].encode(prompt, add_special_tokens=False).ids
            request = ChatCompletionRequest(messages=[kinds[r](content=c) for r, c in conversation])
            expected = MistralTokenizer.from_file(path).encode_chat_completion(request).tokens
            self.assertEqual(ids, expected, version)

    def test_model_path_override(self):
        with mock.patch.dict(os.environ, {"MISTRAL_MLX_SP_MODELS": "/sp"}):
            self.assertEqual(spconvert.mistral_common_model_path("v1"), "/sp/tokenizer.model.v1")
        self.assertTrue(os.path.isfile(self.paths["v3"]))


if __name__ == "__main__":
    unittest.main()
