#!/usr/bin/python3
"""Golden ids for the SentencePiece (Llama 2) tokenizer, from the `sentencepiece` library itself.

Run with Debian's python (python3-sentencepiece): /usr/bin/python3 tools/make_tokenizer_goldens.py
Reads  tests/fixtures/tokenizer/corpus.jsonl and tests/fixtures/assets/llama2-tokenizer.model
       (or the path given as argv[1]).
Writes tests/fixtures/tokenizer/llama2_spm.ids          one line per corpus line: space-separated ids
                                                        (encode without BOS/EOS)
       tests/fixtures/tokenizer/llama2_spm.decode.jsonl {"ids": [...], "text": sp.decode(ids)} for the
                                                        corpus ids and for random id sequences (byte
                                                        tokens, control tokens, unk mixed in)
"""
import json
import os
import random
import sys

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(__file__))
from tokenizer_corpus import read_corpus  # noqa: E402

FIX = "tests/fixtures/tokenizer"


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/assets/llama2-tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=model)
    corpus = read_corpus(f"{FIX}/corpus.jsonl")
    all_ids = []
    with open(f"{FIX}/llama2_spm.ids", "w") as f:
        for data in corpus:
            ids = sp.encode(data)  # bytes in: invalid UTF-8 reaches the normalizer unchanged
            all_ids.append(ids)
            f.write(" ".join(map(str, ids)) + "\n")
    rng = random.Random(7)
    with open(f"{FIX}/llama2_spm.decode.jsonl", "w", encoding="utf-8") as f:
        for ids in all_ids[:100]:
            f.write(json.dumps({"ids": ids, "text": sp.decode(ids)}, ensure_ascii=False) + "\n")
        for _ in range(300):
            ids = []
            for _ in range(rng.randint(1, 12)):
                k = rng.random()
                if k < 0.35:
                    ids.append(rng.randint(3, 258))  # byte tokens <0x00>..<0xFF>
                elif k < 0.45:
                    ids.append(rng.randint(0, 2))  # unk, bos, eos
                else:
                    ids.append(rng.randint(259, sp.get_piece_size() - 1))
            f.write(json.dumps({"ids": ids, "text": sp.decode(ids)}, ensure_ascii=False) + "\n")
    print(f"wrote goldens for {len(corpus)} lines")


if __name__ == "__main__":
    main()
