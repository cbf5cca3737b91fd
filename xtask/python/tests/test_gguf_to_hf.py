"""common.gguf_to_hf: its GGUF reader and the conversion steps, on a tiny
llama GGUF file written here by gguf-py's GGUFWriter."""

from __future__ import annotations

import os
import tempfile
import unittest

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

from common import gguf_to_hf

HIDDEN, HEADS, KV_HEADS, VOCAB = 32, 4, 2, 64
TOKENS = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(VOCAB - 3)]


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute (Hugging Face rows
    to GGUF rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: str, weights: dict[str, np.ndarray], tokens: list[str] = TOKENS,
               untied: bool = False) -> None:
    """A one-layer llama GGUF: q in Q8_0, k in F16, the rest F32 (GGUF rows,
    i.e. q and k permuted); tied embeddings (no output.weight) unless
    `untied`."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(64)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e6)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(len(tokens))])
    w.add_token_types([2, 3, 3] + [1] * (len(tokens) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", weights["embed"])
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(permute(weights["q"], HEADS), QT.Q8_0),
                 raw_dtype=QT.Q8_0)
    w.add_tensor("blk.0.attn_k.weight", permute(weights["k"], KV_HEADS).astype(np.float16))
    w.add_tensor("output_norm.weight", weights["norm"])
    if untied:
        w.add_tensor("output.weight", weights["embed"] * 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class Gguf(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rng = np.random.default_rng(5)
        cls.weights = {
            "embed": rng.normal(0, 0.02, (VOCAB, HIDDEN)).astype(np.float32),
            "q": rng.normal(0, 0.02, (HIDDEN, HIDDEN)).astype(np.float32),
            "k": rng.normal(0, 0.02, (HIDDEN // HEADS * KV_HEADS, HIDDEN)).astype(np.float32),
            "norm": (1 + 0.1 * rng.normal(0, 1, HIDDEN)).astype(np.float32),
        }
        cls.tmp = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.tmp.name, "tiny.gguf")
        write_gguf(cls.path, cls.weights)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_metadata(self):
        g = gguf_to_hf.GgufFile(self.path)
        self.assertEqual(g.get("general.architecture"), "llama")
        self.assertEqual(g.get("llama.block_count"), 1)
        self.assertEqual(g.get("llama.attention.head_count_kv"), KV_HEADS)
        self.assertEqual(np.float32(g.get("llama.attention.layer_norm_rms_epsilon")), np.float32(1e-5))
        tokens = g.get("tokenizer.ggml.tokens")
        self.assertIsInstance(tokens, gguf_to_hf.StringArray)
        self.assertEqual(len(tokens), VOCAB)
        self.assertEqual(tokens.strings(), TOKENS)
        scores = g.get("tokenizer.ggml.scores")
        self.assertEqual(scores.dtype, np.float32)
        self.assertEqual(scores.tolist(), [-float(i) for i in range(VOCAB)])
        self.assertIsNone(g.get("llama.expert_count"))

    def test_tensors(self):
        g = gguf_to_hf.GgufFile(self.path)
        self.assertEqual([(t.name, t.qtype, t.shape) for t in g.tensors], [
            ("token_embd.weight", QT.F32, (VOCAB, HIDDEN)),
            ("blk.0.attn_q.weight", QT.Q8_0, (HIDDEN, HIDDEN)),
            ("blk.0.attn_k.weight", QT.F16, (HIDDEN // HEADS * KV_HEADS, HIDDEN)),
            ("output_norm.weight", QT.F32, (HIDDEN,)),
        ])
        embed = gguf.quants.dequantize(g.tensors[0].data, QT.F32).reshape(VOCAB, HIDDEN)
        self.assertTrue(np.array_equal(embed, self.weights["embed"]))

    def test_the_reader_equals_gguf_pys(self):
        gguf_to_hf.check_reader(self.path)  # raises GgufError on any difference

    def test_not_a_gguf_file(self):
        path = os.path.join(self.tmp.name, "not.gguf")
        with open(path, "wb") as f:
            f.write(b"GGML" + bytes(60))
        with self.assertRaises(gguf_to_hf.GgufError):
            gguf_to_hf.GgufFile(path)

    def test_config(self):
        config = gguf_to_hf.read_config(gguf_to_hf.GgufFile(self.path))
        expected = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
            "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "hidden_act": "silu",
            "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
            "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
        }
        self.assertEqual(config, expected)
        self.assertEqual(repr(config["rms_norm_eps"]), "1e-05")  # not 9.99999974e-06
        untied = os.path.join(self.tmp.name, "untied.gguf")
        write_gguf(untied, self.weights, untied=True)
        g = gguf_to_hf.GgufFile(untied)
        self.assertFalse(gguf_to_hf.read_config(g)["tie_word_embeddings"])
        weights, _kinds = gguf_to_hf.dequantize_all(g, gguf_to_hf.read_config(g))
        self.assertTrue(np.array_equal(weights["lm_head.weight"], self.weights["embed"] * 2))

    def test_dequantized_weights_have_hugging_face_names_and_rows(self):
        g = gguf_to_hf.GgufFile(self.path)
        weights, kinds = gguf_to_hf.dequantize_all(g, gguf_to_hf.read_config(g))
        self.assertEqual(sorted(weights), ["model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight",
                                           "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"])
        self.assertEqual(kinds["blk.0.attn_q.weight"], "Q8_0")
        self.assertTrue(all(w.dtype == np.float32 for w in weights.values()))
        # q/k rows back in Hugging Face order (Q8_0: within half a step of a
        # block's scale, max|w| / 127 / 2; F16: within its rounding).
        q = weights["model.layers.0.self_attn.q_proj.weight"]
        self.assertLess(np.max(np.abs(q - self.weights["q"])), np.max(np.abs(self.weights["q"])) / 127)
        k = weights["model.layers.0.self_attn.k_proj.weight"]
        self.assertTrue(np.allclose(k, self.weights["k"], rtol=1e-3, atol=1e-6))
        self.assertTrue(np.array_equal(weights["model.norm.weight"], self.weights["norm"]))

    def test_tokenizer_fingerprint(self):
        other = os.path.join(self.tmp.name, "other.gguf")
        changed = dict(self.weights, q=self.weights["q"] * 2)
        write_gguf(other, changed)
        self.assertEqual(gguf_to_hf.tokenizer_fingerprint(self.path), gguf_to_hf.tokenizer_fingerprint(other))
        write_gguf(other, self.weights, TOKENS[:-1] + ["last"])
        self.assertNotEqual(gguf_to_hf.tokenizer_fingerprint(self.path), gguf_to_hf.tokenizer_fingerprint(other))


class Names(unittest.TestCase):
    def test_unpermute(self):
        # One head of 4 rows: GGUF stores rows 0, 2, 1, 3 of Hugging Face's.
        w = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
        self.assertEqual(gguf_to_hf.unpermute(w[[0, 2, 1, 3]], 1)[:, 0].tolist(), [0, 1, 2, 3])
        big = np.random.default_rng(1).normal(size=(48, 5)).astype(np.float32)
        for heads in (1, 2, 3, 6):
            self.assertTrue(np.array_equal(gguf_to_hf.unpermute(permute(big, heads), heads), big))
        with self.assertRaises(gguf_to_hf.GgufError):
            gguf_to_hf.unpermute(big, 5)

    def test_hf_name(self):
        for role, name in [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                           ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                           ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                           ("ffn_down", "mlp.down_proj"), ("attn_norm", "input_layernorm"),
                           ("ffn_norm", "post_attention_layernorm")]:
            self.assertEqual(gguf_to_hf.hf_name(f"blk.12.{role}.weight"), (f"model.layers.12.{name}.weight", role))
        self.assertEqual(gguf_to_hf.hf_name("token_embd.weight"), ("model.embed_tokens.weight", "token_embd"))
        self.assertEqual(gguf_to_hf.hf_name("output.weight"), ("lm_head.weight", "output"))
        self.assertEqual(gguf_to_hf.hf_name("blk.3.ffn_down.weight"), ("model.layers.3.mlp.down_proj.weight", "ffn_down"))
        self.assertEqual(gguf_to_hf.hf_name("blk.0.attn_norm.weight"),
                         ("model.layers.0.input_layernorm.weight", "attn_norm"))
        self.assertEqual(gguf_to_hf.hf_name("blk.1.ffn_gate_inp.weight"),
                         ("model.layers.1.block_sparse_moe.gate.weight", "ffn_gate_inp"))
        self.assertEqual(gguf_to_hf.hf_name("blk.1.ffn_up_exps.weight"),
                         ("model.layers.1.block_sparse_moe.experts.{E}.w3.weight", "ffn_up_exps"))
        self.assertEqual(gguf_to_hf.hf_name("blk.1.ffn_gate.7.weight"),
                         ("model.layers.1.block_sparse_moe.experts.7.w1.weight", "ffn_gate"))
        with self.assertRaises(gguf_to_hf.GgufError):
            gguf_to_hf.hf_name("blk.0.attn_qkv.weight")


if __name__ == "__main__":
    unittest.main()
