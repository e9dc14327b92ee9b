#!/usr/bin/env python3
"""Reference vectors for llamarun's quantizers (src/core/quantize.cpp): Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.

Two independent implementations make them:
  * llama.cpp's own quantizer, ggml_quantize_chunk() of libggml-base.so (the reference path that
    llama-quantize takes without an importance matrix), called through ctypes: bytes for every type;
  * the `gguf` PyPI package (gguf.quants): its own numpy quantizer for Q8_0/Q5_0/Q5_1 (bytes must agree
    with llama.cpp's), and its dequantizer for every type: the values the bytes stand for, and the
    relative RMS error |deq - x| / |x| of llama.cpp's quantization.

The library comes from llama.cpp as vendored in the PyPI sdist of llama-cpp-python 0.3.36, built with
  cmake -B /tmp/llama.cpp-build -DGGML_NATIVE=OFF -DGGML_AVX512=ON ... && cmake --build ... --target ggml-base
Nothing of llama.cpp is committed; only the vectors are.

Output: tests/fixtures/quant/quantizer_vectors.json:
  {"format_version": 1, "llama_cpp": ..., "gguf": ..., "cases": [{"name", "input": [floats],
    "types": {"Q4_K": {"bytes_hex", "dequantized": [...], "rel_rms": float}, ...}}]}
Usage: python3 tools/make_quantizer_vectors.py [--lib /tmp/llama.cpp-build/bin/libggml-base.so]
"""

import argparse
import ctypes
import json
import os

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

TYPES = {"Q8_0": QT.Q8_0, "Q5_0": QT.Q5_0, "Q5_1": QT.Q5_1, "Q4_K": QT.Q4_K, "Q5_K": QT.Q5_K, "Q6_K": QT.Q6_K}
GGUF_QUANTIZES = {"Q8_0", "Q5_0", "Q5_1"}


def cases():
    rng = np.random.default_rng(20261206)
    out = [
        ("normal", rng.normal(0.0, 1.0, 512)),
        ("small", rng.normal(0.0, 0.02, 512)),
        ("offset", rng.normal(2.0, 0.5, 256)),  # all positive: the k-quant mins
        ("negative", -np.abs(rng.normal(0.0, 1.0, 256))),
        ("laplace", rng.laplace(0.0, 0.05, 512)),
        ("zeros", np.zeros(256)),
        ("constant", np.full(256, -0.75)),
        ("ramp", np.linspace(-1.0, 1.0, 256)),
    ]
    spikes = rng.normal(0.0, 0.01, 256)
    spikes[[3, 77, 200]] = [-3.0, 2.5, 4.0]
    out.append(("spikes", spikes))
    mixed = rng.normal(0.0, 1.0, 256)
    mixed[:32] = 0.0  # one all-zero sub-block inside a non-zero super-block
    mixed[64:80] *= 1e-4
    out.append(("zero_subblock", mixed))
    return [(n, np.asarray(v, dtype=np.float32)) for n, v in out]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="/tmp/llama.cpp-build/bin/libggml-base.so")
    a = ap.parse_args()
    lib = ctypes.CDLL(a.lib)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    path = os.path.join(root, "tests", "fixtures", "quant", "quantizer_vectors.json")
    from importlib.metadata import version

    result = {"format_version": 1, "llama_cpp": "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp, ggml_quantize_chunk",
              "gguf": version("gguf"), "cases": []}
    for name, x in cases():
        entry = {"name": name, "input": [float(v) for v in x], "types": {}}
        for tname, qt in TYPES.items():
            n = x.size
            dst = np.zeros(lib.ggml_row_size(int(qt), n), dtype=np.uint8)
            written = lib.ggml_quantize_chunk(int(qt), x.ctypes.data, dst.ctypes.data, 0, 1, n, None)
            assert written == dst.size, (name, tname, written, dst.size)
            if tname in GGUF_QUANTIZES:
                mine = gguf.quants.quantize(x, qt)
                assert mine.tobytes() == dst.tobytes(), f"{name} {tname}: gguf and llama.cpp disagree"
            deq = gguf.quants.dequantize(dst, qt).astype(np.float32)
            norm = float(np.linalg.norm(x.astype(np.float64)))
            rel = float(np.linalg.norm(deq.astype(np.float64) - x) / norm) if norm > 0 else 0.0
            entry["types"][tname] = {"bytes_hex": dst.tobytes().hex(), "dequantized": [float(v) for v in deq],
                                     "rel_rms": rel}
        result["cases"].append(entry)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
