// What happens to each generated token of one sequence after sampling: stop ids (EOS, <|im_end|>, ...),
// detokenisation into UTF-8-safe text deltas, stop strings, and the text held back until the end. Used by the
// Engine, which every path (command line, server, bench) runs through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sampling/sampling_params.h"
#include "sampling/stop_matcher.h"
#include "tokenizer/tokenizer.h"

namespace llamarun {

class TokenPostprocessor {
 public:
  // tok may be null (no text then, stop ids still apply). eos_ids: the model config's; with
  // params.ignore_eos neither they nor the tokenizer's stop ids end the sequence.
  TokenPostprocessor(const Tokenizer* tok, const std::vector<int32_t>& eos_ids, const SamplingParams& params);

  struct Step {
    std::string text;   // text delta to emit (may be empty while bytes are held back)
    bool stop = false;  // the sequence ends here: a stop id (its text is not emitted) or a stop string
  };
  // Feeds the next generated token.
  Step push(int32_t id);
  // The sequence ended (any reason): the text still held back, unless a stop string already matched.
  // stop is set when the flushed text completes a stop string.
  Step finish();

  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  std::vector<int32_t> stop_ids_;
  std::optional<StreamDecoder> dec_;
  StopMatcher stops_;
};

}  // namespace llamarun
