#!/usr/bin/env python3
"""Reference vectors for the block quantisers / dequantisers (Q8_0, Q4_0, Q4_1) and the F16/BF16 conversions,
computed with the `gguf` package's numpy implementation of the GGML formats (gguf.quants).

Outputs:
  tests/fixtures/quant/quant_vectors.json (format in tests/fixtures/golden/README.md, section "quant").
  tests/fixtures/quant/quant_blocks.json: for every block format llamarun reads (Q8_0, Q4_0, Q4_1, Q5_0,
    Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS), raw blocks and gguf.quants.dequantize() of them:
    {"format_version": 1, "gguf": VERSION, "types": {NAME: [{"name", "bytes_hex", "dequantized"}, ...]}}.
    Each type has "random" blocks (random bytes with finite random f16 scale fields, so every bit of
    the packed quants and scales is exercised) and, where gguf has a quantiser, "quantized" blocks
    made from random normal values.
Usage:  python tools/make_quant_vectors.py   (pip install gguf numpy)
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


# Byte offsets of the f16 scale fields in each block (dtype.h / gguf.constants layouts).
F16_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_NL": [0], "IQ4_XS": [0],
}


def random_blocks(rng, qt, n_blocks, f16_offsets):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in f16_offsets:
        # finite scales of either sign and of varied magnitude
        vals = (rng.uniform(0.25, 1.0, n_blocks) * 10.0 ** rng.integers(-4, 1, n_blocks)).astype(np.float32)
        vals *= np.where(rng.integers(0, 2, n_blocks) == 1, 1.0, -1.0).astype(np.float32)
        raw[:, off:off + 2] = vals.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw, block_size


def main_blocks(root):
    rng = np.random.default_rng(4321)
    path = os.path.join(root, "tests", "fixtures", "quant", "quant_blocks.json")
    result = {"format_version": 1, "gguf": "unknown", "types": {}}
    try:
        from importlib.metadata import version

        result["gguf"] = version("gguf")
    except Exception:
        pass
    for name, offsets in F16_FIELDS.items():
        qt = QT[name]
        entries = []
        raw, block_size = random_blocks(rng, qt, 4 if block_size_of(qt) == 256 else 8, offsets)
        deq = gguf.quants.dequantize(raw.reshape(-1), qt).reshape(-1)
        entries.append({"name": "random", "bytes_hex": raw.tobytes().hex(), "dequantized": [float(v) for v in deq]})
        try:
            x = rng.normal(0.0, 0.05, 2 * block_size).astype(np.float32)
            q = gguf.quants.quantize(x, qt)
            deq = gguf.quants.dequantize(q, qt).reshape(-1)
            entries.append({"name": "quantized", "bytes_hex": q.tobytes().hex(), "dequantized": [float(v) for v in deq]})
        except NotImplementedError:
            pass
        result["types"][name] = entries
    with open(path, "w") as f:
        json.dump(result, f)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def block_size_of(qt):
    return gguf.GGML_QUANT_SIZES[qt][0]


if __name__ == "__main__":
    main()
    main_blocks(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
