#!/usr/bin/env python3
"""Build tiny random-weight LlamaForCausalLM models and dump transformers' reference outputs.

For every config in MODELS this writes tests/fixtures/golden/<name>/:
  config.json, generation_config.json       (save_pretrained; config.json also gets legacy rope keys, see below)
  model.safetensors  or  model-0000K-of-0000N.safetensors + model.safetensors.index.json (sharded model)
  golden.json                               (prompts, per-position logits, 32-token greedy continuations)
The format is documented in tests/fixtures/golden/README.md.

Usage:  python tools/make_golden.py [--out tests/fixtures/golden] [--only name,name]
Runs on CPU (float32 / bfloat16, eager attention); deterministic for a given torch/transformers version.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_common import (  # noqa: E402
    FORMAT_VERSION,
    check_greedy_by_full_forward,
    dump_json,
    ensure_dir,
    full_logits,
    greedy,
    logits_to_list,
    versions,
)

N_GREEDY = 32
PROMPT_LENGTHS = (1, 7, 20)
BOS = 1
EOS = 2

# name -> (LlamaConfig kwargs, saved dtype, extra options)
# Every model: silu MLP, no biases, rms norm. Dims kept tiny (< ~1 MB per model).
MODELS = {
    # MHA, tied embeddings, classic theta.
    "mha_tied": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=257, tie_word_embeddings=True, rope_theta=10000.0,
                 rms_norm_eps=1e-6, max_position_embeddings=128),
        dtype="float32", seed=1021),
    # GQA 4/2, untied; intermediate a multiple of 32 so it can be quantised (see hf_to_gguf.py).
    "gqa_untied": dict(
        cfg=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=257, tie_word_embeddings=False, rope_theta=10000.0,
                 rms_norm_eps=1e-5, max_position_embeddings=128),
        dtype="float32", seed=1002),
    # MQA-like 8 heads / 1 kv head, head_dim 8, theta 500000, 3 layers.
    "mqa8_theta500k": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=8,
                 num_key_value_heads=1, vocab_size=257, tie_word_embeddings=False, rope_theta=500000.0,
                 rms_norm_eps=1e-5, max_position_embeddings=256),
        dtype="float32", seed=1003),
    # Llama 3 rope scaling with a short original context so all three frequency bands occur for head_dim 16.
    "llama3_rope": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=257, tie_word_embeddings=False, rope_theta=500000.0,
                 rms_norm_eps=1e-5, max_position_embeddings=512,
                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        dtype="float32", seed=1004),
    # Linear rope scaling (positions divided by 4), saved and run in bfloat16, tied.
    "linear_rope_bf16": dict(
        cfg=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=257, tie_word_embeddings=True, rope_theta=10000.0,
                 rms_norm_eps=1e-6, max_position_embeddings=512,
                 rope_scaling={"rope_type": "linear", "factor": 4.0}),
        dtype="bfloat16", seed=1005),
    # Explicit head_dim 32 != hidden/heads (=16), odd vocabulary 1001, tied (keeps the fixture small).
    "headdim32_vocab1001": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, vocab_size=1001, tie_word_embeddings=True,
                 rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=128),
        dtype="float32", seed=1006),
    # bfloat16 MHA, untied, theta 500000.
    "mha_bf16": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=257, tie_word_embeddings=False, rope_theta=500000.0,
                 rms_norm_eps=1e-5, max_position_embeddings=128),
        dtype="bfloat16", seed=1007),
    # Sharded safetensors (several shards + index.json), GQA 4/2, 3 layers.
    "sharded": dict(
        cfg=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=257, tie_word_embeddings=False, rope_theta=10000.0,
                 rms_norm_eps=1e-6, max_position_embeddings=128),
        dtype="float32", seed=1008, shard="150KB"),
}

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make_config(cfg):
    from transformers import LlamaConfig

    cfg = dict(cfg)
    theta = cfg.pop("rope_theta")
    scaling = cfg.pop("rope_scaling", None)
    rope = {"rope_type": "default", "rope_theta": theta}
    if scaling:
        rope.update(scaling)
    return LlamaConfig(
        rope_parameters=rope,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=None,
        attn_implementation="eager",
        **cfg,
    ), theta, scaling


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic init, larger than HF's default so logits are far from uniform and greedy tokens vary."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if name.endswith("norm.weight"):
            v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name:
            # Tied: the embedding is also the output head; a large one makes every token predict itself.
            v = (0.15 if model.config.tie_word_embeddings else 0.5) * torch.randn(p.shape, generator=g)
        elif "lm_head" in name:
            v = 0.15 * torch.randn(p.shape, generator=g)
        else:  # attention / MLP projections: std ~ 1.3/sqrt(fan_in)
            v = (1.3 / p.shape[1] ** 0.5) * torch.randn(p.shape, generator=g)
        p.copy_(v.to(p.dtype))


def make_prompts(vocab, seed):
    g = torch.Generator().manual_seed(seed + 7)
    prompts = []
    for n in PROMPT_LENGTHS:
        rest = torch.randint(3, vocab, (n - 1,), generator=g).tolist()
        prompts.append([BOS] + rest)
    return prompts


def add_legacy_rope_keys(cfg_path, theta, scaling):
    """transformers 5 writes `rope_parameters`; real checkpoints (and transformers 4) use `rope_theta` +
    `rope_scaling`. Write both so a reader of either convention works (transformers 5 reloads it the same)."""
    with open(cfg_path) as f:
        c = json.load(f)
    c["rope_theta"] = theta
    c["rope_scaling"] = dict(scaling) if scaling else None
    with open(cfg_path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def reference(model, prompts, label):
    logits, greedy_ids, margins = [], [], []
    for ids in prompts:
        logits.append(logits_to_list(full_logits(model, ids)))
        seq, m = greedy(model, ids, N_GREEDY)
        bad = check_greedy_by_full_forward(model, ids, seq, m)
        if bad:
            print(f"  WARNING {label}: {bad} greedy steps disagree with no-cache argmax", file=sys.stderr)
        greedy_ids.append(seq)
        margins.append(m)
    return logits, greedy_ids, margins


def build(name, spec, out_root):
    from transformers import LlamaForCausalLM

    out = ensure_dir(os.path.join(out_root, name))
    for f in os.listdir(out):  # stale shards from an earlier run
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(os.path.join(out, f))
    torch.manual_seed(spec["seed"])
    config, theta, scaling = make_config(spec["cfg"])
    model = LlamaForCausalLM(config).to(torch.float32)
    init_weights(model, spec["seed"])
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    dt = TORCH_DTYPES[spec["dtype"]]
    model = model.to(dt).eval()
    kw = {"safe_serialization": True}
    if "shard" in spec:
        kw["max_shard_size"] = spec["shard"]
    model.save_pretrained(out, **kw)
    add_legacy_rope_keys(os.path.join(out, "config.json"), theta, scaling)

    # Reference from the files just written (proves the saved checkpoint is what we describe).
    ref = LlamaForCausalLM.from_pretrained(out, dtype=dt, attn_implementation="eager").eval()
    prompts = make_prompts(config.vocab_size, spec["seed"])
    logits, greedy_ids, margins = reference(ref, prompts, name)
    golden = {
        "format_version": FORMAT_VERSION,
        "model": name,
        "dtype": spec["dtype"],
        "prompts": prompts,
        "logits": logits,
        "greedy": greedy_ids,
        "greedy_margin": margins,
        **versions(),
    }
    if dt != torch.float32:
        # Same stored weights, computed in float32: the tight reference for an engine that upcasts weights.
        ref32 = ref.to(torch.float32)
        l32, g32, m32 = reference(ref32, prompts, name + "/f32compute")
        golden["logits_f32compute"] = l32
        golden["greedy_f32compute"] = g32
        golden["greedy_margin_f32compute"] = m32
    dump_json(os.path.join(out, "golden.json"), golden)

    n_params = sum(p.numel() for p in ref.parameters())
    distinct = [len(set(s)) for s in greedy_ids]
    print(f"{name}: {n_params} params, dtype {spec['dtype']}, greedy distinct tokens {distinct}, "
          f"min margin {min(min(m) for m in margins):.4g}, files {sorted(os.listdir(out))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "golden"))
    ap.add_argument("--only", default="", help="comma-separated model names")
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions, and the build machine is shared
    names = [n for n in MODELS if not args.only or n in args.only.split(",")]
    for n in names:
        build(n, MODELS[n], args.out)


if __name__ == "__main__":
    main()
