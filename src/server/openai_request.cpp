#include "server/openai_request.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <unordered_set>

#include "core/error.h"
#include "core/utf8.h"
#include "server/api_error.h"
#include "tokenizer/tokenizer.h"

namespace llamarun::server {

using nlohmann::json;

namespace {

constexpr int kMaxDepth = 64;
constexpr size_t kMaxLogitBias = 1024;
constexpr size_t kMaxPrompts = 64;

[[noreturn]] void bad(const std::string& param, const std::string& msg) { throw ApiError(400, msg, param); }

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "an unsupported value";
  }
}

// A short rendering of a value for messages.
std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

bool present(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// An integer field in [lo, hi]; def when absent or null.
int64_t get_int(const json& body, const char* key, int64_t lo, int64_t hi, int64_t def) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return def;
  const json& v = *it;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(hi) || (lo > 0 && u < uint64_t(lo)))
      bad(key, std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                   ", got " + std::to_string(u));
    return int64_t(u);
  }
  if (!v.is_number_integer())
    bad(key, std::string(key) + " must be an integer, got " + type_name(v) + " " + show(v));
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(key, std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                 ", got " + std::to_string(x));
  return x;
}

std::string fmt_num(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// A number field in [lo, hi] (lo_open: lo excluded); def when absent or null.
double get_num(const json& body, const char* key, double lo, double hi, double def, bool lo_open = false) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return def;
  if (!it->is_number())
    bad(key, std::string(key) + " must be a number, got " + type_name(*it) + " " + show(*it));
  double x = it->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
    bad(key, std::string(key) + " must be in " + (lo_open ? "(" : "[") + fmt_num(lo) + ", " + fmt_num(hi) +
                 "], got " + fmt_num(x));
  return x;
}

bool get_bool(const json& body, const char* key, bool def) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return def;
  if (!it->is_boolean())
    bad(key, std::string(key) + " must be a boolean, got " + type_name(*it) + " " + show(*it));
  return it->get<bool>();
}

void check_string_utf8(const std::string& s, const std::string& what) {
  size_t at = utf8_find_invalid(s);
  if (at != std::string::npos) bad(what, what + " is not valid UTF-8 (byte " + std::to_string(at) + ")");
}

std::vector<int32_t> id_array(const json& v, int vocab, const std::string& what) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& e = v[i];
    if (!e.is_number_integer())
      bad(what, what + "[" + std::to_string(i) + "] must be a token id (integer), got " + type_name(e));
    if (e.is_number_unsigned() ? e.get<uint64_t>() >= uint64_t(vocab)
                               : (e.get<int64_t>() < 0 || e.get<int64_t>() >= vocab))
      bad(what, what + "[" + std::to_string(i) + "] = " + show(e) + " is outside the vocabulary [0, " +
                    std::to_string(vocab) + ")");
    ids.push_back(int32_t(e.get<int64_t>()));
  }
  return ids;
}

// A 400 when the tokenizer would silently drop part of `text` (a byte without a token).
void check_encodable(const std::string& text, const Tokenizer& tok, const std::string& what) {
  const size_t at = tok.find_unencodable(text);
  if (at == std::string::npos) return;
  size_t b = at;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80 && at - b < 3) --b;
  const auto c = static_cast<unsigned char>(text[b]);
  const size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[at]));
  bad(what, what + " holds '" + quote_text(std::string_view(text).substr(b, len), 8) + "' at byte " +
                std::to_string(b) + ": this model's vocabulary has no token for its byte " + hex +
                ", so the text cannot be tokenized without losing it");
}

