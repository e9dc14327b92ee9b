// llamarun perplexity: perplexity of a model over a text file, computed as llama.cpp's llama-perplexity
// computes it (tools/perplexity/perplexity.cpp, the default path without --ppl-stride):
//   - the whole text is tokenized once, with BOS in front when the model adds BOS;
//   - it is cut into n = tokens / ctx non-overlapping windows of ctx tokens (the tail is dropped; at least
//     2 * ctx tokens are needed); --chunks N keeps the first N;
//   - in each window, evaluated from an empty cache, the first token is replaced by BOS when the model adds
//     BOS; the logits at positions ctx/2 .. ctx-2 score the tokens that follow them (ctx - ctx/2 - 1
//     tokens per window), by -log softmax in double precision;
//   - the perplexity is exp(sum of the negative log-likelihoods / count), printed after every window.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "core/mmap.h"
#include "kv/paged_kv_pool.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_step_model.h"
#endif

namespace llamarun::cli {

namespace {

// The CPU forward over the paged pool with logits for b.logit_rows (one line, so a rename stays trivial).

// -log softmax(logits)[tok], the max-shifted sum of exps accumulated in double as llama.cpp does.
double neg_log_prob(const float* logits, int n_vocab, int tok) {
  const float mx = *std::max_element(logits, logits + n_vocab);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - mx);
  return -(double(logits[tok] - mx) - std::log(sum));
}

std::vector<OptSpec> perplexity_model_opts() {
  auto v = model_opts();
  v.push_back(device_opt());
  for (auto& o : v)
    if (o.long_name == "--ctx") o.help = "window size in tokens", o.def = "512";
  return v;
}

}  // namespace

