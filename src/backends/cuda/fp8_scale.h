// How llamarun::cuda::fp8_quantize_rows (fp8.h) picks each row's E4M3 scale. Plain C++ (no CUDA headers), so
// that CudaLlamaOptions (cuda_llama.h) can name it.
#pragma once

namespace llamarun::cuda {

// How fp8_quantize_rows picks a row's scale.
enum class Fp8Scale {
  kMax,     // max |row| / 448: the row's largest magnitude becomes +-448 (activations, per token)
  kSearch,  // the best of kFp8ScaleCandidates (weights, once at load; below)
};

// kSearch's candidates: max |row| / 448 * kFp8ScaleSteps[k], k = 0..15, the fp32 values of 2^(k / 16): one
// period of E4M3's relative grid (a factor of 2 repeats it), none clipping the row's largest value.
constexpr int kFp8ScaleCandidates = 16;
constexpr float kFp8ScaleSteps[kFp8ScaleCandidates] = {1.0f,
                                                       1.0442737340927124f,
                                                       1.0905077457427979f,
                                                       1.1387885808944702f,
                                                       1.1892070770263672f,
                                                       1.2418577671051025f,
                                                       1.2968395948410034f,
                                                       1.3542555570602417f,
                                                       1.4142135381698608f,
                                                       1.4768261909484863f,
                                                       1.5422108173370361f,
                                                       1.610490322113037f,
                                                       1.6817928552627563f,
                                                       1.7562521696090698f,
                                                       1.8340080976486206f,
                                                       1.9152065515518188f};

}  // namespace llamarun::cuda
