"""Windows benchmark: a job several claim windows long through the worker's claim -> run -> write
(the embedded worker, a fresh SQLite store, the real model), this tree's worker beside another
revision's, rounds in alternating order. Prints completion tokens/s, decode rows per step (time
weighted, from the batches table) and whether every text is the same; numbers, not pass/fail.

    .venv/bin/python bench/windows.py --baseline REV [--count 192] [--window 64]
        [--max-batch-size 64] [--max-new-tokens 96] [--rounds 2]

A worker that drains its decode batch at the end of each window runs the last rows of every
window nearly alone; one that claims the next window while the last runs keeps the batch full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A run of another revision (--code=DIR) imports that tree's genq and worker.
_CODE = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--code=")), None)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, _CODE or str(REPO))

PROMPTS = Path(__file__).with_name("prompts.jsonl")


def run_once(args: argparse.Namespace) -> None:
    """In a child process: one job through the embedded worker; prints its numbers as JSON."""
    from sqlalchemy import select

    from genq.params import GenerationParams
    from genq.settings import Settings, get_settings
    from genq.store import NewRequest, create_job, list_results, session_factory, upgrade
    from genq.store.db import make_engine
    from genq.store.tables import Batch
    from worker.embedded import drain
    from worker.service import Runtime, model_engine

    url = f"sqlite:///{args.db}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        model_cache=get_settings().model_cache,
        max_batch_size=args.max_batch_size,
    )
    engine = model_engine(settings, args.model)()
    lines = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line]
    prompts = [lines[i % len(lines)] for i in range(args.count)]
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        job = create_job(
            session,
            tenant="bench",
            model=args.model,
            params=GenerationParams(max_new_tokens=args.max_new_tokens),
            requests=[NewRequest(prompt=p) for p in prompts],
        )
    rt = Runtime(
        settings=settings,
        sessions=sessions,
        model=args.model,
        worker_id="bench",
        make_engine=lambda: engine,
        window=args.window,
    )
    started = time.perf_counter()
    drain(rt, job_id=job)
    seconds = time.perf_counter() - started
    with sessions.begin() as session:
        rows = list_results(session, job_id=job, limit=args.count)
        batches = session.execute(select(Batch.rows, Batch.seconds)).all()
    texts = [row.choices[0].text if row.choices else "" for row in rows]
    timed = sum(s for _, s in batches)
    print(
        json.dumps(
            {
                "tokens": sum(row.completion_tokens for row in rows),
                "seconds": seconds,
                "rows_per_step": sum(r * s for r, s in batches) / timed if timed else 0.0,
                "texts": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
                "done": len(rows),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="git revision whose worker runs beside")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--count", type=int, default=192)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)  # read before the imports
    args = parser.parse_args()
    if args.once:
        run_once(args)
        return
    sys.path.insert(0, str(REPO))  # this tree's bench, whichever code --code named
    from bench import worktree

    with tempfile.TemporaryDirectory(prefix="genq-windows-") as tmp:
        codes = {"this tree": REPO}
        if args.baseline:
            tree = worktree.add(args.baseline, Path(tmp) / "baseline")
            codes[f"baseline {args.baseline}"] = tree
        found: dict[str, list[dict[str, float | str]]] = {}
        try:
            for n in range(args.rounds):
                for name in list(codes) if n % 2 == 0 else list(codes)[::-1]:
                    db = Path(tmp) / f"run-{n}-{len(found.get(name, []))}-{os.getpid()}.db"
                    child = [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--once",
                        f"--db={db}",
                        f"--code={codes[name]}",
                        f"--model={args.model}",
                        f"--count={args.count}",
                        f"--window={args.window}",
                        f"--max-batch-size={args.max_batch_size}",
                        f"--max-new-tokens={args.max_new_tokens}",
                    ]
                    out = subprocess.run(child, check=True, capture_output=True, text=True)
                    found.setdefault(name, []).append(json.loads(out.stdout.splitlines()[-1]))
        finally:
            if args.baseline:
                worktree.remove(Path(tmp) / "baseline")
    print(
        f"{os.cpu_count()} CPUs, {args.model}, {args.count} prompts, claim window {args.window}, "
        f"decode batch {args.max_batch_size}, max_new_tokens {args.max_new_tokens}"
    )
    print("| worker's code | completion tok/s | decode rows per step | requests done |")
    print("|---|---|---|---|")
    for name, runs in found.items():
        for run in runs:
            rate = float(run["tokens"]) / float(run["seconds"])
            print(f"| {name} | {rate:8.1f} | {float(run['rows_per_step']):5.1f} | {run['done']} |")
    means = {
        name: sum(float(r["tokens"]) for r in runs) / sum(float(r["seconds"]) for r in runs)
        for name, runs in found.items()
    }
    if len(means) == 2:
        mine, base = means.values()
        print(f"this tree / baseline: {mine / base:.2f}x completion tokens/s")
    hashes = {str(run["texts"]) for runs in found.values() for run in runs}
    print(f"every run's texts identical: {len(hashes) == 1}")


if __name__ == "__main__":
    main()
