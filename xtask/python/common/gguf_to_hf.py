"""Convert a llama-architecture GGUF file into a float32 Hugging Face folder
that mlx-lm 0.32.2 loads, independently of the project's Rust GGUF code.

Usage:
    python -m common.gguf_to_hf GGUF OUT_DIR [--force] [--check-reader]

What it writes to OUT_DIR:
  model.safetensors   every tensor dequantized to float32 by gguf-py's
                      `gguf.quants.dequantize` (llama.cpp's own Python
                      package, gguf==0.19.0), renamed to Hugging Face names:
                        token_embd            -> model.embed_tokens
                        blk.N.attn_q/k/v/output -> model.layers.N.self_attn.q/k/v/o_proj
                        blk.N.ffn_gate/up/down  -> model.layers.N.mlp.gate/up/down_proj
                        blk.N.attn_norm       -> model.layers.N.input_layernorm
                        blk.N.ffn_norm        -> model.layers.N.post_attention_layernorm
                        output_norm           -> model.norm
                        output                -> lm_head (absent: tied embeddings)
                      and for Mixtral (a llama file with {arch}.expert_count):
                        blk.N.ffn_gate_inp    -> model.layers.N.block_sparse_moe.gate
                        blk.N.ffn_gate/down/up_exps (stacked, [experts, out, in])
                          -> model.layers.N.block_sparse_moe.experts.E.w1/w2/w3
                        blk.N.ffn_gate/down/up.E (older per-expert files)
                          -> the same per-expert names
                      (Hugging Face's own Mixtral layout; mlx-lm stacks it).
                      with llama.cpp's q/k row permutation undone:
                        w.reshape(n, rows//n//2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
                      (n = attention.head_count for q, head_count_kv for k).
  config.json         from the metadata: {arch}.block_count, embedding_length,
                      feed_forward_length, attention.head_count(_kv),
                      rope.freq_base, attention.layer_norm_rms_epsilon,
                      context_length, attention.key_length (-> head_dim, if
                      present), attention.sliding_window (if present), vocab
                      size (vocab_size key, else the token count), bos/eos
                      from tokenizer.ggml.*, tie_word_embeddings = no
                      output.weight; model_type "llama" (arch llama) or
                      "mistral" (arch mistral), "mixtral" with
                      num_local_experts / num_experts_per_tok from
                      {arch}.expert_count / expert_used_count.
  tokenizer.json, tokenizer_config.json, chat_template.jinja
                      built by transformers' own GGUF tokenizer converter
                      (`PreTrainedTokenizerFast.from_pretrained(dir,
                      gguf_file=name)`, the class AutoTokenizer resolves to
                      for these files) and written with save_pretrained; the
                      chat template is the file's tokenizer.chat_template.
                      For tokenizer.ggml.pre "smollm" the pre-tokenizer is
                      set to SmolLM2's own (digits split off first, then
                      byte-level), which transformers lacks (load_tokenizer).

The GGUF container (header, metadata, tensor table) is parsed here (class
GgufFile) because gguf-py's GGUFReader takes 4-7 s per file on a vocabulary;
`--check-reader` compares the two on every key, tensor type, shape and byte.

Torch: transformers 5.24's GGUF reader module imports torch at the top but
reads metadata without it. This script imports that module with a stand-in
`torch` module (attributes only, any call raises) and removes the stand-in
right after, so no torch is needed. If torch is installed it is used as is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import struct
import sys
import time
import types

import numpy as np

import gguf

# transformers (imported later, for the tokenizer) announces on import that
# torch is missing; that is expected here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class GgufError(ValueError):
    pass


LAYER_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Mixtral's experts: GGUF role -> Hugging Face name inside block_sparse_moe.experts.E
EXPERT_MAP = {"ffn_gate": "w1", "ffn_down": "w2", "ffn_up": "w3"}
TOP_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
MODEL_TYPES = {"llama": ("llama", "LlamaForCausalLM"), "mistral": ("mistral", "MistralForCausalLM")}


# --------------------------------------------------------------------------
# GGUF container. gguf-py's GGUFReader builds Python objects for every token
# of the vocabulary (about 4 s for 32768 tokens on the 2-core CI machine, 7 s
# for SmolLM2); this reader walks string arrays without decoding them and is
# checked against GGUFReader by `--check-reader`. Values of tensors are
# decoded by gguf-py (gguf.quants.dequantize) only.

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class StringArray:
    """An array of strings left undecoded: `len()`, `raw` (its bytes in the
    file, for hashing) and `strings()`."""

    def __init__(self, blob: np.ndarray, start: int, end: int, count: int):
        self.blob, self.start, self.end, self.count = blob, start, end, count

    def __len__(self) -> int:
        return self.count

    @property
    def raw(self) -> bytes:
        return bytes(self.blob[self.start:self.end])

    def strings(self) -> list[str]:
        out, pos, raw = [], 0, self.raw
        for _ in range(self.count):
            (n,) = struct.unpack_from("<Q", raw, pos)
            out.append(raw[pos + 8:pos + 8 + n].decode("utf-8"))
            pos += 8 + n
        return out


class TensorInfo:
    def __init__(self, name: str, ne: tuple[int, ...], qtype: gguf.GGMLQuantizationType, data: np.ndarray):
        self.name, self.ne, self.qtype, self.data = name, ne, qtype, data

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (rows, cols): ggml's ne reversed."""
        return tuple(reversed(self.ne))


