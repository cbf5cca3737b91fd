"""mlx-lm's own tensor-parallel logits: run as each rank of an MLX group
(MLX_RANK and MLX_HOSTFILE set, as `mlx.launch` sets them), loads the model
as reference.py does (mlx-lm's loader, with its sliding-window fix), splits
it with mlx-lm's `shard()`, and computes the logits of each reference prompt
in one pass, as reference.py does (common/mlx_lm_ref.py's
`prompt_logits`); rank 0 writes them.

    python -m refs.sharded_reference MODEL_DIR REFS_FILE OUT_FILE

REFS_FILE is the model's `refs/<name>.safetensors` (its `<prompt>.prompt_ids`
are the prompts); OUT_FILE gets `<prompt>.logits` as float32.
"""

import sys

import mlx.core as mx

from common.mlx_lm_ref import load_model, prompt_logits


def main():
    model_dir, refs, out = sys.argv[1], sys.argv[2], sys.argv[3]
    group = mx.distributed.init(strict=True, backend="ring")
    model, _notes = load_model(model_dir)
    model.shard(group)
    mx.eval(model.parameters())
    results = {}
    for name, ids in mx.load(refs).items():
        if not name.endswith(".prompt_ids"):
            continue
        prompt = name[: -len(".prompt_ids")]
        logits = prompt_logits(model, ids.tolist())
        mx.eval(logits)
        results[f"{prompt}.logits"] = logits
    if group.rank() == 0:
        mx.save_safetensors(out, results)


if __name__ == "__main__":
    main()
