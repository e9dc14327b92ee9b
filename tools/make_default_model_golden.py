#!/usr/bin/env python3
"""Golden reference for the default model, models/SmolLM2-135M-Instruct.Q4_1.gguf, from transformers.

transformers loads the GGUF itself (gguf_file=...): it dequantizes every tensor to float32 and reverses
llama.cpp's Q/K permutation; the tokenizer is rebuilt from the GGUF's tokenizer.ggml.* metadata.

Tokenizer fix-up: transformers (5.x) has no pre-tokenizer entry for tokenizer.ggml.pre = "smollm" and falls back
to plain GPT-2 ByteLevel splitting. SmolLM2's own tokenizer.json (and llama.cpp's "smollm" pre-tokenizer:
regexes "\p{N}" then the GPT-2 pattern) first isolates every digit. We therefore set the pre-tokenizer to
Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)] (vocabulary,
merges and special tokens unchanged) and record transformers' unpatched ids too where they differ.
For each prompt we record the HF tokenizer's ids, 48 greedy tokens (float32, eager attention, EOS ignored)
and the top-10 logits at the last prompt position. Output: tests/fixtures/default_model/golden.json
(format in tests/fixtures/golden/README.md).

Usage: python tools/make_default_model_golden.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""

import argparse
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
    round7,
    versions,
)

N_GREEDY = 48
TOP_K = 10

PLAIN_PROMPTS = [
    ("plain_capital", "The capital of France is"),
    ("code_fibonacci", "def fibonacci(n):"),
    ("unicode_cjk_emoji", "東京は日本の首都です。Emoji: 🦙🚀 café naïve —"),
    ("numbers_whitespace", "Count:  1, 2, 3,\n\tfour,   five"),
    ("digits_mixed", "Order 66: pay $1234.50 by 2024-12-31, then  42  more.x86"),
]
CHAT = ("chat_template", [{"role": "user", "content": "What is the tallest mountain in the world?"}])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap.add_argument("--model", default=os.path.join(root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "default_model", "golden.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    mdir, mfile = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mfile)
    raw_tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mfile)
    from tokenizers import pre_tokenizers

    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    model = AutoModelForCausalLM.from_pretrained(
        mdir, gguf_file=mfile, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    cases = []
    items = [(name, text, False) for name, text in PLAIN_PROMPTS]
    chat_text = tok.apply_chat_template(CHAT[1], tokenize=False, add_generation_prompt=True)
    items.append((CHAT[0], chat_text, True))
    for name, text, is_chat in items:
        # add_special_tokens: SmolLM2's GGUF says add_bos_token=False, so this adds nothing; recorded anyway.
        ids = tok(text, add_special_tokens=True)["input_ids"]
        raw_ids = raw_tok(text, add_special_tokens=True)["input_ids"]
        lg = full_logits(model, ids)[-1]
        top = torch.topk(lg, TOP_K)
        seq, margins = greedy(model, ids, N_GREEDY)
        bad = check_greedy_by_full_forward(model, ids, seq, margins)
        case = {
            "name": name,
            "text": text,
            "prompt_ids": ids,
            "prompt_tokens": tok.convert_ids_to_tokens(ids),
            "top_ids": top.indices.tolist(),
            "top_logits": [round7(float(v)) for v in top.values],
            "greedy": seq,
            "greedy_margin": margins,
            "greedy_text": tok.decode(seq),
        }
        if raw_ids != ids:
            case["prompt_ids_transformers_gguf_unpatched"] = raw_ids
        if is_chat:
            case["messages"] = CHAT[1]
            case["add_generation_prompt"] = True
        cases.append(case)
        print(f"{name}: {len(ids)} prompt ids, top1 {top.indices[0].item()} ({top.values[0].item():.4f}), "
              f"min margin {min(margins):.4g}, no-cache disagreements {bad}, "
              f"unpatched tokenizer {'same' if raw_ids == ids else 'DIFFERS'}\n  -> {tok.decode(seq)!r}")

    golden = {
        "format_version": FORMAT_VERSION,
        "model": mfile,
        "dtype": "float32",
        "weights": "GGUF dequantized to float32 by transformers (gguf_file=...), Q/K un-permuted by transformers",
        "tokenizer": "transformers AutoTokenizer from the GGUF metadata, pre-tokenizer set to "
        "Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)] (SmolLM2's own)",
        "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "cases": cases,
        **versions(),
    }
    ensure_dir(os.path.dirname(args.out))
    dump_json(args.out, golden)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
