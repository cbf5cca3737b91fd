"""Token ids (and log-probabilities) from mlx-lm 0.32.2's own generation loop
with its own sampler and logits processors, for the generation tests.

    python -m refs.sampling_reference --model DIR --prompt-ids 1,2,3 --n 64 \
        [--temp T] [--top-p P] [--min-p M] [--top-k K] \
        [--repetition-penalty R] [--repetition-context-size C] \
        [--seed S] [--prefill-step-size N] [--logprobs-out FILE]

Runs `mx.random.seed(S)` (if given), then `generate_step(prompt, model,
max_tokens=n, sampler=make_sampler(temp, top_p, min_p, top_k=K),
logits_processors=make_logits_processors(repetition_penalty=R,
repetition_context_size=C), prefill_step_size=N)` with the model's own
`make_cache()` (RotatingKVCache on windowed layers; the model is loaded as
reference.py loads it, window applied to every layer of a v0.1 config).
Prints one JSON object {"ids": [...]} on stdout. With --logprobs-out, writes
the log-probabilities of every step as raw little-endian float32 [n, vocab].
"""

from __future__ import annotations

import argparse
import json
import sys

import mlx.core as mx
import numpy as np

from common.mlx_lm_ref import load_model, reference_device


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--temp", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=0.0)
    ap.add_argument("--min-p", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--repetition-penalty", type=float, default=None)
    ap.add_argument("--repetition-context-size", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--prefill-step-size", type=int, default=2048)
    ap.add_argument("--logprobs-out", default=None)
    args = ap.parse_args()

    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    mx.set_default_device(reference_device())
    model, _notes = load_model(args.model)
    sampler = make_sampler(args.temp, top_p=args.top_p, min_p=args.min_p, top_k=args.top_k)
    processors = make_logits_processors(
        repetition_penalty=args.repetition_penalty,
        repetition_context_size=args.repetition_context_size,
    )
    prompt = mx.array([int(x) for x in args.prompt_ids.split(",")], dtype=mx.int32)
    if args.seed is not None:
        mx.random.seed(args.seed)
    ids, rows = [], []
    for token, logprobs in generate_step(
        prompt,
        model,
        max_tokens=args.n,
        sampler=sampler,
        logits_processors=processors,
        prefill_step_size=args.prefill_step_size,
    ):
        ids.append(int(token))
        if args.logprobs_out:
            rows.append(np.array(logprobs.astype(mx.float32)).reshape(-1))
    if args.logprobs_out:
        np.stack(rows).astype("<f4").tofile(args.logprobs_out)
    json.dump({"ids": ids}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
