#!/usr/bin/env bash
# Offline checks of Dockerfile, Dockerfile.cuda, deploy/k8s and deploy/grafana against a live
# `llamarun serve` with the default model (tests/deploy/check_deploy.py; needs python3-yaml, installed
# when missing). No Docker engine or cluster is used. Usage: scripts/test-deploy.sh [path/to/llamarun]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
[ -x "$BIN" ] || { echo "test-deploy: $BIN not found (build first)" >&2; exit 1; }
if ! dpkg -s python3-yaml >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "test-deploy: installing python3-yaml"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-yaml >/dev/null
fi
exec /usr/bin/python3 tests/deploy/check_deploy.py "$BIN"
