// One /v1/completions or /v1/chat/completions request in flight: collects the engine's outputs for
// each choice and writes them out as OpenAI JSON, either as server-sent events (stream: true) or as
// one response at the end. Loop thread only (engine callbacks reach it through HttpServer::post).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"

namespace llamarun {
class Tokenizer;
}

namespace llamarun::server {

struct SessionSummary {
  int status = 200;  // 499 when the client went away first
  int prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  double ttft_s = -1;
  std::string finish_reason;  // of the first choice
};

class CompletionSession {
 public:
  // on_done: called once when every choice has finished or the client went away.
  CompletionSession(CompletionJob job, std::shared_ptr<Exchange> ex, const Tokenizer& tok, std::string id,
                    std::string model, double arrival_s, ServerMetrics& metrics,
                    std::function<void(const SessionSummary&)> on_done);

  const CompletionJob& job() const { return job_; }
  // After the engine accepted every prompt: sends the stream headers (stream: true).
  void begin();
  // An engine output for prompt `prompt_index`.
  void on_output(int prompt_index, const RequestOutput& o);
  // The client went away: stop writing; on_done runs now.
  void client_gone();
  bool done() const { return done_; }
  // The request was refused after part of it was queued: ignore everything from now on.
  void abandon() { done_ = true; }

 private:
  struct Choice {
    std::string text;
    std::string finish_reason;
    bool finished = false;
    bool sent_role = false;
    int completion_tokens = 0;
    std::vector<TokenOutput> tokens;  // kept for logprobs of non-streamed responses
    size_t text_offset = 0;           // bytes of text emitted so far (logprobs text_offset)
    size_t held_bytes = 0;            // bytes of tokens since then whose character is not complete yet
    double last_token_s = 0;
  };
  std::string chunk_json(int index, const std::string& delta, const std::vector<TokenOutput>& toks,
                         const char* finish_reason, bool role);
  std::string final_json();
  void finish_all();
  std::string token_str(int32_t id) const;

  CompletionJob job_;
  std::shared_ptr<Exchange> ex_;
  const Tokenizer& tok_;
  std::string id_, model_;
  int64_t created_;
  double arrival_s_;
  ServerMetrics& metrics_;
  std::function<void(const SessionSummary&)> on_done_;
  std::vector<Choice> choices_;  // [prompts x n], index = prompt * n + choice
  int finished_ = 0;
  int prompt_tokens_ = 0, cached_tokens_ = 0;
  double first_token_s_ = -1;
  bool done_ = false;
  bool cut_off_ = false;             // the server cancelled a choice (drain deadline)
  bool sent_cut_off_event_ = false;  // streaming: its error event is written
};

}  // namespace llamarun::server
