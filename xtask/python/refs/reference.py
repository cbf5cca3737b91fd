"""Reference logits and greedy tokens from Apple's mlx-lm (0.32.2).

One model:
    python -m refs.reference --model DIR --prompt-ids 1,2,3 [--greedy N] --out FILE
    python -m refs.reference --model DIR --prompts PROMPTS.json [--greedy N] --out FILE
All models of a models.make_models output directory, standard prompts:
    python -m refs.reference --all MODELS_DIR --out-dir REFS_DIR [--greedy N]

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

Sliding window: the model is loaded by common/mlx_lm_ref.py's `load_model`,
which applies the window of a config with `sliding_window` and no
`layer_types` (v0.1) to every layer, as transformers and Mistral's own code
do (its docstring says why a config change cannot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import mlx.core as mx

from common.mlx_lm_ref import (
    compute,
    load_model,
    mlx_lm_version,
    reference_device,
    standard_prompts,
    to_dense_f32,
    write,
)


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
