#include "backends/cuda/rope_freq.h"

#include "core/error.h"
#include "model/rope.h"

namespace llamarun::cuda {

std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& sc) {
  if (head_dim <= 0 || head_dim % 2) fail("rope: head_dim ", head_dim, " must be positive and even");
  if (!(theta > 0.f)) fail("rope: rope_theta ", theta, " must be positive");
  LlamaConfig c;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.rope_scaling = sc;
  return llamarun::rope_inv_freq(c);
}

}  // namespace llamarun::cuda
