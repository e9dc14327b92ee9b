// Pre-tokenization for byte-level BPE: the text is cut into pieces (words) by a sequence of steps,
// as Hugging Face tokenizers' pre_tokenizers do, before BPE runs on each piece separately.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace llamarun {

// GPT-2's pattern (ByteLevel use_regex=true, GGUF pre "gpt2"/"default"/"smollm").
extern const char* const kGpt2Pattern;
// Llama 3's pattern (Split in its tokenizer.json; GGUF pre "llama-bpe").
extern const char* const kLlama3Pattern;

struct PreTokenizerStep {
  enum class Kind {
    kSplit,        // regex split (HF Split with a Regex pattern, Digits, ByteLevel use_regex)
    kPrefixSpace,  // prepend " " to each piece not starting with one (ByteLevel add_prefix_space)
  };
  // How matches and the text between them become pieces (HF SplitDelimiterBehavior).
  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };
  Kind kind = Kind::kSplit;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  std::shared_ptr<const Regex> regex;
};

class PreTokenizer {
 public:
  void add(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  // Convenience builders.
  void add_regex(const std::string& pattern, const std::string& what,
                 PreTokenizerStep::Behavior b = PreTokenizerStep::Behavior::kIsolated, bool invert = false);
  void add_digits(bool individual, const std::string& what);
  void add_prefix_space();
  bool empty() const { return steps_.empty(); }

  // Pieces of `text` (none empty), in order; their concatenation is `text` unless a step removes
  // or adds characters.
  std::vector<std::string> split(std::string_view text) const;

 private:
  std::vector<PreTokenizerStep> steps_;
};

}  // namespace llamarun