std::vector<int32_t> encode_text(const std::string& text, const ApiContext& ctx, bool add_special) {
  std::vector<int32_t> ids;
  const Tokenizer& tok = *ctx.tok;
  check_encodable(text, tok, "prompt");
  if (add_special && tok.add_bos() && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  // Special-token strings in a raw prompt map to their ids, as Hugging Face tokenizers and vLLM do.
  auto body = tok.encode(text, /*parse_special=*/true);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<ChatMessage> parse_messages(const json& body, const Tokenizer* tok) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) bad("messages", "messages is required");
  if (!it->is_array()) bad("messages", "messages must be an array, got " + type_name(*it));
  if (it->empty()) bad("messages", "messages is empty: give at least one message");
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad("messages", where + " must be an object, got " + type_name(m));
    auto r = m.find("role");
    if (r == m.end() || !r->is_string()) bad("messages", where + ".role must be a string");
    std::string role = r->get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      bad("messages",
          where + ".role '" + quote_text(role, 40) + "' is not supported (system, user, assistant)");
    std::string content;
    auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      if (role != "assistant") bad("messages", where + ".content is required");
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      for (size_t k = 0; k < c->size(); ++k) {
        const json& part = (*c)[k];
        auto ty = part.is_object() ? part.find("type") : part.end();
        if (!part.is_object() || ty == part.end() || !ty->is_string() || *ty != "text")
          bad("messages",
              where + ".content[" + std::to_string(k) + "] must be {\"type\": \"text\", \"text\": ...}");
        auto tx = part.find("text");
        if (tx == part.end() || !tx->is_string())
          bad("messages", where + ".content[" + std::to_string(k) + "].text must be a string");
        content += tx->get<std::string>();
      }
    } else {
      bad("messages", where + ".content must be a string or an array of text parts, got " + type_name(*c));
    }
    check_string_utf8(content, where + ".content");
    if (tok) check_encodable(content, *tok, where + ".content");
    msgs.push_back({role, std::move(content)});
  }
  return msgs;
}

std::vector<int32_t> render_messages(const std::vector<ChatMessage>& msgs, const ApiContext& ctx,
                                     bool gen_prompt) {
  try {
    return encode_chat(*ctx.tok, ctx.chat_format, msgs, gen_prompt, ctx.chat_options, ctx.special_in_content);
  } catch (const Error& e) {
    bad("messages", e.what());
  }
}

void check_model(const json& body, const ApiContext& ctx) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return;
  if (!it->is_string()) bad("model", "model must be a string, got " + type_name(*it));
  const std::string m = it->get<std::string>();
  if (m != ctx.model_name)
    throw ApiError(
        404, "The model '" + quote_text(m) + "' does not exist; this server serves '" + ctx.model_name + "'",
        "model", "not_found_error");
}

