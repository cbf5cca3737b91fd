#!/bin/bash
# Interleaved rounds: --cpu-fast mlx then ours, same binary.
M=/work/main/target/xtask/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
B=/work/wt-fused/target/release/mistral-cli
for r in 1 2 3 4 5; do
  for f in mlx ours; do
    echo "round $r $f load $(cut -d' ' -f1 /proc/loadavg) $(date -u +%H:%M:%S)"
    $B bench --model $M --prompt-tokens 128 --gen-tokens 64 --iterations 5 --cpu-fast $f 2>&1 | tail -1
  done
done
