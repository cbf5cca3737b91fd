"""Throughput of `mistral-cli serve` under concurrent clients (`cargo xtask
serve-bench`).

Starts the server on a free port with the given model, then, interleaved
over `--reps` rounds, runs each client count (e.g. 1 and 8): that many
streaming chat clients released together, each with its own prompt,
temperature 0, `max_tokens` completion tokens at most. A round's
throughput is the completion tokens of all clients (from their usage
chunks) over the wall time from release to the last `[DONE]`. Prints one
JSON object: per client count the rounds' tokens/s, their median and
spread, and the ratio of medians to one client. With `--schema`, each
round is also run with every client's answer constrained to a JSON schema
(`response_format`; an object with one long string, so answers run to
`max_tokens` as the free ones do), interleaved with the free round of the
same count; those rounds are keyed `N+schema`, with their ratio to the free
rounds of N clients.

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


SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"text": {"type": "string", "minLength": 2000, "maxLength": 4000}},
    "required": ["text"], "additionalProperties": False}}}


def client(base, prompt, max_tokens, out, index, schema=False):
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
    }
    if schema:
        body["response_format"] = SCHEMA
    body = json.dumps(body).encode()
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


def round_(base, clients, max_tokens, offset, schema=False):
    out = [0] * clients
    threads = [threading.Thread(target=client, args=(
        base, PROMPTS[(offset + i) % len(PROMPTS)], max_tokens, out, i, schema)) for i in range(clients)]
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
    ap.add_argument("--schema", action="store_true")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    proc, base = start_server(args.cli, args.model, max(counts))
    try:
        round_(base, 1, 8, 0)  # warm-up, not counted
        modes = [False, True] if args.schema else [False]
        if args.schema:
            round_(base, 1, 8, 0, True)
        keys = [(c, m) for c in counts for m in modes]
        runs = {k: [] for k in keys}
        for rep in range(args.reps):
            for c, m in keys:
                tokens, dt = round_(base, c, args.max_tokens, rep * 3, m)
                runs[(c, m)].append({"tokens": tokens, "seconds": dt, "tok_s": tokens / dt})
                print(f"rep {rep + 1}: {c} clients{' (schema)' if m else ''}: {tokens} tokens "
                      f"in {dt:.2f} s = {tokens / dt:.1f} tok/s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    summary = {}
    med = {k: statistics.median(r["tok_s"] for r in runs[k]) for k in keys}
    base_median = med[(counts[0], False)]
    for c, m in keys:
        values = [r["tok_s"] for r in runs[(c, m)]]
        entry = {"runs": runs[(c, m)], "median_tok_s": med[(c, m)],
                 "min_tok_s": min(values), "max_tok_s": max(values),
                 "ratio_to_first": med[(c, m)] / base_median}
        if m:
            entry["ratio_to_free"] = med[(c, m)] / med[(c, False)]
        summary[f"{c}+schema" if m else str(c)] = entry
    print(json.dumps({"clients": summary, "max_tokens": args.max_tokens, "reps": args.reps}))


if __name__ == "__main__":
    main()
