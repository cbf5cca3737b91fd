#!/bin/bash
# Interleaved: llama-bench, ours --cpu-fast mlx, ours --cpu-fast ours; 3 reps.
M=/work/main/target/xtask/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
L=/work/main/target/xtask/llama.cpp/build/bin/llama-bench
B=/work/wt-fused/target/release/mistral-cli
for r in 1 2 3; do
  echo "rep $r llama load $(cut -d' ' -f1 /proc/loadavg) $(date -u +%H:%M:%S)"
  $L -m $M -p 128 -n 64 -t 2 -r 1 -o md 2>/dev/null | grep -E "pp128|tg64"
  for f in mlx ours; do
    echo "rep $r ours-$f load $(cut -d' ' -f1 /proc/loadavg) $(date -u +%H:%M:%S)"
    $B bench --model $M --prompt-tokens 128 --gen-tokens 64 --iterations 1 --warmup 1 --cpu-fast $f 2>&1 | tail -1 | cut -c1-110
  done
done