// The fields common to both endpoints.
void parse_common(const json& body, const ApiContext& ctx, CompletionJob& job) {
  check_model(body, ctx);
  SamplingParams& p = job.params;
  job.stream = get_bool(body, "stream", false);
  if (present(body, "stream_options")) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "stream_options must be an object, got " + type_name(so));
    if (!job.stream) bad("stream_options", "stream_options is only allowed when stream is true");
    job.include_usage = get_bool(so, "include_usage", false);
  }
  job.n = int(get_int(body, "n", 1, ctx.max_n, 1));
  if (present(body, "best_of") && get_int(body, "best_of", 1, ctx.max_n, 1) != job.n)
    bad("best_of", "best_of different from n is not supported");
  p.temperature = float(get_num(body, "temperature", 0, 2, 1.0));
  p.top_p = float(get_num(body, "top_p", 0, 1, 1.0, /*lo_open=*/true));
  p.top_k = int(get_int(body, "top_k", -1, std::numeric_limits<int32_t>::max(), 0));
  p.min_p = float(get_num(body, "min_p", 0, 1, 0.0));
  p.repetition_penalty = float(get_num(body, "repetition_penalty", 0, 10, 1.0, /*lo_open=*/true));
  p.presence_penalty = float(get_num(body, "presence_penalty", -2, 2, 0.0));
  p.frequency_penalty = float(get_num(body, "frequency_penalty", -2, 2, 0.0));
  p.ignore_eos = get_bool(body, "ignore_eos", false);
  if (present(body, "seed")) {
    const json& s = body["seed"];
    if (!s.is_number_integer()) bad("seed", "seed must be an integer, got " + type_name(s) + " " + show(s));
    p.seed = s.is_number_unsigned() ? s.get<uint64_t>() : uint64_t(s.get<int64_t>());
  }
  if (present(body, "stop")) {
    const json& s = body["stop"];
    if (s.is_string()) {
      p.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > size_t(SamplingParams::kMaxStopStrings))
        bad("stop", "stop has " + std::to_string(s.size()) + " strings; at most " +
                        std::to_string(SamplingParams::kMaxStopStrings) + " are allowed");
      for (size_t i = 0; i < s.size(); ++i) {
        if (!s[i].is_string())
          bad("stop", "stop[" + std::to_string(i) + "] must be a string, got " + type_name(s[i]));
        p.stop.push_back(s[i].get<std::string>());
      }
    } else {
      bad("stop", "stop must be a string or an array of strings, got " + type_name(s));
    }
    for (size_t i = 0; i < p.stop.size(); ++i) {
      if (p.stop[i].empty()) bad("stop", "stop[" + std::to_string(i) + "] is an empty string");
      if (p.stop[i].size() > SamplingParams::kMaxStopBytes)
        bad("stop", "stop[" + std::to_string(i) + "] is " + std::to_string(p.stop[i].size()) +
                        " bytes; at most " + std::to_string(SamplingParams::kMaxStopBytes) + " are allowed");
    }
  }
  if (present(body, "logit_bias")) {
    const json& lb = body["logit_bias"];
    if (!lb.is_object())
      bad("logit_bias", "logit_bias must be an object {\"token id\": bias}, got " + type_name(lb));
    if (lb.size() > kMaxLogitBias)
      bad("logit_bias", "logit_bias has " + std::to_string(lb.size()) + " entries; at most " +
                            std::to_string(kMaxLogitBias) + " are allowed");
    for (auto it = lb.begin(); it != lb.end(); ++it) {
      const std::string& key = it.key();
      long long id = -1;
      size_t used = 0;
      bool ok = !key.empty() && key.size() <= 12;
      if (ok) {
        try {
          id = std::stoll(key, &used);
        } catch (...) {
          ok = false;
        }
      }
      if (!ok || used != key.size())
        bad("logit_bias", "logit_bias key '" + quote_text(key, 40) + "' is not a token id (an integer)");
      if (id < 0 || id >= ctx.vocab_size)
        bad("logit_bias", "logit_bias token id " + key + " is outside the vocabulary [0, " +
                              std::to_string(ctx.vocab_size) + ")");
      if (!it->is_number())
        bad("logit_bias", "logit_bias[" + key + "] must be a number, got " + type_name(*it));
      double b = it->get<double>();
      if (!std::isfinite(b) || b < -100 || b > 100)
        bad("logit_bias", "logit_bias[" + key + "] must be in [-100, 100], got " + fmt_num(b));
      p.logit_bias[int32_t(id)] = float(b);
    }
  }
  for (const char* unsupported : {"tools", "functions", "tool_choice", "function_call"})
    if (present(body, unsupported) && !(body[unsupported].is_array() && body[unsupported].empty()) &&
        !(body[unsupported].is_string() && body[unsupported] == "none"))
      bad(unsupported, std::string(unsupported) + " is not supported by this server");
  if (present(body, "response_format")) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || !rf.contains("type") || rf["type"] != "text")
      bad("response_format", "only response_format {\"type\": \"text\"} is supported");
  }
}

