#!/usr/bin/env bash
# One command from a fresh clone to results, through the service path on the embedded default
# (no Redis, no PostgreSQL): set up, start `genq serve` (API + in-process worker on SQLite),
# submit the shipped example job, poll it until it ends, fetch its results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

mkdir -p out
rm -f out/quickstart.db out/quickstart.db.serve-key out/serve.log
export GENQ_DATABASE_URL="sqlite:///$PWD/out/quickstart.db"
port=${GENQ_QUICKSTART_PORT:-8765}
.venv/bin/genq serve --port "$port" >out/serve.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 120); do  # the key is printed once the database is ready
  grep -q '^GENQ_API_KEY=' out/serve.log && break
  kill -0 "$server" 2>/dev/null || { cat out/serve.log; exit 1; }
  sleep 0.5
done
export GENQ_API_URL="http://127.0.0.1:$port"
GENQ_API_KEY=$(sed -n 's/^GENQ_API_KEY=//p' out/serve.log)
export GENQ_API_KEY
for _ in $(seq 120); do
  .venv/bin/python -c 'import httpx, sys; httpx.get(sys.argv[1]).raise_for_status()' \
    "$GENQ_API_URL/healthz" 2>/dev/null && break
  sleep 0.5
done

job=$(.venv/bin/genq submit examples/prompts.jsonl)
echo "submitted $job; polling"
while :; do
  status=$(.venv/bin/genq status "$job")
  state=$(.venv/bin/python -c '
import json, sys
job = json.load(sys.stdin)
c = job["counts"]
print(job["status"], "%d/%d" % (c["succeeded"] + c["failed"] + c["cancelled"], c["total"]))
' <<<"$status")
  echo "  $state"
  case "$state" in completed*|cancelled*) break ;; esac
  sleep 2
done
.venv/bin/genq results "$job" -o out/quickstart.results.jsonl

echo
echo "First results (out/quickstart.results.jsonl):"
.venv/bin/python - <<'PY'
import json
for line in open("out/quickstart.results.jsonl").readlines()[:4]:
    out = json.loads(line)
    asked = out["params"] or {}
    keys = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "stop")
    params = {k: asked[k] for k in keys if asked.get(k) not in (None, [])}
    print(f"{out['custom_id']:>6} {out['status']} {out['finish_reason']} {json.dumps(params)}")
    shown = out["text"] if out["status"] == "succeeded" else out["error"]
    print(f"        {json.dumps(shown)[:110]}")
PY
