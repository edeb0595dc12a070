#!/usr/bin/env bash
# The engine on a GPU in a few minutes, for a machine that has one: the engine's tests with
# their models on CUDA (GENQ_TEST_DEVICE=cuda), then the engine benchmark there.
#
#   bash bench/gpu_check.sh            (PYTHON: a python with torch for CUDA, default python3)
#
# The GPU machine needs torch, transformers, pydantic, pydantic-settings, sqlalchemy and pytest
# importable by $PYTHON; wheels of any it lacks can be put in ./.wheels (pip download here).
# Only tiny-gpt2 is built there (smollm2-135m's weights are too big to carry), so the benchmark
# measures what a GPU makes dominant: the per-step cost of the decode loop around the model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .wheels ]; then "$PY" -m pip install -q --no-index --find-links .wheels .wheels/*.whl; fi
export PYTHONPATH=$PWD GENQ_TEST_DEVICE=cuda GENQ_MODEL_CACHE=${GENQ_MODEL_CACHE:-/tmp/genq-models}
OUT=${OUT:-/tmp}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), torch.__version__)"
"$PY" -m pytest -q -p no:cacheprovider -k "not smol" \
  tests/worker/test_engine.py tests/worker/test_attention.py tests/worker/test_planner.py 2>&1 | tee "$OUT/gpu-tests.log"
GENQ_DEVICE=cuda "$PY" bench/engine.py --model tiny-gpt2 --count 256 --max-new-tokens 64 2>&1 | tee "$OUT/gpu-bench.log"
