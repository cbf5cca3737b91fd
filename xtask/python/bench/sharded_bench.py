"""mlx-lm's own tensor-parallel generation speed, for `xtask/gpu/run.sh tp
bench`: run as each rank of an MLX NCCL group (MLX_RANK, MLX_WORLD_SIZE,
NCCL_HOST_IP, NCCL_PORT; one GPU per rank), it loads the model with mlx-lm,
splits it with mlx-lm's `shard()` and times `stream_generate` on a random
prompt as `mlx_lm.benchmark` does; rank 0 prints the trials.

    python -m bench.sharded_bench MODEL_DIR PROMPT_TOKENS GEN_TOKENS TRIALS

(`mlx_lm.benchmark` itself, through `sharded_load`, fails over NCCL with
MLX 0.32.2: its `all_sum(..., stream=mx.cpu)` raises "There is no
Stream(gpu, 1) in current thread".)
"""

import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.utils import load_model, load_tokenizer


def main():
    model_dir = Path(sys.argv[1])
    prompt_tokens, gen_tokens, trials = (int(a) for a in sys.argv[2:5])
    group = mx.distributed.init(strict=True, backend="nccl")
    model, config = load_model(model_dir, lazy=True)
    model.shard(group)
    mx.eval(model.parameters())
    tokenizer = load_tokenizer(model_dir)
    tokenizer._eos_token_ids = set()
    mx.random.seed(0)
    prompt = mx.random.randint(0, config["vocab_size"], (prompt_tokens,)).tolist()

    def once():
        for response in stream_generate(model, tokenizer, prompt, max_tokens=gen_tokens):
            pass
        return response

    once()
    for i in range(trials):
        r = once()
        if group.rank() == 0:
            print(
                f"Trial {i + 1}: prompt_tps={r.prompt_tps:.3f}, "
                f"generation_tps={r.generation_tps:.3f}, peak_memory={r.peak_memory:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
