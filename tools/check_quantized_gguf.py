#!/usr/bin/env python3
"""Checks a GGUF file written by `llamarun quantize` against its source with the `gguf` package (an
independent reader and dequantizer of every GGML block type):

  * the file parses with gguf.GGUFReader; the metadata of the source is there with the same types and
    values (tokenizer, chat template, config), except general.file_type (= the scheme's llama_ftype)
    and general.quantization_version (= 2);
  * the same tensors with the same shapes, every tensor of the type llama.cpp's mixing rules give it
    (--expect-types NAME=TYPE,... for spot checks; every type must be one the scheme may produce);
  * every tensor dequantized by gguf.quants equals the source's dequantized values within the type's
    tolerance: relative RMS error |q - x|_2 / |x|_2 below a bound per type (measured ~2x margin).

Usage: python3 tools/check_quantized_gguf.py SRC.gguf OUT.gguf SCHEME [--expect NAME=TYPE ...]
Exit status 0 when every check passes; prints one line per failed check otherwise.
"""

import argparse
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

# llama_ftype of each scheme, and the block types it may write (the mixing rules add Q6_K/Q8_0 and the
# 32-value fallbacks for rows that 256 does not divide).
SCHEMES = {
    "Q8_0": (7, {QT.Q8_0}),
    "Q4_0": (2, {QT.Q4_0, QT.Q6_K, QT.Q8_0}),
    "Q4_1": (3, {QT.Q4_1, QT.Q6_K, QT.Q8_0}),
    "Q5_0": (8, {QT.Q5_0, QT.Q6_K, QT.Q8_0}),
    "Q5_1": (9, {QT.Q5_1, QT.Q6_K, QT.Q8_0}),
    "Q4_K_M": (15, {QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0}),
    "Q5_K_M": (17, {QT.Q5_K, QT.Q6_K, QT.Q5_1, QT.Q8_0}),
    "Q6_K": (18, {QT.Q6_K, QT.Q8_0}),
}

# Bound on the relative RMS error of quantizing Gaussian-like weights (a Q4_1 source: its values sit on
# a 16-level grid per block, which all these types represent at least as well as random data).
REL_RMS = {
    QT.Q8_0: 0.01,
    QT.Q6_K: 0.04,
    QT.Q5_K: 0.07,
    QT.Q5_1: 0.07,
    QT.Q5_0: 0.09,
    QT.Q4_K: 0.13,
    QT.Q4_1: 0.13,
    QT.Q4_0: 0.16,
}


def field_value(f):
    """A comparable (type list, value) of a ReaderField."""
    parts = [bytes(f.parts[i]) for i in f.data] if f.data else []
    return [int(t) for t in f.types], parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("scheme")
    ap.add_argument("--expect", action="append", default=[], help="NAME=TYPE, e.g. blk.0.ffn_down.weight=Q6_K")
    a = ap.parse_args()
    ftype, allowed = SCHEMES[a.scheme.upper()]
    src = gguf.GGUFReader(a.src)
    out = gguf.GGUFReader(a.out)
    errors = []

    for name, f in src.fields.items():
        if name.startswith("GGUF.") or name in ("general.file_type", "general.quantization_version"):
            continue
        g = out.fields.get(name)
        if g is None:
            errors.append(f"metadata {name}: missing")
        elif field_value(f) != field_value(g):
            errors.append(f"metadata {name}: differs (types {f.types} vs {g.types})")
    ft = out.fields.get("general.file_type")
    if ft is None or int(ft.parts[ft.data[0]][0]) != ftype or ft.types != [gguf.GGUFValueType.UINT32]:
        errors.append(f"general.file_type: expected uint32 {ftype}")
    qv = out.fields.get("general.quantization_version")
    if qv is None or int(qv.parts[qv.data[0]][0]) != 2:
        errors.append("general.quantization_version: expected 2")

    src_t = {t.name: t for t in src.tensors}
    out_t = {t.name: t for t in out.tensors}
    if set(src_t) != set(out_t):
        errors.append(f"tensor names differ: only in source {set(src_t) - set(out_t)}, only in output {set(out_t) - set(src_t)}")
    expect = dict(e.split("=", 1) for e in a.expect)
    worst = {}
    for name, t in out_t.items():
        s = src_t.get(name)
        if s is None:
            continue
        if list(t.shape) != list(s.shape):
            errors.append(f"{name}: shape {list(t.shape)} != source {list(s.shape)}")
            continue
        if name in expect and t.tensor_type.name != expect[name]:
            errors.append(f"{name}: type {t.tensor_type.name}, expected {expect[name]}")
        if len(s.shape) == 1 or t.tensor_type == s.tensor_type:
            if t.tensor_type != s.tensor_type or bytes(t.data) != bytes(s.data):
                errors.append(f"{name}: should be copied unchanged ({s.tensor_type.name})")
            continue
        if t.tensor_type not in allowed:
            errors.append(f"{name}: type {t.tensor_type.name} is not one {a.scheme} writes")
            continue
        x = gguf.quants.dequantize(s.data, s.tensor_type).astype(np.float64).ravel()
        q = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).ravel()
        rel = float(np.linalg.norm(q - x) / max(np.linalg.norm(x), 1e-30))
        worst[t.tensor_type.name] = max(worst.get(t.tensor_type.name, 0.0), rel)
        if rel > REL_RMS[t.tensor_type]:
            errors.append(f"{name}: {t.tensor_type.name} relative RMS error {rel:.4f} > {REL_RMS[t.tensor_type]}")
    for e in errors:
        print("FAIL", e)
    print(f"{a.out}: {len(out_t)} tensors, {len(out.fields)} fields; worst relative RMS error per type: "
          + ", ".join(f"{k} {v:.4f}" for k, v in sorted(worst.items())))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
