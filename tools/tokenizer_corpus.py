"""Reads tests/fixtures/tokenizer/corpus.jsonl (see make_tokenizer_corpus.py) as a list of bytes."""
import base64
import json


def read_corpus(path="tests/fixtures/tokenizer/corpus.jsonl"):
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            lines.append(rec["text"].encode("utf-8") if "text" in rec else base64.b64decode(rec["b64"]))
    return lines
