#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/utf8.h"

namespace llamarun {

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < control_.size() && control_[id] != 0;
}

void Tokenizer::set_eos(int id) {
  eos_id_ = id;
  if (id >= 0) add_stop_id(id);
}

void Tokenizer::add_stop_id(int id) {
  if (id < 0 || id >= vocab_size_) return;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) stop_ids_.push_back(id);
}

void Tokenizer::init_stop_ids() {
  if (eos_id_ >= 0) add_stop_id(eos_id_);
  for (const char* s : {"<|eot_id|>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>", "<|eom_id|>"}) {
    const int32_t id = find_token(s);
    if (id >= 0 && is_control(id)) add_stop_id(id);
  }
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Utf8Repair mode = repair_per_byte_ ? Utf8Repair::kPerByte : Utf8Repair::kMaximalSubpart;
  std::string out, raw;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) continue;
    if (is_control(id)) {
      if (control_breaks_bytes_ && !raw.empty()) {
        out += utf8_repair(raw, mode);
        raw.clear();
      }
      continue;
    }
    std::string b = token_bytes(id);
    if (first && strips_leading_space(id) && !b.empty() && b[0] == ' ') b.erase(0, 1);
    first = false;
    raw += b;
  }
  out += utf8_repair(raw, mode);
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  if (id < 0 || id >= tok_.vocab_size()) return {};
  if (tok_.is_control(id)) return tok_.control_breaks_bytes() ? flush() : std::string();
  std::string b = tok_.token_bytes(id);
  if (first_ && tok_.strips_leading_space(id) && !b.empty() && b[0] == ' ') b.erase(0, 1);
  first_ = false;
  pending_ += b;
  // Emit everything but a trailing incomplete (still possibly valid) character; bytes that can
  // never become valid are replaced now.
  const size_t keep = utf8_incomplete_tail(pending_);
  std::string_view ready(pending_.data(), pending_.size() - keep);
  std::string out =
      utf8_is_valid(ready)
          ? std::string(ready)
          : utf8_repair(ready, tok_.repairs_per_byte() ? Utf8Repair::kPerByte : Utf8Repair::kMaximalSubpart);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out =
      utf8_repair(pending_, tok_.repairs_per_byte() ? Utf8Repair::kPerByte : Utf8Repair::kMaximalSubpart);
  pending_.clear();
  return out;
}

}  // namespace llamarun
