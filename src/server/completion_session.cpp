#include "server/completion_session.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/clock.h"
#include "server/api_error.h"
#include "server/json_text.h"
#include "tokenizer/tokenizer.h"

namespace llamarun::server {

using nlohmann::json;

namespace {

// JSON has no -inf: a token the model gave no probability at all gets -9999 (as vLLM does).
double finite_lp(float lp) { return std::isfinite(lp) ? double(lp) : -9999.0; }

std::string dump(const json& j) { return json_text(j); }

constexpr const char* kCutOffMessage =
    "the server is shutting down and stopped this request at its drain deadline before it finished; retry "
    "on another server";

std::string api_reason(const std::string& r) {
  if (r == "cancelled") return "abort";
  return r;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

}  // namespace

CompletionSession::CompletionSession(CompletionJob job, std::shared_ptr<Exchange> ex, const Tokenizer& tok,
                                     std::string id, std::string model, double arrival_s,
                                     ServerMetrics& metrics,
                                     std::function<void(const SessionSummary&)> on_done)
    : job_(std::move(job)),
      ex_(std::move(ex)),
      tok_(tok),
      id_(std::move(id)),
      model_(std::move(model)),
      created_(int64_t(std::time(nullptr))),
      arrival_s_(arrival_s),
      metrics_(metrics),
      on_done_(std::move(on_done)) {
  choices_.resize(job_.prompts.size() * size_t(job_.n));
  for (const auto& p : job_.prompts) prompt_tokens_ += int(p.size());
}

std::string CompletionSession::token_str(int32_t id) const {
  return id >= 0 && id < tok_.vocab_size() ? tok_.token_bytes(id) : std::string();
}

void CompletionSession::begin() {
  if (!job_.stream) return;
  ex_->start_stream(200, "text/event-stream", {{"X-Request-Id", id_}});
  if (job_.chat) {
    // The role comes first, as OpenAI's stream does.
    for (size_t i = 0; i < choices_.size(); ++i) {
      choices_[i].sent_role = true;
      ex_->write("data: " + chunk_json(int(i), "", {}, nullptr, true) + "\n\n");
    }
  }
}

std::string CompletionSession::chunk_json(int index, const std::string& delta,
                                          const std::vector<TokenOutput>& toks, const char* finish_reason,
                                          bool role) {
  json c;
  c["index"] = index;
  json lp = nullptr;
  if (job_.params.wants_logprobs() && !toks.empty()) {
    if (job_.chat) {
      json content = json::array();
      for (const auto& t : toks) {
        std::string s = token_str(t.id);
        json top = json::array();
        for (const auto& a : t.top) {
          std::string as = token_str(a.id);
          top.push_back({{"token", as}, {"logprob", finite_lp(a.logprob)}, {"bytes", bytes_of(as)}});
        }
        content.push_back({{"token", s},
                           {"logprob", finite_lp(t.logprob.logprob)},
                           {"bytes", bytes_of(s)},
                           {"top_logprobs", top}});
      }
      lp = {{"content", content}};
    } else {
      json tokens = json::array(), tlp = json::array(), top = json::array(), off = json::array();
      Choice& ch = choices_[index];
      for (const auto& t : toks) {
        tokens.push_back(token_str(t.id));
        tlp.push_back(finite_lp(t.logprob.logprob));
        json m = json::object();
        for (const auto& a : t.top) m[token_str(a.id)] = finite_lp(a.logprob);
        top.push_back(job_.params.top_logprobs > 0 ? m : json(nullptr));
        // A token whose bytes end inside a character adds no text yet (the stream decoder holds
        // them): the next token starts after those held bytes, not at the same offset.
        off.push_back(ch.text_offset + ch.held_bytes);
        if (t.text.empty()) {
          ch.held_bytes += token_str(t.id).size();
        } else {
          ch.text_offset += t.text.size();
          ch.held_bytes = 0;
        }
      }
      lp = {{"tokens", tokens}, {"token_logprobs", tlp}, {"top_logprobs", top}, {"text_offset", off}};
    }
  }
  if (job_.chat) {
    json d = json::object();
    if (role) d["role"] = "assistant";
    if (role || !delta.empty()) d["content"] = delta;
    c["delta"] = d;
  } else {
    c["text"] = delta;
  }
  c["logprobs"] = lp;
  c["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  json j{{"id", id_},
         {"object", job_.chat ? "chat.completion.chunk" : "text_completion"},
         {"created", created_},
         {"model", model_},
         {"choices", json::array({c})}};
  return dump(j);
}

void CompletionSession::on_output(int prompt_index, const RequestOutput& o) {
  if (done_) return;
  const size_t idx = size_t(prompt_index) * job_.n + size_t(o.choice);
  if (idx >= choices_.size() || choices_[idx].finished) return;
  Choice& ch = choices_[idx];
  const double t = now_seconds();
  std::string delta;
  for (const auto& tk : o.tokens) delta += tk.text;
  if (!o.tokens.empty()) {
    if (first_token_s_ < 0) {
      first_token_s_ = t;
      metrics_.ttft.observe(t - arrival_s_);
    }
    if (ch.last_token_s > 0) {
      const double gap = (t - ch.last_token_s) / double(o.tokens.size());
      for (size_t k = 0; k < o.tokens.size(); ++k) metrics_.itl.observe(gap);
    }
    ch.last_token_s = t;
    ch.completion_tokens += int(o.tokens.size());
  }
  if (o.finished) {
    ch.finished = true;
    ch.finish_reason = api_reason(o.finish_reason);
    if (o.completion_tokens > 0) ch.completion_tokens = o.completion_tokens;
    if (size_t(prompt_index) * job_.n == idx) cached_tokens_ += o.cached_prompt_tokens;
    ++finished_;
  }
  // "cancelled" reaches a session whose client is still connected only when the server cut the
  // request off (the drain deadline of a shutdown): that is an error, not a finished completion.
  const bool cut_off = o.finished && o.finish_reason == "cancelled";
  if (cut_off) cut_off_ = true;
  if (job_.stream) {
    if (cut_off) {
      if (!sent_cut_off_event_) {
        sent_cut_off_event_ = true;
        ex_->write("data: " + error_body(503, kCutOffMessage, "", "service_unavailable") + "\n\n");
      }
    } else if (o.finished && o.finish_reason == "error") {
      ex_->write("data: " + error_body(500, "generation failed: " + o.error, "", "server_error") + "\n\n");
    } else if (!delta.empty() || (job_.params.wants_logprobs() && !o.tokens.empty()) || o.finished) {
      const std::string fr = ch.finish_reason;
      ex_->write("data: " + chunk_json(int(idx), delta, o.tokens, o.finished ? fr.c_str() : nullptr, false) +
                 "\n\n");
    }
  } else {
    ch.text += delta;
    if (job_.params.wants_logprobs())
      for (const auto& tk : o.tokens) ch.tokens.push_back(tk);
    if (o.finished && o.finish_reason == "error" && !ex_->started()) {
      HttpResponse r;
      r.status = 500;
      r.body = error_body(500, "generation failed: " + o.error, "", "server_error");
      ex_->respond(std::move(r));
    }
  }
  if (finished_ == int(choices_.size())) finish_all();
}

std::string CompletionSession::final_json() {
  json choices = json::array();
  int completion = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    Choice& ch = choices_[i];
    completion += ch.completion_tokens;
    json c;
    c["index"] = int(i);
    json lp = nullptr;
    if (job_.params.wants_logprobs()) {
      ch.text_offset = 0;
      ch.held_bytes = 0;
      json parsed = json::parse(chunk_json(int(i), "", ch.tokens, nullptr, false));
      lp = parsed["choices"][0]["logprobs"];
      if (lp.is_null()) lp = job_.chat ? json{{"content", json::array()}} : json(nullptr);
    }
    if (job_.chat)
      c["message"] = {{"role", "assistant"}, {"content", ch.text}};
    else
      c["text"] = ch.text;
    c["logprobs"] = lp;
    c["finish_reason"] = ch.finish_reason;
    choices.push_back(c);
  }
  json usage{{"prompt_tokens", prompt_tokens_},
             {"completion_tokens", completion},
             {"total_tokens", prompt_tokens_ + completion},
             {"prompt_tokens_details", {{"cached_tokens", cached_tokens_}}}};
  json j{{"id", id_},           {"object", job_.chat ? "chat.completion" : "text_completion"},
         {"created", created_}, {"model", model_},
         {"choices", choices},  {"usage", usage}};
  return dump(j);
}

void CompletionSession::finish_all() {
  SessionSummary s;
  s.prompt_tokens = prompt_tokens_;
  for (const auto& ch : choices_) s.completion_tokens += ch.completion_tokens;
  s.cached_tokens = cached_tokens_;
  s.ttft_s = first_token_s_ >= 0 ? first_token_s_ - arrival_s_ : -1;
  s.finish_reason = choices_.empty() ? "" : choices_[0].finish_reason;
  metrics_.e2e.observe(now_seconds() - arrival_s_);
  for (const auto& ch : choices_) metrics_.finished_requests[ch.finish_reason]++;
  if (job_.stream) {
    if (job_.include_usage) {
      json j{{"id", id_},
             {"object", job_.chat ? "chat.completion.chunk" : "text_completion"},
             {"created", created_},
             {"model", model_},
             {"choices", json::array()},
             {"usage",
              {{"prompt_tokens", s.prompt_tokens},
               {"completion_tokens", s.completion_tokens},
               {"total_tokens", s.prompt_tokens + s.completion_tokens},
               {"prompt_tokens_details", {{"cached_tokens", cached_tokens_}}}}}};
      ex_->write("data: " + dump(j) + "\n\n");
    }
    // A stream the server cut off ends after its error event, without [DONE].
    if (!cut_off_) ex_->write("data: [DONE]\n\n");
    ex_->end();
    s.status = cut_off_ ? 503 : 200;
  } else if (!ex_->started() && cut_off_ && s.completion_tokens == 0) {
    HttpResponse r;
    r.status = 503;
    r.body = error_body(503, kCutOffMessage, "", "service_unavailable");
    r.headers.push_back({"X-Request-Id", id_});
    ex_->respond(std::move(r));
    s.status = 503;
  } else if (!ex_->started()) {
    HttpResponse r;
    r.body = final_json();
    r.headers.push_back({"X-Request-Id", id_});
    ex_->respond(std::move(r));
    s.status = 200;
  } else {
    s.status = ex_->status();
  }
  done_ = true;
  if (on_done_) on_done_(s);
}

void CompletionSession::client_gone() {
  if (done_) return;
  done_ = true;
  SessionSummary s;
  s.status = 499;
  s.prompt_tokens = prompt_tokens_;
  for (const auto& ch : choices_) s.completion_tokens += ch.completion_tokens;
  s.ttft_s = first_token_s_ >= 0 ? first_token_s_ - arrival_s_ : -1;
  s.finish_reason = "client_disconnected";
  metrics_.client_disconnects++;
  if (on_done_) on_done_(s);
}

}  // namespace llamarun::server
