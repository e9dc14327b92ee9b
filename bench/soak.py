#!/usr/bin/env python3
"""CPU soak of `llamarun serve` (issue 4): a long closed-loop load while the server's memory is watched.

Starts build/llamarun serve (default model unless --model) on a free port, runs bench/bench_serve.py for
SOAK_S seconds (default 600) in --duration-s mode (streaming, --concurrency 32, 64-token prompts, 32-token
outputs, ignore_eos), samples the server's VmRSS (and RssAnon, RssFile) from /proc/PID/status every 5 s,
then stops the server with SIGTERM and prints one JSON report: the RSS series, RSS at 1 min and at the end,
the least-squares slope of RSS over the last 9 minutes (MB/min), requests completed, errors, throughput and
latencies. Exits 1 if any request errored, the load generator failed or the server died or did not drain.

  nice -n 19 python3 bench/soak.py --out bench/results/cpu-soak-$(date +%F).json
  SOAK_S=60 python3 bench/soak.py            # a short run

The load generator needs httpx: it runs under $BENCH_PYTHON, else /tmp/llamarun-venv/bin/python if that
exists, else this interpreter. This script itself needs only the standard library.
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def proc_mem_mb(pid):
    """{'VmRSS': MB, 'RssAnon': MB, 'RssFile': MB, 'VmHWM': MB} from /proc/PID/status, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = int(v.split()[0]) / 1024.0  # kB -> MB (MiB)
            return out
    except OSError:
        return None


