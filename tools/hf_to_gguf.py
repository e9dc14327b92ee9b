#!/usr/bin/env python3
"""Convert a Hugging Face LlamaForCausalLM directory (config.json + *.safetensors) to GGUF v3.

Written for llamarun's golden fixtures (our own implementation; it follows llama.cpp's conventions so the
files look like the ones users download):
  * tensor names: token_embd, blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,
    ffn_down}, output_norm, output (absent when embeddings are tied), all with ".weight";
  * Q and K rows permuted for the adjacent-pair RoPE layout: W [n_head*head_dim, in] ->
    reshape [n_head, 2, head_dim/2, in] -> swap axes 1,2 -> reshape back (K with n_kv_head);
  * llama3 rope scaling is written as llama.cpp does: a float32 tensor `rope_freqs.weight` [head_dim/2]
    of per-frequency divisors (no scaling metadata); linear scaling as llama.rope.scaling.type/factor;
  * 1-D tensors (norms, rope_freqs) stay F32; 2-D tensors get --outtype (a quantized type falls back to
    F16 when a row length is not a multiple of 32, like llama.cpp's converter).
  * tokenizer: a dummy "llama" vocabulary of the right size (tokens "<unk>", "<s>", "</s>", "<t3>", ...),
    since the golden tests feed token ids, not text.

With --golden, the written file is read back with gguf.GGUFReader, every tensor is dequantized with
gguf.quants.dequantize and un-permuted, loaded into a float32 transformers model, and the prompts of the
directory's golden.json are re-run: logits + greedy go to golden-<outtype>.json next to the GGUF.

Usage: python tools/hf_to_gguf.py HF_DIR [--outtype f32|f16|bf16|q8_0|q4_0|q4_1] [--embd-type TYPE]
                                  [--out FILE] [--golden]
"""

import argparse
import glob
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import LlamaFileType as FT  # noqa: E402

OUTTYPES = {
    "f32": (QT.F32, FT.ALL_F32),
    "f16": (QT.F16, FT.MOSTLY_F16),
    "bf16": (QT.BF16, FT.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, FT.MOSTLY_Q4_1),
}


def load_hf(hf_dir):
    """config dict + {hf_name: float32 numpy array} from all safetensors files of the directory."""
    import torch
    from safetensors import safe_open

    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    files = sorted(glob.glob(os.path.join(hf_dir, "*.safetensors")))
    if not files:
        raise SystemExit(f"{hf_dir}: no *.safetensors files")
    tensors = {}
    for fn in files:
        with safe_open(fn, framework="pt") as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k).to(torch.float32).numpy()
    return cfg, tensors


def rope_params(cfg):
    """(theta, scaling dict or None) from either transformers-5 `rope_parameters` or legacy keys."""
    rp = cfg.get("rope_parameters")
    if rp:
        theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = None if rp.get("rope_type", "default") == "default" else rp
    else:
        theta = cfg.get("rope_theta", 10000.0)
        scaling = cfg.get("rope_scaling")
    if scaling is not None:
        scaling = dict(scaling)
        scaling["rope_type"] = scaling.get("rope_type", scaling.get("type"))
    return float(theta), scaling


