"""Decode tok/s with and without speculative decoding, on a copying and a
free prompt (BENCHMARKS.md, "Speculative decoding").

    PYTHONPATH=xtask/python python3 -m bench.speculative_bench [RUNS]
        [--cli BIN] [--model PATH] [--draft PATH] [--lookup N,N]
        [--draft-tokens N,N] [--max-tokens N] [--json FILE] [-- EXTRA...]

By default SmolLM2 (the demo model) with the release CLI, from the
repository root; `--draft` adds runs with that draft model; arguments
after `--` go to every `generate` call (e.g. `--dtype bfloat16`).
"""
import argparse, json, statistics, subprocess, sys

PARA = ("The lighthouse stood at the edge of the northern cliffs for more than two hundred years. "
        "Every evening the keeper climbed the spiral stairs, trimmed the wick, polished the great lens, "
        "and watched the beam sweep across the dark water. Ships passing in the night trusted that light "
        "to guide them safely past the rocks, and in all that time not one of them was lost.")
PROMPTS = {
    "copy": "Repeat this text exactly: " + PARA,
    "free": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}


def counts(text):
    return [int(n) for n in text.split(",") if n]


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=3)
    ap.add_argument("--cli", default="target/release/mistral-cli")
    ap.add_argument("--model", default="target/xtask/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--draft", help="a draft model: adds --draft-model runs")
    ap.add_argument("--draft-tokens", type=counts, default=[3, 5])
    ap.add_argument("--lookup", type=counts, default=[4, 8], help="--prompt-lookup counts ('' for none)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", help="also write every run here")
    a = ap.parse_args(argv)

    configs = {"plain": []}
    configs.update({f"lookup{n}": ["--prompt-lookup", str(n)] for n in a.lookup})
    if a.draft:
        configs.update({f"draft{n}": ["--draft-model", a.draft, "--num-draft-tokens", str(n)]
                        for n in a.draft_tokens})
    res, rows = {}, []
    for r in range(a.runs):
        for pname, text in PROMPTS.items():
            for cname, flags in configs.items():
                cmd = [a.cli, "generate", "--model", a.model, "--prompt", text,
                       "--max-tokens", str(a.max_tokens), "--json"] + flags + extra
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(" ".join(cmd), "\n", out.stderr)
                    sys.exit(1)
                j = json.loads(out.stdout)
                s, sp = j["stats"], j.get("speculative", {})
                tps = s["generation_tokens_per_second"]
                res.setdefault((pname, cname), []).append(
                    (tps, s["generated_tokens"], sp.get("acceptance_rate"), sp.get("steps"), j["ids"]))
                rows.append(dict(round=r, prompt=pname, decoding=cname, tps=tps,
                                 tokens=s["generated_tokens"], speculative=sp))
                print(pname, cname, round(tps, 1), s["generated_tokens"], sp, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("\nsummary: prompt | decoding | decode tok/s median [min, max] (vs plain) | tokens | accepted | target passes | plain's ids")
    for (p, c), v in res.items():
        tps = sorted(x[0] for x in v)
        plain = statistics.median(x[0] for x in res[(p, "plain")])
        ratio = "" if c == "plain" else f" ({statistics.median(tps) / plain:.2f}x)"
        same = all(x[4] == res[(p, "plain")][0][4] for x in v)
        acc = "-" if v[0][2] is None else f"{100 * v[0][2]:.0f}%"
        print(f"| {p} | {c} | {statistics.median(tps):.1f} [{tps[0]:.1f}, {tps[-1]:.1f}]{ratio} "
              f"| {v[0][1]} | {acc} | {v[0][3] or '-'} | {same} |")


if __name__ == "__main__":
    main()
