"""Throughput of `mistral-cli serve` under concurrent clients (`cargo xtask
serve-bench`).

Starts the server on a free port with the given model, then, interleaved
over `--reps` rounds, runs each client count (e.g. 1 and 8): that many
streaming chat clients released together, each with its own prompt,
temperature 0, `max_tokens` completion tokens at most. A round's
throughput is the completion tokens of all clients (from their usage
chunks) over the wall time from release to the last `[DONE]`. Prints one
JSON object: per client count the rounds' tokens/s, their median and
spread, and the ratio of medians to one client.

Standard library only (urllib, threads): it measures the server, not a
client library.
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works, step by step.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about a trip to the mountains.",
    "Tell me about the history of bread.",
    "Write a poem about the city at night.",
    "Explain why the sky is blue to a child.",
    "Describe your ideal kitchen in detail.",
    "Write a dialogue between a cat and a dog.",
    "Give advice to someone learning to swim.",
    "Describe the life of a honeybee.",
    "Write a travel guide entry for a small island.",
    "Explain how rain forms.",
    "Tell a story about a robot that learns to paint.",
    "Describe a busy market on a Saturday morning.",
    "Write instructions for planting a tree.",
]


def start_server(cli, model, max_batch):
    proc = subprocess.Popen(
        [cli, "serve", "--model", model, "--port", "0", "--max-batch", str(max_batch)],
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "serving" in line and "http://" in line:
            base = line.split("http://", 1)[1].split()[0]
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            break
    else:
        sys.exit(f"the server exited: {proc.wait()}")
    base = "http://" + base
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/health") as r:
                if r.status == 200:
                    return proc, base
        except Exception:
            time.sleep(0.2)
    sys.exit("the model did not load in 300 s")


def client(base, prompt, max_tokens, out, index):
    body = json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    tokens = 0
    with urllib.request.urlopen(req) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    out[index] = tokens


def round_(base, clients, max_tokens, offset):
    out = [0] * clients
    threads = [threading.Thread(target=client, args=(
        base, PROMPTS[(offset + i) % len(PROMPTS)], max_tokens, out, i)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    return sum(out), dt


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    proc, base = start_server(args.cli, args.model, max(counts))
    try:
        round_(base, 1, 8, 0)  # warm-up, not counted
        runs = {c: [] for c in counts}
        for rep in range(args.reps):
            for c in counts:
                tokens, dt = round_(base, c, args.max_tokens, rep * 3)
                runs[c].append({"tokens": tokens, "seconds": dt, "tok_s": tokens / dt})
                print(f"rep {rep + 1}: {c} clients: {tokens} tokens in {dt:.2f} s "
                      f"= {tokens / dt:.1f} tok/s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    summary = {}
    base_median = statistics.median(r["tok_s"] for r in runs[counts[0]])
    for c in counts:
        values = [r["tok_s"] for r in runs[c]]
        median = statistics.median(values)
        summary[str(c)] = {"runs": runs[c], "median_tok_s": median,
                           "min_tok_s": min(values), "max_tok_s": max(values),
                           "ratio_to_first": median / base_median}
    print(json.dumps({"clients": summary, "max_tokens": args.max_tokens, "reps": args.reps}))


if __name__ == "__main__":
    main()
