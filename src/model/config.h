// Llama-family model configuration, from a Hugging Face config.json or GGUF metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llamarun {

struct WeightMap;

// How Q/K pairs are rotated by RoPE.
//  kHalf: Hugging Face rotate_half: dimension i pairs with i + head_dim/2.
//  kInterleaved: adjacent pairs (2i, 2i+1): GGUF llama files store Q/K permuted for this layout.
enum class RopeLayout { kHalf, kInterleaved };

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;      // llama3
  float high_freq_factor = 4.0f;     // llama3
  int original_max_position = 8192;  // llama3
};

struct LlamaConfig {
  std::string architecture = "llama";
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position = 2048;
  float rms_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  RopeLayout rope_layout = RopeLayout::kHalf;
  // GGUF `rope_freqs.weight` (head_dim/2 values): inv_freq[i] /= rope_freq_factors[i]; empty = none.
  std::vector<float> rope_freq_factors;
  bool tie_embeddings = false;
  int bos_id = -1;
  std::vector<int> eos_ids;

  // Throws Error naming `where` and the value when the numbers are inconsistent.
  void validate(const std::string& where) const;
};

// From config.json text. `where` names the file in error messages.
LlamaConfig config_from_hf_json(const std::string& json_text, const std::string& where);
// From GGUF metadata (general.architecture must be "llama"). A `rope_freqs.weight` tensor (Llama 3
// rope scaling baked into per-dimension factors) is matched back to RopeScaling::kLlama3 parameters;
// factors that fit no known parameter set are an error.
LlamaConfig config_from_gguf(const WeightMap& wm, const std::string& where);

// The tensors the config implies are checked against the weights by bind_llama_weights
// (model/llama_tensors.h).

}  // namespace llamarun
