#!/usr/bin/env python3
"""AWQ and GPTQ int4 fixtures for llamarun's loader (tests/fixtures/awq_gptq/).

Takes the float32 tiny Llama `tests/fixtures/golden/gqa_untied` (transformers golden logits in its
golden.json), quantizes every Linear of its decoder layers to 4-bit groups (asymmetric min/max per
group, as AutoAWQ's pseudo_quantize_tensor does: s = (max - min) / 15, z = clamp(-round(min / s), 0, 15),
q = clamp(round(w / s) + z, 0, 15)), and writes the published packings:

  awq/       quant_method "awq", version "gemm", group_size 32, zero_point true.
             qweight int32 [in, out/8], nibble k of word (i, c) = output 8c + [0,2,4,6,1,3,5,7][k]
             (AutoAWQ awq/modules/linear/gemm.py, WQLinear_GEMM.from_linear);
             qzeros int32 [in/32, out/8] same order; scales fp16 [in/32, out].
  gptq/      quant_method "gptq", checkpoint_format "gptq" (v1), group_size 64, sym false,
             desc_act false. qweight int32 [in/8, out], nibble k of word (r, o) = input 8r + k;
             qzeros int32 [in/64, out/8], nibble k of word (g, c) = output 8c + k, storing z - 1;
             scales fp16 [in/64, out]; g_idx int32 [in] = i // 64
             (AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py, QuantLinear.pack).
             v1 cannot store z = 0 (z - 1 = -1), so z is clamped to [1, 15] here.
  gptq_v2/   as gptq/ but checkpoint_format "gptq_v2" (zeros stored as z) and sym true (z = 8,
             s = max|w| / 7.5), group_size 32.

Embeddings, lm_head and norms are copied (embeddings / lm_head as fp16, as real AWQ/GPTQ
checkpoints store them; norms float32).

Each directory gets reference.json: the dequantized float32 values of a few tensors, computed here by
unpacking the *written* int32 tensors with the published dequantization formulas (AutoAWQ
awq/utils/packing_utils.py dequantize_gemm: (iweight - izeros) * scales after AWQ_REVERSE_ORDER;
AutoGPTQ qlinear_cuda_old forward: scales * (weight - (zeros + 1)) for v1, zeros as stored for v2),
independently of llamarun's C++:

  {"format_version": 1, "quant_method", "checkpoint_format", "group_size",
   "tensors": {"<hf name>.weight": {"shape": [out, in], "rows": [int], "values": [[float]],
                                     "max_abs_scale_times_zero": float}}}

`values[k]` is row `rows[k]` of the dequantized [out, in] matrix (w = s * (q - z), computed in float64
and rounded to float32). `max_abs_scale_times_zero` is max |s * z| over the tensor: llamarun's Q4_1 keeps
m = -s * z in fp16, so it differs from these values by at most that times 2^-11.

Needs numpy and safetensors (pip). Deterministic: re-running gives identical files.
Usage (from the repository root): python tools/make_awq_gptq_fixtures.py
"""

import json
import os
import shutil

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "fixtures", "golden", "gqa_untied")
OUT = os.path.join(ROOT, "tests", "fixtures", "awq_gptq")

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]        # pack: nibble k holds column 8c + AWQ_ORDER[k]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]  # unpack: column 8c + j is nibble AWQ_REVERSE_ORDER[j]
# (row subsets keep the JSON small)
REFERENCE = {"model.layers.0.self_attn.q_proj.weight": None,     # all rows
             "model.layers.1.self_attn.k_proj.weight": None,
             "model.layers.1.mlp.down_proj.weight": list(range(8)),
             "model.layers.0.mlp.gate_proj.weight": [0, 1, 2, 3, 100, 191]}


