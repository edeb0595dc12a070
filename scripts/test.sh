#!/usr/bin/env bash
# Runs the whole test suite. Sets up ./.venv first (see setup.sh). Integration tests start their
# own redis-server and PostgreSQL on 127.0.0.1 when those programs are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check genq worker api tests bench migrations
.venv/bin/python -m mypy genq worker api
.venv/bin/python -m pytest "$@"
