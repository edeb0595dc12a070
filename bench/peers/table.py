"""The side-by-side table of one workload from bench/peers.sh's results: tok/s per pass and
mean, the ratio to genq's engine, and how many texts equal transformers' greedy (hf-pipeline).

usage: table.py OUTDIR WORKLOAD COMPARE.py"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

out, workload, compare = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [json.loads(line) for line in (out / f"{workload}.results.jsonl").read_text().splitlines()]
names = list(dict.fromkeys(r["name"] for r in rows))
speeds: dict[str, dict[int, float | None]] = {n: {} for n in names}
tokens: dict[str, int] = {}
for r in rows:
    ok = "error" not in r and r.get("seconds")
    speeds[r["name"]][r["pass_"]] = r["completion_tokens"] / r["seconds"] if ok else None
    if ok:
        tokens[r["name"]] = r["completion_tokens"]


def mean(name: str) -> float | None:
    got = [v for v in speeds[name].values() if v]
    return sum(got) / len(got) if got else None


reference = out / f"{workload}.hf-pipeline.pass1.jsonl"
genq = mean("genq-engine") if "genq-engine" in speeds else None
count = len((out / f"{workload}.jsonl").read_text().splitlines())
print(f"\n{workload}: {count} requests")
print("| engine | tok/s pass 1 / pass 2 | mean | vs genq-engine | tokens | texts = hf greedy |")
print("|---|---|---|---|---|---|")
for name in names:
    passes = " / ".join(f"{v:.1f}" if v else "ERR" for _, v in sorted(speeds[name].items()))
    m = mean(name)
    equal = "-"
    mine = out / f"{workload}.{name}.pass1.jsonl"
    if reference.exists() and mine.exists() and name != "hf-pipeline":
        result = subprocess.run(
            [sys.executable, compare, str(reference), str(mine)], capture_output=True, text=True
        )
        try:
            d = json.loads(result.stdout.strip().splitlines()[-1])
            equal = f"{d['text_equal']}/{d['n']}"
        except (IndexError, KeyError, ValueError):
            equal = "?"
    ratio = f"{m / genq:.2f}x" if m and genq else "-"
    shown = f"{m:.1f}" if m else "ERR"
    print(f"| {name} | {passes} | {shown} | {ratio} | {tokens.get(name, '-')} | {equal} |")