def quantize(w, group, sym, zmin):
    """w [out, in] float32 -> q [out, in], s [out, in/group] (fp16), z [out, in/group] (int)."""
    out, inn = w.shape
    wg = w.reshape(out, inn // group, group).astype(np.float64)
    if sym:
        s = np.maximum(np.abs(wg).max(axis=2), 1e-5) / 7.5
        s = s.astype(np.float16)
        z = np.full(s.shape, 8, dtype=np.int64)
    else:
        mx, mn = wg.max(axis=2), wg.min(axis=2)
        s = (np.maximum(mx - mn, 1e-5) / 15).astype(np.float16)
        z = np.clip(-np.round(mn / s.astype(np.float64)), zmin, 15).astype(np.int64)
    sf = s.astype(np.float64)[:, :, None]
    q = np.clip(np.round(wg / sf) + z[:, :, None], 0, 15).astype(np.int64)
    return q.reshape(out, inn), s, z


def pack_nibbles(vals, axis_len_last):
    """vals [..., 8n] ints 0..15 -> int32 [..., n], value 8c + k in nibble k."""
    v = vals.reshape(vals.shape[:-1] + (axis_len_last // 8, 8)).astype(np.uint32)
    word = np.zeros(v.shape[:-1], dtype=np.uint32)
    for k in range(8):
        word |= (v[..., k] & 0xF) << np.uint32(4 * k)
    return word.view(np.int32)


def unpack_nibbles(words):
    """int32 [..., n] -> [..., 8n], nibble k of word c at position 8c + k."""
    u = words.view(np.uint32)
    parts = [((u >> np.uint32(4 * k)) & 0xF).astype(np.int64) for k in range(8)]
    return np.stack(parts, axis=-1).reshape(u.shape[:-1] + (u.shape[-1] * 8,))


def pack_awq(q, s, z):
    # intweight [in, out] (AutoAWQ transposes), columns reordered so that nibble k = 8c + AWQ_ORDER[k].
    iw = q.T
    perm = np.array([8 * c + AWQ_ORDER[k] for c in range(iw.shape[1] // 8) for k in range(8)])
    qweight = pack_nibbles(iw[:, perm], iw.shape[1])
    zt = z.T  # [in/group, out]
    qzeros = pack_nibbles(zt[:, perm], zt.shape[1])
    return {"qweight": qweight, "qzeros": qzeros, "scales": np.ascontiguousarray(s.T)}


def dequant_awq(t, group):
    iw = unpack_nibbles(t["qweight"])  # [in, out], still in packed order
    iz = unpack_nibbles(t["qzeros"])
    rev = np.array([8 * c + AWQ_REVERSE_ORDER[j] for c in range(iw.shape[1] // 8) for j in range(8)])
    iw, iz = iw[:, rev], iz[:, rev]
    scales = np.repeat(t["scales"].astype(np.float64), group, axis=0)
    zeros = np.repeat(iz, group, axis=0)
    return ((iw - zeros) * scales).T, np.abs(t["scales"].astype(np.float64) * iz).max()  # [out, in]


def pack_gptq(q, s, z, group, v2):
    qweight = pack_nibbles(q, q.shape[1]).T  # word (r, o): inputs 8r..8r+7 of output o -> [in/8, out]
    stored = z.T - (0 if v2 else 1)  # [in/group, out]
    assert stored.min() >= 0
    qzeros = pack_nibbles(stored, stored.shape[1])
    g_idx = (np.arange(q.shape[1]) // group).astype(np.int32)
    return {"qweight": np.ascontiguousarray(qweight), "qzeros": qzeros, "scales": np.ascontiguousarray(s.T),
            "g_idx": g_idx}


def dequant_gptq(t, v2):
    w = unpack_nibbles(np.ascontiguousarray(t["qweight"].T)).T  # [in, out]
    zeros = unpack_nibbles(t["qzeros"]) + (0 if v2 else 1)      # [in/group, out]
    g = t["g_idx"].astype(np.int64)
    scales = t["scales"].astype(np.float64)
    return (scales[g] * (w - zeros[g])).T, np.abs(scales * zeros).max()


def write(name, method, fmt, group, sym):
    src = load_file(os.path.join(SRC, "model.safetensors"))
    with open(os.path.join(SRC, "config.json")) as f:
        cfg = json.load(f)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tensors, ref = {}, {}
    for k, v in src.items():
        base = k[:-len(".weight")]
        if any(base.endswith(l) for l in LINEARS):
            q, s, z = quantize(v, group, sym, zmin=1 if (method == "gptq" and fmt == "gptq") else 0)
            if method == "awq":
                t = pack_awq(q, s, z)
                deq, sz = dequant_awq(t, group)
            else:
                t = pack_gptq(q, s, z, group, fmt == "gptq_v2")
                deq, sz = dequant_gptq(t, fmt == "gptq_v2")
            # the packed round trip must give back the quantizer's own values
            expect = (q.reshape(q.shape[0], -1, group) - z[:, :, None]) * s.astype(np.float64)[:, :, None]
            assert np.array_equal(deq, expect.reshape(q.shape)), k
            for part, arr in t.items():
                tensors[f"{base}.{part}"] = arr
            if k in REFERENCE:
                rows = REFERENCE[k] if REFERENCE[k] is not None else list(range(deq.shape[0]))
                ref[k] = {"shape": list(deq.shape), "rows": rows,
                          "values": [[float(x) for x in deq[r].astype(np.float32)] for r in rows],
                          "max_abs_scale_times_zero": float(sz)}
        elif k in ("model.embed_tokens.weight", "lm_head.weight"):
            tensors[k] = v.astype(np.float16)
        else:
            tensors[k] = v
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    qc = {"quant_method": method, "bits": 4, "group_size": group}
    if method == "awq":
        qc.update({"version": "gemm", "zero_point": True})
    else:
        qc.update({"desc_act": False, "sym": sym, "checkpoint_format": fmt, "static_groups": False,
                   "true_sequential": True, "damp_percent": 0.01})
    cfg["quantization_config"] = qc
    cfg["dtype"] = "float16"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"format_version": 1, "quant_method": method, "checkpoint_format": fmt, "group_size": group,
                   "source": "tests/fixtures/golden/gqa_untied", "numpy": np.__version__, "tensors": ref},
                  f, separators=(",", ":"), sort_keys=True)
        f.write("\n")


def main():
    write("awq", "awq", "gemm", 32, sym=False)
    write("gptq", "gptq", "gptq", 64, sym=False)
    write("gptq_v2", "gptq", "gptq_v2", 32, sym=True)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
