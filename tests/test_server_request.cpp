// OpenAI request parsing (src/server/openai_request.h) in-process, with the default model's tokenizer:
// every bad input becomes an ApiError with a 4xx status that names the field.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>

#include "formats/model_files.h"
#include "server/api_error.h"
#include "server/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace llamarun::server {
namespace {

const char* kModel = LLAMARUN_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

class ServerRequest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kModel).good()) return;
    WeightMap wm = load_weights(kModel);
    tok_ = tokenizer_from_gguf(wm).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << kModel << " not present";
    ctx_.tok = tok_;
    ctx_.vocab_size = 49152;
    ctx_.max_model_len = 512;
    ctx_.model_name = "m";
  }
  // The status and message of the ApiError that parsing `body` throws (0 when it parses).
  std::pair<int, std::string> err(const std::string& body, bool chat = false) {
    try {
      auto j = parse_json_body(body);
      if (chat)
        parse_chat_completion(j, ctx_);
      else
        parse_completion(j, ctx_);
    } catch (const ApiError& e) {
      return {e.status, std::string(e.what()) + " [param " + e.param + "]"};
    }
    return {0, ""};
  }
  static Tokenizer* tok_;
  ApiContext ctx_;
};
Tokenizer* ServerRequest::tok_ = nullptr;

TEST_F(ServerRequest, GoodRequests) {
  auto j = parse_json_body(R"({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "n": 2, "stop": "x",
                               "logit_bias": {"5": -100}, "seed": 7, "logprobs": 2})");
  CompletionJob c = parse_completion(j, ctx_);
  EXPECT_EQ(c.n, 2);
  EXPECT_EQ(c.params.max_tokens, 3);
  EXPECT_EQ(c.params.top_logprobs, 2);
  EXPECT_EQ(c.params.logit_bias.at(5), -100.0f);
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_EQ(c.prompts[0], tok_->encode("Hello"));
  auto chat =
      parse_chat_completion(parse_json_body(R"({"messages": [{"role": "user", "content": "Hi"}]})"), ctx_);
  EXPECT_EQ(chat.params.max_tokens, 512 - int(chat.prompts[0].size()));  // default: the rest of the context
}

TEST_F(ServerRequest, MalformedJson) {
  for (const char* b : {"", "{", "{\"prompt\": \"a\"", "[1]", "null", "{\"a\": NaN}", "{\"a\": 1,}"})
    EXPECT_EQ(err(b).first, 400) << b;
  EXPECT_NE(err("\xff{}").second.find("UTF-8"), std::string::npos);
  EXPECT_NE(err(std::string(100000, '[')).second.find("deeper"), std::string::npos);
}

TEST_F(ServerRequest, MaxTokensBounds) {
  for (const char* v :
       {"0", "-1", "2147483648", "9223372036854775808", "18446744073709551615", "1.5", "\"3\""}) {
    auto [status, msg] = err(std::string(R"({"prompt": "Hi", "max_tokens": )") + v + "}");
    EXPECT_EQ(status, 400) << v;
    EXPECT_NE(msg.find("max_tokens"), std::string::npos) << msg;
  }
  auto [status, msg] = err(R"({"prompt": "Hi there", "max_tokens": 511})");
  EXPECT_EQ(status, 400);
  EXPECT_NE(msg.find("511"), std::string::npos) << msg;
  EXPECT_NE(msg.find("512"), std::string::npos) << msg;
}

TEST_F(ServerRequest, UnsignedZeroIsRejected) {
  // JSON 0 parses as an unsigned integer: the lower bound must still apply.
  EXPECT_EQ(err(R"({"prompt": "Hi", "n": 0})").first, 400);
  EXPECT_EQ(err(R"({"prompt": "Hi", "max_tokens": 0})").first, 400);
}

TEST_F(ServerRequest, SamplingRanges) {
  for (const char* f :
       {R"("temperature": -1)", R"("temperature": 2.5)", R"("top_p": 0)", R"("top_p": 1.01)",
        R"("top_k": -2)", R"("min_p": 2)", R"("repetition_penalty": 0)", R"("presence_penalty": -2.5)",
        R"("frequency_penalty": 3)", R"("n": 17)", R"("logit_bias": {"49152": 1})",
        R"("logit_bias": {"x": 1})", R"("logit_bias": {"1": 101})", R"("stop": [""])", R"("logprobs": 21)"}) {
    auto [status, msg] = err(std::string(R"({"prompt": "Hi", )") + f + "}");
    EXPECT_EQ(status, 400) << f;
  }
  std::string stops = R"({"prompt": "Hi", "stop": [)";
  for (int i = 0; i < 3000; ++i) stops += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  stops += "]}";
  auto [status, msg] = err(stops);
  EXPECT_EQ(status, 400);
  EXPECT_NE(msg.find("3000"), std::string::npos) << msg;
}

TEST_F(ServerRequest, EmptyPromptsAndMessages) {
  for (const char* b :
       {R"({"prompt": ""})", R"({"prompt": []})", R"({"prompt": [[]]})", R"({"prompt": [""]})",
        R"({"max_tokens": 1})", R"({"prompt": [99999999]})", R"({"prompt": [-1]})"})
    EXPECT_EQ(err(b).first, 400) << b;
  for (const char* b :
       {R"({"messages": []})", R"({"messages": "x"})", R"({"messages": [{"role": "x", "content": ""}]})",
        R"({"messages": [{"role": "user", "content": 1}]})"})
    EXPECT_EQ(err(b, true).first, 400) << b;
}

TEST_F(ServerRequest, UnknownModelIs404) {
  EXPECT_EQ(err(R"({"prompt": "Hi", "model": "other"})").first, 404);
}

}  // namespace
}  // namespace llamarun::server
