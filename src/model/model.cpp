#include "model/model.h"

#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mmap.h"
#include "formats/model_files.h"
#include "model/meta_checkpoint.h"
#include "model/quantize_model.h"

namespace llamarun {

namespace {

std::string exe_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, size_t(n));
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

}  // namespace

std::string default_model_path() {
  if (const char* env = std::getenv("LLAMARUN_MODEL"); env && *env) return env;
  const std::string rel = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const std::string exe = exe_dir();
  for (const std::string& base : {std::string("."), exe + "/..", exe + "/../..", exe})
    if (file_exists(base + "/" + rel)) return base + "/" + rel;
  fail("the default model (", rel,
       ") is not present: run scripts/setup.sh (or scripts/get-default-model.sh), ", "or pass -m MODEL");
}

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opts) {
  auto m = std::make_unique<Model>();
  m->path = path;
  if (!file_exists(path)) fail(path, ": no such file or directory");
  m->gguf = !is_directory(path);
  m->meta = !m->gguf && is_meta_checkpoint_dir(path);
  m->weights = std::make_shared<WeightMap>(m->meta ? load_meta_checkpoint(path) : load_weights(path));
  if (m->meta) {
    // Meta's layout = GGUF's (names mapped, interleaved RoPE pairs): see model/meta_checkpoint.h.
    m->cfg =
        config_from_meta_params(read_text_file(path + "/params.json"), *m->weights, path + "/params.json");
    if (const std::string td = meta_tokenizer_dir(path); opts.load_tokenizer && !td.empty()) {
      try {
        m->tokenizer = load_tokenizer_dir(td);
      } catch (const Error& e) {
        fail(e.what(),
             " (Meta checkpoints: the SentencePiece tokenizer.model of Llama 1/2 is supported; Llama 3's "
             "tiktoken tokenizer.model is not yet)");
      }
      m->cfg.bos_id = m->tokenizer->bos_id();
      if (m->tokenizer->eos_id() >= 0) m->cfg.eos_ids = {m->tokenizer->eos_id()};
    }
  } else if (m->gguf) {
    m->cfg = config_from_gguf(*m->weights, path);
    if (auto it = m->weights->meta.find("tokenizer.chat_template"); it != m->weights->meta.end())
      if (auto* s = std::get_if<std::string>(&it->second)) m->chat_template = *s;
    if (opts.load_tokenizer && m->weights->meta.count("tokenizer.ggml.model"))
      m->tokenizer = tokenizer_from_gguf(*m->weights);
    // The vocabulary arrays now live in the tokenizer; drop the metadata copies.
    for (const char* k : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
                          "tokenizer.ggml.token_type"})
      m->weights->meta.erase(k);
  } else {
    const std::string cfg_path = path + "/config.json";
    m->cfg = config_from_hf_json(read_text_file(cfg_path), cfg_path);
    if (opts.load_tokenizer &&
        (file_exists(path + "/tokenizer.json") || file_exists(path + "/tokenizer.model")))
      m->tokenizer = load_tokenizer_dir(path);
    const std::string tc = path + "/tokenizer_config.json";
    if (file_exists(tc)) {
      try {
        auto j = nlohmann::json::parse(read_text_file(tc));
        if (j.contains("chat_template") && j["chat_template"].is_string())
          m->chat_template = j["chat_template"];
      } catch (const nlohmann::json::exception& e) {
        fail(tc, ": not valid JSON: ", e.what());
      }
    }
  }
  m->cfg.validate(path);
  if (!opts.quantize.empty())
    quantize_weight_map(*m->weights, parse_quant_scheme(opts.quantize), m->cfg.num_layers, m->gguf,
                        m->owned_storage, stderr_progress("quantizing to " + opts.quantize));
  if (m->tokenizer && m->tokenizer->vocab_size() > m->cfg.vocab_size)
    fail(path, ": the tokenizer has ", m->tokenizer->vocab_size(), " tokens but the model's vocab_size is ",
         m->cfg.vocab_size);
  LlamaWeights w = bind_llama_weights(m->cfg, *m->weights,
                                      m->gguf_names() ? TensorNaming::kGguf : TensorNaming::kHf, path);
  const bool bf16_ckpt = w.tok_embd.dtype == DType::BF16;
  m->llama = std::make_unique<LlamaModel>(m->cfg, std::move(w), opts.max_batch);
  if (opts.activations == "bf16")
    m->llama->options().emulate_bf16 = true;
  else if (opts.activations == "f32")
    m->llama->options().emulate_bf16 = false;
  else if (opts.activations == "auto")
    m->llama->options().emulate_bf16 = bf16_ckpt;
  else
    fail("activations must be auto, f32 or bf16, not '", opts.activations, "'");
  m->llama->options().int8_activations = opts.activations != "f32";
  return m;
}

}  // namespace llamarun
