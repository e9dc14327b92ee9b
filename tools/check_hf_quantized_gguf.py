#!/usr/bin/env python3
"""Checks a GGUF file that `llamarun quantize HF_DIR OUT.gguf SCHEME` wrote, with the `gguf` package (an
independent GGUF reader and dequantizer) against what llama.cpp's convert_hf_to_gguf.py + llama-quantize
would write for that directory:

  * tensors: exactly llama.cpp's names (token_embd, blk.N.attn_norm/attn_q/attn_k/attn_v/attn_output/
    ffn_norm/ffn_gate/ffn_up/ffn_down, output_norm, output unless tied) with GGUF shapes;
  * types: llama-quantize's mix for the scheme (norms F32; output / tied token_embd Q6_K; with Q4_K_M attn_v
    and ffn_down Q6_K in the use_more_bits layers; fallbacks for rows that 256 or 32 do not divide);
  * values: every tensor dequantized by gguf.quants equals the safetensors weights (read with the
    `safetensors` package) within the type's error, attn_q / attn_k compared after convert_hf_to_gguf's
    row permutation (reshape(n_head, 2, head_dim/2, ...).swapaxes(1, 2)) -- unpermuted rows would be off by
    ~140% relative RMS;
  * metadata: general.architecture/file_type/quantization_version and the llama.* keys from config.json;
  * vocabulary: merges, special token ids, add_*_token flags and the chat template equal what gguf's
    SpecialVocab reads from the directory (what convert_hf_to_gguf.py writes through it); the token texts
    are the tokenizer.json vocabulary; with --reference GGUF (a file llama.cpp's converter wrote from the
    same tokenizer, e.g. the default model) tokens, token types, merges, pre-tokenizer, special ids,
    add_bos_token and chat template must equal that file's.

Usage: check_hf_quantized_gguf.py HF_DIR OUT.gguf SCHEME [--reference REF.gguf]
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from safetensors import safe_open

FTYPE = {"Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2, "F16": 1}
BASE = {"Q8_0": QT.Q8_0, "Q4_K_M": QT.Q4_K, "Q5_K_M": QT.Q5_K, "Q6_K": QT.Q6_K, "Q4_0": QT.Q4_0, "F16": QT.F16}
BLOCK = {QT.Q8_0: 32, QT.Q4_0: 32, QT.Q5_0: 32, QT.Q5_1: 32, QT.Q4_K: 256, QT.Q5_K: 256, QT.Q6_K: 256}
FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
# Relative RMS error bound of quantizing Gaussian-like weights (about 2x what each type gives).
REL_RMS = {QT.F32: 1e-6, QT.F16: 1e-3, QT.Q8_0: 0.01, QT.Q6_K: 0.04, QT.Q5_K: 0.07, QT.Q5_1: 0.07,
           QT.Q5_0: 0.09, QT.Q4_K: 0.13, QT.Q4_0: 0.16}


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(scheme, name, cols, n_layer, tied):
    """llama-quantize's type for a Llama tensor (no imatrix), as llama.cpp's llama-quant.cpp picks it."""
    if name.endswith("_norm.weight") or name == "rope_freqs.weight":
        return QT.F32
    base = BASE[scheme]
    if base == QT.F16:
        return QT.F16
    t = base
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        t = QT.Q8_0 if cols % BLOCK[base] else (QT.Q6_K if base != QT.Q8_0 else QT.Q8_0)
    elif scheme.endswith("_M") and (".attn_v." in name or ".ffn_down." in name):
        if use_more_bits(int(name.split(".")[1]), n_layer):
            t = QT.Q6_K
    if cols % BLOCK[t]:
        t = FALLBACK.get(t, t)
        if cols % BLOCK.get(t, 32):
            t = QT.F16
    return t


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_hf(d):
    t = {}
    for fn in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(fn, framework="np") as f:
            for k in f.keys():
                t[k] = f.get_tensor(k).astype(np.float32)
    return t


def expected_tensors(cfg, hf):
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    out = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    if not cfg.get("tie_word_embeddings", False):
        out["output.weight"] = hf["lm_head.weight"]
    m = {"input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for a, b in m.items():
            out[f"blk.{i}.{b}.weight"] = hf[p + a + ".weight"]
        out[f"blk.{i}.attn_q.weight"] = permute(hf[p + "self_attn.q_proj.weight"], n_head)
        out[f"blk.{i}.attn_k.weight"] = permute(hf[p + "self_attn.k_proj.weight"], n_kv)
    return out


def scalar(f):
    v = f.contents()
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("scheme")
    ap.add_argument("--reference", default=None)
    a = ap.parse_args()
    scheme = a.scheme.upper()
    with open(os.path.join(a.hf_dir, "config.json")) as f:
        cfg = json.load(f)
    r = gguf.GGUFReader(a.out)
    errors = []
    F = r.fields

    def meta(key):
        return F[key].contents() if key in F else None

    def expect(key, want, vtype=None):
        got = meta(key)
        ok = got == want if not isinstance(want, float) else got is not None and abs(got - want) <= 1e-6 * abs(want)
        if not ok:
            errors.append(f"metadata {key}: {got!r}, expected {want!r}")
        elif vtype is not None and F[key].types[0] != vtype:
            errors.append(f"metadata {key}: stored as {F[key].types}, expected {vtype}")

    U32 = gguf.GGUFValueType.UINT32
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    expect("general.architecture", "llama")
    expect("general.file_type", FTYPE[scheme], U32)
    expect("general.quantization_version", 2, U32)
    expect("llama.block_count", cfg["num_hidden_layers"], U32)
    expect("llama.context_length", cfg["max_position_embeddings"], U32)
    expect("llama.embedding_length", cfg["hidden_size"], U32)
    expect("llama.feed_forward_length", cfg["intermediate_size"], U32)
    expect("llama.attention.head_count", cfg["num_attention_heads"], U32)
    expect("llama.attention.head_count_kv", cfg["num_key_value_heads"], U32)
    expect("llama.rope.dimension_count", hd, U32)
    expect("llama.vocab_size", cfg["vocab_size"], U32)
    expect("llama.rope.freq_base", float(cfg.get("rope_theta", 10000.0)), gguf.GGUFValueType.FLOAT32)
    expect("llama.attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"]), gguf.GGUFValueType.FLOAT32)

    # Tensors: names, shapes, types, values.
    want = expected_tensors(cfg, load_hf(a.hf_dir))
    got = {t.name: t for t in r.tensors}
    for n in sorted(set(want) ^ set(got)):
        errors.append(f"tensor {n}: {'missing' if n in want else 'unexpected'}")
    tied = cfg.get("tie_word_embeddings", False)
    for n in sorted(set(want) & set(got)):
        t, x = got[n], want[n]
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        if shape != x.shape:
            errors.append(f"tensor {n}: shape {shape}, expected {x.shape}")
            continue
        et = expected_type(scheme, n, x.shape[-1], cfg["num_hidden_layers"], tied)
        if t.tensor_type != et:
            errors.append(f"tensor {n}: type {t.tensor_type.name}, expected {et.name}")
        q = gguf.quants.dequantize(t.data, t.tensor_type).reshape(x.shape).astype(np.float64)
        rel = float(np.linalg.norm(q - x) / max(np.linalg.norm(x), 1e-30))
        if rel > REL_RMS.get(t.tensor_type, 0.2):
            errors.append(f"tensor {n} ({t.tensor_type.name}): relative RMS error {rel:.4f} > {REL_RMS[t.tensor_type]}")

    # Vocabulary against gguf's SpecialVocab (what convert_hf_to_gguf.py writes through it).
    sv = gguf.SpecialVocab(a.hf_dir, load_merges=True, n_vocab=cfg["vocab_size"])
    if meta("tokenizer.ggml.merges") != sv.merges:
        errors.append("tokenizer.ggml.merges: differ from SpecialVocab's")
    keys = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
            "pad": "padding_token_id", "cls": "cls_token_id", "mask": "mask_token_id"}
    for typ, key in keys.items():
        if meta("tokenizer.ggml." + key) != sv.special_token_ids.get(typ):
            errors.append(f"tokenizer.ggml.{key}: {meta('tokenizer.ggml.' + key)}, SpecialVocab "
                          f"{sv.special_token_ids.get(typ)}")
    for typ, v in sv.add_special_token.items():
        if typ != "bos" or cfg["vocab_size"] != 49152:  # convert_hf_to_gguf forces add_bos false for 49152
            expect(f"tokenizer.ggml.add_{typ}_token", v)
    if cfg["vocab_size"] == 49152:
        expect("tokenizer.ggml.add_bos_token", False)
    if meta("tokenizer.chat_template") != sv.chat_template:
        errors.append("tokenizer.chat_template: differs from SpecialVocab's")
    with open(os.path.join(a.hf_dir, "tokenizer.json")) as f:
        tj = json.load(f)
    texts = {i: s for s, i in tj["model"]["vocab"].items()}
    texts.update({t["id"]: t["content"] for t in tj.get("added_tokens", [])})
    toks = meta("tokenizer.ggml.tokens")
    if toks is None or len(toks) != cfg["vocab_size"]:
        errors.append(f"tokenizer.ggml.tokens: {None if toks is None else len(toks)} tokens, expected "
                      f"{cfg['vocab_size']}")
    elif any(toks[i] != s for i, s in texts.items()):
        errors.append("tokenizer.ggml.tokens: differ from tokenizer.json's vocabulary")

    if a.reference:
        ref = gguf.GGUFReader(a.reference)
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                    "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
            rf = ref.fields.get(key)
            rv = rf.contents() if rf else None
            if meta(key) != rv:
                shown = rv if not isinstance(rv, list) else f"a list of {len(rv)}"
                errors.append(f"{key}: differs from the reference {a.reference} ({shown})")
            elif rf is not None and F[key].types != rf.types:
                errors.append(f"{key}: stored as {F[key].types}, the reference as {rf.types}")

    for e in errors:
        print(f"{a.out}: {e}")
    if errors:
        sys.exit(1)
    print(f"{a.out}: ok ({len(got)} tensors, {scheme})")


if __name__ == "__main__":
    main()
