#!/usr/bin/env python3
"""Write a GGUF file of a Llama shape with random weights, for speed comparisons where the same file goes to
llamarun and to llama.cpp (llama-quantize makes the quantized variants from it).

Weights are a tiled random block (uniform in +-sqrt(3 / fan_in), norms 1): the values do not matter for speed,
and tiling keeps the generation quick. Metadata and names come from tools/hf_to_gguf.py (llama.cpp's
conventions, a dummy vocabulary). Needs the `gguf` package (or llama.cpp's gguf-py on PYTHONPATH).

Usage: python bench/cuda/make_random_gguf.py OUT.gguf [--shape llama2-7b|llama-1b] [--outtype f16]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import hf_to_gguf  # noqa: E402

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256),
}


class RandomHf:
    """{hf tensor name: float32 array}, made on demand."""

    def __init__(self, cfg, seed=0):
        self.cfg = cfg
        self.block = np.random.default_rng(seed).uniform(-1.0, 1.0, size=1 << 22).astype(np.float32)

    def __getitem__(self, name):
        c = self.cfg
        H, inter, nh, nkv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]
        hd = H // nh
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            return np.ones(H, dtype=np.float32)
        shapes = {
            "embed_tokens": (c["vocab_size"], H), "lm_head": (c["vocab_size"], H), "q_proj": (nh * hd, H),
            "k_proj": (nkv * hd, H), "v_proj": (nkv * hd, H), "o_proj": (H, nh * hd), "gate_proj": (inter, H),
            "up_proj": (inter, H), "down_proj": (H, inter),
        }
        shape = next(s for k, s in shapes.items() if k in name)
        scale = 1.0 if "embed" in name else np.sqrt(3.0 / shape[1])
        return np.resize(self.block, shape) * np.float32(scale)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--outtype", default="f16")
    a = ap.parse_args()
    cfg = dict(SHAPES[a.shape], max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
               tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    print(hf_to_gguf.write_gguf(cfg, RandomHf(cfg), a.out, a.outtype, name="llamarun-random-" + a.shape))


if __name__ == "__main__":
    main()
