// llamarun info: what a model is and what it needs.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "model/llama_tensors.h"
#include "model/model.h"

namespace llamarun::cli {

int cmd_info(int argc, char** argv) {
  Args args("info", "Print a model's architecture, config, tensors (name, dtype, shape) and memory needs.",
            {{"--model", "-m", true, "model directory or GGUF file", "the default model"},
             {"--ctx", "-c", true, "context length for the KV-cache estimate", "the model's maximum"},
             {"--tensors", "", false, "list every tensor with its role in the Llama tensor table", ""},
             {"--quantize", "", true,
              "quantize the weights at load first (Q8_0, Q4_K_M, ...): shows the result", "off"},
             {"--json", "", false, "print one JSON object", ""}});
  args.parse(argc, argv, 2);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return 0;
  }
  LoadOptions lo;
  lo.max_batch = 1;
  lo.quantize = args.str("--quantize", "");
  auto m = load_model(model_path_from(args), lo);
  const LlamaConfig& c = m->cfg;
  const long long ctx = args.integer("--ctx", c.max_position);
  const size_t kv_per_token = size_t(2) * c.num_layers * c.num_kv_heads * c.head_dim * sizeof(float);
  std::map<std::string, size_t> by_dtype;
  for (auto& [_, t] : m->weights->tensors) by_dtype[dtype_name(t.dtype)] += t.nbytes;

  nlohmann::json j;
  j["path"] = m->path;
  j["format"] = m->gguf ? "gguf" : m->meta ? "meta-pth" : "safetensors";
  // AWQ / GPTQ int4 checkpoints are repacked into Q4_1 at load (formats/hf_int4.h).
  if (!m->weights->repacked_from.empty())
    j["repacked_from"] = m->weights->repacked_from + " int4 (repacked into q4_1 at load)";
  j["architecture"] = c.architecture;
  j["config"] = {{"vocab_size", c.vocab_size},
                 {"hidden_size", c.hidden_size},
                 {"intermediate_size", c.intermediate_size},
                 {"num_layers", c.num_layers},
                 {"num_heads", c.num_heads},
                 {"num_kv_heads", c.num_kv_heads},
                 {"head_dim", c.head_dim},
                 {"max_position", c.max_position},
                 {"rms_eps", c.rms_eps},
                 {"rope_theta", c.rope_theta},
                 {"rope_layout", c.rope_layout == RopeLayout::kHalf ? "rotate_half" : "interleaved"},
                 {"rope_scaling", c.rope_scaling.type == RopeScaling::Type::kNone     ? "none"
                                  : c.rope_scaling.type == RopeScaling::Type::kLinear ? "linear"
                                                                                      : "llama3"},
                 {"tie_embeddings", c.tie_embeddings}};
  j["tokenizer"] = m->tokenizer ? nlohmann::json{{"kind", m->tokenizer->kind()},
                                                 {"vocab_size", m->tokenizer->vocab_size()},
                                                 {"bos_id", m->tokenizer->bos_id()},
                                                 {"eos_id", m->tokenizer->eos_id()},
                                                 {"add_bos", m->tokenizer->add_bos()}}
                                : nlohmann::json(nullptr);
  j["num_tensors"] = m->weights->tensors.size();
  j["weight_bytes"] = m->weight_bytes();
  j["bytes_by_dtype"] = by_dtype;
  j["kv_bytes_per_token"] = kv_per_token;
  j["kv_bytes_at_ctx"] = kv_per_token * size_t(ctx);
  j["ctx"] = ctx;
  if (args.has("--tensors") || args.has("--json")) {
    nlohmann::json ts = nlohmann::json::array();
    const TensorNaming naming = m->gguf_names() ? TensorNaming::kGguf : TensorNaming::kHf;
    for (auto& [name, t] : m->weights->tensors) {
      // Role from the one tensor table (model/llama_tensors.h); null for tensors outside it (rope_freqs).
      auto id = parse_llama_tensor_name(name, naming);
      nlohmann::json role =
          id ? nlohmann::json(llama_tensor_spec(id->role).role_name) : nlohmann::json(nullptr);
      nlohmann::json layer = id && id->layer >= 0 ? nlohmann::json(id->layer) : nlohmann::json(nullptr);
      ts.push_back({{"name", name},
                    {"role", role},
                    {"layer", layer},
                    {"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"bytes", t.nbytes}});
    }
    j["tensors"] = ts;
  }
  if (args.has("--json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:        %s (%s)\n", m->path.c_str(), j["format"].get<std::string>().c_str());
  if (j.contains("repacked_from"))
    std::printf("weights:      %s\n", j["repacked_from"].get<std::string>().c_str());
  std::printf("architecture: %s\n", c.architecture.c_str());
  std::printf("config:       %s\n", j["config"].dump().c_str());
  if (m->tokenizer) std::printf("tokenizer:    %s\n", j["tokenizer"].dump().c_str());
  std::printf("tensors:      %zu, %.1f MiB of weights\n", m->weights->tensors.size(),
              m->weight_bytes() / 1048576.0);
  for (auto& [dt, b] : by_dtype) std::printf("  %-6s %10.1f MiB\n", dt.c_str(), b / 1048576.0);
  std::printf("KV cache:     %.1f KiB per token, %.1f MiB at context %lld (f32)\n", kv_per_token / 1024.0,
              kv_per_token * double(ctx) / 1048576.0, ctx);
  if (args.has("--tensors")) {
    std::printf("  %-48s %-9s %5s %-5s %s\n", "name", "role", "layer", "dtype", "shape");
    for (auto& t : j["tensors"])
      std::printf("  %-48s %-9s %5s %-5s %s\n", t["name"].get<std::string>().c_str(),
                  t["role"].is_null() ? "-" : t["role"].get<std::string>().c_str(),
                  t["layer"].is_null() ? "-" : std::to_string(t["layer"].get<int>()).c_str(),
                  t["dtype"].get<std::string>().c_str(), t["shape"].dump().c_str());
    if (c.tie_embeddings) std::printf("  (lm_head: tied to the token embedding)\n");
  }
  return 0;
}

}  // namespace llamarun::cli
