// Weights are mmap'ed, not copied: resident memory after loading (and after a forward pass, which
// touches every weight) stays within the weights' size + 10%.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "model/model.h"

using namespace llamarun;

namespace {

// A /proc/self/status field in bytes (VmRSS: all resident; RssAnon: resident anonymous memory,
// i.e. not file-backed mappings).
size_t status_bytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return size_t(std::stoull(line.substr(std::string(key).size()))) * 1024;
  return 0;
}
size_t rss_bytes() { return status_bytes("VmRSS:"); }
size_t anon_bytes() { return status_bytes("RssAnon:"); }

void check_rss(const std::string& path) {
  const size_t before = rss_bytes(), anon_before = anon_bytes();
  LoadOptions lo;
  lo.max_batch = 8;
  lo.load_tokenizer = false;  // the tokenizer's own tables are not weights (see the note in README)
  auto m = load_model(path, lo);
  const size_t after_load = rss_bytes();
  const double w = double(m->weight_bytes());
  EXPECT_LE(double(after_load - before), 1.10 * w)
      << "after load: " << (after_load - before) / 1e6 << " MB resident for " << w / 1e6 << " MB of weights";
  std::vector<int32_t> ids{1, 2, 3};
  m->llama->prompt_logits(ids);  // touches every weight
  const size_t after_fwd = rss_bytes();
  EXPECT_LE(double(after_fwd - before), 1.10 * w) << "after a forward pass: " << (after_fwd - before) / 1e6
                                                  << " MB resident for " << w / 1e6 << " MB of weights";
  // The weights are file-backed pages: anonymous memory grows by scratch and KV only.
  EXPECT_LE(double(anon_bytes() - anon_before), 0.10 * w)
      << "anonymous memory grew by " << (anon_bytes() - anon_before) / 1e6 << " MB";
}

TEST(Memory, DefaultModelIsMappedNotCopied) {
  const std::string p = std::string(LLAMARUN_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p)) GTEST_SKIP() << "default model not present";
  check_rss(p);
}

}  // namespace