def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def permute_qk(w, n_head):
    """HF rotate-half row order -> adjacent-pair (GGUF) row order. w: [n_head*head_dim, in]."""
    rows = w.shape[0]
    assert rows % (2 * n_head) == 0, (w.shape, n_head)
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head):
    """Inverse of permute_qk."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(head_dim, theta, sc):
    """Per-frequency divisors for llama3 rope scaling (same math as transformers' _compute_llama3_parameters):
    inv_freq_scaled[i] = inv_freq[i] / factors[i]."""
    factor = float(sc["factor"])
    low = float(sc.get("low_freq_factor", 1.0))
    high = float(sc.get("high_freq_factor", 4.0))
    old_ctx = float(sc["original_max_position_embeddings"])
    low_wavelen = old_ctx / low
    high_wavelen = old_ctx / high
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for f in inv_freq:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def hf_to_gguf_tensors(cfg, hf):
    """[(gguf_name, float32 array)] in llama.cpp order, Q/K permuted."""
    n_layer = cfg["num_hidden_layers"]
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    tied = cfg.get("tie_word_embeddings", False)
    out = [("token_embd.weight", hf["model.embed_tokens.weight"])]
    theta, sc = rope_params(cfg)
    if sc and sc["rope_type"] == "llama3":
        out.append(("rope_freqs.weight", llama3_rope_factors(head_dim_of(cfg), theta, sc)))
    for i in range(n_layer):
        p = f"model.layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", hf[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", permute_qk(hf[p + "self_attn.q_proj.weight"], n_head)),
            (f"blk.{i}.attn_k.weight", permute_qk(hf[p + "self_attn.k_proj.weight"], n_kv)),
            (f"blk.{i}.attn_v.weight", hf[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", hf[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", hf[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", hf[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", hf[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", hf[p + "mlp.down_proj.weight"]),
        ]
    out.append(("output_norm.weight", hf["model.norm.weight"]))
    if not tied:
        out.append(("output.weight", hf["lm_head.weight"]))
    return out


def encode(arr, qtype):
    """float32 array -> (array to write, raw_dtype or None)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == QT.F32:
        return arr, None
    if qtype == QT.F16:
        return arr.astype(np.float16), None
    return gguf.quants.quantize(arr, qtype), qtype


def write_gguf(cfg, hf, path, outtype, embd_type=None, name="llamarun-golden"):
    qtype, ftype = OUTTYPES[outtype]
    embd_q = OUTTYPES[embd_type][0] if embd_type else qtype
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    hd = head_dim_of(cfg)
    vocab = cfg["vocab_size"]
    theta, sc = rope_params(cfg)

    w = gguf.GGUFWriter(path, "llama")
    w.add_type("model")
    w.add_name(name)
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(vocab)
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hd)
    if hd != cfg["hidden_size"] // n_head:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    if sc and sc["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(sc["factor"]))
    elif sc and sc["rope_type"] != "llama3":
        raise SystemExit(f"unsupported rope scaling {sc}")

    # Dummy SentencePiece-style vocabulary: ids are what matters for the golden tests.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<t{i}>" for i in range(3, vocab)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (
        vocab - 3
    )
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(cfg.get("bos_token_id", 1) if cfg.get("bos_token_id") is not None else 1)
    eos = cfg.get("eos_token_id", 2)
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else (eos if eos is not None else 2))
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    summary = {}
    for gname, arr in hf_to_gguf_tensors(cfg, hf):
        if arr.ndim == 1:
            t = QT.F32
        elif gname in ("token_embd.weight", "output.weight"):
            t = embd_q
        else:
            t = qtype
        if t not in (QT.F32, QT.F16, QT.BF16) and arr.shape[-1] % 32 != 0:
            print(f"  {gname}: row length {arr.shape[-1]} not a multiple of 32, writing F16", file=sys.stderr)
            t = QT.F16
        data, raw = encode(arr, t)
        w.add_tensor(gname, data, raw_dtype=raw)
        summary[t.name] = summary.get(t.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return summary


def read_back_as_hf(path, cfg):
    """Read a GGUF written above: {hf_name: float32 array}, dequantized and un-permuted (independent of the
    in-memory arrays used for writing)."""
    r = gguf.GGUFReader(path)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    g = {}
    for t in r.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]  # GGUF ne is innermost-first
        g[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    hf = {"model.embed_tokens.weight": g["token_embd.weight"], "model.norm.weight": g["output_norm.weight"]}
    hf["lm_head.weight"] = g.get("output.weight", g["token_embd.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = g[f"blk.{i}.attn_norm.weight"]
        hf[p + "self_attn.q_proj.weight"] = unpermute_qk(g[f"blk.{i}.attn_q.weight"], n_head)
        hf[p + "self_attn.k_proj.weight"] = unpermute_qk(g[f"blk.{i}.attn_k.weight"], n_kv)
        hf[p + "self_attn.v_proj.weight"] = g[f"blk.{i}.attn_v.weight"]
        hf[p + "self_attn.o_proj.weight"] = g[f"blk.{i}.attn_output.weight"]
        hf[p + "post_attention_layernorm.weight"] = g[f"blk.{i}.ffn_norm.weight"]
        hf[p + "mlp.gate_proj.weight"] = g[f"blk.{i}.ffn_gate.weight"]
        hf[p + "mlp.up_proj.weight"] = g[f"blk.{i}.ffn_up.weight"]
        hf[p + "mlp.down_proj.weight"] = g[f"blk.{i}.ffn_down.weight"]
    return hf


def golden_from_gguf(hf_dir, gguf_path, outtype, embd_type):
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from golden_common import (
        FORMAT_VERSION,
        check_greedy_by_full_forward,
        full_logits,
        greedy,
        logits_to_list,
        versions,
    )

    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(hf_dir, "golden.json")) as f:
        src = json.load(f)
    hf = read_back_as_hf(gguf_path, cfg)
    config = AutoConfig.from_pretrained(hf_dir)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    sd = {k: torch.from_numpy(v.copy()) for k, v in hf.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing} unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()

    # Sanity check against the source model's float32-compute logits.
    ref_key = "logits" if src["dtype"] == "float32" else "logits_f32compute"
    logits, greedy_ids, margins = [], [], []
    max_diff = 0.0
    with torch.no_grad():
        for pi, ids in enumerate(src["prompts"]):
            lg = full_logits(model, ids)
            max_diff = max(max_diff, float((lg - torch.tensor(src[ref_key][pi])).abs().max()))
            logits.append(logits_to_list(lg))
            seq, m = greedy(model, ids, len(src["greedy"][pi]))
            if check_greedy_by_full_forward(model, ids, seq, m):
                print("  WARNING: greedy disagrees with no-cache argmax", file=sys.stderr)
            greedy_ids.append(seq)
            margins.append(m)
    return {
        "format_version": FORMAT_VERSION,
        "model": os.path.basename(os.path.normpath(hf_dir)),
        "gguf": os.path.basename(gguf_path),
        "weights": f"{outtype} (token_embd/output: {embd_type or outtype}), dequantized with gguf.quants",
        "dtype": "float32",
        "prompts": src["prompts"],
        "logits": logits,
        "greedy": greedy_ids,
        "greedy_margin": margins,
        "max_abs_diff_vs_source": max_diff,
        **versions(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("--outtype", default="f32", choices=sorted(OUTTYPES))
    ap.add_argument("--embd-type", default=None, choices=sorted(OUTTYPES),
                    help="type for token_embd/output (default: --outtype)")
    ap.add_argument("--out", default=None, help="default: HF_DIR/model-<outtype>.gguf")
    ap.add_argument("--golden", action="store_true", help="also write golden-<outtype>.json (needs golden.json)")
    args = ap.parse_args()

    cfg, hf = load_hf(args.hf_dir)
    out = args.out or os.path.join(args.hf_dir, f"model-{args.outtype}.gguf")
    summary = write_gguf(cfg, hf, out, args.outtype, args.embd_type,
                         name=os.path.basename(os.path.normpath(args.hf_dir)))
    print(f"wrote {out} ({os.path.getsize(out)} bytes) tensors by type {summary}")
    if args.golden:
        import torch

        torch.set_num_threads(1)
        from golden_common import dump_json

        g = golden_from_gguf(args.hf_dir, out, args.outtype, args.embd_type)
        gpath = os.path.join(os.path.dirname(out), f"golden-{args.outtype}.json")
        dump_json(gpath, g)
        print(f"wrote {gpath}: max |logit - source logit| = {g['max_abs_diff_vs_source']:.4g}")


if __name__ == "__main__":
    main()
