#!/usr/bin/env python3
"""Issue 9's memory check: N (default 500) streaming chat requests opened at once against `llamarun serve`,
all cut off at once (socket reset) after their first streamed bytes, three rounds in one server; prints the
server's VmRSS before each round, with the streams open, and once it is idle again, one JSON line a round.

  python3 bench/abort_streams.py build/llamarun models/SmolLM2-135M-Instruct.Q4_1.gguf 500
"""
import asyncio, json, os, socket, subprocess, sys, time, urllib.request

BIN, MODEL, N = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 500
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
srv = subprocess.Popen([BIN, "serve", "-m", MODEL, "--port", str(port), "--quiet", "-t", "2",
                        "--max-connections", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss_kb():
    for line in open(f"/proc/{srv.pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
def metric(name):
    t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in t.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"): return float(line.split()[-1])
for _ in range(600):
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200: break
    except Exception: time.sleep(0.2)
body = json.dumps({"messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
                   "max_tokens": 64, "stream": True}).encode()
req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
async def warm():  # one complete request first, so the before-figure includes a served request
    r, w = await asyncio.open_connection("127.0.0.1", port); w.write(req); await w.drain()
    await r.read(); w.close()
async def one(opened):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(req); await w.drain()
    try:
        await asyncio.wait_for(r.read(1), timeout=120)
    except Exception:
        pass
    opened.append(w)
async def main():
    await warm()
    before = rss_kb()
    opened = []
    await asyncio.gather(*(one(opened) for _ in range(N)))
    peak = rss_kb()
    for w in opened: w.transport.abort()  # all at once: RST, no graceful close
    return before, peak, len(opened)
for rnd in range(3):
    before, peak, n = asyncio.run(main())
    time.sleep(1)
    for _ in range(300):
        if metric("llamarun_num_requests_running") == 0 and metric("llamarun_num_requests_waiting") == 0: break
        time.sleep(0.5)
    time.sleep(2)
    after = rss_kb()
    print(json.dumps({"round": rnd + 1, "streams_aborted": n, "rss_before_kb": before, "rss_with_streams_kb": peak,
                      "rss_after_idle_kb": after, "running_after": metric("llamarun_num_requests_running"),
                      "server_alive": srv.poll() is None}), flush=True)
srv.terminate(); srv.wait(timeout=60)
