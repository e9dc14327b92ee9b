#!/usr/bin/env python3
"""Serving load generator for llamarun serve (or any OpenAI-compatible /v1/completions server).

Sends streamed completions with prompts of a chosen token length (token-id prompts cut from a text
the server tokenizes, so lengths are exact) and a fixed number of output tokens (ignore_eos), either
with a fixed number of requests in flight (--concurrency, closed loop) or arriving as a Poisson
process (--request-rate, open loop). Reports request and token throughput and time-to-first-token,
inter-token latency and end-to-end latency (mean, p50, p90, p99), as text and optionally JSON.

  python3 bench/bench_serve.py --url http://127.0.0.1:8080 --num-prompts 200 --concurrency 16 \\
      --input-len 128 --output-len 64 --input-dist uniform --range-ratio 0.5 --json out.json

Needs httpx (scripts/test-server.sh installs it into /tmp/llamarun-venv).
"""
import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import httpx

BASE_TEXT = (
    "The history of computing is a story of abstraction. Early machines were programmed by rewiring "
    "panels; later, stored programs let the same hardware run many tasks. Compilers turned formulas "
    "into instructions, operating systems shared machines among users, and networks joined them into "
    "a global system. Each layer hid the details of the one below, so that people could think about "
    "problems rather than circuits. Today large language models are one more layer: they read text "
    "and write text, and serving them quickly to many people at once is an engineering problem of "
    "memory bandwidth, batching and scheduling. ")


def sample_len(rng, mean, dist, ratio):
    if dist == "fixed" or mean <= 1:
        return max(1, int(mean))
    if dist == "uniform":
        lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
        return rng.randint(lo, hi)
    if dist == "normal":
        return max(1, int(round(rng.gauss(mean, mean * ratio))))
    if dist == "exponential":
        return max(1, int(round(rng.expovariate(1.0 / mean))))
    raise ValueError(dist)


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f, c = math.floor(k), math.ceil(k)
    return xs[f] if f == c else xs[f] + (xs[c] - xs[f]) * (k - f)


def summary(xs):
    if not xs:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "count": 0}
    return {"mean": statistics.fmean(xs), "p50": percentile(xs, 50), "p90": percentile(xs, 90),
            "p99": percentile(xs, 99), "count": len(xs)}


