"""Decode tok/s of SmolLM2 with and without --prompt-lookup on a copying and a free prompt
(BENCHMARKS.md, "Speculative decoding"): PYTHONPATH=xtask/python python3 -m bench.speculative_bench [RUNS]."""
import json, subprocess, statistics, sys
B = "target/release/mistral-cli"  # run from the repository root
M = "target/xtask/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
para = ("The lighthouse stood at the edge of the northern cliffs for more than two hundred years. "
        "Every evening the keeper climbed the spiral stairs, trimmed the wick, polished the great lens, "
        "and watched the beam sweep across the dark water. Ships passing in the night trusted that light "
        "to guide them safely past the rocks, and in all that time not one of them was lost.")
prompts = {
    "copy": "Repeat this text exactly: " + para,
    "free": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}
configs = {"plain": [], "lookup4": ["--prompt-lookup", "4"], "lookup8": ["--prompt-lookup", "8"]}
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
res = {}
for r in range(runs):
    for pname, text in prompts.items():
        for cname, extra in configs.items():
            out = subprocess.run([B, "generate", "--model", M, "--prompt", text, "--max-tokens", "128",
                                  "--json"] + extra, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr); sys.exit(1)
            j = json.loads(out.stdout)
            s = j["stats"]; sp = j.get("speculative", {})
            res.setdefault((pname, cname), []).append((s["generation_tokens_per_second"], s["generated_tokens"], sp.get("acceptance_rate"), sp.get("steps"), j["ids"]))
            print(pname, cname, round(s["generation_tokens_per_second"], 1), s["generated_tokens"], sp, flush=True)
print("\nsummary")
for (p, c), v in res.items():
    tps = sorted(x[0] for x in v)
    same = all(x[4] == res[(p, "plain")][0][4] for x in v)
    print(f"| {p} | {c} | {statistics.median(tps):.1f} [{tps[0]:.1f}, {tps[-1]:.1f}] | {v[0][1]} | {'-' if v[0][2] is None else f'{100*v[0][2]:.0f}%'} | {v[0][3] or '-'} | {same} |")
