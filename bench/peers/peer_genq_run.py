"""`genq run` as a whole process on the peers' contract: OpenAI Batch lines in, {custom_id, text,
completion_tokens} lines out, a JSON summary as the last stdout line. Its seconds are the whole
process (start, model load, store, writing the output), so beside genq-engine (generation only)
it shows what the rest of `genq run` costs.

usage: python peer_genq_run.py INPUT.jsonl OUTPUT.jsonl   (the python of genq's venv)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
genq = Path(sys.executable).with_name("genq")
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "out.jsonl"
    env = dict(os.environ, GENQ_DATABASE_URL=f"sqlite:///{tmp}/genq.db")
    threads = os.environ.get("PEER_THREADS")
    if threads:
        env |= {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    started = time.perf_counter()
    subprocess.run(
        [str(genq), "run", str(src), "-o", str(out), "--no-progress"], env=env, check=True
    )
    seconds = time.perf_counter() - started
    tokens = 0
    with dst.open("w") as f:
        for line in out.read_text().splitlines():
            row = json.loads(line)
            body = row["response"]["body"]
            used = body["usage"]["completion_tokens"]
            tokens += used
            text = body["choices"][0]["text"]
            f.write(
                json.dumps({"custom_id": row["custom_id"], "text": text, "completion_tokens": used})
            )
            f.write("\n")
lines = len(src.read_text().splitlines())
print(
    json.dumps(
        {
            "peer": "genq-run",
            "requests": lines,
            "completion_tokens": tokens,
            "seconds": round(seconds, 3),
            "tok_per_s": round(tokens / seconds, 2),
        }
    )
)