class GgufFile:
    """`metadata` {key: value} (strings decoded, numeric arrays as numpy,
    string arrays as StringArray) and `tensors` [TensorInfo] in file order;
    tensor data are uint8 memmap views [rows, bytes per row]."""

    def __init__(self, path: str):
        blob = np.memmap(path, mode="r", dtype=np.uint8)
        self.path = path
        if bytes(blob[:4]) != b"GGUF":
            raise GgufError(f"{path}: not a GGUF file (magic {bytes(blob[:4])!r})")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", blob, 4)
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} not supported (2, 3)")
        pos = 24
        self.metadata: dict = {}
        for _ in range(n_kv):
            key, pos = self._string(blob, pos)
            (vtype,) = struct.unpack_from("<I", blob, pos)
            self.metadata[key], pos = self._value(blob, pos + 4, vtype)
        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(blob, pos)
            (n_dims,) = struct.unpack_from("<I", blob, pos)
            ne = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
            qtype, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, tuple(int(x) for x in ne), gguf.GGMLQuantizationType(qtype), offset))
        align = int(self.metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
        data_start = (pos + align - 1) // align * align
        self.tensors = []
        for name, ne, qtype, offset in infos:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            if ne[0] % block:
                raise GgufError(f"{path}: {name} has {ne[0]} columns, not a multiple of {qtype.name}'s {block}")
            rows = int(np.prod(ne[1:], dtype=np.int64)) if len(ne) > 1 else 1
            row_bytes = ne[0] // block * size
            start = data_start + offset
            data = blob[start:start + rows * row_bytes].reshape(rows, row_bytes)
            self.tensors.append(TensorInfo(name, ne, qtype, data))

    @staticmethod
    def _string(blob: np.ndarray, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", blob, pos)
        return bytes(blob[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n

    def _value(self, blob: np.ndarray, pos: int, vtype: int):
        if vtype in _SCALAR:
            (v,) = struct.unpack_from(_SCALAR[vtype], blob, pos)
            return v, pos + struct.calcsize(_SCALAR[vtype])
        if vtype == _STRING:
            return self._string(blob, pos)
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            if etype in _NUMPY:
                dt = np.dtype(_NUMPY[etype]).newbyteorder("<")
                arr = np.frombuffer(blob, dtype=dt, count=count, offset=pos).copy()
                return arr, pos + count * dt.itemsize
            if etype == _STRING:
                start = pos
                for _ in range(count):
                    (n,) = struct.unpack_from("<Q", blob, pos)
                    pos += 8 + n
                return StringArray(blob, start, pos, count), pos
            raise GgufError(f"{self.path}: nested arrays (type {etype}) not supported")
        raise GgufError(f"{self.path}: unknown metadata value type {vtype}")

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)


def check_reader(path: str) -> None:
    """Compare GgufFile with gguf-py's GGUFReader on every key and tensor."""
    ours, ref = GgufFile(path), gguf.GGUFReader(path)
    ref_keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    if list(ours.metadata) != ref_keys:
        raise GgufError(f"keys differ: {list(ours.metadata)} vs {ref_keys}")
    for key in ref_keys:
        a, b = ours.metadata[key], ref.fields[key].contents()
        if isinstance(a, StringArray):
            a = a.strings()
        if isinstance(a, np.ndarray):
            a = a.tolist()
        if a != b and not (isinstance(a, float) and np.float32(a) == np.float32(b)):
            raise GgufError(f"{key}: {str(a)[:80]} != {str(b)[:80]}")
    if [t.name for t in ours.tensors] != [t.name for t in ref.tensors]:
        raise GgufError("tensor names differ")
    for a, b in zip(ours.tensors, ref.tensors):
        if a.qtype != b.tensor_type or list(a.ne) != [int(x) for x in b.shape]:
            raise GgufError(f"{a.name}: {a.qtype.name}{a.ne} != {b.tensor_type.name}{tuple(b.shape)}")
        if a.data.tobytes() != np.ascontiguousarray(b.data).view(np.uint8).tobytes():
            raise GgufError(f"{a.name}: data differ")


# --------------------------------------------------------------------------
# conversion


def f32_decimal(x: float) -> float:
    """The shortest decimal that reads back as the same float32."""
    return float(str(np.float32(x)))


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's LlamaModel.permute (rows interleaved per head)."""
    rows, cols = w.shape
    if rows % (2 * n_head):
        raise GgufError(f"cannot undo the rope permutation: {rows} rows, {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_name(name: str) -> tuple[str, str | None]:
    """(Hugging Face name, GGUF role) of a GGUF tensor name. A stacked
    experts' tensor (`ffn_gate_exps`) gives the name of expert {E}'s part."""
    if name in TOP_MAP:
        return TOP_MAP[name], name.split(".")[0]
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "blk" and parts[1].isdigit() and parts[-1] == "weight":
        layer, role = f"model.layers.{parts[1]}", parts[2]
        if len(parts) == 4 and role in LAYER_MAP:
            return f"{layer}.{LAYER_MAP[role]}.weight", role
        if len(parts) == 4 and role == "ffn_gate_inp":
            return f"{layer}.block_sparse_moe.gate.weight", role
        if len(parts) == 4 and role.endswith("_exps") and role[:-5] in EXPERT_MAP:
            return f"{layer}.block_sparse_moe.experts.{{E}}.{EXPERT_MAP[role[:-5]]}.weight", role
        if len(parts) == 5 and role in EXPERT_MAP and parts[3].isdigit():
            return f"{layer}.block_sparse_moe.experts.{parts[3]}.{EXPERT_MAP[role]}.weight", role
    raise GgufError(f"unexpected tensor {name!r} (only the llama and Mixtral tensor sets are supported)")


def read_config(g: GgufFile) -> dict:
    arch = g.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise GgufError(f"{g.path}: architecture {arch!r} not supported (llama, mistral)")
    model_type, hf_arch = MODEL_TYPES[arch]

    def a(key, required=True):
        v = g.get(f"{arch}.{key}")
        if v is None and required:
            raise GgufError(f"{g.path}: missing metadata key {arch}.{key}")
        return v

    tokens = g.get("tokenizer.ggml.tokens")
    vocab_size = a("vocab_size", required=False) or (len(tokens) if tokens is not None else None)
    if vocab_size is None:
        raise GgufError(f"{g.path}: neither {arch}.vocab_size nor tokenizer.ggml.tokens")
    names = {t.name for t in g.tensors}
    n_head = int(a("attention.head_count"))
    config = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "vocab_size": int(vocab_size),
        "hidden_size": int(a("embedding_length")),
        "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(a("attention.head_count_kv", required=False) or n_head),
        "hidden_act": "silu",
        "max_position_embeddings": int(a("context_length")),
        # GGUF stores float32: the shortest decimal of that float32 (1e-05, not 9.99999974e-06).
        "rms_norm_eps": f32_decimal(a("attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_decimal(a("rope.freq_base", required=False) or 10000.0),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": g.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": g.get("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    }
    if (kl := a("attention.key_length", required=False)) is not None:
        config["head_dim"] = int(kl)
        vl = a("attention.value_length", required=False)
        if vl is not None and int(vl) != int(kl):
            raise GgufError(f"{g.path}: key_length {kl} != value_length {vl} is not supported")
    if (sw := a("attention.sliding_window", required=False)) is not None:
        config["sliding_window"] = int(sw)
    rope_dim = a("rope.dimension_count", required=False)
    head_dim = config.get("head_dim", config["hidden_size"] // n_head)
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise GgufError(f"{g.path}: partial rope (dimension_count {rope_dim} != head_dim {head_dim}) not supported")
    if a("rope.scaling.type", required=False) not in (None, "none"):
        raise GgufError(f"{g.path}: rope scaling not supported")
    if experts := a("expert_count", required=False):
        config["architectures"] = ["MixtralForCausalLM"]
        config["model_type"] = "mixtral"
        config["num_local_experts"] = int(experts)
        config["num_experts_per_tok"] = int(a("expert_used_count"))
    return config


def dequantize_all(g: GgufFile, config: dict) -> tuple[dict, dict]:
    """{HF name: float32 array}, {GGUF name: type name}."""
    weights, kinds = {}, {}
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    for t in g.tensors:
        name, role = hf_name(t.name)
        if name in weights:
            raise GgufError(f"{g.path}: tensor {t.name} twice")
        w = gguf.quants.dequantize(t.data, t.qtype)
        w = np.asarray(w, dtype=np.float32).reshape(t.shape)
        if role == "attn_q":
            w = unpermute(w, n_head)
        elif role == "attn_k":
            w = unpermute(w, n_kv)
        if "{E}" in name:
            if w.ndim != 3 or w.shape[0] != config.get("num_local_experts"):
                raise GgufError(f"{g.path}: {t.name} has shape {w.shape}, not one matrix per expert")
            for e in range(w.shape[0]):
                weights[name.format(E=e)] = np.ascontiguousarray(w[e])
        else:
            weights[name] = np.ascontiguousarray(w)
        kinds[t.name] = t.qtype.name
    emb = weights.get("model.embed_tokens.weight")
    if emb is None or emb.shape != (config["vocab_size"], config["hidden_size"]):
        raise GgufError(f"{g.path}: token_embd shape {None if emb is None else emb.shape} does not match "
                        f"vocab {config['vocab_size']} x hidden {config['hidden_size']}")
    return weights, kinds


@contextlib.contextmanager
def torch_stand_in():
    """Lets transformers' GGUF reader module import without torch (it only
    uses torch dtypes as constants); removed again on exit."""
    try:
        import torch  # noqa: F401

        yield
        return
    except ImportError:
        pass

    class Attr:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, key):
            return Attr(f"{self._name}.{key}")

        def __getitem__(self, key):
            return self

        def __call__(self, *args, **kwargs):
            raise RuntimeError(f"{self._name} called: this needs the real torch")

    stub = types.ModuleType("torch")
    stub.__getattr__ = lambda key: Attr(f"torch.{key}")
    sys.modules["torch"] = stub
    try:
        yield
    finally:
        del sys.modules["torch"]


def load_tokenizer(gguf_path: str):
    """transformers' tokenizer for this GGUF file (its GGUF converter), with
    one repair: transformers 5.24 knows no `smollm` pre-tokenizer and falls
    back to GPT-2's regex, which keeps a run of spaces or newlines before a
    digit apart from it ("  42": "Ġ", "Ġ", "4", "2" instead of "ĠĠ", "4",
    "2"). SmolLM2's own tokenizer.json and llama.cpp's `smollm` split every
    digit off first; that pre-tokenizer is set here."""
    import logging

    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    d, name = os.path.split(os.path.abspath(gguf_path))
    with torch_stand_in():
        tok = PreTrainedTokenizerFast.from_pretrained(d, gguf_file=name)
    if GgufFile(gguf_path).get("tokenizer.ggml.pre") == "smollm":
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    return tok


def convert(gguf_path: str, out_dir: str, tokenizer_dir: str | None = None) -> dict:
    """Write OUT_DIR; returns a summary. `tokenizer_dir`: copy the tokenizer
    files from there instead of building them (gguf_refs.py's cache for files
    with the same tokenizer_fingerprint)."""
    from safetensors.numpy import save_file

    g = GgufFile(gguf_path)
    config = read_config(g)
    weights, kinds = dequantize_all(g, config)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        for fname in TOKENIZER_FILES:
            if os.path.exists(os.path.join(tokenizer_dir, fname)):
                shutil.copyfile(os.path.join(tokenizer_dir, fname), os.path.join(out_dir, fname))
    else:
        load_tokenizer(gguf_path).save_pretrained(out_dir)
    return {"config": config, "tensor_types": kinds,
            "has_chat_template": g.get("tokenizer.chat_template") is not None}


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def tokenizer_fingerprint(gguf_path: str) -> str:
    """Hash of the architecture and every tokenizer.* metadata value: equal
    fingerprints give identical tokenizer files."""
    import hashlib

    g = GgufFile(gguf_path)
    h = hashlib.sha256(str(g.get("general.architecture")).encode())
    for key in sorted(k for k in g.metadata if k.startswith("tokenizer.")):
        v = g.metadata[key]
        h.update(key.encode())
        h.update(v.raw if isinstance(v, StringArray) else v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    ap.add_argument("--check-reader", action="store_true",
                    help="also compare this script's GGUF parsing with gguf-py's GGUFReader (slow)")
    args = ap.parse_args()
    if not os.path.isfile(args.gguf):
        print(f"{args.gguf}: no such file", file=sys.stderr)
        return 1
    if os.path.exists(args.out_dir):
        if not args.force:
            print(f"{args.out_dir} exists (use --force to replace it)", file=sys.stderr)
            return 1
        shutil.rmtree(args.out_dir)
    t0 = time.time()
    try:
        if args.check_reader:
            check_reader(args.gguf)
            print(f"{args.gguf}: metadata and tensors equal gguf-py's GGUFReader")
        info = convert(args.gguf, args.out_dir)
    except GgufError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kinds = sorted(set(info["tensor_types"].values()))
    print(f"{args.out_dir}: {len(info['tensor_types'])} tensors ({', '.join(kinds)}) -> float32, "
          f"model_type {info['config']['model_type']}, {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
