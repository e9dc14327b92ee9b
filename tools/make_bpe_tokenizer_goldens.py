#!/usr/bin/env python3
"""Byte-level BPE goldens from the Hugging Face `tokenizers` library (pip install tokenizers gguf).

1. Builds SmolLM2's tokenizer.json from the default model's GGUF vocabulary and merges:
   BPE(vocab, merges), pre-tokenizer Sequence[Digits(individual_digits=True),
   ByteLevel(add_prefix_space=False, use_regex=True)], decoder ByteLevel, and the GGUF's control
   tokens (token_type == 3) as special added tokens.
   -> tests/fixtures/tokenizer/smollm2_tokenizer.json
2. Encodes the corpus (invalid UTF-8 first replaced by U+FFFD, as Rust's String::from_utf8_lossy and
   Python's errors="replace" do: the library only accepts valid text):
   -> smollm2.ids          special-token strings are plain text (encode_special_tokens = True)
   -> smollm2.special.ids  special-token strings map to their ids; only the lines that differ from
                           smollm2.ids, as "<line index>\t<ids>"
   -> smollm2.decode.jsonl {"ids", "text": decode(ids, skip_special_tokens=True)} for corpus ids and
                           random id sequences
   -> smollm2.strip.ids    special tokens matched, with lstrip/rstrip set on some added tokens
                           (STRIP_FLAGS; tests patch the json the same way); differing lines only
3. A Llama-3-style variant of the same vocabulary: pre-tokenizer Sequence[Split(Llama 3 regex,
   isolated), ByteLevel(use_regex=False)], ignore_merges=True, merges written as "a b" strings
   (tests build the same tokenizer.json by patching smollm2_tokenizer.json; see LLAMA3_PATTERN).
   -> smollm2_llama3regex.ids  only the lines that differ from smollm2.ids, as "<index>\t<ids>"

Usage: python3 tools/make_bpe_tokenizer_goldens.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import os
import random
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, os.path.dirname(__file__))
from tokenizer_corpus import read_corpus  # noqa: E402

FIX = "tests/fixtures/tokenizer"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# content -> (lstrip, rstrip) for the strip variant.
STRIP_FLAGS = {"<|im_start|>": (True, False), "<|im_end|>": (False, True), "<|endoftext|>": (True, True)}


def gguf_vocab(path):
    r = GGUFReader(path)

    def arr(key, conv):
        f = r.fields[key]
        return [conv(f.parts[i]) for i in f.data]

    tokens = arr("tokenizer.ggml.tokens", lambda p: bytes(p).decode("utf-8"))
    types = arr("tokenizer.ggml.token_type", lambda p: int(p[0]))
    merges = arr("tokenizer.ggml.merges", lambda p: bytes(p).decode("utf-8"))
    return tokens, types, merges


def build(tokens, types, merges, llama3=False):
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    if llama3:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def write_ids(tok, corpus, path, special):
    tok.encode_special_tokens = not special
    out = []
    with open(path, "w") as f:
        for data in corpus:
            ids = tok.encode(data.decode("utf-8", "replace"), add_special_tokens=False).ids
            out.append(ids)
            f.write(" ".join(map(str, ids)) + "\n")
    return out


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    tokens, types, merges = gguf_vocab(gguf_path)
    corpus = read_corpus(f"{FIX}/corpus.jsonl")

    tok = build(tokens, types, merges)
    with open(f"{FIX}/smollm2_tokenizer.json", "w", encoding="utf-8") as f:
        f.write(tok.to_str(pretty=False))
    plain = write_ids(tok, corpus, f"{FIX}/smollm2.ids", special=False)
    special = write_ids(tok, corpus, f"{FIX}/smollm2.special.ids", special=True)
    with open(f"{FIX}/smollm2.special.ids", "w") as f:
        for i, (a, b) in enumerate(zip(plain, special)):
            if a != b:
                f.write(f"{i}\t" + " ".join(map(str, b)) + "\n")

    sj = json.loads(tok.to_str())
    for a in sj["added_tokens"]:
        if a["content"] in STRIP_FLAGS:
            a["lstrip"], a["rstrip"] = STRIP_FLAGS[a["content"]]
    stripped = write_ids(Tokenizer.from_str(json.dumps(sj)), corpus, f"{FIX}/smollm2.strip.ids", special=True)
    with open(f"{FIX}/smollm2.strip.ids", "w") as f:
        for i, (a, b) in enumerate(zip(plain, stripped)):
            if a != b:
                f.write(f"{i}\t" + " ".join(map(str, b)) + "\n")

    rng = random.Random(11)
    with open(f"{FIX}/smollm2.decode.jsonl", "w", encoding="utf-8") as f:
        for ids in plain[:100]:
            f.write(json.dumps({"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)},
                               ensure_ascii=False) + "\n")
        for _ in range(300):
            ids = []
            for _ in range(rng.randint(1, 12)):
                k = rng.random()
                if k < 0.1:
                    ids.append(rng.randint(0, 16))  # special tokens
                elif k < 0.5:
                    ids.append(rng.randint(17, 300))  # single bytes and short pieces
                else:
                    ids.append(rng.randint(17, len(tokens) - 1))
            f.write(json.dumps({"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)},
                               ensure_ascii=False) + "\n")

    tok3 = build(tokens, types, merges, llama3=True)
    llama3 = write_ids(tok3, corpus, f"{FIX}/smollm2_llama3regex.ids", special=False)
    with open(f"{FIX}/smollm2_llama3regex.ids", "w") as f:
        for i, (a, b) in enumerate(zip(plain, llama3)):
            if a != b:
                f.write(f"{i}\t" + " ".join(map(str, b)) + "\n")
    print(f"wrote goldens for {len(corpus)} lines")


if __name__ == "__main__":
    main()
