// The OpenAI request parser: the JSON body checks, then every endpoint's field parsing, with
// SmolLM2's tokenizer and a small context / KV cache.
#include "core/error.h"
#include "fuzz_util.h"
#include "server/api_error.h"
#include "server/openai_request.h"

using namespace llamarun;
using namespace llamarun::server;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  ApiContext ctx;
  ctx.tok = &fuzz::smollm2();
  ctx.vocab_size = ctx.tok->vocab_size();
  ctx.max_model_len = 256;
  ctx.kv_capacity_tokens = 200;
  ctx.model_name = "m";
  ctx.special_in_content = size > 0 && (data[0] & 1);
  nlohmann::json body;
  try {
    body = parse_json_body(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const ApiError&) {
    return 0;
  }
  auto each = [&](auto fn) {
    try {
      fn();
    } catch (const ApiError&) {
    } catch (const Error&) {
    }
  };
  each([&] { parse_completion(body, ctx); });
  each([&] { parse_chat_completion(body, ctx); });
  each([&] { parse_tokenize(body, ctx); });
  each([&] { parse_detokenize(body, ctx); });
  return 0;
}
