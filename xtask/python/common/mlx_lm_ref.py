"""mlx-lm 0.32.2 as every reference runs it, shared by the scripts of all
rooms: its model loader with the sliding-window fix (`load_model`), the
device (`reference_device`), a prompt's logits in one pass, in two chunks
through the cache, and greedy ids through mlx-lm's own generation loop, and
the reference files (`compute`, `write`: the format refs/reference.py
describes; it writes the stored references with them).

Sliding window: mlx-lm runs `model_type: "mistral"` through its llama module,
which applies `sliding_window` only to layers listed as "sliding_attention" in
`layer_types`; a v0.1 config has no `layer_types`, so mlx-lm would silently
attend over the whole context. Hugging Face transformers (and Mistral's own
code) apply the window on every layer. Giving mlx-lm 0.32.2 a config with
`layer_types: ["sliding_attention"] * num_layers` does not work either: its
LlamaModel looks up the index of the first "full_attention" layer and raises
ValueError. So for a config with `sliding_window` and no `layer_types`,
`load_model` loads the model as is and then switches every layer to mlx-lm's
own sliding-window path (`use_sliding`, the window mask, RotatingKVCache from
`make_cache`). checks/window_mask_check.py checks that mask against
transformers'.
"""

from __future__ import annotations

import json
import os

import mlx.core as mx
import numpy as np

# Standard prompts (refs.reference --all, the GGUF and newer-family
# references): token-id lists built from text with the model's own
# tokenizer.json, BOS first. "long" is longer than the window (16) of the
# windowed test model, so the window matters for it.
STANDARD_TEXTS = {
    "short": "Hello",
    "medium": "The quick brown fox jumps over the lazy dog, then rests.",
    "long": (
        "Once upon a time, in a small village by the sea, there lived an old "
        "fisherman who every morning counted 1, 2, 3 boats, mended his nets "
        "and told stories of storms, whales and distant islands to the children."
    ),
}


def reference_device():
    """mx.cpu, or mx.gpu when MISTRAL_MLX_REFERENCE_DEVICE=gpu."""
    return mx.gpu if os.environ.get("MISTRAL_MLX_REFERENCE_DEVICE") == "gpu" else mx.cpu

def mlx_lm_version() -> str:
    import mlx_lm

    return getattr(mlx_lm, "__version__", "unknown")


def apply_window_to_every_layer(model, window: int) -> None:
    """Make mlx-lm's llama module use its sliding-window attention on every
    layer (see the module docstring for why a config change cannot)."""
    inner = model.model
    for layer in inner.layers:
        layer.use_sliding = True
    inner.sliding_window = window
    inner.swa_idx = 0  # index of a sliding layer: whose cache builds the mask
    # inner.fa_idx stays 0; the full-attention mask it builds is then unused.


def load_model(model_dir: str):
    """mlx-lm's model loader (`mlx_lm.utils.load_model`, what `mlx_lm.load`
    calls before loading the tokenizer, which is not needed here) plus the
    window fix. Returns (model, notes)."""
    from pathlib import Path

    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, _config = mlx_lm_load_model(Path(model_dir))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    notes = {"window": None}
    window = config.get("sliding_window")
    if window is not None and config.get("layer_types") is None:
        apply_window_to_every_layer(model, int(window))
        notes["window"] = f"sliding_window {window} applied to all {len(model.model.layers)} layers (patched)"
    return model, notes


def prompt_logits(model, ids: list[int]) -> mx.array:
    """[L, vocab] logits of the whole prompt, one forward pass, no cache."""
    logits = model(mx.array([ids], dtype=mx.int32))[0]
    return logits.astype(mx.float32)


def chunked_logits(model, ids: list[int]):
    """[L, vocab] logits of the prompt in two chunks through mlx-lm's own
    cache, split at L * 2 // 3; None when that split is empty."""
    from mlx_lm.models.cache import make_prompt_cache

    split = len(ids) * 2 // 3
    if split == 0:
        return None
    cache = make_prompt_cache(model)
    first = model(mx.array([ids[:split]], dtype=mx.int32), cache=cache)[0]
    second = model(mx.array([ids[split:]], dtype=mx.int32), cache=cache)[0]
    return mx.concatenate([first, second], axis=0).astype(mx.float32)


