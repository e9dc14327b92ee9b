#!/usr/bin/env python3
"""Writes a GGUF Llama model's weights as a Hugging Face directory (for measuring `llamarun quantize DIR`
on a real model): every tensor dequantized with the `gguf` package, attn_q / attn_k rows put back into
Hugging Face's half-rotation order (the inverse of convert_hf_to_gguf.py's permutation), saved as float16
with the `safetensors` package; config.json from the llama.* metadata; the tokenizer files given.

Usage: gguf_to_hf_dir.py MODEL.gguf OUT_DIR [--tokenizer-json FILE] [--tokenizer-config FILE]
  e.g. gguf_to_hf_dir.py models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smol-hf \\
       --tokenizer-json tests/fixtures/tokenizer/smollm2_tokenizer.json
"""

import argparse
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

import gguf


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--tokenizer-json", default=None)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.gguf)

    def m(k, default=None):
        f = r.fields.get(k)
        return f.contents() if f else default

    n_head, n_kv = m("llama.attention.head_count"), m("llama.attention.head_count_kv")
    n_layer, hidden = m("llama.block_count"), m("llama.embedding_length")
    g = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]
        g[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
    tied = "output.weight" not in g
    hf = {"model.embed_tokens.weight": g["token_embd.weight"], "model.norm.weight": g["output_norm.weight"]}
    if not tied:
        hf["lm_head.weight"] = g["output.weight"]
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        for gn, hn in names.items():
            hf[p + hn + ".weight"] = g[f"blk.{i}.{gn}.weight"]
        hf[p + "self_attn.q_proj.weight"] = unpermute(g[f"blk.{i}.attn_q.weight"], n_head)
        hf[p + "self_attn.k_proj.weight"] = unpermute(g[f"blk.{i}.attn_k.weight"], n_kv)
    os.makedirs(a.out, exist_ok=True)
    save_file({k: np.ascontiguousarray(v.astype(np.float16)) for k, v in hf.items()},
              os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": m("llama.feed_forward_length"),
        "num_hidden_layers": n_layer, "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "head_dim": m("llama.rope.dimension_count", hidden // n_head),
        "max_position_embeddings": m("llama.context_length"),
        "rms_norm_eps": m("llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": m("llama.rope.freq_base", 10000.0), "rope_scaling": None,
        "vocab_size": g["token_embd.weight"].shape[0], "tie_word_embeddings": tied,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float16",
        "bos_token_id": m("tokenizer.ggml.bos_token_id"), "eos_token_id": m("tokenizer.ggml.eos_token_id"),
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if a.tokenizer_json:
        shutil.copyfile(a.tokenizer_json, os.path.join(a.out, "tokenizer.json"))
        toks = m("tokenizer.ggml.tokens")

        def tok(key):
            i = m(key)
            return toks[i] if i is not None else None

        tc = {"bos_token": tok("tokenizer.ggml.bos_token_id"), "eos_token": tok("tokenizer.ggml.eos_token_id"),
              "unk_token": tok("tokenizer.ggml.unknown_token_id"), "pad_token": tok("tokenizer.ggml.padding_token_id"),
              "chat_template": m("tokenizer.chat_template")}
        with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
            json.dump({k: v for k, v in tc.items() if v is not None}, f, indent=2)
    print(f"wrote {a.out}: {len(hf)} tensors (float16), tied={tied}")


if __name__ == "__main__":
    main()
