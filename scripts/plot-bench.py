#!/usr/bin/python3
"""Draws benchmark results as one PNG (matplotlib from Debian: apt-get install python3-matplotlib).

Inputs (files or directories, mixed; the kind of each file is recognised from its content):
  - `llamarun bench --json` output (CPU or --device cuda): prompt (pp) and generation (tg) tokens/s,
    one bar pair per file, with min..max whiskers;
  - bench/cuda's `llamarun_bench_cuda` JSON (bench_cuda.json): decode tokens/s by context depth and pp;
  - `bench/bench_serve.py --json` output: output tokens/s by concurrency (or request rate) and TTFT /
    inter-token latency percentiles (p50, p90, p99);
  - peers (bench/peers/*.py, JSON lines with a "peer" key): drawn beside llamarun where they measured
    the same thing (decode by depth, decode at a batch size = serving concurrency, prefill).

Usage: scripts/plot-bench.py INPUT... -o out.png [--title TEXT]
  e.g. /usr/bin/python3 scripts/plot-bench.py bench/cuda/runs/2026-11-26-h100-final -o docs/bench-h100.png
"""
import argparse
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LLAMARUN = "#2f6fde"
PEER_COLORS = {"torch_graph_decode": "#e08a2c", "hf_generate": "#8a8f98"}
PEER_NAMES = {"torch_graph_decode": "PyTorch CUDA-graph decode", "hf_generate": "transformers generate()"}


def load_inputs(paths):
    """-> dict of lists: bench (llamarun bench --json), bench_cuda, serve, peers."""
    found = {"bench": [], "bench_cuda": [], "serve": [], "peers": []}
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "*.json")) + glob.glob(os.path.join(p, "*.jsonl")))
        else:
            files.append(p)
    if not files:
        sys.exit("plot-bench: no .json/.jsonl inputs")
    for f in files:
        text = open(f).read()
        try:
            docs = [json.loads(text)]
        except ValueError:
            try:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as e:
                sys.exit(f"plot-bench: {f}: neither JSON nor JSON lines: {e}")
        for d in docs:
            if not isinstance(d, dict):
                print(f"plot-bench: {f}: skipped (not an object)", file=sys.stderr)
            elif "peer" in d:
                found["peers"].append(d)
            elif "output_token_throughput_per_s" in d and "config" in d:
                d["_file"] = f
                found["serve"].append(d)
            elif isinstance(d.get("tg"), list) and "copy_bandwidth_gbs" in d:
                found["bench_cuda"].append(d)
            elif isinstance(d.get("pp"), dict) and isinstance(d.get("tg"), dict) and "tok_per_s_median" in d["tg"]:
                d["_file"] = f
                found["bench"].append(d)
            else:
                print(f"plot-bench: {f}: skipped (not a result this script knows)", file=sys.stderr)
    return found


def median(x):
    return x["median"] if isinstance(x, dict) else x


def bar_labels(ax, bars, fmt="{:.0f}", above=None):
    """Writes each bar's value on top of it (above[i] higher up, e.g. over a whisker)."""
    for i, b in enumerate(bars):
        h = b.get_height()
        if h > 0:
            y = h + (above[i] if above else 0)
            ax.annotate(fmt.format(h), (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 1), textcoords="offset points")


