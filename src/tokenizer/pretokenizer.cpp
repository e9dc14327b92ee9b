#include "tokenizer/pretokenizer.h"

namespace llamarun {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

void PreTokenizer::add_regex(const std::string& pattern, const std::string& what,
                             PreTokenizerStep::Behavior b, bool invert) {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kSplit;
  s.behavior = b;
  s.invert = invert;
  s.regex = std::make_shared<Regex>(pattern, what);
  steps_.push_back(std::move(s));
}

void PreTokenizer::add_digits(bool individual, const std::string& what) {
  // HF Digits splits on char::is_numeric (general categories Nd, Nl, No), i.e. \p{N}.
  add_regex(individual ? R"(\p{N})" : R"(\p{N}+)", what);
}

void PreTokenizer::add_prefix_space() {
  PreTokenizerStep s;
  s.kind = PreTokenizerStep::Kind::kPrefixSpace;
  steps_.push_back(std::move(s));
}

namespace {

using Behavior = PreTokenizerStep::Behavior;

void split_one(const PreTokenizerStep& step, const std::string& piece, std::vector<std::string>& out) {
  // Intervals covering the piece: (start, end, is_match).
  struct Span {
    size_t a, b;
    bool match;
  };
  std::vector<Span> spans;
  size_t pos = 0;
  for (auto [a, b] : step.regex->find_all(piece)) {
    if (a > pos) spans.push_back({pos, a, false});
    spans.push_back({a, b, true});
    pos = b;
  }
  if (pos < piece.size()) spans.push_back({pos, piece.size(), false});
  if (step.invert) {
    for (auto& s : spans) s.match = !s.match;
  }
  auto text = [&](const Span& s) { return piece.substr(s.a, s.b - s.a); };
  switch (step.behavior) {
    case Behavior::kIsolated:
      for (auto& s : spans) out.push_back(text(s));
      break;
    case Behavior::kRemoved:
      for (auto& s : spans) {
        if (!s.match) out.push_back(text(s));
      }
      break;
    case Behavior::kMergedWithPrevious: {  // "a-b--c" on '-' -> "a-", "b-", "-", "c"
      bool prev_plain = false;
      for (auto& s : spans) {
        if (s.match && prev_plain) {
          out.back() += text(s);
        } else {
          out.push_back(text(s));
        }
        prev_plain = !s.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {  // "a-b--c" on '-' -> "a", "-b", "-", "-c"
      std::string carry;
      bool have_carry = false;
      for (auto& s : spans) {
        if (s.match) {
          if (have_carry) out.push_back(carry);
          carry = text(s);
          have_carry = true;
        } else {
          out.push_back(have_carry ? carry + text(s) : text(s));
          have_carry = false;
        }
      }
      if (have_carry) out.push_back(carry);
      break;
    }
    case Behavior::kContiguous: {
      bool prev_match = false;
      for (auto& s : spans) {
        if (s.match && prev_match) {
          out.back() += text(s);
        } else {
          out.push_back(text(s));
        }
        prev_match = s.match;
      }
      break;
    }
  }
}

}  // namespace

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  std::vector<std::string> pieces;
  if (text.empty()) return pieces;
  pieces.emplace_back(text);
  for (const auto& step : steps_) {
    std::vector<std::string> next;
    next.reserve(pieces.size() * 2);
    for (const auto& p : pieces) {
      if (step.kind == PreTokenizerStep::Kind::kPrefixSpace) {
        next.push_back(p.empty() || p[0] == ' ' ? p : " " + p);
      } else {
        split_one(step, p, next);
      }
    }
    pieces.clear();
    for (auto& p : next) {
      if (!p.empty()) pieces.push_back(std::move(p));
    }
  }
  return pieces;
}

}  // namespace llamarun
