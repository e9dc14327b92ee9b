#include "model/rope.h"

#include <cmath>

#include "core/fp16.h"

namespace llamarun {

namespace {
inline float rb(float v, bool r) { return r ? bf16_to_f32(f32_to_bf16(v)) : v; }
}  // namespace

std::vector<float> rope_inv_freq(const LlamaConfig& cfg) {
  const int dim = cfg.head_dim;
  std::vector<float> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    float expo = float(2 * i) / float(dim);
    inv[i] = 1.0f / std::pow(cfg.rope_theta, expo);
  }
  const RopeScaling& s = cfg.rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) {
    for (auto& f : inv) f /= s.factor;
  } else if (s.type == RopeScaling::Type::kLlama3) {
    const float pi = 3.14159265358979323846f;
    float low_wavelen = float(s.original_max_position) / s.low_freq_factor;
    float high_wavelen = float(s.original_max_position) / s.high_freq_factor;
    for (auto& f : inv) {
      float wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {  // medium band: interpolate
        float smooth = (float(s.original_max_position) / wavelen - s.low_freq_factor) /
                       (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  if (!cfg.rope_freq_factors.empty())
    for (int i = 0; i < dim / 2; ++i) inv[i] /= cfg.rope_freq_factors[i];
  return inv;
}

void rope_apply(float* x, int n_heads, int head_dim, int pos, const std::vector<float>& inv_freq,
                RopeLayout layout, bool r) {
  const int half = head_dim / 2;
  float cs[512], sn[512];  // head_dim <= 1024 (checked by LlamaConfig::validate)
  for (int i = 0; i < half; ++i) {
    float ang = float(pos) * inv_freq[i];
    cs[i] = rb(std::cos(ang), r);
    sn[i] = rb(std::sin(ang), r);
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + size_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      int a = layout == RopeLayout::kHalf ? i : 2 * i;
      int b = layout == RopeLayout::kHalf ? i + half : 2 * i + 1;
      float x0 = v[a], x1 = v[b];
      // rotate_half: out_a = x_a*cos - x_b*sin ; out_b = x_b*cos + x_a*sin
      v[a] = rb(rb(x0 * cs[i], r) + rb(-x1 * sn[i], r), r);
      v[b] = rb(rb(x1 * cs[i], r) + rb(x0 * sn[i], r), r);
    }
  }
}

}  // namespace llamarun
