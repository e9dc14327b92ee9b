#include "tokenizer/chat_template.h"

#include "core/error.h"
#include "formats/weight_map.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace llamarun {
namespace {

constexpr const char* kSmolLmSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// Python's str.isspace() code points (what jinja's `trim` and str.strip() remove).
bool is_py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Python's str.strip(): removes leading and trailing whitespace characters.
std::string py_strip(const std::string& s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t begin = 0, end = s.size();
  // Leading.
  while (begin < end) {
    const Utf8Scan sc = utf8_scan(p + begin, end - begin);
    if (sc.status != Utf8Status::kValid || !is_py_space(sc.cp)) break;
    begin += sc.len;
  }
  // Trailing: walk back to the start of the last character.
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (p[start] & 0xC0) == 0x80 && end - start < 4) --start;
    const Utf8Scan sc = utf8_scan(p + start, end - start);
    if (sc.status != Utf8Status::kValid || sc.len != end - start || !is_py_space(sc.cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

void check_role(const ChatMessage& m) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant") {
    fail("chat message role '", m.role, "' is not supported (system, user or assistant)");
  }
}

std::string render_llama2(const std::vector<ChatMessage>& msgs) {
  size_t first = 0;
  std::string system;
  bool has_system = false;
  if (!msgs.empty() && msgs[0].role == "system") {
    system = msgs[0].content;
    has_system = true;
    first = 1;
  }
  std::string out;
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    check_role(m);
    const bool expect_user = (i - first) % 2 == 0;
    if ((m.role == "user") != expect_user || m.role == "system") {
      fail(
          "Llama 2 chat: conversation roles must alternate user/assistant/user/assistant/... "
          "(message ",
          i, " is '", m.role, "')");
    }
    std::string content = m.content;
    if (i == first && has_system) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content;
    if (m.role == "user") {
      out.append("<s>[INST] ").append(py_strip(content)).append(" [/INST]");
    } else {
      out.append(" ").append(py_strip(content)).append(" </s>");
    }
  }
  return out;
}

std::string render_chatml(const std::vector<ChatMessage>& msgs, bool gen, const ChatOptions& opt) {
  std::string out;
  const std::string def = opt.default_system.value_or(kSmolLmSystem);
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    if (i == 0 && msgs[0].role != "system" && !def.empty()) {
      out += "<|im_start|>system\n" + def + "<|im_end|>\n";
    }
    out += "<|im_start|>" + msgs[i].role + "\n" + msgs[i].content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    if (i == 0) out += "<|begin_of_text|>";
    out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n" + py_strip(msgs[i].content) +
           "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_zephyr(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    out += "<|" + msgs[i].role + "|>\n" + msgs[i].content + "</s>\n";
  }
  if (gen) out += "<|assistant|>\n";
  return out;
}

}  // namespace

const char* chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::kLlama2:
      return "llama2";
    case ChatFormat::kChatML:
      return "chatml";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kZephyr:
      return "zephyr";
  }
  return "?";
}

ChatFormat detect_chat_format(const std::string& t, const Tokenizer& tok) {
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFormat::kLlama3;
  if (t.find("<|im_start|>") != std::string::npos) return ChatFormat::kChatML;
  if (t.find("[INST]") != std::string::npos) return ChatFormat::kLlama2;
  if (t.find("<|user|>") != std::string::npos) return ChatFormat::kZephyr;
  if (tok.find_token("<|start_header_id|>") >= 0) return ChatFormat::kLlama3;
  if (tok.find_token("<|im_start|>") >= 0) return ChatFormat::kChatML;
  if (std::string(tok.kind()) == "spm") return ChatFormat::kLlama2;
  return ChatFormat::kChatML;
}

ChatOptions chat_options_from_template(ChatFormat f, const std::string& t) {
  ChatOptions opt;
  if (f != ChatFormat::kChatML || t.empty()) return opt;
  const std::string head = "<|im_start|>system\n";
  const size_t a = t.find(head);
  if (a == std::string::npos) {
    opt.default_system = "";
    return opt;
  }
  const size_t b = t.find("<|im_end|>", a + head.size());
  const std::string body = t.substr(a + head.size(), b == std::string::npos ? 0 : b - a - head.size());
  // A literal default only: a template that prints the real system message has a jinja expression.
  opt.default_system = body.find("{{") == std::string::npos && body.find('\'') == std::string::npos &&
                               body.find('+') == std::string::npos
                           ? body
                           : "";
  return opt;
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool gen,
                        const ChatOptions& opt) {
  switch (f) {
    case ChatFormat::kLlama2:
      return render_llama2(msgs);
    case ChatFormat::kChatML:
      return render_chatml(msgs, gen, opt);
    case ChatFormat::kLlama3:
      return render_llama3(msgs, gen);
    case ChatFormat::kZephyr:
      return render_zephyr(msgs, gen);
  }
  fail("unknown chat format");
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, ChatFormat f, const std::vector<ChatMessage>& msgs,
                                 bool gen, const ChatOptions& opt) {
  return tok.encode(render_chat(f, msgs, gen, opt), /*parse_special=*/true);
}

std::string gguf_chat_template(const WeightMap& wm) {
  auto it = wm.meta.find("tokenizer.chat_template");
  if (it == wm.meta.end()) return "";
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  fail("metadata 'tokenizer.chat_template' is not a string");
}

}  // namespace llamarun