def slope_per_min(points):
    """Least-squares slope of y over t (seconds), in y units per minute; None with fewer than 2 points."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    return 60.0 * sum((t - mt) * (y - my) for t, y in points) / sxx


def nearest(series, t):
    return min(series, key=lambda p: abs(p[0] - t))[1] if series else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def start_server(args, log_path):
    cmd = [args.llamarun, "serve", "--port", "0", "--quiet"] + (["-m", args.model] if args.model else [])
    cmd += args.server_arg
    log = open(log_path, "w")
    srv = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    port, deadline = None, time.time() + args.start_timeout
    while time.time() < deadline and srv.poll() is None:
        with open(log_path) as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "listening":
                    port = ev["port"]
                if ev.get("event") == "ready" and port:
                    return srv, cmd, port
        time.sleep(0.2)
    srv.kill()
    raise SystemExit(f"soak: the server did not become ready (see {log_path})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", 600)),
                    help="load duration (default: $SOAK_S or 600)")
    ap.add_argument("--llamarun", default=os.path.join(ROOT, "build", "llamarun"))
    ap.add_argument("--model", default=None, help="model path (default: the server's default model)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server argument (repeatable)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--interval", type=float, default=5.0, help="RSS sampling period in seconds")
    ap.add_argument("--slope-window", type=float, default=540.0,
                    help="fit the RSS slope over the last this many seconds (default 540 = 9 min)")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    args = ap.parse_args()

    bench_python = os.environ.get("BENCH_PYTHON") or (
        "/tmp/llamarun-venv/bin/python" if os.path.exists("/tmp/llamarun-venv/bin/python") else sys.executable)
    tmp = tempfile.mkdtemp(prefix="llamarun-soak-")
    server_log, bench_json = os.path.join(tmp, "server.log"), os.path.join(tmp, "bench.json")
    srv, server_cmd, port = start_server(args, server_log)
    ready_mem = proc_mem_mb(srv.pid)

    bench_cmd = [bench_python, os.path.join(ROOT, "bench", "bench_serve.py"), "--url", f"http://127.0.0.1:{port}",
                 "--duration-s", str(args.seconds), "--concurrency", str(args.concurrency),
                 "--input-len", str(args.input_len), "--output-len", str(args.output_len), "--ignore-eos",
                 "--json", bench_json]
    series, loadavg = [], []  # [t_s, VmRSS MB, RssAnon MB], [t_s, 1-min load average]
    t0 = time.monotonic()
    bench = subprocess.Popen(bench_cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bench_out = []
    reader = threading.Thread(target=lambda: bench_out.extend(bench.stdout), daemon=True)
    reader.start()
    server_died = False
    next_t = 0.0
    while True:
        t = time.monotonic() - t0
        if t >= next_t:
            m = proc_mem_mb(srv.pid)
            if m is None or srv.poll() is not None:
                server_died = True
            else:
                series.append([round(t, 1), round(m["VmRSS"], 2), round(m.get("RssAnon", 0.0), 2)])
                with open("/proc/loadavg") as f:
                    loadavg.append([round(t, 1), float(f.read().split()[0])])
            next_t += args.interval
        if bench.poll() is not None or server_died:
            break
        time.sleep(min(0.5, max(0.0, next_t - (time.monotonic() - t0))))
    if bench.poll() is None:  # the server died under it: stop the load generator
        bench.terminate()
    bench.wait()
    reader.join(timeout=5)
    wall = time.monotonic() - t0
    end_mem = proc_mem_mb(srv.pid)
    if end_mem and srv.poll() is None and (not series or wall - series[-1][0] >= 0.5):
        series.append([round(wall, 1), round(end_mem["VmRSS"], 2), round(end_mem.get("RssAnon", 0.0), 2)])

    # stop the server: SIGTERM drains, exit code 0 expected
    server_rc = srv.poll()
    if server_rc is None:
        srv.send_signal(signal.SIGTERM)
        try:
            server_rc = srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
            server_rc = "killed after 60 s"

    try:
        with open(bench_json) as f:
            rep = json.load(f)
    except (OSError, ValueError):
        rep = None

    end_t = series[-1][0] if series else 0.0
    window = [(t, r) for t, r, _ in series if t >= end_t - args.slope_window]
    window_anon = [(t, a) for t, _, a in series if t >= end_t - args.slope_window]
    result = {
        "what": "llamarun serve CPU soak (issue 4)",
        "environment": {"host": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(), "commit": git_commit(),
                        "python": platform.python_version()},
        "server_cmd": server_cmd,
        "load": {"duration_s": args.seconds, "concurrency": args.concurrency, "input_len": args.input_len,
                 "output_len": args.output_len, "ignore_eos": True, "stream": True, "bench_cmd": bench_cmd[1:]},
        "wall_s": round(wall, 1),
        "rss_ready_mb": round(ready_mem["VmRSS"], 2) if ready_mem else None,
        "rss_1min_mb": nearest([(t, r) for t, r, _ in series], 60.0),
        "rss_end_mb": series[-1][1] if series else None,
        "rss_max_mb": max(r for _, r, _ in series) if series else None,
        "vm_hwm_end_mb": round(end_mem["VmHWM"], 2) if end_mem else None,
        "rss_slope_window_s": [window[0][0], window[-1][0]] if window else None,
        "rss_slope_mb_per_min": slope_per_min(window),
        "rss_anon_slope_mb_per_min": slope_per_min(window_anon),
        "rss_anon_1min_mb": nearest([(t, a) for t, _, a in series], 60.0),
        "rss_anon_end_mb": series[-1][2] if series else None,
        "requests": rep["requests"] if rep else None,
        "completed": rep["completed"] if rep else None,
        "failed": rep["failed"] if rep else None,
        "errors": rep["errors"] if rep else ["no report from bench_serve.py"],
        "output_tokens": rep["output_tokens"] if rep else None,
        "request_throughput_per_s": rep["request_throughput_per_s"] if rep else None,
        "output_token_throughput_per_s": rep["output_token_throughput_per_s"] if rep else None,
        "ttft_s": rep["ttft_s"] if rep else None,
        "itl_s": rep["itl_s"] if rep else None,
        "e2e_s": rep["e2e_s"] if rep else None,
        "bench_rc": bench.returncode,
        "server_died": server_died,
        "server_exit": server_rc,
        "loadavg_1min_series": loadavg,
        "rss_series_columns": ["t_s", "vm_rss_mb", "rss_anon_mb"],
        "rss_series": series,
    }
    ok = (rep is not None and rep["failed"] == 0 and bench.returncode == 0 and not server_died and server_rc == 0)
    result["ok"] = ok
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in result.items()) + "\n}"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if not ok:
        sys.stderr.write("soak: FAILED (see errors / server_exit); bench output tail:\n" + "".join(bench_out[-20:]))
        sys.stderr.write(f"server log: {server_log}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
