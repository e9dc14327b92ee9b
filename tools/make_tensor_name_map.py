#!/usr/bin/env python3
"""Writes tests/fixtures/tensor_names/gguf_llama_name_map.json: the gguf package's own table of which source
tensor names (Hugging Face, Meta's original .pth, and other families) convert to which GGUF tensor name for
the llama architecture. tests/test_llama_tensors.cpp checks llamarun's tensor table (src/model/llama_tensors.cpp)
against it: each role's Hugging Face and Meta names must be among the sources of its GGUF name.

Usage: python3 tools/make_tensor_name_map.py   (needs the `gguf` PyPI package; made with gguf 0.19.0)
"""
import json
import pathlib
from importlib.metadata import version

import gguf

N_BLOCKS = 3
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/tensor_names/gguf_llama_name_map.json"


def main():
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, N_BLOCKS)
    sources = {}
    # The map also holds each GGUF name as its own source; kept, as some real sources coincide with it
    # (Meta's `output`, listed by gguf as a llama-pth name).
    for src, (_, gguf_name) in tmap.mapping.items():
        sources.setdefault(gguf_name, []).append(src)
    llama_names = set()
    for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]:
        name = gguf.TENSOR_NAMES[t]
        if "{bid}" in name:
            llama_names.update(name.format(bid=b) for b in range(N_BLOCKS))
        else:
            llama_names.add(name)
    out = {
        "generator": f"tools/make_tensor_name_map.py with gguf {version('gguf')}: "
        "gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, n_blocks).mapping, names without the .weight suffix",
        "n_blocks": N_BLOCKS,
        "sources": {k: sorted(v) for k, v in sorted(sources.items()) if k in llama_names},
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({len(out['sources'])} GGUF names)")


if __name__ == "__main__":
    main()
