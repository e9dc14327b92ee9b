// Chat templates: format detection and default-system extraction from a template text, and
// rendering + encoding of arbitrary conversations. Input: one selector byte, then fields split at
// 0xFF: the template text, then role/content pairs (the first byte of a role field picks the
// role). The selector picks the format (Llama 2, ChatML, Llama 3, Zephyr or the one detected from
// the template), add_generation_prompt and special_in_content, so that one execution renders and
// encodes once and the fuzzer's mutations explore the combinations (encoding every combination of
// every input with SmolLM2's tokenizer made one execution 20 times as expensive). Message content
// is capped at kMaxContentBytes in all, which bounds an execution's encoding work.
#include "core/error.h"
#include "fuzz_util.h"
#include "tokenizer/chat_template.h"

using namespace llamarun;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  constexpr size_t kMaxContentBytes = 4096;
  const Tokenizer& tok = fuzz::smollm2();  // loaded on libFuzzer's first (empty) input
  if (size == 0) return 0;
  const unsigned sel = data[0] % 20u;  // 5 formats x add_generation_prompt x special_in_content
  const bool gen = (sel / 5) % 2 == 1;
  const bool special_in_content = sel / 10 == 1;
  const auto fields = fuzz::split_fields(data + 1, size - 1);
  const std::string& tmpl = fields[0];
  const ChatFormat detected = detect_chat_format(tmpl, tok);
  static const ChatFormat kFormats[] = {ChatFormat::kLlama2, ChatFormat::kChatML, ChatFormat::kLlama3,
                                        ChatFormat::kZephyr};
  const ChatFormat f = sel % 5 < 4 ? kFormats[sel % 5] : detected;
  std::vector<ChatMessage> msgs;
  static const char* kRoles[] = {"system", "user", "assistant", "tool"};
  size_t budget = kMaxContentBytes;
  for (size_t i = 1; i + 1 < fields.size() && msgs.size() < 16; i += 2) {
    const std::string& content = fields[i + 1];
    msgs.push_back({kRoles[fields[i].empty() ? 1 : uint8_t(fields[i][0]) % 4], content.substr(0, budget)});
    budget -= msgs.back().content.size();
  }
  const ChatOptions opt = chat_options_from_template(f, tmpl);
  try {
    const std::string text = render_chat(f, msgs, gen, opt);
    std::string joined;
    for (const auto& p : render_chat_pieces(f, msgs, gen, opt)) joined += p.text;
    if (joined != text) __builtin_trap();  // the pieces must add up to the rendered text
    encode_chat(tok, f, msgs, gen, opt, special_in_content);
  } catch (const Error&) {
  }
  return 0;
}
