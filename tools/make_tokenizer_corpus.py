#!/usr/bin/env python3
"""Generates tests/fixtures/tokenizer/corpus.jsonl: a fixed-seed corpus of varied lines for the
tokenizer golden tests (prose, code, CJK, emoji, whitespace runs, special-token lookalikes, digit
runs, other scripts, invalid UTF-8 byte sequences).

Format: one JSON object per line: {"text": "..."} when the line is valid UTF-8, else
{"b64": "<base64 of the raw bytes>"}. Lines may contain newlines, tabs and invalid UTF-8.

Usage: python3 tools/make_tokenizer_corpus.py [out_path]
"""
import base64
import json
import random
import sys

SEED = 20261126
N_LINES = 2400

WORDS = ("the quick brown fox jumps over lazy dog a an of to in is was for on that with as by at from "
         "Hello World hello world tokenizer model Llama SmolLM transformer attention inference engine "
         "cache sequence batch token vocabulary merges bytes encode decode stream server request "
         "don't can't won't it's we're they've I'm you'll he'd She'S THEY'RE I'LL Rock'n'roll "
         "naïve café résumé façade coöperate jalapeño Zürich straße Ångström Øresund").split()
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "const x = {a: 1, 'b': [2, 3], \"c\": null};",
    "if __name__ == '__main__':\n    main()",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
    "<div class=\"row\"><span>&nbsp;&amp;</span></div>",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "    indented_with_spaces = True",
    "\t\ttabs_then_code();",
    "x+=1;y-=2;z*=3;w/=4;v%=5;u**=6;t//=7",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.org, root@localhost:~$ ls -la /usr/bin | grep py",
    "{\"key\": \"value\", \"n\": 12345, \"arr\": [1.5e-3, -2, true]}",
    "λx. x ≤ y ∧ y ≥ z → ∀ε>0 ∃δ>0",
    "a_b_c __init__ __dunder__ CamelCaseName snake_case_name kebab-case-name",
]
CJK = "你好世界中文字符测试日本語のテキストです한국어텍스트漢字かなカナ。、「」〜"
OTHER_SCRIPTS = [
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε αβγδεζηθ",
    "مرحبا بالعالم العربية",
    "שלום עולם עברית",
    "नमस्ते दुनिया हिन्दी",
    "สวัสดีชาวโลก ภาษาไทย",
    "Xin chào thế giới Tiếng Việt",
    "ქართული ენა Հայերեն",
    "e\u0301 a\u0300 o\u0308 n\u0303 combining marks",
    "ﬁ ﬂ ＡＢＣ１２３ full-width and ligatures",
]
EMOJI = ["🦙", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🔥", "✨", "🏳️‍🌈", "🧑🏿‍💻", "😂😂😂", "🤖", "🐍",
         "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠜎𠜱𠝹", "\U0010FFFD"]
SPECIALS = ["<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
            "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<0x41>", "<0x0A>",
            "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<repo_name>", "<file_sep>", "<|im_start",
            "im_end|>", "< s >", "<s", "s>", "<|", "|>", "<<", ">>", "▁", "▁▁", "Ġ", "Ċ"]
SPACES = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
          "\u2009", "\u2028", "\u0085", "\u200b", "\u000b", "\u000c", " \t \n"]
INVALID = [b"\xff", b"\xfe", b"\xc0\x80", b"\xc1\xbf", b"\xe4\xbd", b"\xe4", b"\x80", b"\xbf\xbf",
           b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x9f\xa6", b"\xf0\x9f", b"\xf4\x90\x80\x80",
           b"\xf8\x88\x80\x80\x80", b"\xe0\x80\xaf", b"\xc3", b"\xc3(", b"\xe2\x82(", b"\xf0(\x8c\xbc"]


def rand_number(rng):
    k = rng.randint(0, 5)
    if k == 0:
        return str(rng.randint(0, 9))
    if k == 1:
        return str(rng.randint(0, 10**rng.randint(1, 12)))
    if k == 2:
        return "{:,}".format(rng.randint(1000, 10**9))
    if k == 3:
        return "%.*f" % (rng.randint(1, 6), rng.uniform(-1000, 1000))
    if k == 4:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(5, 40)))
    return "%d-%02d-%02d %02d:%02d" % (rng.randint(1900, 2100), rng.randint(1, 12), rng.randint(1, 28),
                                       rng.randint(0, 23), rng.randint(0, 59))


def piece(rng):
    k = rng.randint(0, 11)
    if k <= 3:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    if k == 4:
        return rng.choice(CODE)
    if k == 5:
        return "".join(rng.choice(CJK) for _ in range(rng.randint(1, 15)))
    if k == 6:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if k == 7:
        return rng.choice(SPECIALS)
    if k == 8:
        return rng.choice(SPACES) * rng.randint(1, 3)
    if k == 9:
        return rand_number(rng)
    if k == 10:
        return rng.choice(OTHER_SCRIPTS)
    return "".join(chr(rng.choice([rng.randint(0x21, 0x7e), rng.randint(0xa0, 0x2fff),
                                   rng.randint(0x3000, 0xd7ff), rng.randint(0xe000, 0xfffd),
                                   rng.randint(0x10000, 0x10ffff)])) for _ in range(rng.randint(1, 6)))


def make_line(rng, i):
    kind = i % 10
    parts = [piece(rng) for _ in range(rng.randint(1, 6))]
    seps = ["", " ", " ", " ", "\n", "  ", "\t"]
    text = ""
    for p in parts:
        text += rng.choice(seps) + p if text else p
    data = text.encode("utf-8")
    if kind == 0:  # inject invalid UTF-8 at random positions
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(0, len(data))
            data = data[:pos] + rng.choice(INVALID) + data[pos:]
    elif kind == 1:  # leading whitespace
        data = rng.choice(SPACES).encode("utf-8") * rng.randint(1, 3) + data
    elif kind == 2:  # trailing whitespace
        data = data + rng.choice(SPACES).encode("utf-8") * rng.randint(1, 3)
    elif kind == 3 and rng.random() < 0.3:  # cut in the middle of a multi-byte character
        data = data[:rng.randint(0, len(data))]
    return data


FIXED = [b"", b" ", b"  ", b"\n", b"\t", b"Hello world! \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\xa6\x99",
         b"<s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST]", b"<|im_start|>user\nhi<|im_end|>\n",
         b"<0x41><0x42>", b"1234567890", b"                                ", b"\xff\xfe\xfd",
         b"I'm 'S 's THEY'LL", b"a" * 300, ("ab " * 700).encode(), ("你好" * 300).encode(),
         b"\r\n\r\n\r\n", b"   leading", b"trailing   ", b"x\xe2\x80\xafy \xc2\xa0 z"]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tokenizer/corpus.jsonl"
    rng = random.Random(SEED)
    lines = list(FIXED) + [make_line(rng, i) for i in range(N_LINES - len(FIXED))]
    with open(out, "w", encoding="utf-8") as f:
        for data in lines:
            try:
                rec = {"text": data.decode("utf-8")}
            except UnicodeDecodeError:
                rec = {"b64": base64.b64encode(data).decode("ascii")}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