int cmd_perplexity(int argc, char** argv) {
  Args args(
      "perplexity",
      "Perplexity of the model over a text file, as llama.cpp's llama-perplexity computes it: the text is\n"
      "tokenized (with BOS when the model adds one) and cut into non-overlapping windows of --ctx tokens;\n"
      "each window starts with BOS and scores its second half (tokens ctx/2+1 .. ctx-1, each given all\n"
      "before it). Prints the running value after each window, or with --json one object.",
      concat(perplexity_model_opts(),
             std::vector<OptSpec>{{"--file", "-f", true, "the text file", ""},
                                  {"--chunks", "", true, "evaluate at most this many windows", "all"},
                                  {"--batch", "-b", true, "tokens per forward call", "256"},
                                  {"--json", "", false, "print one JSON object: ppl, tokens, windows", ""}}));
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  if (!args.has("--file")) fail("give the text with -f FILE");
  const std::string text = read_text_file(args.str("--file"));
  const long long ctx_ll = args.integer("--ctx", 512);
  const long long batch_ll = args.integer("--batch", 256);
  if (ctx_ll < 4 || ctx_ll > (1 << 20)) fail("--ctx must be between 4 and 1048576, got ", ctx_ll);
  if (batch_ll < 1 || batch_ll > 8192) fail("--batch must be between 1 and 8192, got ", batch_ll);
  const int ctx = int(ctx_ll), batch = int(std::min(batch_ll, ctx_ll));
  const bool json = args.has("--json");

  auto model = open_model(args);
  if (!model->tokenizer) fail(model->path, ": no tokenizer found next to the model");
  if (ctx > model->cfg.max_position)
    fail("--ctx ", ctx, " is larger than the model's context (", model->cfg.max_position, ")");
  const Tokenizer& tok = *model->tokenizer;
  const bool add_bos = tok.add_bos() && tok.bos_id() >= 0;
  std::vector<int32_t> tokens;
  if (add_bos) tokens.push_back(tok.bos_id());
  const auto body = tok.encode(text);
  tokens.insert(tokens.end(), body.begin(), body.end());
  if (tokens.size() < size_t(2) * size_t(ctx))
    fail(args.str("--file"), ": tokenizes to ", tokens.size(), " tokens; a context of ", ctx,
         " needs at least ", 2 * ctx);
  int windows = int(tokens.size() / size_t(ctx));
  if (args.has("--chunks")) {
    const long long c = args.integer("--chunks", windows);
    if (c < 1) fail("--chunks must be >= 1, got ", c);
    windows = int(std::min<long long>(windows, c));
  }

  const LlamaConfig& cfg = model->cfg;
  const int block = 16, n_blocks = (ctx + block - 1) / block;
  // The CPU forward over its own pool, or the GPU backend (its pool inside) for --device cuda.
  const std::string device = device_from(args);
  std::unique_ptr<PagedKVPool> pool;
  std::unique_ptr<StepModel> gpu;
  std::vector<int32_t> ids(static_cast<size_t>(batch));
  if (is_cuda_device(device)) {
#ifdef LLAMARUN_WITH_CUDA
    CudaLlamaOptions co;
    cuda_options_from(args, device, &co);
    co.dtype = gpu_dtype_from(args, *model);
    co.max_context = ctx;
    co.paged_max_tokens = batch;
    co.paged_max_seqs = batch;  // one sequence, but up to batch logit rows (the scored half of a window)
    gpu = make_cuda_step_model(*model, co);
    gpu->init_kv(block, n_blocks, 0);
#endif
  } else {
    pool = std::make_unique<PagedKVPool>(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, block, n_blocks);
  }
  auto run_forward = [&](const BatchInput& in, float* out) {
    if (gpu)
      gpu->forward(in, nullptr, ids.data(), out);
    else
      model->llama->forward(in, *pool, out);
  };
  std::vector<int32_t> table(static_cast<size_t>(n_blocks));
  std::iota(table.begin(), table.end(), 0);
  const int first = ctx / 2;
  const int V = cfg.vocab_size;
  std::vector<float> logits(size_t(batch) * size_t(V));
  BatchInput b;
  b.batch_invariant = false;

  double nll = 0;
  long long count = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int w = 0; w < windows; ++w) {
    const int32_t* win = tokens.data() + size_t(w) * size_t(ctx);
    // Positions pos..pos+n-1 in one call; the pool's blocks are simply overwritten by the next window.
    for (int pos = 0; pos < ctx; pos += batch) {
      const int n = std::min(batch, ctx - pos);
      b.clear();
      b.block_tables.push_back(table);
      for (int k = 0; k < n; ++k) {
        const int p = pos + k;
        b.tokens.push_back(p == 0 && add_bos ? tok.bos_id() : win[p]);
        b.positions.push_back(p);
        b.seq_index.push_back(0);
        if (p >= first && p < ctx - 1) b.logit_rows.push_back(k);
      }
      if (b.logit_rows.empty()) {
        b.logit_rows.push_back(n - 1);  // forward_batch wants at least one row; this one is not scored
        run_forward(b, logits.data());
        continue;
      }
      run_forward(b, logits.data());
      for (size_t r = 0; r < b.logit_rows.size(); ++r) {
        const int p = pos + b.logit_rows[r];
        nll += neg_log_prob(logits.data() + r * size_t(V), V, win[p + 1]);
        ++count;
      }
    }
    if (!json) {
      std::printf("[%d]%.4f,", w + 1, std::exp(nll / double(count)));
      std::fflush(stdout);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ppl = std::exp(nll / double(count));
  if (json) {
    nlohmann::json j = {{"ppl", ppl},
                        {"tokens", count},
                        {"windows", windows},
                        {"ctx", ctx},
                        {"text_tokens", tokens.size()},
                        {"nll", nll / double(count)},
                        {"seconds", secs}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\nFinal estimate: PPL = %.4f over %d windows of %d tokens (%lld scored) in %.1f s\n", ppl,
                windows, ctx, count, secs);
  }
  return 0;
}

}  // namespace llamarun::cli
