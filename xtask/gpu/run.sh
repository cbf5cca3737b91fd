#!/usr/bin/env bash
# Runs on the lent GPU machine (the `device` tool), in the copy of the
# working tree, with the parts `cargo xtask gpu-pack` made carried along.
# `cargo xtask gpu-pack` prints the exact calls. Modes:
#
#   stash    keep the carried parts in /root/stash for the next call (the
#            machine keeps its disk only while it stays warm)
#   parity   unpack; generate the test models there; mlx-lm 0.32.2 on CUDA
#            writes the references; our parity tests run on CUDA against them
#   bench    unpack; write the 7B-shape and ~150M models there; ours and
#            mlx-lm side by side, interleaved, with the card's bandwidth
#
# Results (logs, JSON) go to $OUT, which the device tool brings back.
set -euo pipefail
mode=${1:?usage: run.sh stash|parity|bench [reps]}
pack=target/gpu-pack
stash=/root/stash
work=/root/w
out=${OUT:-/tmp/out}
mkdir -p "$stash" "$work" "$out"
if compgen -G "$pack/*/*" >/dev/null; then cp -f "$pack"/*/* "$stash"/; fi
if [ "$mode" = stash ]; then ls -la "$stash"; exit 0; fi

# --- unpack and install (once per warm machine) ---
if [ ! -f "$work/.unpacked" ]; then
  (cd "$stash" && sha256sum -c parts.sha256)
  chmod +x "$stash/zstd"
  cat "$stash"/part-* | "$stash/zstd" -d --long=27 | tar -x -C "$work"
  touch "$work/.unpacked"
fi
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -m pip install -q --no-index --no-deps --disable-pip-version-check "$work"/wheels/*.whl
# MLX's Python package loads site-packages/mlx/lib/libmlx.so: the bundle's.
ln -sfn "$work/bundle/lib/mlx/lib" "$site/mlx/lib"
ln -sfn "$work/bundle/lib/mlx/include" "$site/mlx/include"
ln -sfn "$work/bundle/lib/mlx_cuda_13.libs" "$site/mlx_cuda_13.libs"
nvlibs=$(ls -d "$site"/nvidia/*/lib | paste -sd:)
export MISTRAL_MLX_PYTHON=$(command -v python3)
export MISTRAL_MLX_SCRIPTS=$PWD/xtask/python
export MISTRAL_MLX_SP_MODELS=$work/sp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"

# The bundle's launcher, with a bare environment: it must find NVIDIA's
# libraries by itself (python3's site-packages/nvidia).
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "$work/bundle/bin/mistral-cli" info | tee "$out/info.txt"

# Probe MLX 0.32.2's CUDA-graph defect with 4-bit group-128 weights.
probe_g128() {
  python3 - <<'EOF'
import mlx.core as mx
w = mx.random.normal((512, 1024))
wq, s, b = mx.quantize(w, group_size=128, bits=4)
x = mx.random.normal((1, 1024))
for _ in range(3):
    y = mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=128, bits=4)
    mx.eval(y)
print("ok")
EOF
}

case "$mode" in
parity)
  models=$work/test-models
  if probe_g128 >"$out/g128_graphs_on.txt" 2>&1; then graphs=on; else graphs=off; fi
  MLX_USE_CUDA_GRAPHS=0 probe_g128 >"$out/g128_graphs_off.txt" 2>&1 || true
  echo "4-bit group-128 with CUDA graphs: $graphs" | tee "$out/g128.txt"
  [ "$graphs" = on ] || export MLX_USE_CUDA_GRAPHS=0
  [ -f "$models/manifest.json" ] || python3 xtask/python/make_models.py "$models" >"$out/make_models.log" 2>&1
  export MISTRAL_MLX_REFERENCE_DEVICE=gpu MISTRAL_MLX_TEST_MODELS=$models
  python3 xtask/python/reference.py --all "$models" --out-dir "$models/refs" --greedy 64 >"$out/reference.log" 2>&1
  python3 xtask/python/reference.py --all "$models" --out-dir "$models/refs/dense-f32" --dense-f32 --greedy 64 >"$out/reference-dense.log" 2>&1
  status=0
  for test in "$work"/tests/*; do
    name=$(basename "$test")
    LD_LIBRARY_PATH="$work/bundle/lib/mlx/lib:$nvlibs" "$test" --test-threads 1 >"$out/test-$name.log" 2>&1 || status=1
    grep -E "^test result|FAILED|panicked" "$out/test-$name.log" | head -20 || true
  done
  exit $status
  ;;
bench)
  reps=${2:-3}
  models=$work/bench-models
  [ -f "$models/manifest.json" ] || python3 xtask/python/gpu_bench_models.py "$models" >"$out/models.log" 2>&1
  cp "$models/manifest.json" "$out/models.json"
  python3 xtask/python/mlx_lm_bench.py --bandwidth --device gpu | tee "$out/bandwidth.json"
  results=$out/bench.jsonl
  : >"$results"
  for rep in $(seq "$reps"); do
    for model in m150_bf16 m7b_bf16 m7b_q8 m7b_q4; do
      for prompt in 512; do
        line=$(python3 xtask/python/mlx_lm_bench.py --device gpu --model "$models/$model" \
          --prompt-tokens $prompt --gen-tokens 128) || line='{"error": "mlx-lm failed"}'
        echo "{\"rep\": $rep, \"model\": \"$model\", \"engine\": \"mlx-lm\", \"run\": $line}" >>"$results"
        line=$("$work/bundle/bin/mistral-cli" bench --model "$models/$model" --dtype checkpoint \
          --prompt-tokens $prompt --gen-tokens 128 --iterations 1 --warmup 1 --json) || line='{"error": "ours failed"}'
        echo "{\"rep\": $rep, \"model\": \"$model\", \"engine\": \"ours\", \"run\": $line}" >>"$results"
        tail -2 "$results" | cut -c1-300
      done
    done
  done
  python3 xtask/gpu/summarize.py "$out" | tee "$out/summary.md"
  ;;
*)
  echo "unknown mode $mode" >&2
  exit 2
  ;;
esac