async def one_request(client, args, prompt_ids, out_len):
    body = {"prompt": prompt_ids, "max_tokens": out_len, "stream": True, "ignore_eos": True,
            "temperature": args.temperature, "stream_options": {"include_usage": True}}
    if args.model:
        body["model"] = args.model
    rec = {"input_len": len(prompt_ids), "output_len": out_len, "ok": False, "ttft": None, "itl": [],
           "e2e": None, "output_tokens": 0, "error": None}
    t0 = time.perf_counter()
    last = None
    chunks = 0
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                rec["error"] = f"HTTP {r.status_code}: {r.text[:200]}"
                return rec
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                ev = json.loads(data)
                if ev.get("usage"):
                    rec["output_tokens"] = ev["usage"]["completion_tokens"]
                if not ev.get("choices"):
                    continue
                now = time.perf_counter()
                if last is None:
                    rec["ttft"] = now - t0
                else:
                    rec["itl"].append(now - last)
                last = now
                chunks += 1
        rec["e2e"] = time.perf_counter() - t0
        if not rec["output_tokens"]:
            rec["output_tokens"] = chunks
        rec["ok"] = True
    except (httpx.HTTPError, OSError, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


async def run(args):
    rng = random.Random(args.seed)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency or 0, 1000), max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client:
        r = await client.post("/tokenize", json={"prompt": BASE_TEXT * 8, "add_special_tokens": False})
        r.raise_for_status()
        corpus = r.json()["tokens"]
        requests = []
        for _ in range(args.num_prompts):
            n_in = sample_len(rng, args.input_len, args.input_dist, args.range_ratio)
            n_out = sample_len(rng, args.output_len, args.output_dist, args.range_ratio)
            while len(corpus) < n_in + 1:
                corpus = corpus + corpus
            start = rng.randrange(0, len(corpus) - n_in)
            requests.append((corpus[start:start + n_in], n_out))

        for _ in range(args.warmup):
            await one_request(client, args, requests[0][0], 4)

        results = []
        t_start = time.perf_counter()
        if args.request_rate:
            tasks = []
            for prompt, n_out in requests:
                tasks.append(asyncio.create_task(one_request(client, args, prompt, n_out)))
                if math.isfinite(args.request_rate):
                    await asyncio.sleep(rng.expovariate(args.request_rate))
            results = await asyncio.gather(*tasks)
        else:
            queue = list(reversed(requests))

            async def worker():
                while queue:
                    prompt, n_out = queue.pop()
                    results.append(await one_request(client, args, prompt, n_out))

            await asyncio.gather(*[worker() for _ in range(args.concurrency)])
        duration = time.perf_counter() - t_start

    ok = [r for r in results if r["ok"]]
    out_tokens = sum(r["output_tokens"] for r in ok)
    in_tokens = sum(r["input_len"] for r in ok)
    itl = [x for r in ok for x in r["itl"]]
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("api_key",)},
        "environment": {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                        "commit": git_commit()},
        "duration_s": duration,
        "requests": len(results),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if r["error"]})[:10],
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "request_throughput_per_s": len(ok) / duration if duration else 0,
        "output_token_throughput_per_s": out_tokens / duration if duration else 0,
        "total_token_throughput_per_s": (in_tokens + out_tokens) / duration if duration else 0,
        "ttft_s": summary([r["ttft"] for r in ok if r["ttft"] is not None]),
        "itl_s": summary(itl),
        "e2e_s": summary([r["e2e"] for r in ok]),
    }
    return report


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_report(rep):
    print(f"requests: {rep['completed']} completed, {rep['failed']} failed in {rep['duration_s']:.2f} s")
    for e in rep["errors"]:
        print(f"  error: {e}")
    print(f"throughput: {rep['request_throughput_per_s']:.2f} req/s, "
          f"{rep['output_token_throughput_per_s']:.1f} output tok/s, "
          f"{rep['total_token_throughput_per_s']:.1f} total tok/s")
    for key, name in (("ttft_s", "TTFT"), ("itl_s", "ITL"), ("e2e_s", "E2E")):
        s = rep[key]
        if s["count"]:
            print(f"{name:5s} ms: mean {s['mean'] * 1e3:8.1f}  p50 {s['p50'] * 1e3:8.1f}  "
                  f"p90 {s['p90'] * 1e3:8.1f}  p99 {s['p99'] * 1e3:8.1f}  (n={s['count']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key", default=os.environ.get("LLAMARUN_API_KEY"))
    ap.add_argument("--model", default=None, help="model id to send (default: none)")
    ap.add_argument("--num-prompts", type=int, default=100)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=None, help="requests in flight (closed loop)")
    mode.add_argument("--request-rate", type=float, default=None,
                      help="Poisson arrivals per second (open loop); inf sends all at once")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--input-dist", choices=["fixed", "uniform", "normal", "exponential"], default="fixed")
    ap.add_argument("--output-dist", choices=["fixed", "uniform", "normal", "exponential"], default="fixed")
    ap.add_argument("--range-ratio", type=float, default=0.5, help="uniform: +-ratio; normal: sd = ratio x mean")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None, help="write the report as JSON to this file ('-' for stdout)")
    args = ap.parse_args()
    if args.concurrency is None and args.request_rate is None:
        args.concurrency = 1
    if args.concurrency is not None and args.concurrency < 1:
        ap.error("--concurrency must be >= 1")
    rep = asyncio.run(run(args))
    if args.json == "-":
        json.dump(rep, sys.stdout, indent=2)
        print()
    else:
        print_report(rep)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rep, f, indent=2)
    return 0 if rep["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
