#include "backends/cuda/rope_freq.h"

#include <cmath>

#include "core/error.h"

namespace llamarun::cuda {

std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& sc) {
  if (head_dim <= 0 || head_dim % 2) fail("rope: head_dim ", head_dim, " must be positive and even");
  if (!(theta > 0.f)) fail("rope: rope_theta ", theta, " must be positive");
  const int half = head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    float e = float(2 * i) / float(head_dim);  // torch: arange(0, dim, 2).float() / dim
    inv[i] = 1.0f / std::pow(theta, e);
  }
  switch (sc.type) {
    case RopeScaling::Type::kNone:
      break;
    case RopeScaling::Type::kLinear:
      if (!(sc.factor > 0.f)) fail("rope_scaling linear: factor ", sc.factor, " must be positive");
      for (float& f : inv) f /= sc.factor;
      break;
    case RopeScaling::Type::kLlama3: {
      if (!(sc.factor > 0.f) || !(sc.high_freq_factor > sc.low_freq_factor) || sc.original_max_position <= 0)
        fail("rope_scaling llama3: bad parameters (factor ", sc.factor, ", low_freq_factor ",
             sc.low_freq_factor, ", high_freq_factor ", sc.high_freq_factor,
             ", original_max_position_embeddings ", sc.original_max_position, ")");
      const float old_ctx = float(sc.original_max_position);
      const float low_wavelen = old_ctx / sc.low_freq_factor;
      const float high_wavelen = old_ctx / sc.high_freq_factor;
      const float two_pi = 6.283185307179586f;
      for (float& f : inv) {
        float wavelen = two_pi / f;
        float scaled = wavelen > low_wavelen ? f / sc.factor : f;
        bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
          float smooth =
              (old_ctx / wavelen - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
          scaled = (1.f - smooth) * scaled / sc.factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
  }
  return inv;
}

}  // namespace llamarun::cuda