def greedy(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """n greedy ids through mlx-lm's own generation loop (KV cache,
    model.make_cache(): RotatingKVCache on windowed layers)."""
    from mlx_lm.generate import generate_step

    def argmax_sampler(logprobs: mx.array) -> mx.array:
        return mx.argmax(logprobs, axis=-1)

    out, margins = [], []
    prompt = mx.array(ids, dtype=mx.int32)
    for token, logprobs in generate_step(prompt, model, max_tokens=n, sampler=argmax_sampler):
        out.append(int(token))
        top2 = mx.topk(logprobs.astype(mx.float32).reshape(-1), 2)
        top2 = sorted(np.array(top2).tolist(), reverse=True)
        margins.append(top2[0] - top2[1])
    return out, margins


def compute(model, prompts: list[dict], n_greedy: int, dtype: str) -> list[dict]:
    """Per prompt ({"name", "ids"}): its logits in one pass and in two chunks
    (stored as `dtype`), and `n_greedy` greedy ids with their margins."""
    results = []
    for p in prompts:
        logits = prompt_logits(model, p["ids"])
        chunked = chunked_logits(model, p["ids"])
        if dtype != "float32":
            logits = logits.astype(getattr(mx, dtype))
            chunked = None if chunked is None else chunked.astype(getattr(mx, dtype))
        mx.eval(logits)
        if chunked is not None:
            mx.eval(chunked)
        ids, margins = greedy(model, p["ids"], n_greedy) if n_greedy > 0 else ([], [])
        results.append({"name": p["name"], "prompt_ids": p["ids"], "logits": logits,
                        "chunked_logits": chunked,
                        "greedy_ids": ids, "greedy_margin": margins})
    return results


def write(out: str, results: list[dict], meta: dict) -> None:
    """`compute`'s results and `meta` in refs/reference.py's format:
    safetensors when `out` ends in .safetensors, else JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".safetensors"):
        tensors = {}
        for r in results:
            n = r["name"]
            tensors[f"{n}.prompt_ids"] = mx.array(r["prompt_ids"], dtype=mx.int32)
            tensors[f"{n}.logits"] = r["logits"]
            if r.get("chunked_logits") is not None:
                tensors[f"{n}.chunked_logits"] = r["chunked_logits"]
            tensors[f"{n}.greedy_ids"] = mx.array(r["greedy_ids"], dtype=mx.int32)
            tensors[f"{n}.greedy_margin"] = mx.array(r["greedy_margin"], dtype=mx.float32)
        mx.save_safetensors(out, tensors, {"reference": json.dumps(meta)})
    else:
        doc = dict(meta)
        doc["prompts"] = [
            {**r, "logits": np.array(r["logits"].astype(mx.float32)).tolist(),
             "chunked_logits": None if r.get("chunked_logits") is None
             else np.array(r["chunked_logits"].astype(mx.float32)).tolist(),
             "logits_dtype": str(r["logits"].dtype)}
            for r in results
        ]
        with open(out, "w") as f:
            json.dump(doc, f)


def to_dense_f32(model) -> None:
    """What our `--dtype auto` computes on the CPU: every float parameter
    (quantization scales and biases included) cast to float32, then every
    quantized layer dequantized by mlx-lm itself
    (`mlx_lm.utils.dequantize_model`), so the dense weights are the exact
    `scale * q + bias` values (dequantizing with bf16 scales first would
    round them to bf16)."""
    from mlx_lm.utils import dequantize_model

    model.set_dtype(mx.float32)
    dequantize_model(model)
    model.set_dtype(mx.float32)


def standard_prompts(model_dir: str) -> list[dict]:
    """STANDARD_TEXTS encoded by the model folder's own tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    return [{"name": k, "ids": tok.encode(v).ids} for k, v in STANDARD_TEXTS.items()]
