#!/usr/bin/env python3
"""Writes a small random Llama model as a Hugging Face directory, for testing `llamarun quantize DIR`:

  config.json (LlamaForCausalLM: hidden 256, 4 layers, 4 heads of 64, 2 KV heads, intermediate 512, tied
  embeddings, SmolLM2's 49152-token vocabulary), the weights in float16 split over two safetensors shards
  with model.safetensors.index.json (written by the `safetensors` package), SmolLM2's tokenizer.json
  (tests/fixtures/tokenizer/smollm2_tokenizer.json) and a tokenizer_config.json naming SmolLM2's special
  tokens (bos <|im_start|>, eos and pad <|im_end|>, unk <|endoftext|>) and its chat template (taken from the
  default model's GGUF when given, else a short ChatML template).

Rows of 256 and 512 values make the k-quants apply (Q4_K / Q6_K need multiples of 256). Deterministic
(numpy seed 0). Usage: make_hf_test_model.py OUT_DIR [--chat-template-from GGUF]
"""

import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer", "smollm2_tokenizer.json")

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "rope_scaling": None,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float16",
}

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def weights(cfg, rng):
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float16)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float16)

    t = {"model.embed_tokens.weight": mat(v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(d)
        t[p + "self_attn.q_proj.weight"] = mat(q, d)
        t[p + "self_attn.k_proj.weight"] = mat(kv, d)
        t[p + "self_attn.v_proj.weight"] = mat(kv, d)
        t[p + "self_attn.o_proj.weight"] = mat(d, q)
        t[p + "post_attention_layernorm.weight"] = norm(d)
        t[p + "mlp.gate_proj.weight"] = mat(f, d)
        t[p + "mlp.up_proj.weight"] = mat(f, d)
        t[p + "mlp.down_proj.weight"] = mat(d, f)
    t["model.norm.weight"] = norm(d)
    return t


def chat_template_of(gguf_path):
    import gguf

    f = gguf.GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    return bytes(f.parts[f.data[0]]).decode("utf-8") if f else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--chat-template-from", default=None)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t = weights(CONFIG, np.random.default_rng(0))
    names = list(t)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    index = {"metadata": {"total_size": int(sum(x.nbytes for x in t.values()))}, "weight_map": {}}
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: t[n] for n in part}, os.path.join(a.out, fn), metadata={"format": "pt"})
        index["weight_map"].update({n: fn for n in part})
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    shutil.copyfile(TOKENIZER, os.path.join(a.out, "tokenizer.json"))
    template = (chat_template_of(a.chat_template_from) if a.chat_template_from else None) or CHATML
    tc = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": template,
    }
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2)
    print(f"wrote {a.out}: {len(names)} tensors in {len(shards)} shards")


if __name__ == "__main__":
    main()
