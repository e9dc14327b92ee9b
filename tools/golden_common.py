"""Shared helpers for the golden-fixture scripts (make_golden.py, hf_to_gguf.py, make_default_model_golden.py).

Everything runs on CPU with eager attention so results are deterministic and independent of the GPU stack.
"""

import json
import math
import os

import torch

FORMAT_VERSION = 1


def versions():
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


def round7(x):
    """Round a float to 7 significant digits (keeps JSON small; f32 has ~7.2)."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x} in golden data")
    return float(f"{x:.7g}")


def logits_to_list(t):
    """[pos, vocab] tensor -> nested lists of 7-significant-digit floats."""
    arr = t.detach().to(torch.float32).cpu().numpy()
    return [[round7(float(v)) for v in row] for row in arr]


def dump_json(path, obj):
    with open(path, "w") as f:
        # One prompt / row per line would be nicer to diff but JSON arrays nest; compact separators keep size down.
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


@torch.no_grad()
def full_logits(model, ids):
    """Logits of one forward pass over the whole prompt (batch 1, no padding): [len, vocab] float32."""
    inp = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=inp, use_cache=False)
    return out.logits[0].to(torch.float32)


@torch.no_grad()
def greedy(model, ids, n_new):
    """n_new greedy tokens with model.generate (KV cache), EOS disabled so exactly n_new come out.

    Returns (tokens, margins): margins[i] = top1 - top2 logit at step i, so a consumer can tell when a
    mismatch is a near-tie rather than a bug.
    """
    from transformers import GenerationConfig

    gc = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=n_new,
        min_new_tokens=0,  # min_new_tokens would mask EOS logits: we disable EOS instead
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=None,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
    )
    inp = torch.tensor([ids], dtype=torch.long)
    # generate() merges unset (None) fields from model.generation_config, so clear EOS there too.
    model.generation_config.eos_token_id = None
    out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), generation_config=gc)
    seq = out.sequences[0, len(ids):].tolist()
    if len(seq) != n_new:
        raise RuntimeError(f"generate produced {len(seq)} tokens, wanted {n_new}")
    margins = []
    for step, lg in enumerate(out.logits):
        row = lg[0].to(torch.float32)
        top2 = torch.topk(row, 2)
        if int(top2.indices[0]) != seq[step]:
            # ties resolve to the lowest index in argmax; topk may order differently on exact ties
            if float(row[seq[step]]) != float(top2.values[0]):
                raise RuntimeError(f"generate token {seq[step]} is not the argmax at step {step}")
        margins.append(round7(float(top2.values[0] - top2.values[1])))
    return seq, margins


@torch.no_grad()
def check_greedy_by_full_forward(model, ids, seq, margins, tol=1e-3):
    """Independent check of a greedy continuation: re-run the whole sequence without cache and make sure
    every generated token is the argmax (unless that step was a near-tie). Returns number of disagreements."""
    full = full_logits(model, ids + seq)
    bad = 0
    for i, tok in enumerate(seq):
        am = int(torch.argmax(full[len(ids) - 1 + i]))
        if am != tok and margins[i] > tol:
            bad += 1
    return bad


def ensure_dir(p):
    os.makedirs(p, exist_ok=True)
    return p
