#!/usr/bin/env python3
"""Which corpus lines Hugging Face tokenizers cannot encode without losing text, for
tests/fixtures/tokenizer/smollm2_tokenizer.json (SmolLM2's byte-level vocabulary lacks some byte
symbols, e.g. 0xF1/0xF2, the lead bytes of U+40000-U+BFFFF, and control characters such as 0x04):
a line is lossy when decode(encode(text)) != text. Only valid UTF-8 lines are considered (the
server refuses invalid UTF-8 before tokenizing).

Writes tests/fixtures/tokenizer/smollm2.lossy: one line per valid corpus line, "index<TAB>0|1".
Usage: python3 tools/make_lossy_goldens.py   (pip install tokenizers)
"""
import json

from tokenizers import Tokenizer

FIX = "tests/fixtures/tokenizer/"


def main():
    tok = Tokenizer.from_file(FIX + "smollm2_tokenizer.json")
    tok.encode_special_tokens = True  # special-token strings are text here, as in encode(text)
    out = []
    with open(FIX + "corpus.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            if "text" not in d:
                continue
            t = d["text"]
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                continue
            ids = tok.encode(t, add_special_tokens=False).ids
            out.append(f"{i}\t{int(tok.decode(ids, skip_special_tokens=False) != t)}\n")
    with open(FIX + "smollm2.lossy", "w") as fo:
        fo.writelines(out)
    print(f"{len(out)} lines, {sum(l.endswith(chr(9) + '1' + chr(10)) for l in out)} lossy")


if __name__ == "__main__":
    main()
