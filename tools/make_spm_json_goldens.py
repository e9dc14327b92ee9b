#!/usr/bin/env python3
"""Goldens for a sentencepiece-converted tokenizer.json (BPE with byte_fallback, as the Llama 2 /
Mistral / TinyLlama repositories on the Hugging Face hub ship it), from the HF `tokenizers` library.

1. Converts tests/fixtures/assets/llama2-tokenizer.model with transformers' LlamaConverter
   (pip install "transformers<4.50" tokenizers sentencepiece protobuf) and gives it the hub's
   normalizer Sequence[Prepend("▁"), Replace(" ", "▁")] and decoder [Replace, ByteFallback, Fuse, Strip].
   (Checked when this script was written: on the whole corpus that full tokenizer.json gives the
   same ids as sentencepiece for every valid-UTF-8 line.)
2. Shrinks it to keep the fixture small: ids < KEEP (specials, the 256 byte pieces and the most
   frequent pieces) and the merges among them.
   -> tests/fixtures/tokenizer/llama2_small_tokenizer.json
3. Ids from HF tokenizers for the first N_LINES corpus lines (invalid UTF-8 replaced by U+FFFD
   first, errors="replace"), special-token strings as plain text:
   -> tests/fixtures/tokenizer/llama2_small.ids
   -> llama2_small.special.ids    special-token strings map to their ids; only the lines that
                                  differ from llama2_small.ids, as "<line index>\t<ids>"
   -> llama2_small.metaspace.ids  the newer conversion: normalizer null, pre-tokenizer
                                  Metaspace(prepend_scheme "first", split false); differing lines only
4. decode(ids, skip_special_tokens=True) for random id sequences (byte pieces, specials mixed in):
   -> tests/fixtures/tokenizer/llama2_small.decode.jsonl
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer
from transformers import LlamaTokenizerFast

sys.path.insert(0, os.path.dirname(__file__))
from tokenizer_corpus import read_corpus  # noqa: E402

FIX = "tests/fixtures/tokenizer"
KEEP = 3000
N_LINES = 400


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/assets/llama2-tokenizer.model"
    fast = LlamaTokenizerFast(vocab_file=model, legacy=True, from_slow=True)
    j = json.loads(fast.backend_tokenizer.to_str())
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    m = j["model"]
    vocab = {t: i for t, i in m["vocab"].items() if i < KEEP}
    merges = []
    for a, b in m["merges"]:
        if a in vocab and b in vocab and a + b in vocab:
            merges.append([a, b])
    m["vocab"], m["merges"] = vocab, merges
    text = json.dumps(j, ensure_ascii=False, separators=(",", ":"))
    with open(f"{FIX}/llama2_small_tokenizer.json", "w", encoding="utf-8") as f:
        f.write(text)

    tok = Tokenizer.from_str(text)
    lines = [d.decode("utf-8", "replace") for d in read_corpus(f"{FIX}/corpus.jsonl")[:N_LINES]]

    def encode_all(t, special):
        t.encode_special_tokens = not special
        return [t.encode(x, add_special_tokens=False).ids for x in lines]

    plain = encode_all(tok, False)
    with open(f"{FIX}/llama2_small.ids", "w") as f:
        for ids in plain:
            f.write(" ".join(map(str, ids)) + "\n")

    def write_diff(path, other):
        with open(path, "w") as f:
            for i, (a, b) in enumerate(zip(plain, other)):
                if a != b:
                    f.write(f"{i}\t" + " ".join(map(str, b)) + "\n")

    write_diff(f"{FIX}/llama2_small.special.ids", encode_all(tok, True))
    j2 = json.loads(text)
    j2["normalizer"] = None
    j2["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    j2["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    write_diff(f"{FIX}/llama2_small.metaspace.ids", encode_all(Tokenizer.from_str(json.dumps(j2)), True))
    tok.encode_special_tokens = True
    rng = random.Random(5)
    with open(f"{FIX}/llama2_small.decode.jsonl", "w", encoding="utf-8") as f:
        for _ in range(300):
            ids = [rng.choice([rng.randint(0, 2), rng.randint(3, 258), rng.randint(3, 258), rng.randint(259, KEEP - 1)])
                   for _ in range(rng.randint(1, 10))]
            f.write(json.dumps({"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)}, ensure_ascii=False) + "\n")
    print(f"{len(vocab)} pieces, {len(merges)} merges, {N_LINES} lines")


if __name__ == "__main__":
    main()
