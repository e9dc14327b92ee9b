#!/usr/bin/env python3
"""Peer baseline: Hugging Face transformers generate() (fp16, greedy) on a random-weight Llama-2-7B
config. Prints one JSON line: prefill and decode tokens/s, median of --reps runs.

usage: python3 bench/peers/hf_generate.py [--prompt 512] [--new 128] [--reps 3] [--dtype float16]
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="float16")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    ids = torch.randint(3, 32000, (1, a.prompt), device="cuda")
    gen_kwargs = dict(do_sample=False, max_new_tokens=a.new, min_new_tokens=a.new, pad_token_id=0,
                      eos_token_id=None)
    with torch.inference_mode():
        model.generate(ids, **dict(gen_kwargs, max_new_tokens=4, min_new_tokens=4))  # warm-up
        pre, tot = [], []
        for _ in range(a.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids)
            torch.cuda.synchronize()
            pre.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = model.generate(ids, **gen_kwargs)
            torch.cuda.synchronize()
            tot.append(time.perf_counter() - t0)
            assert out.shape[1] == a.prompt + a.new
    p, t = statistics.median(pre), statistics.median(tot)
    decode_s = max(t - p, 1e-9)
    print(json.dumps({
        "peer": "hf_generate", "transformers": transformers.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(), "dtype": a.dtype, "prompt": a.prompt, "new_tokens": a.new,
        "reps": a.reps, "prefill_tok_per_s": a.prompt / p, "generate_total_s": t,
        "decode_tok_per_s": a.new / decode_s, "end_to_end_new_tok_per_s": a.new / t,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(),
    }))


if __name__ == "__main__":
    main()
