#include "tokenizer/chat_template.h"

#include <algorithm>

#include "core/error.h"
#include "core/utf8.h"
#include "formats/weight_map.h"
#include "tokenizer/tokenizer.h"

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

// Appends template text (t) or message content (c) to a piece list, merging neighbours of a kind.
struct Pieces {
  std::vector<ChatPiece> v;
  Pieces& t(const std::string& s) { return add(s, false); }
  Pieces& c(const std::string& s) { return add(s, true); }
  Pieces& add(const std::string& s, bool content) {
    if (s.empty()) return *this;
    if (!v.empty() && v.back().content == content) {
      v.back().text += s;
    } else {
      v.push_back({s, content});
    }
    return *this;
  }
  Pieces& append(const Pieces& o) {
    for (const auto& p : o.v) add(p.text, p.content);
    return *this;
  }
  std::string joined() const {
    std::string out;
    for (const auto& p : v) out += p.text;
    return out;
  }
  // Python's str.strip() applied to the joined text, keeping each byte's kind.
  Pieces stripped() const {
    const std::string all = joined();
    const std::string st = py_strip(all);
    // The removed prefix is whitespace and st starts with none, so st's first occurrence is it.
    const size_t begin = st.empty() ? 0 : all.find(st);
    const size_t end = begin + st.size();
    Pieces out;
    size_t at = 0;
    for (const auto& p : v) {
      const size_t b = std::max(at, begin), e = std::min(at + p.text.size(), end);
      if (b < e) out.add(p.text.substr(b - at, e - b), p.content);
      at += p.text.size();
    }
    return out;
  }
};

Pieces render_llama2(const std::vector<ChatMessage>& msgs) {
  size_t first = 0;
  std::string system;
  bool has_system = false;
  if (!msgs.empty() && msgs[0].role == "system") {
    system = msgs[0].content;
    has_system = true;
    first = 1;
  }
  Pieces out;
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
    Pieces content;
    if (i == first && has_system) content.t("<<SYS>>\n").c(system).t("\n<</SYS>>\n\n");
    content.c(m.content);
    if (m.role == "user") {
      out.t("<s>[INST] ").append(content.stripped()).t(" [/INST]");
    } else {
      out.t(" ").append(content.stripped()).t(" </s>");
    }
  }
  return out;
}

Pieces render_chatml(const std::vector<ChatMessage>& msgs, bool gen, const ChatOptions& opt) {
  Pieces out;
  const std::string def = opt.default_system.value_or(kSmolLmSystem);
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    if (i == 0 && msgs[0].role != "system" && !def.empty()) {
      out.t("<|im_start|>system\n" + def + "<|im_end|>\n");
    }
    out.t("<|im_start|>" + msgs[i].role + "\n").c(msgs[i].content).t("<|im_end|>\n");
  }
  if (gen) out.t("<|im_start|>assistant\n");
  return out;
}

Pieces render_llama3(const std::vector<ChatMessage>& msgs, bool gen) {
  Pieces out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    if (i == 0) out.t("<|begin_of_text|>");
    out.t("<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n")
        .c(py_strip(msgs[i].content))
        .t("<|eot_id|>");
  }
  if (gen) out.t("<|start_header_id|>assistant<|end_header_id|>\n\n");
  return out;
}

Pieces render_zephyr(const std::vector<ChatMessage>& msgs, bool gen) {
  Pieces out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    check_role(msgs[i]);
    out.t("<|" + msgs[i].role + "|>\n").c(msgs[i].content).t("</s>\n");
  }
  if (gen) out.t("<|assistant|>\n");
  return out;
}

Pieces render_pieces(ChatFormat f, const std::vector<ChatMessage>& msgs, bool gen, const ChatOptions& opt) {
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

std::vector<ChatPiece> render_chat_pieces(ChatFormat f, const std::vector<ChatMessage>& msgs, bool gen,
                                          const ChatOptions& opt) {
  return render_pieces(f, msgs, gen, opt).v;
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool gen,
                        const ChatOptions& opt) {
  return render_pieces(f, msgs, gen, opt).joined();
}

void check_chat_content(ChatFormat f, const std::vector<ChatMessage>& msgs) {
  if (f != ChatFormat::kLlama2) return;
  for (size_t i = 0; i < msgs.size(); ++i) {
    for (const char* tag : {"[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"}) {
      if (msgs[i].content.find(tag) != std::string::npos) {
        fail("message ", i, " contains the Llama 2 chat marker '", tag,
             "', which plain text cannot be told apart from (the server option "
             "--allow-special-in-content permits it)");
      }
    }
  }
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, ChatFormat f, const std::vector<ChatMessage>& msgs,
                                 bool gen, const ChatOptions& opt, bool special_in_content) {
  const Pieces p = render_pieces(f, msgs, gen, opt);
  const std::string text = p.joined();
  if (special_in_content) return tok.encode(text, /*parse_special=*/true);
  check_chat_content(f, msgs);
  std::vector<std::pair<size_t, size_t>> spans;
  size_t at = 0;
  for (const auto& piece : p.v) {
    if (!piece.content) spans.emplace_back(at, at + piece.text.size());
    at += piece.text.size();
  }
  return tok.encode_spans(text, spans);
}

std::string gguf_chat_template(const WeightMap& wm) {
  auto it = wm.meta.find("tokenizer.chat_template");
  if (it == wm.meta.end()) return "";
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  fail("metadata 'tokenizer.chat_template' is not a string");
}

}  // namespace llamarun
