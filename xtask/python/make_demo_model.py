"""Write the small demo model that the README's main command runs.

Mistral architecture (GQA 4:1, RoPE theta 1e6, no sliding window, as
Mistral 7B v0.3), the real Mistral v0.3 tokenizer from the mistral-common
package (converted to tokenizer.json by spconvert.py, with its chat
template), and deterministic random weights (seeded, std 0.02).

The weights are random: the model runs exactly like a real checkpoint of its
shape, but the text it writes is meaningless.

    python make_demo_model.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import make_models

DEMO = make_models.Spec(
    name="mistral-demo",
    seed=2026,
    tokenizer="v3",
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    rope_theta=1_000_000.0,
    dtype="float32",
    description="demo model: Mistral v0.3 architecture and tokenizer, random weights",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    # write_float_model writes <root>/<name>; build it next to OUT, then move.
    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    make_models.write_float_model(staging, DEMO)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(os.path.join(staging, DEMO.name), out)
    shutil.rmtree(staging)
    print(f"wrote the demo model (random weights: its text is meaningless) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
