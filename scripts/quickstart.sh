#!/usr/bin/env bash
# One command from a fresh clone to results: set up, then run the shipped example jobs on the
# default model with no services (embedded mode).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
.venv/bin/genq run examples/prompts.jsonl -o out/prompts.out.jsonl
.venv/bin/genq run examples/openai_batch.jsonl -o out/openai_batch.out.jsonl
echo
echo "First results (out/prompts.out.jsonl, out/openai_batch.out.jsonl):"
.venv/bin/python - <<'PY'
import json
for path in ("out/prompts.out.jsonl", "out/openai_batch.out.jsonl"):
    for line in open(path).readlines()[:3]:
        out = json.loads(line)
        body = (out.get("response") or {}).get("body") or {}
        choice = (body.get("choices") or [{}])[0]
        text = out.get("text") or choice.get("text") or (choice.get("message") or {}).get("content")
        print(f"{out['custom_id']:>14}: {text!r}"[:160])
PY
