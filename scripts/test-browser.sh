#!/usr/bin/env bash
# Browser test of the chat page (GET / of `llamarun serve`): headless Chromium through Selenium, all
# from Debian (chromium, chromium-driver, python3-selenium; installed when missing), against a server
# with the default model and an API key on a free loopback port. Exits non-zero on failure.
# Usage: scripts/test-browser.sh [path/to/llamarun]   (SCREENSHOT=docs/chat-page.png to save one)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/llamarun}
[ -x "$BIN" ] || { echo "test-browser: $BIN not found (build first)" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
for p in chromium chromium-driver python3-selenium; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-browser: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

KEY="browser-test-key-$$"
LOG=$(mktemp /tmp/llamarun-browser-XXXXXX.log)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# --port 0: the kernel picks a free port; the server prints it in its 'listening' log line.
"$BIN" serve --host 127.0.0.1 --port 0 --api-key "$KEY" --ctx 2048 2>"$LOG" >/dev/null &
PID=$!
stop_server() {
  if kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    wait "$PID" || true
  fi
}
trap stop_server EXIT

healthy() {  # GET /health answers 200 (no curl needed)
  /usr/bin/python3 -c "import sys, urllib.request
try: sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$1/health', timeout=5).status == 200 else 1)
except Exception: sys.exit(1)"
}
PORT=""
for _ in $(seq 1 600); do
  kill -0 "$PID" 2>/dev/null || { echo "test-browser: the server exited:" >&2; cat "$LOG" >&2; exit 1; }
  PORT=$(sed -n 's/.*"event":"listening".*"port":\([0-9]*\).*/\1/p' "$LOG" | head -1)
  if [ -n "$PORT" ] && healthy "$PORT"; then break; fi
  sleep 0.2
done
if [ -z "$PORT" ] || ! healthy "$PORT"; then
  echo "test-browser: the server did not become ready:" >&2
  cat "$LOG" >&2
  exit 1
fi

rc=0
/usr/bin/python3 tests/browser/chat_page_test.py --url "http://127.0.0.1:$PORT" --api-key "$KEY" \
  ${SCREENSHOT:+--screenshot "$SCREENSHOT"} || rc=$?

trap - EXIT
kill -TERM "$PID"
src=0
wait "$PID" || src=$?
if [ "$src" != 0 ]; then
  echo "test-browser: the server exited with $src:" >&2
  tail -20 "$LOG" >&2
  rc=1
fi
if [ "$rc" != 0 ]; then
  echo "test-browser: FAILED (server log: $LOG)" >&2
  exit "$rc"
fi
rm -f "$LOG"
echo "test-browser: OK"
