#!/usr/bin/env python3
"""What an E4M3 KV cache (llamarun's --kv-cache-dtype fp8) and E4M3 weights / activations (--quantize fp8)
cost in perplexity, measured outside llamarun.

A plain numpy forward of a Llama-architecture GGUF file (weights dequantized by the `gguf` PyPI package),
scored as llama.cpp's llama-perplexity scores (windows of --ctx tokens starting with BOS, the second half of
each window scored), run on the same tokens with fp32 keys / values and with every key (after RoPE) and value rounded to E4M3
(saturated to +-448, round to nearest even: the `ml_dtypes` PyPI package's float8_e4m3fn) under each scaling:
  unit       E4M3(x) (llamarun's cache: the stored byte is the value itself)
  row        s * E4M3(x / s), s = max |x| / 448 over each position's head (one fp32 scale per key / value row)
  row-pow2   the same with s rounded up to a power of two (a one-byte exponent per row)
Nothing in it comes from llamarun but the token ids (given as a JSON array: `llamarun tokenize --ids
--add-bos -f TEXT -m MODEL`), and those are the same for every run.

    python3 tools/fp8_kv_perplexity.py MODEL.gguf TOKENS.json [--ctx 512] [--chunks 8] [--scales unit,row]

Prints one JSON object: the perplexity with fp32 K / V and with each scaling, tokens scored and windows.
"""
import argparse
import json
import sys

import numpy as np

try:
    import gguf
    import ml_dtypes
except ImportError as e:  # pragma: no cover
    sys.exit(f"fp8_kv_perplexity: {e}: pip install gguf ml_dtypes")


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0] if len(f.data) == 1 else [f.parts[i][0] for i in f.data]