def plot_serve_throughput(ax, serve, peers):
    runs = sorted((r for r in serve if r["config"].get("shared_prefix_len", 0) == 0),
                  key=lambda r: (r["config"].get("concurrency") or 0, r["config"].get("request_rate") or 0))
    if not runs:
        return False
    labels = [f"{r['config']['concurrency']} clients" if r["config"].get("concurrency")
              else f"{r['config']['request_rate']} req/s" for r in runs]
    ys = [r["output_token_throughput_per_s"] for r in runs]
    # Peer: fixed-batch decode at the same batch size as the serving concurrency.
    peer = {}
    for p in peers:
        if p["peer"] == "torch_graph_decode":
            for res in p.get("results", []):
                if "batch" in res:
                    peer[res["batch"]] = res["tok_per_s"]
    py = [peer.get(r["config"].get("concurrency")) for r in runs]
    x = range(len(runs))
    w = 0.38 if any(v is not None for v in py) else 0.6
    b = ax.bar([i - (w / 2 if w < 0.5 else 0) for i in x], ys, w, color=LLAMARUN, label="llamarun serve (streamed, HTTP)")
    bar_labels(ax, b)
    if any(v is not None for v in py):
        b2 = ax.bar([i + w / 2 for i in x], [v or 0 for v in py], w, color=PEER_COLORS["torch_graph_decode"],
                    label="PyTorch CUDA-graph decode loop, same batch (no server)")
        bar_labels(ax, b2)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("output tokens/s")
    cfg = runs[0]["config"]
    ax.set_title(f"Serving throughput ({cfg['input_len']} in / {cfg['output_len']} out per request)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(0, max(ys + [v or 0 for v in py]) * 1.18)
    return True


def plot_serve_latency(ax, serve):
    runs = sorted((r for r in serve if r["config"].get("shared_prefix_len", 0) == 0),
                  key=lambda r: (r["config"].get("concurrency") or 0, r["config"].get("request_rate") or 0))
    if not runs:
        return False
    groups = [("ttft_s", "TTFT"), ("itl_s", "inter-token")]
    pcts = ["p50", "p90", "p99"]
    shades = {"p50": 1.0, "p90": 0.7, "p99": 0.45}
    labels, vals, colors = [], [], []
    for r in runs:
        c = r["config"].get("concurrency")
        tag = f"{c} clients" if c else f"{r['config']['request_rate']} req/s"
        for key, name in groups:
            for p in pcts:
                labels.append(f"{name}\n{tag}" if p == "p90" else "")
                vals.append(r[key][p] * 1000)
                base = (0.18, 0.44, 0.87) if key == "ttft_s" else (0.88, 0.54, 0.17)
                colors.append(tuple(1 - (1 - ch) * shades[p] for ch in base))
    xs, x = [], 0.0
    for i in range(len(vals)):
        xs.append(x)
        x += 1.0 if (i + 1) % 3 else 1.8
    b = ax.bar(xs, vals, 0.9, color=colors)
    bar_labels(ax, b, "{:.0f}")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_ylim(min(vals) * 0.6, max(vals) * 2.2)
    ax.set_title("Serving latency: p50 / p90 / p99 (lighter = higher percentile)", fontsize=10)
    return True


def plot_decode_by_depth(ax, bench_cuda, peers):
    if not bench_cuda:
        return False
    r = bench_cuda[-1]
    depths = [t["depth"] for t in r["tg"]]
    series = [("llamarun", LLAMARUN, {t["depth"]: median(t["tok_per_s"]) for t in r["tg"]})]
    for p in peers:
        if p["peer"] == "torch_graph_decode" and all("batch" not in res for res in p.get("results", [])):
            series.append((PEER_NAMES[p["peer"]], PEER_COLORS[p["peer"]],
                           {res["depth"]: res["tok_per_s"] for res in p["results"]}))
        if p["peer"] == "hf_generate" and "decode_tok_per_s" in p:
            series.append((PEER_NAMES[p["peer"]], PEER_COLORS[p["peer"]], {p.get("prompt", 0): p["decode_tok_per_s"]}))
    n = len(series)
    w = 0.8 / n
    for k, (name, color, vals) in enumerate(series):
        xs = [i + (k - (n - 1) / 2) * w for i in range(len(depths))]
        b = ax.bar(xs, [vals.get(d, 0) for d in depths], w, color=color, label=name)
        bar_labels(ax, b)
    ax.set_xticks(range(len(depths)), [f"ctx {d}" for d in depths])
    ax.set_ylabel("tokens/s (batch 1)")
    t0 = r["tg"][0]
    ax.set_title(f"Single-stream decode, tg{t0.get('tokens', '')} at context depth", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    top = max(v for _, _, vals in series for v in vals.values())
    ax.set_ylim(0, top * 1.2)
    return True


def plot_prefill(ax, bench_cuda, peers):
    if not bench_cuda:
        return False
    r = bench_cuda[-1]
    names, vals, colors = ["llamarun"], [median(r["pp"]["tok_per_s"])], [LLAMARUN]
    for p in peers:
        if p["peer"] == "hf_generate" and "prefill_tok_per_s" in p:
            names.append(PEER_NAMES["hf_generate"])
            vals.append(p["prefill_tok_per_s"])
            colors.append(PEER_COLORS["hf_generate"])
    b = ax.bar(range(len(vals)), vals, 0.6, color=colors)
    bar_labels(ax, b)
    ax.set_xticks(range(len(vals)), names, fontsize=8)
    ax.set_ylabel("prompt tokens/s")
    ax.set_ylim(0, max(vals) * 1.18)
    ax.set_title(f"Prefill pp{r['pp'].get('tokens', '')}", fontsize=10)
    return True


def plot_llamarun_bench(ax, bench):
    if not bench:
        return False
    labels, pp, tg, pp_err, tg_err = [], [], [], [[], []], [[], []]
    for d in bench:
        dev = d.get("gpu") or (f"CPU {d['threads']} thr {d.get('simd', '')}" if "threads" in d else d.get("device", ""))
        labels.append(f"{os.path.basename(str(d.get('model', '')))}\n{dev}\npp{d['pp']['tokens']} / tg{d['tg']['tokens']}"
                      f"@{d['tg'].get('depth', 0)}")
        for dst, err, k in ((pp, pp_err, "pp"), (tg, tg_err, "tg")):
            m = d[k]["tok_per_s_median"]
            dst.append(m)
            err[0].append(m - d[k].get("tok_per_s_min", m))
            err[1].append(d[k].get("tok_per_s_max", m) - m)
    x = range(len(bench))
    b1 = ax.bar([i - 0.2 for i in x], pp, 0.4, yerr=pp_err, capsize=3, color=LLAMARUN, label="prompt (pp)")
    b2 = ax.bar([i + 0.2 for i in x], tg, 0.4, yerr=tg_err, capsize=3, color="#5bb55b", label="generation (tg)")
    bar_labels(ax, b1, "{:.1f}", pp_err[1])
    bar_labels(ax, b2, "{:.1f}", tg_err[1])
    ax.set_ylim(0, max(m + e for m, e in zip(pp + tg, pp_err[1] + tg_err[1])) * 1.15)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("tokens/s (median, min..max)")
    ax.set_title("llamarun bench", fontsize=10)
    ax.legend(fontsize=7)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    f = load_inputs(a.inputs)
    panels = []
    if f["serve"]:
        panels += [lambda ax: plot_serve_throughput(ax, f["serve"], f["peers"]), lambda ax: plot_serve_latency(ax, f["serve"])]
    if f["bench_cuda"]:
        panels += [lambda ax: plot_decode_by_depth(ax, f["bench_cuda"], f["peers"]),
                   lambda ax: plot_prefill(ax, f["bench_cuda"], f["peers"])]
    if f["bench"]:
        panels.append(lambda ax: plot_llamarun_bench(ax, f["bench"]))
    if not panels:
        sys.exit("plot-bench: nothing to plot in " + " ".join(a.inputs))
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False)
    for ax, draw in zip(axes.flat, panels):
        draw(ax)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for s in ("top", "right"):
            ax.spines[s].set_visible(False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    title = a.title
    if not title:
        dev = ""
        for r in f["bench_cuda"]:
            dev = r.get("device", {}).get("name", "")
        for r in f["bench"]:
            dev = dev or r.get("gpu", "")
        commit = next((r.get("commit") for r in f["bench_cuda"] if r.get("commit")), None) or \
            next((r.get("environment", {}).get("commit") for r in f["serve"] if r.get("environment")), None)
        title = "llamarun" + (f" on {dev}" if dev else "") + (f" (commit {commit})" if commit else "")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    fig.savefig(a.output, dpi=110)
    print(f"plot-bench: wrote {a.output} ({len(panels)} panels)")


if __name__ == "__main__":
    main()
