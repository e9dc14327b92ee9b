#!/usr/bin/env python3
"""Serving load generator for llamarun serve (or any OpenAI-compatible /v1/completions server).

Sends streamed completions with prompts of a chosen token length (token-id prompts cut from a text
the server tokenizes, so lengths are exact) and a fixed number of output tokens (ignore_eos), either
with a fixed number of requests in flight (--concurrency, closed loop) or arriving as a Poisson
process (--request-rate, open loop). Reports request and token throughput and time-to-first-token,
inter-token latency and end-to-end latency (mean, p50, p90, p99), as text and optionally JSON.

  python3 bench/bench_serve.py --url http://127.0.0.1:8080 --num-prompts 200 --concurrency 16 \\
      --input-len 128 --output-len 64 --input-dist uniform --range-ratio 0.5 --json out.json

--duration-s S (closed loop) keeps --concurrency requests in flight until S seconds have passed instead of
sending --num-prompts; requests in flight at the deadline are let finish.

--shared-prefix-len N starts every prompt with the same deterministic N-token "system" prefix, followed by
its own --input-len tokens drawn at random from the corpus' tokens (the prefix depends only on --seed: on a
server that has already seen it, pass another --seed for a cold one). One request is sent alone first
(after the warmup, which does not use the prefix), then the rest as usual; the report adds that request's
TTFT (first_request_ttft_ms), the median TTFT of the later ones (later_ttft_p50_ms) and later / first
(shared_prefix_ttft_ratio: below 1 when the prefix cache saves prefill; with --concurrency above 1 the later
TTFTs also include batching and queueing), and the prompt tokens the server reports as cached (in the usage,
or from llamarun's /metrics prefix-cache counters). That first request counts in requests / completed /
failed, not in the throughput and latency statistics.

--prompts random draws every prompt token independently at random from the corpus' tokens (as vLLM's random
dataset does), so prompts share no prefix and the server's prefix cache cannot serve them: cold prefill. The
default, --prompts slice, cuts each prompt at a random offset from the repeated corpus text, as every run
before 2026-12-07 did; prompts of such a periodic text share whole KV blocks (in the 2026-12-07 H100 serving
runs about 78% of the prompt tokens came from the prefix cache), so its TTFTs measure mostly cached prefill.

--ignore-eos (the default, as before) sends "ignore_eos": true so each output has exactly its output
length; --no-ignore-eos lets outputs stop at the end-of-sequence token.

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


SYSTEM_TEXT = (
    "You are a careful assistant for an engineering team. Answer precisely and briefly, cite the part of "
    "the question you are answering, say when you are unsure, never invent file names or numbers, and "
    "prefer plain words to jargon. When asked for code, give a complete, runnable example with comments. ")


async def one_request(client, args, prompt_ids, out_len):
    body = {"prompt": prompt_ids, "max_tokens": out_len, "stream": True, "ignore_eos": args.ignore_eos,
            "temperature": args.temperature, "stream_options": {"include_usage": True}}
    if args.model:
        body["model"] = args.model
    rec = {"input_len": len(prompt_ids), "output_len": out_len, "ok": False, "ttft": None, "itl": [],
           "e2e": None, "output_tokens": 0, "cached_tokens": None, "error": None}
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
                if ev.get("error"):  # the server failed the request mid-stream
                    err = ev["error"]
                    rec["error"] = f"stream error: {err.get('message', err) if isinstance(err, dict) else err}"
                    return rec
                if ev.get("usage"):
                    rec["output_tokens"] = ev["usage"]["completion_tokens"]
                    details = ev["usage"].get("prompt_tokens_details") or {}
                    if details.get("cached_tokens") is not None:
                        rec["cached_tokens"] = details["cached_tokens"]
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


async def prefix_cache_counters(client):
    """(queries, hits) of the server's prefix cache from /metrics (llamarun's names), or None."""
    try:
        r = await client.get("/metrics")
        if r.status_code != 200:
            return None
        vals = {}
        for line in r.text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("llamarun_prefix_cache_queries_total",
                                                "llamarun_prefix_cache_hits_total"):
                vals[parts[0]] = float(parts[1])
        return (vals["llamarun_prefix_cache_queries_total"], vals["llamarun_prefix_cache_hits_total"])
    except (httpx.HTTPError, OSError, ValueError, KeyError):
        return None


def counter_delta(a, b):
    if a is None or b is None:
        return None
    return {"queries": int(b[0] - a[0]), "hits": int(b[1] - a[1])}


async def run(args):
    rng = random.Random(args.seed)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(args.concurrency or 0, 1000), max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client:
        r = await client.post("/tokenize", json={"prompt": BASE_TEXT * 8, "add_special_tokens": False})
        r.raise_for_status()
        corpus = r.json()["tokens"]
        prefix = []
        if args.shared_prefix_len:
            r = await client.post("/tokenize", json={"prompt": SYSTEM_TEXT, "add_special_tokens": False})
            r.raise_for_status()
            sys_ids = r.json()["tokens"]
            k = args.seed % len(sys_ids)  # a given --seed always gives the same prefix; another one, a cold one
            sys_ids = sys_ids[k:] + sys_ids[:k]
            while len(prefix) < args.shared_prefix_len:
                prefix += sys_ids
            prefix = prefix[:args.shared_prefix_len]

        def make_request():
            nonlocal corpus
            n_in = sample_len(rng, args.input_len, args.input_dist, args.range_ratio)
            n_out = sample_len(rng, args.output_len, args.output_dist, args.range_ratio)
            if prefix or args.prompts == "random":  # independent random tokens: prompts part at once
                return prefix + [rng.choice(corpus) for _ in range(n_in)], n_out
            while len(corpus) < n_in + 1:
                corpus = corpus + corpus
            start = rng.randrange(0, len(corpus) - n_in)
            return corpus[start:start + n_in], n_out

        requests = [] if args.duration_s else [make_request() for _ in range(args.num_prompts)]

        for _ in range(args.warmup):
            if prefix or not requests:  # keep the shared prefix out of the cache until the first request
                await one_request(client, args, corpus[:max(1, min(args.input_len, len(corpus)))], 4)
            else:
                await one_request(client, args, requests[0][0], 4)

        first = None
        pc0 = pc1 = None
        if prefix:  # the first request alone: the shared prefix is not cached yet
            pc0 = await prefix_cache_counters(client)
            first = await one_request(client, args, *(requests.pop(0) if requests else make_request()))
            pc1 = await prefix_cache_counters(client)

        results = []
        t_start = time.perf_counter()
        wall_start = time.time()
        if args.duration_s:
            deadline = t_start + args.duration_s

            async def timed_worker():
                while time.perf_counter() < deadline:
                    prompt, n_out = make_request()
                    results.append(await one_request(client, args, prompt, n_out))

            await asyncio.gather(*[timed_worker() for _ in range(args.concurrency)])
        elif args.request_rate:
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
        wall_end = time.time()
        pc2 = await prefix_cache_counters(client) if prefix else None

    if args.raw_out:  # one worker process of --processes: the parent builds the report
        with open(args.raw_out, "w") as f:
            json.dump({"results": results, "wall_start": wall_start, "wall_end": wall_end}, f)
        return None
    return build_report(args, results, duration, first, pc0, pc1, pc2)


def build_report(args, results, duration, first=None, pc0=None, pc1=None, pc2=None):
    ok = [r for r in results if r["ok"]]
    all_recs = results + ([first] if first else [])
    out_tokens = sum(r["output_tokens"] for r in ok)
    in_tokens = sum(r["input_len"] for r in ok)
    itl = [x for r in ok for x in r["itl"]]
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("api_key",)},
        "environment": {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                        "commit": git_commit()},
        "duration_s": duration,
        "requests": len(all_recs),
        "completed": sum(1 for r in all_recs if r["ok"]),
        "failed": sum(1 for r in all_recs if not r["ok"]),
        "errors": sorted({r["error"] for r in all_recs if r["error"]})[:10],
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "request_throughput_per_s": len(ok) / duration if duration else 0,
        "output_token_throughput_per_s": out_tokens / duration if duration else 0,
        "total_token_throughput_per_s": (in_tokens + out_tokens) / duration if duration else 0,
        "ttft_s": summary([r["ttft"] for r in ok if r["ttft"] is not None]),
        "itl_s": summary(itl),
        "e2e_s": summary([r["e2e"] for r in ok]),
    }
    cached = [r["cached_tokens"] for r in ok if r["cached_tokens"] is not None]
    if cached:
        report["cached_prompt_tokens"] = sum(cached)
    if first is not None:
        later = [r["ttft"] for r in ok if r["ttft"] is not None]
        f_ttft = first["ttft"] if first["ok"] else None
        later_p50 = percentile(later, 50)
        report.update({
            "shared_prefix_len": args.shared_prefix_len,
            "first_request_ttft_ms": f_ttft * 1e3 if f_ttft is not None else None,
            "first_request_cached_tokens": first["cached_tokens"],
            "later_ttft_p50_ms": later_p50 * 1e3 if later_p50 is not None else None,
            "later_cached_tokens_mean": statistics.fmean(cached) if cached else None,
            "shared_prefix_ttft_ratio": later_p50 / f_ttft if f_ttft and later_p50 is not None else None,
            # prompt tokens looked up in / found in the server's prefix cache (from /metrics, where it has them)
            "server_prefix_cache_first": counter_delta(pc0, pc1),
            "server_prefix_cache_later": counter_delta(pc1, pc2),
        })
    return report


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_report(rep):
    print(f"requests: {rep['completed']} completed, {rep['failed']} failed in {rep['duration_s']:.2f} s")
    if "shared_prefix_len" in rep:
        def ms(x):
            return "n/a" if x is None else f"{x:.1f} ms"
        ratio = rep["shared_prefix_ttft_ratio"]
        print(f"shared prefix {rep['shared_prefix_len']} tokens: first request TTFT {ms(rep['first_request_ttft_ms'])} "
              f"(sent alone), later TTFT p50 {ms(rep['later_ttft_p50_ms'])}, later / first "
              f"{'n/a' if ratio is None else f'{ratio:.3f}'}")
        if rep["first_request_cached_tokens"] is not None or rep["later_cached_tokens_mean"] is not None:
            print(f"  cached prompt tokens (usage): first {rep['first_request_cached_tokens']}, "
                  f"later mean {rep['later_cached_tokens_mean']}")
        for k in ("first", "later"):
            d = rep[f"server_prefix_cache_{k}"]
            if d:
                print(f"  server prefix cache, {k}: {d['hits']} of {d['queries']} prompt tokens hit")
        d = rep["server_prefix_cache_first"]
        if (d and d["hits"] >= rep["shared_prefix_len"]) or (rep["first_request_cached_tokens"] or 0) > 0:
            print("  warning: the first request found the prefix cached already (a warm server?): "
                  "use another --seed for a cold first request")
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
    ap.add_argument("--duration-s", type=float, default=None,
                    help="closed loop: keep --concurrency requests in flight until this many seconds have "
                         "passed (instead of --num-prompts)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=None, help="requests in flight (closed loop)")
    mode.add_argument("--request-rate", type=float, default=None,
                      help="Poisson arrivals per second (open loop); inf sends all at once")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--input-dist", choices=["fixed", "uniform", "normal", "exponential"], default="fixed")
    ap.add_argument("--output-dist", choices=["fixed", "uniform", "normal", "exponential"], default="fixed")
    ap.add_argument("--range-ratio", type=float, default=0.5, help="uniform: +-ratio; normal: sd = ratio x mean")
    ap.add_argument("--shared-prefix-len", type=int, default=0,
                    help="every prompt starts with the same N-token prefix, then --input-len random tokens; "
                         "a first request goes alone and its TTFT is compared with the later ones'")
    ap.add_argument("--prompts", choices=["slice", "random"], default="slice",
                    help="slice: cut from the repeated corpus text (prompts share KV blocks); random: every token "
                         "drawn independently (no shared prefix)")
    ap.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                    help="send ignore_eos so each output has exactly its output length (default: on)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None, help="write the report as JSON to this file ('-' for stdout)")
    ap.add_argument("--processes", type=int, default=1,
                    help="closed loop: split --concurrency and --num-prompts over this many client processes "
                         "(one Python process tops out near 10-20k streamed tokens/s)")
    ap.add_argument("--raw-out", default=None, help=argparse.SUPPRESS)  # internal: a --processes worker
    args = ap.parse_args()
    if args.processes > 1:
        if args.concurrency is None or args.shared_prefix_len or args.request_rate is not None:
            ap.error("--processes needs --concurrency (and no --shared-prefix-len / --request-rate)")
        return run_processes(args)
    if args.concurrency is None and args.request_rate is None:
        args.concurrency = 1
    if args.concurrency is not None and args.concurrency < 1:
        ap.error("--concurrency must be >= 1")
    if args.duration_s is not None:
        if args.request_rate is not None:
            ap.error("--duration-s is a closed loop: use it with --concurrency, not --request-rate")
        if args.duration_s <= 0:
            ap.error("--duration-s must be > 0")
    if args.shared_prefix_len < 0:
        ap.error("--shared-prefix-len must be >= 0")
    rep = asyncio.run(run(args))
    return emit(args, rep)


def emit(args, rep):
    """Prints the report (or the JSON with --json -), writes --json FILE; the exit code."""
    if args.json == "-":
        json.dump(rep, sys.stdout, indent=2)
        print()
    else:
        print_report(rep)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rep, f, indent=2)
    return 0 if rep["failed"] == 0 else 1


def run_processes(args):
    """Closed loop over several client processes; their raw records are merged into one report."""
    import tempfile
    procs, files = [], []
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    P = args.processes
    for i in range(P):
        conc = args.concurrency // P + (1 if i < args.concurrency % P else 0)
        n = args.num_prompts // P + (1 if i < args.num_prompts % P else 0)
        if conc < 1 or (not args.duration_s and n < 1):
            continue
        out = os.path.join(tmp, f"w{i}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--url", args.url, "--concurrency", str(conc),
               "--num-prompts", str(n), "--input-len", str(args.input_len), "--output-len", str(args.output_len),
               "--input-dist", args.input_dist, "--output-dist", args.output_dist, "--range-ratio",
               str(args.range_ratio), "--temperature", str(args.temperature), "--seed", str(args.seed + i),
               "--warmup", str(args.warmup), "--timeout", str(args.timeout), "--raw-out", out,
               "--prompts", args.prompts, "--ignore-eos" if args.ignore_eos else "--no-ignore-eos"]
        if args.duration_s:
            cmd += ["--duration-s", str(args.duration_s)]
        if args.model:
            cmd += ["--model", args.model]
        procs.append(subprocess.Popen(cmd, env=dict(os.environ, LLAMARUN_API_KEY=args.api_key or "")))
        files.append(out)
    for p in procs:
        p.wait()
    results, starts, ends = [], [], []
    for f in files:
        try:
            d = json.load(open(f))
        except (OSError, ValueError) as e:
            results.append({"ok": False, "error": f"worker failed: {e}", "input_len": 0, "output_tokens": 0,
                            "itl": [], "ttft": None, "e2e": None, "cached_tokens": None})
            continue
        results += d["results"]
        starts.append(d["wall_start"])
        ends.append(d["wall_end"])
    duration = (max(ends) - min(starts)) if starts else 0
    rep = build_report(args, results, duration)
    rep["client_processes"] = P
    return emit(args, rep)


if __name__ == "__main__":
    sys.exit(main())
