// OpenAI request bodies -> native requests. Every field is type- and range-checked here, so a bad
// request becomes an ApiError (4xx, naming the field and the value) before anything is queued.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sampling/sampling_params.h"
#include "tokenizer/chat_template.h"

namespace llamarun {
class Tokenizer;
}

namespace llamarun::server {

// What request parsing needs to know about the served model.
struct ApiContext {
  const Tokenizer* tok = nullptr;
  ChatFormat chat_format = ChatFormat::kChatML;
  ChatOptions chat_options;
  int vocab_size = 0;
  int max_model_len = 0;  // context window in tokens (prompt + generated)
  // Tokens the KV cache holds for one sequence (0: unknown). When smaller than max_model_len, a
  // request without max_tokens gets at most what is left of this after its prompt.
  int64_t kv_capacity_tokens = 0;
  std::string model_name;
  int max_n = 16;        // most choices per prompt
  int max_choices = 64;  // most choices per request (prompts x n)
  // Chat messages: false = content is plain text (special-token strings in it stay text);
  // true = special-token strings in content become tokens (serve --allow-special-in-content).
  bool special_in_content = false;
};

// One /v1/completions or /v1/chat/completions request, parsed.
struct CompletionJob {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  std::vector<std::vector<int32_t>> prompts;  // token ids per prompt (BOS included where wanted)
  SamplingParams params;                      // max_tokens resolved; logprobs/top_logprobs set
  bool max_tokens_given = false;
};

// Parses a request body: valid UTF-8, nesting at most 64 deep, JSON, an object. Throws ApiError 400.
nlohmann::json parse_json_body(const std::string& body);

// Throws ApiError (400 for bad fields, 404 for an unknown model) naming the field.
CompletionJob parse_completion(const nlohmann::json& body, const ApiContext& ctx);
CompletionJob parse_chat_completion(const nlohmann::json& body, const ApiContext& ctx);

// /tokenize: {"prompt": "..."} or {"messages": [...]}; add_special_tokens / add_generation_prompt.
std::vector<int32_t> parse_tokenize(const nlohmann::json& body, const ApiContext& ctx);
// /detokenize: {"tokens": [ids]}.
std::vector<int32_t> parse_detokenize(const nlohmann::json& body, const ApiContext& ctx);

// The byte offset of the first invalid UTF-8 sequence in s, or npos.

}  // namespace llamarun::server
