#!/usr/bin/env python3
"""Goldens for USER_DEFINED and UNUSED sentencepiece pieces, from the `sentencepiece` library.

Takes tests/fixtures/assets/llama2-tokenizer.model and modifies it (tests/test_tokenizer_spm.cpp
applies the same changes to its parsed model):
  - piece "the" (a NORMAL piece) becomes USER_DEFINED;
  - USER_DEFINED pieces appended (score 0): see APPENDED;
  - pieces "▁world" and "ing" become UNUSED (merged through, then split back).
Encodes the first N_LINES corpus lines with Debian's sentencepiece (/usr/bin/python3), as the
other SPM goldens.
-> tests/fixtures/tokenizer/llama2_userdef.ids

Usage: python3 tools/make_spm_user_defined_goldens.py   (pip: sentencepiece protobuf, for the
model proto; the encoding runs in /usr/bin/python3)
"""
import os
import subprocess
import sys
import tempfile

from sentencepiece import sentencepiece_model_pb2 as pb

FIX = "tests/fixtures/tokenizer"
N_LINES = 600
TO_USER_DEFINED = ["the"]
APPENDED = ["<|user|>", "[INST]", "\U0001F999", "123"]
TO_UNUSED = ["\u2581world", "ing"]

ENCODE = r'''
import sys
sys.path.insert(0, sys.argv[3])
import sentencepiece as spm
from tokenizer_corpus import read_corpus
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
with open(sys.argv[2], "w") as f:
    for data in read_corpus("tests/fixtures/tokenizer/corpus.jsonl")[:int(sys.argv[4])]:
        f.write(" ".join(map(str, sp.encode(data))) + "\n")
'''


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/assets/llama2-tokenizer.model"
    m = pb.ModelProto()
    with open(model, "rb") as f:
        m.ParseFromString(f.read())
    index = {p.piece: i for i, p in enumerate(m.pieces)}
    for p in TO_USER_DEFINED:
        m.pieces[index[p]].type = pb.ModelProto.SentencePiece.USER_DEFINED
    for p in TO_UNUSED:
        m.pieces[index[p]].type = pb.ModelProto.SentencePiece.UNUSED
    for p in APPENDED:
        m.pieces.add(piece=p, score=0.0, type=pb.ModelProto.SentencePiece.USER_DEFINED)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "modified.model")
        with open(path, "wb") as f:
            f.write(m.SerializeToString())
        subprocess.run(["/usr/bin/python3", "-c", ENCODE, path, f"{FIX}/llama2_userdef.ids",
                        os.path.dirname(os.path.abspath(__file__)), str(N_LINES)], check=True)
    print(f"wrote {N_LINES} lines")


if __name__ == "__main__":
    main()