// max_tokens (or max_completion_tokens), then the context check, then validate().
void finish(const json& body, const ApiContext& ctx, CompletionJob& job, int default_max) {
  const char* key = present(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  size_t longest = 0;
  for (const auto& pr : job.prompts) longest = std::max(longest, pr.size());
  if (longest >= size_t(ctx.max_model_len))
    bad(job.chat ? "messages" : "prompt",
        "the prompt has " + std::to_string(longest) + " tokens but the context window is " +
            std::to_string(ctx.max_model_len) + " tokens (prompt + max_tokens must fit)");
  job.max_tokens_given = present(body, key);
  int64_t mt = get_int(body, key, 1, ctx.max_model_len, default_max > 0 ? default_max : 1);
  if (!job.max_tokens_given) {
    // The default fits what this server can hold: the context window and the KV cache (as vLLM's
    // default is the remaining context).
    int64_t room = ctx.max_model_len;
    if (ctx.kv_capacity_tokens > 0 && ctx.kv_capacity_tokens < room) {
      room = ctx.kv_capacity_tokens;
      if (int64_t(longest) >= room)
        bad(job.chat ? "messages" : "prompt", "the prompt has " + std::to_string(longest) +
                                                  " tokens but the KV cache holds " + std::to_string(room) +
                                                  " tokens (prompt + max_tokens must fit)");
    }
    mt = std::min<int64_t>(mt, room - int64_t(longest));
  }
  if (int64_t(longest) + mt > ctx.max_model_len)
    bad(key, "the prompt (" + std::to_string(longest) + " tokens) plus " + key + " (" + std::to_string(mt) +
                 ") is " + std::to_string(longest + mt) + " tokens, beyond the context window of " +
                 std::to_string(ctx.max_model_len) + " tokens");
  job.params.max_tokens = int(mt);
  try {
    validate(job.params, ctx.vocab_size);
  } catch (const Error& e) {
    std::string m = e.what();
    std::string param;
    if (m.rfind("sampling: ", 0) == 0) {
      m = m.substr(10);
      size_t end = m.find_first_of(" [");
      param = m.substr(0, end);
    }
    bad(param, m);
  }
}

}  // namespace

json parse_json_body(const std::string& body) {
  if (body.empty()) bad("", "the request body is empty; send a JSON object");
  size_t at = utf8_find_invalid(body);
  if (at != std::string::npos)
    bad("", "the request body is not valid UTF-8 (first invalid byte at offset " + std::to_string(at) + ")");
  // Nesting depth, outside strings.
  int depth = 0;
  bool in_str = false, esc = false;
  for (char ch : body) {
    if (in_str) {
      if (esc)
        esc = false;
      else if (ch == '\\')
        esc = true;
      else if (ch == '"')
        in_str = false;
      continue;
    }
    if (ch == '"')
      in_str = true;
    else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth) bad("", "the JSON nests deeper than " + std::to_string(kMaxDepth) + " levels");
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  // The JSON parser stops at a NUL byte as at the end of input; none is valid in JSON text (a NUL
  // inside a string must be written \u0000), so one means trailing bytes or a broken body.
  if (size_t nul = body.find('\0'); nul != std::string::npos)
    bad("", "malformed JSON: a NUL byte at offset " + std::to_string(nul) +
                " (JSON text has none; trailing bytes after the value are not allowed)");
  // Duplicate keys in an object are refused: parsers disagree on which one wins (last here, first
  // elsewhere), so a proxy and this server could read different requests.
  std::vector<std::unordered_set<std::string>> keys;  // per open object
  std::string dup;
  auto cb = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (ev == json::parse_event_t::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && dup.empty()) dup = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(body, cb);
  } catch (const json::exception& e) {
    std::string m = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> drop the tag.
    size_t p = m.find("] ");
    if (p != std::string::npos) m = m.substr(p + 2);
    bad("", "malformed JSON: " + m);
  }
  if (!dup.empty()) bad(dup, "duplicate key '" + quote_text(dup, 60) + "' in the request JSON");
  if (!j.is_object()) bad("", "the request body must be a JSON object, got " + type_name(j));
  return j;
}

