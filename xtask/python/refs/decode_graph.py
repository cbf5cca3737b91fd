"""The primitives in one decode step's graph under mlx-lm 0.32.2, for
crates/mistral-loader/tests/decode_graph.rs.

    python -m refs.decode_graph --model DIR --prompt-ids 1,2,3 --token 9

Loads the model as reference.py does (common/mlx_lm_ref.py), runs the
prompt through the model's own `make_prompt_cache()` cache and evaluates it,
then builds (without evaluating) the logits of one more token, `--token`,
and counts the primitives of that graph by name from `mx.export_to_dot` (one
rectangle per primitive). Prints one JSON object {"ops": {name: count}} on stdout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile

import mlx.core as mx

from common.mlx_lm_ref import load_model, reference_device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--token", type=int, required=True)
    ap.add_argument("--prompt-graph", action="store_true")
    args = ap.parse_args()

    from mlx_lm.models.cache import make_prompt_cache

    mx.set_default_device(reference_device())
    model, _notes = load_model(args.model)
    cache = make_prompt_cache(model)
    prompt = mx.array([[int(x) for x in args.prompt_ids.split(",")]], dtype=mx.int32)
    logits = model(prompt, cache=cache)
    if not args.prompt_graph:
        mx.eval(logits, [c.state for c in cache])
        logits = model(mx.array([[args.token]], dtype=mx.int32), cache=cache)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "step.dot")
        mx.export_to_dot(path, logits)
        with open(path) as f:
            names = re.findall(r'label ="([^"]+)", shape=rectangle', f.read())
    print(json.dumps({"ops": collections.Counter(names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
