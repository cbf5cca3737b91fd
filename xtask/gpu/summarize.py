"""Summarize `run.sh bench` results: a Markdown table for BENCHMARKS.md.

Usage:
    python3 xtask/gpu/summarize.py OUT_DIR

Reads OUT_DIR/bench.jsonl (one line per run: rep, model, engine, run),
OUT_DIR/bandwidth.json and OUT_DIR/card.txt. For each model and engine:
median [min, max] over the repetitions of prefill tok/s, decode tok/s, time
to first token and peak memory (a repetition is one process; where it ran
several iterations, its figure is their median, and a second table gives
the lowest and highest single iteration); the ratio ours / mlx-lm of the
medians; and decode as a fraction of the bandwidth bound (read bandwidth /
weight bytes read per token).
"""

from __future__ import annotations

import json
import statistics
import sys


def ours_value(run: dict, key: str) -> float:
    return float(run["results"][0][key]["median"])


def value(engine: str, run: dict, key: str) -> float:
    return ours_value(run, key) if engine == "ours" else float(run[key])


def good_runs(rows: list[dict], model: str, engine: str) -> list[dict]:
    """The runs of `model` by `engine` that did not fail."""
    return [r["run"] for r in rows if r["model"] == model and r["engine"] == engine
            and "error" not in r["run"]]


def iteration_count(engine: str, run: dict) -> int:
    """How many measured iterations one process ran."""
    if engine == "ours":
        return int(run["results"][0]["iterations"])
    return len(run.get("per_iteration", {}).get("decode_tps", [run["decode_tps"]]))


def iteration_range(engine: str, run: dict, key: str) -> tuple[float, float]:
    """The lowest and highest single iteration of one process's runs."""
    if engine == "ours":
        stats = run["results"][0][key]
        return float(stats["min"]), float(stats["max"])
    values = run.get("per_iteration", {}).get(key, [run[key]])
    return float(min(values)), float(max(values))


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def main() -> int:
    out = sys.argv[1]
    rows = [json.loads(line) for line in open(f"{out}/bench.jsonl") if line.strip()]
    bandwidth = json.load(open(f"{out}/bandwidth.json"))["read_GBps"]
    card = open(f"{out}/card.txt").read().strip()
    print(f"Card: {card}; measured read bandwidth {bandwidth:.0f} GB/s (MLX sum over 4 GiB)\n")
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("| model | engine | weight GB | prefill tok/s | decode tok/s | TTFT s | peak GB | decode / bound |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios = []
    for model in models:
        medians = {}
        for engine in ("mlx-lm", "ours"):
            runs = [r["run"] for r in rows if r["model"] == model and r["engine"] == engine]
            failed = [r for r in runs if "error" in r]
            runs = [r for r in runs if "error" not in r]
            if not runs:
                print(f"| {model} | {engine} | failed ({len(failed)} runs) | | | | | |")
                continue
            get = lambda key: [value(engine, r, key) for r in runs]  # noqa: E731
            per_token = float(runs[0]["weight_bytes_per_token"])
            prefill, decode = get("prefill_tps"), get("decode_tps")
            bound = bandwidth * 1e9 / per_token
            medians[engine] = (statistics.median(prefill), statistics.median(decode))
            print(f"| {model} | {engine} | {float(runs[0]['weight_bytes']) / 1e9:.2f} | "
                  f"{spread(prefill, '.0f')} | {spread(decode, '.1f')} | {spread(get('ttft_s'), '.3f')} | "
                  f"{spread(get('peak_mem_GB'), '.2f')} | {statistics.median(decode) / bound:.0%} |")
        if len(medians) == 2:
            ratios.append((model, medians["ours"][0] / medians["mlx-lm"][0],
                           medians["ours"][1] / medians["mlx-lm"][1]))
    iterations = []
    for model in models:
        for engine in ("mlx-lm", "ours"):
            runs = good_runs(rows, model, engine)
            count = sum(iteration_count(engine, r) for r in runs)
            if count > len(runs):
                cells = []
                for key, fmt in (("prefill_tps", ".0f"), ("decode_tps", ".1f")):
                    ranges = [iteration_range(engine, r, key) for r in runs]
                    cells.append(f"{min(a for a, _ in ranges):{fmt}} - {max(b for _, b in ranges):{fmt}}")
                iterations.append((model, engine, count, cells))
    if iterations:
        print("\n| model | engine | iterations | prefill tok/s, lowest - highest | decode tok/s, lowest - highest |")
        print("| --- | --- | --- | --- | --- |")
        for model, engine, count, cells in iterations:
            print(f"| {model} | {engine} | {count} | " + " | ".join(cells) + " |")
    print("\n| model | prefill ours / mlx-lm | decode ours / mlx-lm |")
    print("| --- | --- | --- |")
    for model, prefill, decode in ratios:
        print(f"| {model} | {prefill:.2f}x | {decode:.2f}x |")
    # A decode step's time in parts (decode_build, _dispatch, _wait: both
    # engines' bench output; runs from before they existed lack them), and
    # a step's dispatch with the device idle (decode_idle_dispatch: close to
    # the loop's dispatch, that is host work; far below it, the loop's
    # dispatch waited for the device).
    parts = ("decode_build_ms", "decode_dispatch_ms", "decode_wait_ms")
    split = []
    for model in models:
        for engine in ("mlx-lm", "ours"):
            runs = good_runs(rows, model, engine)
            source = (lambda r: r["results"][0]) if engine == "ours" else (lambda r: r)
            runs = [r for r in runs if all(p in source(r) for p in parts)]
            if runs:
                # The dispatch of a step with the device idle, where measured.
                idle = [value(engine, r, "decode_idle_dispatch_ms") for r in runs
                        if "decode_idle_dispatch_ms" in source(r)]
                split.append((model, engine, [[value(engine, r, p) for r in runs] for p in parts], idle))
    if split:
        print("\n| model | engine | build ms/token | dispatch ms/token | wait ms/token | dispatch, device idle, ms |")
        print("| --- | --- | --- | --- | --- | --- |")
        for model, engine, values, idle in split:
            cells = [spread(v, '.3f') for v in values] + [spread(idle, '.3f') if idle else "-"]
            print(f"| {model} | {engine} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
