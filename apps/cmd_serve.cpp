// llamarun serve: the OpenAI-compatible HTTP server (see src/server/server.h).
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "model/random_model.h"
#include "server/server.h"
#ifdef LLAMARUN_WITH_CUDA
#include "backends/cuda/cuda_step_model.h"
#endif

namespace llamarun::cli {

int cmd_serve(int argc, char** argv) {
  Args args(
      "serve",
      "Serve the model over HTTP with an OpenAI-compatible API: /v1/completions, /v1/chat/completions\n"
      "(streaming and not), /v1/models, /tokenize, /detokenize, /health, /metrics (Prometheus).\n"
      "SIGTERM or Ctrl-C drains: new requests are refused, running ones finish, exit code 0.",
      concat(
          model_opts(), std::vector<OptSpec>{device_opt()},
          std::vector<OptSpec>{
              {"--random-weights", "", true,
               "serve a random-weight model of a preset shape (tiny, smollm2-135m, llama-1b, llama2-7b; for "
               "benchmarks) with the tokenizer given by --tokenizer",
               ""},
              {"--tokenizer", "", true,
               "tokenizer file (tokenizer.model / tokenizer.json) for --random-weights", ""},
              {"--warmup", "", false,
               "--device cuda: warm up before the server reports ready (the decode graphs of every batch "
               "bucket captured, cuBLASLt's choice made for every batch size up to --max-batch-tokens), so "
               "that the first requests' steps do not pay for it (experimental: not yet measured on a GPU)",
               ""},
              {"--gpu-fp8-fused", "", false,
               "with --quantize fp8: quantize the FP8 GEMMs' inputs inside RMSNorm / SiLU-mul instead of in "
               "separate kernels (experimental: not yet measured on a GPU)",
               ""},
              {"--host", "", true, "address to listen on", "127.0.0.1"},
              {"--port", "", true, "TCP port (0: any free port, printed in the log)", "8080"},
              {"--api-key", "", true, "require 'Authorization: Bearer KEY' (also $LLAMARUN_API_KEY)", ""},
              {"--served-model-name", "", true, "model id reported and accepted in requests",
               "the file name without .gguf"},
              {"--max-queue", "", true, "waiting requests beyond which new ones get 429", "1024"},
              {"--max-num-seqs", "", true, "most sequences running at once", "256"},
              {"--max-batch-tokens", "", true,
               "tokens per engine step (prefill chunks + decodes); 2048 with --device cuda", "512"},
              {"--kv-cache-mb", "", true, "KV cache size in MiB",
               "1024 on cpu; on cuda what free memory allows"},
              {"--block-size", "", true, "tokens per KV block", "16"},
              {"--no-prefix-cache", "", false, "disable automatic prefix caching", ""},
              {"--max-body-bytes", "", true, "largest request body (bigger ones get 413)", "8388608"},
              {"--max-n", "", true, "largest n (choices per prompt)", "16"},
              {"--idle-timeout", "", true,
               "seconds after which a connection with no request in flight is closed", "30"},
              {"--max-connections", "", true, "open connections beyond which new ones get 503 (logged)",
               "4096"},
              {"--drain-timeout", "", true, "seconds running requests get to finish after SIGTERM", "30"},
              {"--quiet", "", false, "no per-request log lines", ""},
              {"--allow-special-in-content", "", false,
               "chat: special-token strings in message content become control tokens (lets a client "
               "forge turns; off: content is plain text)",
               ""},
              {"--load-delay", "", true, "testing: seconds to wait before loading the model", "0"}}));
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  server::ServerOptions o;
  const std::string device = device_from(args);
  const std::string preset = args.str("--random-weights", "");
  o.model_path = args.str("--model", "");
  if (!preset.empty()) {
    if (!o.model_path.empty()) fail("--random-weights and --model exclude each other");
    const std::string tok_path = args.str("--tokenizer", "");
    if (tok_path.empty())
      fail("--random-weights needs --tokenizer (a tokenizer.model or tokenizer.json file)");
    const LlamaConfig cfg = random_model_preset(preset);  // checks the name
    o.model_path = "random:" + preset;
    const bool cpu = !is_cuda_device(device);
    o.make_model = [cfg, tok_path, cpu, preset] {
      // On the CPU the weights are built in host memory; for the GPU only the config and tokenizer.
      std::unique_ptr<Model> m = cpu ? make_random_model(cfg, DType::F32) : std::make_unique<Model>();
      m->cfg = cfg;
      m->path = "random:" + preset;
      m->tokenizer = load_tokenizer_file(tok_path);
      if (m->tokenizer->vocab_size() > cfg.vocab_size)
        fail(tok_path, ": the tokenizer has ", m->tokenizer->vocab_size(), " tokens, more than the ", preset,
             " vocabulary of ", cfg.vocab_size);
      return m;
    };
  } else if (args.has("--tokenizer")) {
    fail("--tokenizer is only used with --random-weights");
  }
  if (o.model_path.empty()) o.model_path = default_model_path();
  o.host = args.str("--host", "127.0.0.1");
  long long port = args.integer("--port", 8080);
  if (port < 0 || port > 65535) fail("--port must be between 0 and 65535, got ", port);
  o.port = int(port);
  o.api_key = args.str("--api-key", "");
  if (o.api_key.empty())
    if (const char* k = std::getenv("LLAMARUN_API_KEY")) o.api_key = k;
  o.served_model_name = args.str("--served-model-name", "");
  auto bounded = [&](const char* name, long long def, long long lo, long long hi) {
    long long v = args.integer(name, def);
    if (v < lo || v > hi) fail(name, " must be between ", lo, " and ", hi, ", got ", v);
    return v;
  };
  o.engine.max_queue = int(bounded("--max-queue", 1024, 0, 1 << 20));
  o.engine.max_num_seqs = int(bounded("--max-num-seqs", 256, 1, 1 << 16));
  // On a GPU a step of 2048 tokens admits a burst of prompts 4x faster than 512 at the same steady-state
  // throughput (bench/cuda/runs/2026-12-07h-h100-batch-tokens: 256 clients, TTFT p99 683-690 against
  // 785-829 ms in fp16, 394-431 against 605-633 with FP8 weights and KV), at the price of longer steps while
  // prompts are being admitted (ITL p99 53 against 28 ms); vLLM's chunked prefill makes the same trade.
  o.engine.max_batch_tokens =
      int(bounded("--max-batch-tokens", is_cuda_device(device) ? 2048 : 512, 1, 1 << 20));
  o.engine.kv_cache_bytes = size_t(bounded("--kv-cache-mb", 1024, 1, 1 << 22)) << 20;
  if (is_cuda_device(device) && !args.has("--kv-cache-mb")) o.engine.kv_cache_bytes = 0;  // what fits
  o.engine.block_size = int(bounded("--block-size", 16, 1, 1024));
  o.engine.enable_prefix_caching = !args.has("--no-prefix-cache");
  if (args.has("--ctx")) o.engine.max_model_len = int(bounded("--ctx", 0, 1, 1 << 24));
  o.max_body_bytes = size_t(bounded("--max-body-bytes", 8 << 20, 1024, 1ll << 32));
  o.max_n = int(bounded("--max-n", 16, 1, 1024));
  o.idle_timeout_s = args.number("--idle-timeout", 30);
  if (!(o.idle_timeout_s > 0 && o.idle_timeout_s <= 86400)) fail("--idle-timeout must be in (0, 86400]");
  o.max_connections = int(bounded("--max-connections", 4096, 1, 1 << 20));
  o.drain_timeout_s = args.number("--drain-timeout", 30);
  if (!(o.drain_timeout_s >= 0)) fail("--drain-timeout must be >= 0");
  o.log_requests = !args.has("--quiet");
  o.allow_special_in_content = args.has("--allow-special-in-content");
  o.load_delay_s = args.number("--load-delay", 0);
  if (!(o.load_delay_s >= 0 && o.load_delay_s <= 3600)) fail("--load-delay must be in [0, 3600]");
  o.load.activations = args.str("--act", "auto");
  o.load.quantize = host_quantize_from(args);
  if (args.has("--threads")) {
    // The forward pass runs on the engine's thread, which does not inherit omp_set_num_threads from
    // this one; OMP_NUM_THREADS is read when the process starts, so set it and start again.
    const std::string t = std::to_string(bounded("--threads", 0, 1, 1024));
    const char* cur = std::getenv("OMP_NUM_THREADS");
    if (!cur || t != cur) {
      setenv("OMP_NUM_THREADS", t.c_str(), 1);
      execv("/proc/self/exe", argv);  // returns only on failure: fall back to this thread's setting
    }
    omp_set_num_threads(std::stoi(t));
  }

  if (is_cuda_device(device)) {
#ifdef LLAMARUN_WITH_CUDA
    const EngineConfig ec = o.engine;
    const bool random = !preset.empty();
    // args outlives the server (run() returns before cmd_serve does).
    o.make_backend = [ec, device, random, &args](Model& m) -> std::unique_ptr<StepModel> {
      CudaLlamaOptions co;
      cuda_options_from(args, device, &co);
      co.dtype =
          random ? (args.str("--act", "auto") == "bf16" ? DType::BF16 : DType::F16) : gpu_dtype_from(args, m);
      co.max_context =
          ec.max_model_len > 0 ? std::min(ec.max_model_len, m.cfg.max_position) : m.cfg.max_position;
      co.paged_max_tokens = ec.max_batch_tokens;
      co.paged_max_seqs = std::min(ec.max_num_seqs, ec.max_batch_tokens);
      co.paged_warmup = args.has("--warmup");
      if (random) return make_cuda_step_model(m.cfg, 1, co);
      return make_cuda_step_model(m, co);
    };
#endif
  }

  // Many concurrent connections need many descriptors: raise the soft limit to the hard one.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  server::Server srv(o);
  return srv.run();
}

}  // namespace llamarun::cli
