#!/bin/bash
# usage: ab.sh ROUNDS MODEL BIN...  (interleaved; medians of decode/prefill tok/s)
rounds=$1; model=$2; shift 2
for r in $(seq $rounds); do
  for b in "$@"; do
    $b bench --model $model --prompt-tokens 128 --gen-tokens 128 --iterations 1 --warmup 1 --json 2>/dev/null \
      | python3 -c "import json,sys; d=json.load(sys.stdin)['results'][0]; print('$b', d['decode_tps']['median'], d['prefill_tps']['median'], d['decode_dispatch_ms']['median'], d['decode_build_ms']['median'])"
  done
done | tee /tmp/ab.raw | python3 -c "
import sys,statistics as st
from collections import defaultdict
D=defaultdict(list)
for l in sys.stdin:
  b,*v=l.split(); D[b].append([float(x) for x in v])
for b,rows in D.items():
  cols=list(zip(*rows))
  print(b, 'n=%d'%len(rows), 'decode med %.1f [%.1f-%.1f]'%(st.median(cols[0]),min(cols[0]),max(cols[0])), 'prefill med %.1f'%st.median(cols[1]), 'dispatch %.2f ms build %.2f ms'%(st.median(cols[2]),st.median(cols[3])))
"
