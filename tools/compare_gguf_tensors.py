#!/usr/bin/env python3
"""Compares the tensors of two GGUF files (e.g. `llamarun quantize` output against `llama-quantize` output of
the same source) with the gguf package: per tensor, the type and whether the data bytes are identical; for
tensors whose bytes differ, the relative RMS difference of the dequantized values. Metadata is not compared.

Usage: python3 tools/compare_gguf_tensors.py A.gguf B.gguf
Exit status 0 when every tensor has the same name, type, shape and bytes.
"""

import sys
from collections import Counter

import numpy as np

import gguf


def main():
    a, b = (gguf.GGUFReader(p) for p in sys.argv[1:3])
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    same, diff, types = 0, [], Counter()
    for name in sorted(set(ta) | set(tb)):
        x, y = ta.get(name), tb.get(name)
        if x is None or y is None:
            diff.append(f"{name}: only in {'B' if x is None else 'A'}")
            continue
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            diff.append(f"{name}: {x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}")
            continue
        types[x.tensor_type.name] += 1
        if bytes(x.data) == bytes(y.data):
            same += 1
            continue
        dx = gguf.quants.dequantize(x.data, x.tensor_type).astype(np.float64)
        dy = gguf.quants.dequantize(y.data, y.tensor_type).astype(np.float64)
        rel = np.linalg.norm(dx - dy) / max(np.linalg.norm(dy), 1e-30)
        diff.append(f"{name}: {x.tensor_type.name} bytes differ, relative RMS difference {rel:.2e}")
    for d in diff:
        print(d)
    print(f"{same} of {len(set(ta) | set(tb))} tensors byte-identical; types: {dict(types)}")
    return 0 if not diff else 1


if __name__ == "__main__":
    sys.exit(main())
