"""common.mlx_lm_ref on a one-layer random model written to a temporary
folder (no generated test models needed)."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from common import mlx_lm_ref, spconvert

WINDOW = 4
CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 64,
    "max_position_embeddings": 128,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    # v0.1 style: a window and no `layer_types`.
    "sliding_window": WINDOW,
}
IDS = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]


def write_model(folder: str, config: dict) -> None:
    """A random mlx-lm llama-module model with `config`, saved as a Hugging
    Face folder (config.json, model.safetensors)."""
    from mlx_lm.models import llama

    mx.random.seed(11)
    args = llama.ModelArgs(**{k: v for k, v in config.items() if k != "architectures"})
    model = llama.Model(args)
    mx.save_safetensors(os.path.join(folder, "model.safetensors"), dict(tree_flatten(model.parameters())))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)


def close(a: mx.array, b: mx.array, tol: float = 1e-5) -> bool:
    a, b = np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32))
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= tol * max(1.0, float(np.max(np.abs(a))))


class LoadModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.windowed = os.path.join(cls.tmp.name, "windowed")
        cls.full = os.path.join(cls.tmp.name, "full")
        for folder, config in [(cls.windowed, CONFIG),
                               (cls.full, {k: v for k, v in CONFIG.items() if k != "sliding_window"})]:
            os.makedirs(folder)
            write_model(folder, config)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_a_window_without_layer_types_applies_to_every_layer(self):
        model, notes = mlx_lm_ref.load_model(self.windowed)
        self.assertEqual(notes["window"], f"sliding_window {WINDOW} applied to all 1 layers (patched)")
        self.assertTrue(all(layer.use_sliding for layer in model.model.layers))
        # One layer: the last position sees exactly the last WINDOW tokens
        # (query i sees key j iff i - window < j <= i), so its logits are
        # those of that suffix alone (RoPE depends on distances only).
        last = mlx_lm_ref.prompt_logits(model, IDS)[-1]
        suffix = mlx_lm_ref.prompt_logits(model, IDS[-WINDOW:])[-1]
        self.assertTrue(close(last, suffix, 1e-4))
        # mlx-lm's own loader attends over everything: not the same.
        from mlx_lm.utils import load_model

        plain, _config = load_model(Path(self.windowed))
        self.assertFalse(close(mlx_lm_ref.prompt_logits(plain, IDS)[-1], last, 1e-3))

    def test_no_window_loads_unpatched(self):
        model, notes = mlx_lm_ref.load_model(self.full)
        self.assertIsNone(notes["window"])
        self.assertFalse(any(layer.use_sliding for layer in model.model.layers))

    def test_chunked_and_one_pass_logits_agree(self):
        for folder in (self.windowed, self.full):
            model, _notes = mlx_lm_ref.load_model(folder)
            one_pass = mlx_lm_ref.prompt_logits(model, IDS)
            self.assertEqual(one_pass.shape, (len(IDS), CONFIG["vocab_size"]))
            self.assertEqual(one_pass.dtype, mx.float32)
            self.assertTrue(close(mlx_lm_ref.chunked_logits(model, IDS), one_pass), folder)
            self.assertIsNone(mlx_lm_ref.chunked_logits(model, IDS[:1]))

    def test_greedy_follows_the_argmax(self):
        model, _notes = mlx_lm_ref.load_model(self.windowed)
        ids, margins = mlx_lm_ref.greedy(model, IDS, 5)
        self.assertEqual(len(ids), 5)
        self.assertEqual(len(margins), 5)
        self.assertTrue(all(m >= 0 for m in margins))
        self.assertEqual(ids[0], int(mx.argmax(mlx_lm_ref.prompt_logits(model, IDS)[-1])))
        # Each next id is the argmax over the prompt and the ids so far.
        self.assertEqual(ids[1], int(mx.argmax(mlx_lm_ref.prompt_logits(model, IDS + ids[:1])[-1])))

    def test_dense_f32_dequantizes_every_layer(self):
        model, _notes = mlx_lm_ref.load_model(self.full)
        nn.quantize(model, group_size=32, bits=8)
        self.assertTrue(any(isinstance(m, nn.QuantizedLinear) for _name, m in model.named_modules()))
        quantized = mlx_lm_ref.prompt_logits(model, IDS)
        mlx_lm_ref.to_dense_f32(model)
        self.assertFalse(any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
                             for _name, m in model.named_modules()))
        self.assertTrue(all(p.dtype == mx.float32 for _name, p in tree_flatten(model.parameters())))
        self.assertTrue(close(mlx_lm_ref.prompt_logits(model, IDS), quantized, 1e-4))


class ReferenceFiles(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        folder = os.path.join(self.tmp.name, "model")
        os.makedirs(folder)
        write_model(folder, CONFIG)
        self.model, _notes = mlx_lm_ref.load_model(folder)
        self.prompts = [{"name": "a", "ids": IDS}, {"name": "one", "ids": [7]}]
        self.meta = {"model": "model", "greedy": 3}

    def test_safetensors(self):
        results = mlx_lm_ref.compute(self.model, self.prompts, 3, "float32")
        out = os.path.join(self.tmp.name, "refs", "model.safetensors")
        mlx_lm_ref.write(out, results, self.meta)
        tensors, metadata = mx.load(out, return_metadata=True)
        self.assertEqual(json.loads(metadata["reference"]), self.meta)
        self.assertEqual(sorted(tensors), sorted(
            ["a.prompt_ids", "a.logits", "a.chunked_logits", "a.greedy_ids", "a.greedy_margin",
             "one.prompt_ids", "one.logits", "one.greedy_ids", "one.greedy_margin"]))
        self.assertEqual(tensors["a.prompt_ids"].tolist(), IDS)
        self.assertEqual(tensors["a.prompt_ids"].dtype, mx.int32)
        self.assertEqual(tensors["a.logits"].dtype, mx.float32)
        self.assertTrue(close(tensors["a.logits"], mlx_lm_ref.prompt_logits(self.model, IDS), 0))
        greedy, margins = mlx_lm_ref.greedy(self.model, IDS, 3)
        self.assertEqual(tensors["a.greedy_ids"].tolist(), greedy)
        self.assertTrue(np.allclose(np.array(tensors["a.greedy_margin"]), margins, rtol=1e-6))

    def test_json_and_dtype(self):
        results = mlx_lm_ref.compute(self.model, self.prompts, 0, "bfloat16")
        self.assertEqual(results[0]["logits"].dtype, mx.bfloat16)
        self.assertEqual(results[0]["greedy_ids"], [])
        out = os.path.join(self.tmp.name, "model.json")
        mlx_lm_ref.write(out, results, self.meta)
        with open(out) as f:
            doc = json.load(f)
        self.assertEqual(doc["model"], "model")
        self.assertEqual([p["name"] for p in doc["prompts"]], ["a", "one"])
        self.assertEqual(doc["prompts"][0]["logits_dtype"], "mlx.core.bfloat16")
        self.assertEqual(doc["prompts"][0]["logits"],
                         np.array(results[0]["logits"].astype(mx.float32)).tolist())
        self.assertIsNone(doc["prompts"][1]["chunked_logits"])


class Settings(unittest.TestCase):
    def test_reference_device(self):
        with mock.patch.dict(os.environ, {"MISTRAL_MLX_REFERENCE_DEVICE": "gpu"}):
            self.assertEqual(mlx_lm_ref.reference_device(), mx.gpu)
        with mock.patch.dict(os.environ, {"MISTRAL_MLX_REFERENCE_DEVICE": "cpu"}):
            self.assertEqual(mlx_lm_ref.reference_device(), mx.cpu)
        with mock.patch.dict(os.environ):
            os.environ.pop("MISTRAL_MLX_REFERENCE_DEVICE", None)
            self.assertEqual(mlx_lm_ref.reference_device(), mx.cpu)

    def test_standard_prompts_use_the_folders_tokenizer(self):
        from tokenizers import Tokenizer

        with tempfile.TemporaryDirectory() as folder:
            spconvert.write_tokenizer_json(spconvert.mistral_common_model_path("v3"),
                                           os.path.join(folder, "tokenizer.json"))
            prompts = mlx_lm_ref.standard_prompts(folder)
            tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        self.assertEqual([p["name"] for p in prompts], list(mlx_lm_ref.STANDARD_TEXTS))
        for p in prompts:
            self.assertEqual(p["ids"][0], 1)  # BOS
            self.assertEqual(tok.decode(p["ids"], skip_special_tokens=True), mlx_lm_ref.STANDARD_TEXTS[p["name"]])
        # "long" is longer than the windowed test model's window (16).
        self.assertGreater(len(prompts[-1]["ids"]), 16)


if __name__ == "__main__":
    unittest.main()
