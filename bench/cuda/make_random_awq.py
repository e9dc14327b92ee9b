#!/usr/bin/env python3
"""Write a Hugging Face AWQ int4 checkpoint of the Llama-2-7B shape with random quantized weights, for
speed runs of llamarun's AWQ / GPTQ path (both repack into the same int4 blocks at load; the GPTQ packing
is checked for correctness by tests/test_hf_int4.cpp, not timed apart).

The layout is AutoAWQ's published "gemm" packing (see tools/make_awq_gptq_fixtures.py for the details):
per Linear `qweight` int32 [in, out / 8], `qzeros` int32 [in / group, out / 8], `scales` fp16
[in / group, out], group size 128, zero points on; embeddings and lm_head fp16, norms fp16. The packed
words are random bits (every nibble is a valid 4-bit quant or zero point) and the scales small positive
values: the values do not matter for speed. The tokenizer is the repository's Llama 2 tokenizer.model.

Needs numpy and safetensors. Usage: python bench/cuda/make_random_awq.py OUT_DIR [LAYERS (default 32)]
"""

import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import save_file

H, INTER, HEADS, VOCAB, GROUP = 4096, 11008, 32, 32000, 128
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) == 3 else 32
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    words = rng.integers(0, 1 << 32, size=1 << 22, dtype=np.uint64).astype(np.uint32).view(np.int32)

    def tiled(shape, src):
        n = int(np.prod(shape))
        return np.resize(src, n).reshape(shape)

    scale_src = rng.uniform(0.002, 0.02, size=1 << 16).astype(np.float16)
    t = {}
    t["model.embed_tokens.weight"] = rng.uniform(-0.05, 0.05, size=(VOCAB, H)).astype(np.float16)
    t["lm_head.weight"] = rng.uniform(-0.05, 0.05, size=(VOCAB, H)).astype(np.float16)
    t["model.norm.weight"] = np.ones(H, np.float16)
    shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
              "self_attn.o_proj": (H, H), "mlp.gate_proj": (H, INTER), "mlp.up_proj": (H, INTER),
              "mlp.down_proj": (INTER, H)}  # (in, out)
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(H, np.float16)
        t[p + "post_attention_layernorm.weight"] = np.ones(H, np.float16)
        for name, (fin, fout) in shapes.items():
            t[p + name + ".qweight"] = tiled((fin, fout // 8), words)
            t[p + name + ".qzeros"] = tiled((fin // GROUP, fout // 8), words[7:])
            t[p + name + ".scales"] = tiled((fin // GROUP, fout), scale_src)
    save_file(t, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
        "intermediate_size": INTER, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS, "vocab_size": VOCAB, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16",
        "quantization_config": {"quant_method": "awq", "version": "gemm", "bits": 4, "group_size": GROUP,
                                "zero_point": True},
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "meta", "tokenizer.model"), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
