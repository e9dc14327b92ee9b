#!/usr/bin/env python3
"""Reference vectors for the block quantisers / dequantisers (Q8_0, Q4_0, Q4_1) and the F16/BF16 conversions,
computed with the `gguf` package's numpy implementation of the GGML formats (gguf.quants).

Output: tests/fixtures/quant/quant_vectors.json (format in tests/fixtures/golden/README.md, section "quant").
Usage:  python tools/make_quant_vectors.py
"""

import json
import os

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT


def cases():
    rng = np.random.default_rng(1234)
    out = []
    out.append(("random_normal", rng.normal(0.0, 1.0, 64)))
    out.append(("random_small", rng.normal(0.0, 0.02, 64)))
    out.append(("random_offset", rng.normal(3.0, 0.5, 64)))  # all positive: exercises Q4_1's min
    out.append(("zeros", np.zeros(32)))
    out.append(("constant", np.full(32, -0.75)))
    spike = rng.normal(0.0, 0.01, 32)
    spike[17] = -5.0  # negative extreme: Q4_0 scale sign
    out.append(("negative_spike", spike))
    ramp = np.linspace(-1.0, 1.0, 32)
    out.append(("ramp", ramp))
    out.append(("ties", np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5] * 5 + [127.0, -127.0])))
    return [(n, np.asarray(v, dtype=np.float32)) for n, v in out]


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    path = os.path.join(root, "tests", "fixtures", "quant", "quant_vectors.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    result = {"format_version": 1, "gguf": getattr(gguf, "__version__", "unknown"), "cases": []}
    try:
        from importlib.metadata import version

        result["gguf"] = version("gguf")
    except Exception:
        pass
    for name, x in cases():
        entry = {"name": name, "input": [float(v) for v in x], "types": {}}
        for tname, qt in [("Q8_0", QT.Q8_0), ("Q4_0", QT.Q4_0), ("Q4_1", QT.Q4_1), ("F16", QT.F16), ("BF16", QT.BF16)]:
            if qt == QT.F16:
                q = x.astype(np.float16).view(np.uint8)
                deq = q.view(np.float16).astype(np.float32)
            else:
                q = gguf.quants.quantize(x, qt)
                deq = gguf.quants.dequantize(q, qt)
            entry["types"][tname] = {"bytes_hex": q.tobytes().hex(), "dequantized": [float(v) for v in deq]}
        result["cases"].append(entry)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
