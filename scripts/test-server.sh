#!/usr/bin/env bash
# Runs the HTTP server test suite (tests/server/, pytest) against a real `llamarun serve` process on
# loopback with the default model. Installs pytest, the official openai client, httpx and requests
# from PyPI into a virtual environment ($LLAMARUN_VENV, default /tmp/llamarun-venv) on first use.
# Usage: scripts/test-server.sh [path/to/llamarun] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
shift || true
VENV=${LLAMARUN_VENV:-/tmp/llamarun-venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pytest, openai, httpx, requests" 2>/dev/null; then
  echo "test-server: creating $VENV (pytest, openai, httpx, requests)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r tests/server/requirements.txt
fi
export LLAMARUN_BINARY="$(realpath "$BIN")"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout 600 tests/server "$@"
