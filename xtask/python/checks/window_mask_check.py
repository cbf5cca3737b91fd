"""Check mlx-lm's sliding-window semantics against Hugging Face transformers.

    python -m checks.window_mask_check [--model MODELS_DIR/window_v01_f32]

1. Mask semantics, without torch: the mask functions of transformers'
   `masking_utils.py` (`causal_mask_function`, `sliding_window_overlay`,
   combined with "and" as `sliding_window_causal_mask_function` does) are
   read from the installed source with `ast` and evaluated on plain ints;
   importing transformers' module itself would need torch. They must equal
   mlx-lm's `create_causal_mask(N, offset, window_size)` for every query /
   key position. Both mean: query i sees key j iff i - window < j <= i
   (the window counts the query itself).
2. With --model (a windowed model, common/mlx_lm_ref.py's window patch
   applied): the logits of a prompt longer than the window, fed one token at
   a time through mlx-lm's cache (RotatingKVCache), must equal the one-pass
   logits (mask).

Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys

import numpy as np

HF_FUNCTIONS = ("causal_mask_function", "sliding_window_overlay")


def transformers_mask_functions() -> dict:
    """The two transformers mask functions, compiled from their source."""
    spec = importlib.util.find_spec("transformers")  # does not import it
    path = os.path.join(spec.submodule_search_locations[0], "masking_utils.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in HF_FUNCTIONS]
    if {f.name for f in funcs} != set(HF_FUNCTIONS):
        raise RuntimeError(f"{path}: expected functions {HF_FUNCTIONS} not found")
    namespace = {"Callable": object}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), path, "exec"), namespace)
    return {name: namespace[name] for name in HF_FUNCTIONS}


def check_masks() -> int:
    from mlx_lm.models.base import create_causal_mask

    hf = transformers_mask_functions()
    failures = 0
    for window in (1, 2, 4, 16):
        overlay = hf["sliding_window_overlay"](window)
        for n in (1, 5, 17, 40):
            for offset in (0, 3, 16, 30):
                # mlx-lm: rows are queries offset..offset+n-1, columns keys 0..offset+n-1
                got = np.array(create_causal_mask(n, offset, window_size=window))
                want = np.array(
                    [
                        [hf["causal_mask_function"](0, 0, q, k) and overlay(0, 0, q, k) for k in range(offset + n)]
                        for q in range(offset, offset + n)
                    ]
                )
                if got.shape != want.shape or not (got == want).all():
                    failures += 1
                    print(f"MISMATCH mask window={window} n={n} offset={offset}")
    print(f"mask semantics (mlx-lm create_causal_mask vs transformers): {'OK' if not failures else 'FAIL'}")
    return failures


def check_cache_path(model_dir: str, length: int = 48) -> int:
    import mlx.core as mx

    from common import mlx_lm_ref

    model, notes = mlx_lm_ref.load_model(model_dir)
    window = model.model.sliding_window
    rng = np.random.default_rng(0)
    ids = [1] + rng.integers(3, model.args.vocab_size, length - 1).tolist()
    full = mlx_lm_ref.prompt_logits(model, ids)
    cache = model.make_cache()
    steps = []
    for t in ids:
        steps.append(model(mx.array([[t]], dtype=mx.int32), cache=cache)[0, -1].astype(mx.float32))
    stepped = mx.stack(steps)
    diff = float(mx.max(mx.abs(full - stepped)))
    scale = float(mx.max(mx.abs(full)))
    # Same window must give the same logits; without it they would differ.
    mx.eval(full)
    print(f"cache path vs one pass ({notes['window']}; {length} tokens, window {window}): "
          f"max abs diff {diff:.2e} (logits max {scale:.2f})")
    failures = 0 if diff <= 1e-4 * max(scale, 1.0) else 1

    # The patch must matter: mlx-lm as loaded (full attention) agrees before
    # position `window` and differs after it.
    from pathlib import Path

    from mlx_lm.utils import load_model

    plain, _ = load_model(Path(model_dir))
    unwindowed = mlx_lm_ref.prompt_logits(plain, ids)
    before = float(mx.max(mx.abs(unwindowed[:window] - full[:window])))
    after = float(mx.max(mx.abs(unwindowed[window:] - full[window:])))
    print(f"unpatched mlx-lm vs windowed: positions < {window}: {before:.2e}, >= {window}: {after:.2e}")
    if before > 1e-5 or after < 1e-3:
        failures += 1
        print("MISMATCH: the window patch does not change what it should")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="windowed model dir for the cache-path check")
    args = ap.parse_args()
    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    failures = check_masks()
    if args.model:
        failures += check_cache_path(args.model)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
