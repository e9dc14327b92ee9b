#!/usr/bin/env bash
# Offline checks of Dockerfile, Dockerfile.cuda, deploy/k8s and deploy/grafana against a live
# `llamarun serve` with the default model (tests/deploy/check_deploy.py), and of the benchmark plots
# (tests/plot/check_plot_bench.py). No Docker engine or cluster is used. Needs Debian's python3-yaml
# and python3-matplotlib (installed when missing). Usage: scripts/test-deploy.sh [path/to/llamarun]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
[ -x "$BIN" ] || { echo "test-deploy: $BIN not found (build first)" >&2; exit 1; }
missing=()
for p in python3-yaml python3-matplotlib; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "test-deploy: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
/usr/bin/python3 tests/deploy/check_deploy.py "$BIN"
/usr/bin/python3 tests/plot/check_plot_bench.py
