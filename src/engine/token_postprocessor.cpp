#include "engine/token_postprocessor.h"

#include <algorithm>

namespace llamarun {

TokenPostprocessor::TokenPostprocessor(const Tokenizer* tok, const std::vector<int32_t>& eos_ids,
                                       const SamplingParams& params)
    : stops_(params.stop) {
  if (tok) dec_.emplace(*tok);
  if (params.ignore_eos) return;
  if (tok) stop_ids_ = tok->stop_ids();
  for (int32_t id : eos_ids)
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) stop_ids_.push_back(id);
}

TokenPostprocessor::Step TokenPostprocessor::push(int32_t id) {
  Step s;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) {
    s.stop = true;
    return s;
  }
  if (!dec_) return s;
  StopMatcher::Result r = stops_.push(dec_->push(id));
  s.text = std::move(r.text);
  s.stop = r.stopped;
  return s;
}

TokenPostprocessor::Step TokenPostprocessor::finish() {
  Step s;
  if (!dec_ || stops_.stopped()) return s;
  StopMatcher::Result r = stops_.push(dec_->flush());
  s.text = std::move(r.text);
  s.stop = r.stopped;
  if (!r.stopped) s.text += stops_.flush();
  return s;
}

}  // namespace llamarun