CompletionJob parse_completion(const json& body, const ApiContext& ctx) {
  CompletionJob job;
  parse_common(body, ctx, job);
  if (get_bool(body, "echo", false)) bad("echo", "echo is not supported by this server");
  if (present(body, "suffix")) bad("suffix", "suffix is not supported by this server");
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) bad("prompt", "prompt is required");
  const json& pr = *it;
  if (pr.is_string()) {
    if (pr.get_ref<const std::string&>().empty()) bad("prompt", "prompt is empty");
    job.prompts.push_back(encode_text(pr.get<std::string>(), ctx, true));
  } else if (pr.is_array()) {
    if (pr.empty()) bad("prompt", "prompt is an empty array");
    if (pr[0].is_number_integer()) {
      job.prompts.push_back(id_array(pr, ctx.vocab_size, "prompt"));
    } else {
      if (pr.size() > kMaxPrompts)
        bad("prompt", "prompt has " + std::to_string(pr.size()) + " entries; at most " +
                          std::to_string(kMaxPrompts) + " are allowed");
      for (size_t i = 0; i < pr.size(); ++i) {
        const std::string what = "prompt[" + std::to_string(i) + "]";
        if (pr[i].is_string()) {
          if (pr[i].get_ref<const std::string&>().empty()) bad("prompt", what + " is empty");
          job.prompts.push_back(encode_text(pr[i].get<std::string>(), ctx, true));
        } else if (pr[i].is_array()) {
          if (pr[i].empty()) bad("prompt", what + " is an empty array");
          job.prompts.push_back(id_array(pr[i], ctx.vocab_size, what));
        } else {
          bad("prompt", what + " must be a string or an array of token ids, got " + type_name(pr[i]));
        }
      }
    }
  } else {
    bad("prompt",
        "prompt must be a string, an array of strings or an array of token ids, got " + type_name(pr));
  }
  for (size_t i = 0; i < job.prompts.size(); ++i)
    if (job.prompts[i].empty() ||
        (job.prompts[i].size() == 1 && job.prompts[i][0] == ctx.tok->bos_id() && ctx.tok->add_bos()))
      bad("prompt", "prompt " + std::to_string(i) + " has no tokens");
  if (job.prompts.size() * size_t(job.n) > size_t(ctx.max_choices))
    bad("n", std::to_string(job.prompts.size()) + " prompts x n = " + std::to_string(job.n) + " gives " +
                 std::to_string(job.prompts.size() * job.n) + " choices; at most " +
                 std::to_string(ctx.max_choices) + " are allowed");
  if (present(body, "logprobs")) {
    const json& lp = body["logprobs"];
    if (lp.is_boolean()) {
      job.params.logprobs = lp.get<bool>();
    } else {
      int k = int(get_int(body, "logprobs", 0, SamplingParams::kMaxTopLogprobs, 0));
      job.params.logprobs = true;
      job.params.top_logprobs = k;
    }
  }
  finish(body, ctx, job, 16);
  return job;
}

CompletionJob parse_chat_completion(const json& body, const ApiContext& ctx) {
  CompletionJob job;
  job.chat = true;
  parse_common(body, ctx, job);
  std::vector<ChatMessage> msgs = parse_messages(body, ctx.tok);
  job.prompts.push_back(render_messages(msgs, ctx, true));
  if (job.prompts[0].empty()) bad("messages", "the messages render to an empty prompt");
  job.params.logprobs = get_bool(body, "logprobs", false);
  job.params.top_logprobs = int(get_int(body, "top_logprobs", 0, SamplingParams::kMaxTopLogprobs, 0));
  if (job.params.top_logprobs > 0 && !job.params.logprobs)
    bad("top_logprobs", "top_logprobs needs logprobs set to true");
  finish(body, ctx, job, ctx.max_model_len);
  return job;
}

std::vector<int32_t> parse_tokenize(const json& body, const ApiContext& ctx) {
  check_model(body, ctx);
  const bool has_prompt = present(body, "prompt"), has_msgs = present(body, "messages");
  if (has_prompt == has_msgs) bad("prompt", "give exactly one of prompt (a string) or messages (an array)");
  if (has_prompt) {
    const json& p = body["prompt"];
    if (!p.is_string()) bad("prompt", "prompt must be a string, got " + type_name(p));
    return encode_text(p.get<std::string>(), ctx, get_bool(body, "add_special_tokens", true));
  }
  return render_messages(parse_messages(body, ctx.tok), ctx, get_bool(body, "add_generation_prompt", true));
}

std::vector<int32_t> parse_detokenize(const json& body, const ApiContext& ctx) {
  check_model(body, ctx);
  auto it = body.find("tokens");
  if (it == body.end() || it->is_null()) bad("tokens", "tokens is required");
  if (!it->is_array()) bad("tokens", "tokens must be an array of token ids, got " + type_name(*it));
  return id_array(*it, ctx.vocab_size, "tokens");
}

}  // namespace llamarun::server