def load(path):
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    cfg = {
        "L": int(field(r, f"{arch}.block_count")),
        "nh": int(field(r, f"{arch}.attention.head_count")),
        "nkv": int(field(r, f"{arch}.attention.head_count_kv")),
        "eps": float(field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
        "theta": float(field(r, f"{arch}.rope.freq_base")) if f"{arch}.rope.freq_base" in r.fields else 10000.0,
    }
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w[t.name] = a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a
    if "output.weight" not in w:
        w["output.weight"] = w["token_embd.weight"]
    cfg["hd"] = w["blk.0.attn_q.weight"].shape[0] // cfg["nh"]
    return cfg, w


def e4m3(x):
    return np.clip(x, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def kv_round(x, scale):  # x [T, heads, hd]
    if scale == "unit":
        return e4m3(x)
    s = np.abs(x).max(axis=-1, keepdims=True) / np.float32(448.0)
    s[s == 0] = 1.0
    if scale == "row-pow2":
        s = np.exp2(np.ceil(np.log2(s))).astype(np.float32)
    return e4m3(x / s) * s


def rms(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, theta):  # x [T, heads, hd]; llama.cpp's NORM mode: adjacent pairs (GGUF's permuted q / k rows)
    T, _, hd = x.shape
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(ang).astype(np.float32)[:, None, :], np.sin(ang).astype(np.float32)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def parse_mode(m):
    """'' (fp32), a K / V scaling (unit, row, row-pow2; the original form), or '+'-joined parts: w8 (every
    linear weight but the tied output E4M3 with one fp32 scale per output row, as --quantize fp8), a8 (each
    linear's input E4M3 with one scale per token), kv=SCALING, skip=NAME/NAME (linears left fp32, e.g.
    ffn_down), layers16=I/J (layers left fp32)."""
    if m in ("", "unit", "row", "row-pow2"):
        return {"kv": m, "w8": False, "a8": False, "skip": set(), "layers16": set()}
    d = {"kv": "", "w8": False, "a8": False, "skip": set(), "layers16": set()}
    for part in m.split("+"):
        if part == "w8mse":
            d["w8"] = d["w8mse"] = True
        elif part in ("w8", "a8"):
            d[part] = True
        elif part == "w8a8":
            d["w8"] = d["a8"] = True
        elif part.startswith("kv="):
            d["kv"] = part[3:]
        elif part.startswith("skip="):
            d["skip"] = set(part[5:].split("/"))
        elif part.startswith("layers16="):
            d["layers16"] = {int(i) for i in part[9:].split("/")}
        else:
            sys.exit(f"fp8_kv_perplexity: unknown mode part '{part}' in '{m}'")
    return d


def rows_e4m3(x, search=False):
    """Per-row scale over the last axis: max / 448, or with search the scale among max / 448 * 2^(k/16),
    k = 0..15 (one period of E4M3's relative grid, nothing clipped), with the least squared error per row."""
    s = np.abs(x).max(axis=-1, keepdims=True) / np.float32(448.0)
    s[s == 0] = 1.0
    if not search:
        return e4m3(x / s) * s
    best, best_err = None, None
    for k in range(16):
        sk = s * np.float32(2.0 ** (k / 16))
        y = e4m3(x / sk) * sk
        err = ((y - x) ** 2).sum(axis=-1, keepdims=True)
        if best is None:
            best, best_err = y, err
        else:
            better = err < best_err
            best = np.where(better, y, best)
            best_err = np.where(better, err, best_err)
    return best


LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def linear(w, cache, mode, layer, name, h):
    key = f"blk.{layer}.{name}.weight"
    if not (mode["w8"] or mode["a8"]) or name in mode["skip"] or layer in mode["layers16"]:
        return h @ w[key].T
    if mode["w8"] and key not in cache:
        cache[key] = rows_e4m3(w[key], mode.get("w8mse", False))
    wt = cache[key] if mode["w8"] else w[key]
    return (rows_e4m3(h) if mode["a8"] else h) @ wt.T


def logits(cfg, w, ids, mode_str, cache):
    mode = parse_mode(mode_str)
    scale = mode["kv"]
    lin = lambda l, name, h: linear(w, cache.setdefault(mode_str, {}), mode, l, name, h)  # noqa: E731
    T, nh, nkv, hd = len(ids), cfg["nh"], cfg["nkv"], cfg["hd"]
    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(cfg["L"]):
        p = f"blk.{l}."
        h = rms(x, w[p + "attn_norm.weight"], cfg["eps"])
        q = rope(lin(l, "attn_q", h).reshape(T, nh, hd), cfg["theta"])
        k = rope(lin(l, "attn_k", h).reshape(T, nkv, hd), cfg["theta"])
        v = lin(l, "attn_v", h).reshape(T, nkv, hd)
        if scale:
            k, v = kv_round(k, scale), kv_round(v, scale)
        o = np.empty((T, nh, hd), dtype=np.float32)
        for hh in range(nh):
            kh = hh // (nh // nkv)
            s = (q[:, hh, :] @ k[:, kh, :].T) / np.float32(np.sqrt(hd)) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            o[:, hh, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kh, :]
        x = x + lin(l, "attn_output", o.reshape(T, nh * hd))
        h = rms(x, w[p + "ffn_norm.weight"], cfg["eps"])
        g, u = lin(l, "ffn_gate", h), lin(l, "ffn_up", h)
        x = x + lin(l, "ffn_down", (g / (1 + np.exp(-g))) * u)
    return rms(x, w["output_norm.weight"], cfg["eps"]) @ w["output.weight"].T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("tokens", help="JSON array of token ids, BOS first")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--scales", default="unit,row,row-pow2",
                    help="comma-separated modes: a K / V scaling, or w8 / a8 / w8a8 / kv= / skip= / layers16= "
                    "parts joined by '+' (see parse_mode)")
    a = ap.parse_args()
    runs = [""] + a.scales.split(",")
    cfg, w = load(a.model)
    toks = json.load(open(a.tokens))
    bos = toks[0]
    n = min(a.chunks, len(toks) // a.ctx)
    nll = {r: 0.0 for r in runs}
    cache = {}
    scored = 0
    for c in range(n):
        ids = list(toks[c * a.ctx:(c + 1) * a.ctx])
        ids[0] = bos
        for r in runs:
            lg = logits(cfg, w, np.array(ids), r, cache).astype(np.float64)
            lg -= lg.max(axis=1, keepdims=True)
            lp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
            first = a.ctx // 2
            nll[r] -= sum(lp[j, ids[j + 1]] for j in range(first, a.ctx - 1))
        scored += a.ctx - 1 - a.ctx // 2
        print(f"window {c + 1}/{n}: " + ", ".join(f"{r or 'f32'} {np.exp(nll[r] / scored):.4f}" for r in runs),
              file=sys.stderr)
    ppl = {(r or "f32"): float(np.exp(nll[r] / scored)) for r in runs}
    print(json.dumps({"ppl": ppl, "ratio": {k: v / ppl["f32"] for k, v in ppl.items()}, "tokens": scored,
                      "windows": n}))


if __name__ == "__main__":
    main()
