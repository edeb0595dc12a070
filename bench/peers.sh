#!/usr/bin/env bash
# genq's engine side by side with the engines a user could pick instead, on genq's own bench
# prompts, through the runners in ../shared/peers (one input format, one output format).
# Every engine runs twice in one run, in order and then in reverse, so a noisy machine shows.
#
#   bash bench/peers.sh [short|tail|prefix ...]      (default: all three)
#
# Workloads (built from bench/prompts.jsonl by ../shared/peers/workloads.py): short (128 prompts,
# 64 new tokens), tail (64 prompts, 256 new tokens, outputs ending anywhere), prefix (64 items
# behind one long instruction with worked examples, 48 new tokens).
# Env: PEERS_SRC (default ../shared/peers), PEERS_DIR (default /tmp/peers: build it with
# $PEERS_SRC/setup.sh hf openvino vllm), PEER_THREADS (default 2), OUT (default out/peers),
# ENGINES to run a subset (names below), PEER_TIMEOUT (seconds per run, default 1800).
# genq-base is genq's engine from another checkout, to measure a change side by side:
#   git worktree add /tmp/genq-base REV && GENQ_BASE=/tmp/genq-base ENGINES="genq-base genq-engine" bash bench/peers.sh short
#
# openvino-cb-f32 is OpenVINO GenAI continuous batching told to compute and keep its cache in
# fp32: on a CPU with bf16 units its default is bf16 arithmetic (openvino-cb-bf16), which changes
# texts; genq-engine-bf16 is genq with GENQ_DTYPE=bfloat16, its counterpart.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SRC=$(realpath "${PEERS_SRC:-../shared/peers}")
P=${PEERS_DIR:-/tmp/peers}
OUT=$(realpath -m "${OUT:-out/peers}")
export PEER_THREADS=${PEER_THREADS:-2} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PEERS_SRC=$SRC PEERS_DIR=$P
export GENQ_PEER_MODEL=${GENQ_PEER_MODEL:-${GENQ_MODEL_CACHE:-$HOME/.cache/genq/models}/smollm2-135m}
OV=$P/models/ov-smollm2-fp32
mkdir -p "$OUT"

# name | workloads it runs on | env | python | script and arguments (relative to $SRC, or absolute)
ALL=(
  "hf-pipeline|short tail prefix||$P/hf/bin/python|peer_hf.py --mode pipeline --batch-size 32"
  "genq-engine|short tail prefix||$ROOT/.venv/bin/python|peer_genq.py"
  "genq-base|short tail prefix|PYTHONPATH=${GENQ_BASE:-}|$ROOT/.venv/bin/python|peer_genq.py"
  "openvino-cb-f32|short tail prefix||$P/ov/bin/python|$ROOT/bench/peers/openvino_precision.py --precision f32 --api cb --ov-model $OV"
  "openvino-cb-f32-apc|prefix||$P/ov/bin/python|$ROOT/bench/peers/openvino_precision.py --precision f32 --api cb --prefix-caching --ov-model $OV"
  "vllm-cpu|short tail prefix||$P/vllm/bin/python|peer_vllm.py"
  "genq-run|short tail prefix||$ROOT/.venv/bin/python|$ROOT/bench/peers/peer_genq_run.py"
  "genq-engine-bf16|short|GENQ_DTYPE=bfloat16|$ROOT/.venv/bin/python|peer_genq.py"
  "openvino-cb-bf16|short||$P/ov/bin/python|$ROOT/bench/peers/openvino_precision.py --precision bf16 --api cb --ov-model $OV"
)

run_one() {  # entry, workload, pass
  IFS='|' read -r name _ envs py cmd <<<"$1"
  local log="$OUT/$2.$name.pass$3"
  set -- "$cmd" "$2" "$3"
  read -r script args <<<"$1"
  [ "${script:0:1}" = / ] || script=$SRC/$script
  echo "[$(date +%T)] $2 pass $3: $name  (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  # shellcheck disable=SC2086
  (cd "$SRC" && env $envs timeout "${PEER_TIMEOUT:-1800}" "$py" "$script" "$OUT/$2.jsonl" "$log.jsonl" $args) >"$log.log" 2>&1
  local last; last=$(grep '^{' "$log.log" | tail -1)
  if [ -z "$last" ]; then
    echo "{\"name\": \"$name\", \"pass_\": $3, \"error\": \"see $log.log\"}" >>"$OUT/$2.results.jsonl"
    echo "   failed (see $log.log)" >&2
  else
    python3 -c "import json,sys; d=json.loads(sys.argv[1]); d.update(name='$name', pass_=$3); print(json.dumps(d))" "$last" >>"$OUT/$2.results.jsonl"
  fi
}

for workload in ${*:-short tail prefix}; do
  n=128; [ "$workload" = short ] || n=64
  python3 "$SRC/workloads.py" "$workload" bench/prompts.jsonl "$n" >"$OUT/$workload.jsonl"
  sel=()
  for e in "${ALL[@]}"; do
    IFS='|' read -r name loads _ py _ <<<"$e"
    case " $loads " in *" $workload "*) ;; *) continue ;; esac
    if [ -n "${ENGINES:-}" ]; then case " $ENGINES " in *" $name "*) ;; *) continue ;; esac; fi
    [ -x "$py" ] || { echo "skip $name (no $py)" >&2; continue; }
    [ "$name" != genq-base ] || [ -n "${GENQ_BASE:-}" ] || { echo "skip genq-base (GENQ_BASE unset)" >&2; continue; }
    sel+=("$e")
  done
  : >"$OUT/$workload.results.jsonl"
  for e in "${sel[@]}"; do run_one "$e" "$workload" 1; done
  for ((i=${#sel[@]}-1; i>=0; i--)); do run_one "${sel[$i]}" "$workload" 2; done
  python3 "$ROOT/bench/peers/table.py" "$OUT" "$workload" "$SRC/compare.py"
done
