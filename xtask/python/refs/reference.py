"""Reference logits and greedy tokens from Apple's mlx-lm (0.32.2).

One model:
    python reference.py --model DIR --prompt-ids 1,2,3 [--greedy N] --out FILE
    python reference.py --model DIR --prompts PROMPTS.json [--greedy N] --out FILE
All models of a make_models.py output directory, standard prompts:
    python reference.py --all MODELS_DIR --out-dir REFS_DIR [--greedy N]

PROMPTS.json: a list of id lists, or of {"name": str, "ids": [int, ...]}.
FILE ending in .safetensors stores, per prompt NAME:
    NAME.prompt_ids   int32 [L]
    NAME.logits       [L, vocab], float32 unless --dtype says otherwise:
                      the whole prompt in one forward pass, no cache
    NAME.chunked_logits  the same, computed in two chunks through mlx-lm's
                      cache (make_prompt_cache), split at L * 2 // 3 (as the
                      parity tests split it; absent for a 1-token prompt)
    NAME.greedy_ids   int32 [N]   mlx-lm's generate_step with an argmax sampler
                      (never stops at EOS: always N ids)
    NAME.greedy_margin float32 [N] top-1 minus top-2 log-probability at each
                      step: a near-tie (tiny margin) is where two correct
                      implementations may legitimately pick different ids
and the metadata key "reference" (JSON: model, mlx-lm version, prompt names,
window handling). Any other FILE suffix writes the same content as JSON.

Sliding window: mlx-lm runs `model_type: "mistral"` through its llama module,
which applies `sliding_window` only to layers listed as "sliding_attention" in
`layer_types`; a v0.1 config has no `layer_types`, so mlx-lm would silently
attend over the whole context. Hugging Face transformers (and Mistral's own
code) apply the window on every layer. Giving mlx-lm 0.32.2 a config with
`layer_types: ["sliding_attention"] * num_layers` does not work either: its
LlamaModel looks up the index of the first "full_attention" layer and raises
ValueError. So for a config with `sliding_window` and no `layer_types`, this
script loads the model as is and then switches every layer to mlx-lm's own
sliding-window path (`use_sliding`, the window mask, RotatingKVCache from
`make_cache`). window_mask_check.py checks that mask against transformers'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import mlx.core as mx
import numpy as np

# Standard prompts for --all: token-id lists built from text with the model's
# own tokenizer.json, BOS first. "long" is longer than the window (16) of the
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


def run_one(model_dir: str, prompts: list[dict], n_greedy: int, dtype: str, out: str,
            dense_f32: bool = False) -> float:
    t0 = time.time()
    model, notes = load_model(model_dir)
    if dense_f32:
        to_dense_f32(model)
        notes["compute"] = "dequantized, float32"
    results = compute(model, prompts, n_greedy, dtype)
    meta = {
        "model": os.path.basename(os.path.normpath(model_dir)),
        "mlx_lm": mlx_lm_version(),
        "mlx": mx.__version__,
        "prompts": [p["name"] for p in prompts],
        "greedy": n_greedy,
        "logits_dtype": dtype,
        **notes,
    }
    write(out, results, meta)
    return time.time() - t0


def parse_prompts(args) -> list[dict]:
    if args.prompt_ids:
        return [{"name": "prompt", "ids": [int(x) for x in args.prompt_ids.split(",")]}]
    with open(args.prompts) as f:
        doc = json.load(f)
    prompts = []
    for i, p in enumerate(doc):
        prompts.append(p if isinstance(p, dict) else {"name": f"p{i}", "ids": p})
    return prompts


def standard_prompts(model_dir: str) -> list[dict]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    return [{"name": k, "ids": tok.encode(v).ids} for k, v in STANDARD_TEXTS.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--prompt-ids", help="comma-separated token ids")
    src.add_argument("--prompts", help="JSON file of prompts")
    ap.add_argument("--out", help="output file (.safetensors, else JSON)")
    ap.add_argument("--all", metavar="MODELS_DIR", help="every model in MODELS_DIR/manifest.json")
    ap.add_argument("--out-dir", help="with --all: writes OUT_DIR/<model>.safetensors")
    ap.add_argument("--keep-going", action="store_true",
                    help="with --all: record a model mlx-lm fails on in OUT_DIR/<model>.failed "
                         "(its error) and go on (the GPU run: MLX 0.32.2's CUDA backend fails "
                         "some shapes)")
    ap.add_argument("--skip-existing", action="store_true",
                    help="with --all: keep references already written (a run cut off by a time limit)")
    ap.add_argument("--only", help="with --all: only these models (comma-separated)")
    ap.add_argument("--greedy", type=int, default=0, help="greedy tokens to generate")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="dtype the logits are stored in (computed in the model's dtype)")
    ap.add_argument("--dense-f32", action="store_true",
                    help="compute with quantized layers dequantized and every parameter in "
                         "float32 (what `--dtype auto` does on the CPU)")
    args = ap.parse_args()

    # The CPU build (deterministic and portable); MISTRAL_MLX_REFERENCE_DEVICE=gpu
    # runs mlx-lm on MLX's CUDA build instead (xtask/gpu/run.sh parity).
    mx.set_default_device(reference_device())

    if args.all:
        if not args.out_dir:
            ap.error("--all needs --out-dir")
        with open(os.path.join(args.all, "manifest.json")) as f:
            models = [m["dir"] for m in json.load(f)["models"]]
        if args.only:
            only = args.only.split(",")
            unknown = sorted(set(only) - set(models))
            if unknown:
                ap.error(f"--only: no such model in the manifest: {', '.join(unknown)}")
            models = [m for m in models if m in only]
        t0 = time.time()
        failed = []
        for name in models:
            model_dir = os.path.join(args.all, name)
            out = os.path.join(args.out_dir, f"{name}.safetensors")
            marker = os.path.join(args.out_dir, f"{name}.failed")
            if args.skip_existing and (os.path.exists(out) or os.path.exists(marker)):
                print(f"{name}: kept from an earlier run")
                continue
            if os.path.exists(marker):
                os.remove(marker)
            try:
                dt = run_one(model_dir, standard_prompts(model_dir), args.greedy, args.dtype, out,
                             args.dense_f32)
            except RuntimeError as err:  # MLX's errors
                if not args.keep_going:
                    raise
                failed.append(name)
                with open(marker, "w") as f:
                    f.write(f"{err}\n")
                print(f"{name}: FAILED: {err} -> {marker}")
                continue
            print(f"{name}: {dt:.2f}s -> {out}")
        print(f"{len(models) - len(failed)} references in {time.time() - t0:.1f}s"
              + (f"; mlx-lm failed on {', '.join(failed)}" if failed else ""))
        return 0

    if not (args.model and args.out and (args.prompt_ids or args.prompts)):
        ap.error("--model, --out and one of --prompt-ids/--prompts are required (or --all)")
    dt = run_one(args.model, parse_prompts(args), args.greedy, args.dtype, args.out)
    print(f"{args.out} written in {dt:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
