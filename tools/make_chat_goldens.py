#!/usr/bin/env python3
"""Chat-template goldens: the real Hugging Face jinja chat templates rendered with jinja2 the way
transformers' apply_chat_template does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
raise_exception), for a set of conversations.

Templates: ChatML = tokenizer.chat_template of models/SmolLM2-135M-Instruct.Q4_1.gguf (read here);
Llama 2 = meta-llama/Llama-2-7b-chat-hf tokenizer_config.json; Llama 3 =
meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json; Zephyr = HuggingFaceH4/zephyr-7b-beta
(texts below, as published in those files).

Also the ids Hugging Face tokenizers gives for each rendered text (special tokens matched, no BOS
added), as apply_chat_template(tokenize=True) does: "llama2" cases with the Llama 2 tokenizer
converted by transformers (hub tokenizer.json format), "chatml" cases with
tests/fixtures/tokenizer/smollm2_tokenizer.json.

Writes tests/fixtures/tokenizer/chat_goldens.json:
  {"chatml_template", "cases": [{"format", "messages", "add_generation_prompt",
                                 "text" | "error": true, "ids"?}, ...]}
Usage: python3 tools/make_chat_goldens.py [gguf] [llama2 tokenizer.model]
       (pip install jinja2 gguf tokenizers "transformers<4.50" sentencepiece protobuf)
"""
import json
import sys

from gguf import GGUFReader
from tokenizers import Tokenizer
from transformers import LlamaTokenizerFast
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
          "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
          "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
          "{% endfor %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")

TOKENS = {"llama2": ("<s>", "</s>"), "chatml": ("<|im_start|>", "<|im_end|>"),
          "llama3": ("<|begin_of_text|>", "<|eot_id|>"), "zephyr": ("<s>", "</s>")}

S, U, A = "system", "user", "assistant"
CONVERSATIONS = [
    [(U, "Hello!")],
    [(S, "You are terse."), (U, "What is 2+2?")],
    [(U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a joke.")],
    [(S, "Be nice."), (U, "Hi"), (A, "Hey there."), (U, "Bye")],
    [(U, "  padded with spaces \n\n"), (A, "\n answer with newlines \t "), (U, "\u3000wide space\u00a0")],
    [(S, "  system with spaces  "), (U, "  user  ")],
    [(U, "")],
    [(U, "你好, 🦙! <s> [INST] <|im_start|> tricky </s>")],
    [(U, "line1\nline2\n\nline3")],
    [(S, "sys only")],
    [(U, "a"), (U, "b")],                      # not alternating: Llama 2 raises
    [(A, "assistant first"), (U, "then user")],  # Llama 2 raises
    [(U, "q"), (A, "a")],
    [(U, "\u2028separator\u0085")],
]


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    r = GGUFReader(gguf_path)
    f = r.fields["tokenizer.chat_template"]
    chatml = bytes(f.parts[f.data[0]]).decode("utf-8")
    templates = {"llama2": LLAMA2, "chatml": chatml, "llama3": LLAMA3, "zephyr": ZEPHYR}

    def raise_exception(msg):
        raise TemplateError(msg)

    spm_model = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/assets/llama2-tokenizer.model"
    lj = json.loads(LlamaTokenizerFast(vocab_file=spm_model, legacy=True, from_slow=True).backend_tokenizer.to_str())
    lj["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    encoders = {"llama2": Tokenizer.from_str(json.dumps(lj)),
                "chatml": Tokenizer.from_file("tests/fixtures/tokenizer/smollm2_tokenizer.json")}

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    out = []
    for fmt, src in templates.items():
        tmpl = env.from_string(src)
        bos, eos = TOKENS[fmt]
        for conv in CONVERSATIONS:
            msgs = [{"role": r_, "content": c} for r_, c in conv]
            for gen in (False, True):
                rec = {"format": fmt, "messages": msgs, "add_generation_prompt": gen}
                try:
                    rec["text"] = tmpl.render(messages=msgs, add_generation_prompt=gen, bos_token=bos,
                                              eos_token=eos)
                    if fmt in encoders:
                        rec["ids"] = encoders[fmt].encode(rec["text"], add_special_tokens=False).ids
                except TemplateError:
                    rec["error"] = True
                out.append(rec)
    with open("tests/fixtures/tokenizer/chat_goldens.json", "w", encoding="utf-8") as fo:
        json.dump({"chatml_template": chatml, "cases": out}, fo, ensure_ascii=False, indent=1)
    print(f"wrote {len(out)} cases")


if __name__ == "__main__":
    main()
