#include "server/metrics.h"

#include <cstdio>

namespace llamarun::server {

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void gauge(std::string& out, const std::string& name, const std::string& help, double v,
           const char* type = "gauge") {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + num(v) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics()
    : ttft(
          {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      itl({0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
           0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5}),
      e2e({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}) {}

std::string ServerMetrics::render(const EngineStats* s, bool ready, size_t open_connections) const {
  std::string out;
  gauge(out, "llamarun_model_loaded", "1 when the model is loaded and requests are served", ready ? 1 : 0);
  gauge(out, "llamarun_open_connections", "Open HTTP connections", double(open_connections));
  const EngineStats z{};
  const EngineStats& e = s ? *s : z;
  gauge(out, "llamarun_num_requests_running", "Requests running in the engine (in the batch)", e.running);
  gauge(out, "llamarun_num_requests_waiting", "Requests waiting in the engine queue", e.waiting);
  gauge(out, "llamarun_kv_cache_usage_ratio", "Fraction of KV cache blocks in use (0..1)", e.kv_usage);
  gauge(out, "llamarun_prompt_tokens_total", "Prompt tokens processed", double(e.prompt_tokens_total),
        "counter");
  gauge(out, "llamarun_generation_tokens_total", "Tokens generated", double(e.generation_tokens_total),
        "counter");
  gauge(out, "llamarun_num_preemptions_total", "Sequences preempted (KV cache full; recomputed later)",
        double(e.preemptions_total), "counter");
  gauge(out, "llamarun_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache",
        double(e.prefix_cache_queries), "counter");
  gauge(out, "llamarun_prefix_cache_hits_total", "Prompt tokens found in the prefix cache",
        double(e.prefix_cache_hits), "counter");
  gauge(out, "llamarun_prefix_cache_hit_rate", "Prefix cache hits / queries since start (0 when none)",
        e.prefix_cache_queries ? double(e.prefix_cache_hits) / double(e.prefix_cache_queries) : 0.0);
  gauge(out, "llamarun_engine_steps_total", "Engine scheduler iterations", double(e.steps_total), "counter");
  gauge(out, "llamarun_engine_schedule_seconds_total",
        "Engine-thread time spent scheduling (admission, queues, batch building)", e.schedule_seconds,
        "counter");
  gauge(out, "llamarun_engine_model_seconds_total",
        "Engine-thread time spent in forward passes (input staging, device work, result copies)",
        e.model_seconds, "counter");
  gauge(out, "llamarun_engine_backend_host_seconds_total",
        "Part of the forward time spent on the host preparing batches (validation, ids, block tables)",
        e.backend_host_seconds, "counter");
  gauge(out, "llamarun_engine_postprocess_seconds_total",
        "Engine-thread time spent after forward passes (sampling, detokenisation, stop checks, callbacks)",
        e.postprocess_seconds, "counter");
  ttft.render(out, "llamarun_time_to_first_token_seconds", "Time from request arrival to its first token");
  itl.render(out, "llamarun_inter_token_latency_seconds", "Time between consecutive tokens of a choice");
  e2e.render(out, "llamarun_e2e_request_latency_seconds", "Time from request arrival to its last token");
  out +=
      "# HELP llamarun_request_success_total Generation requests finished, by finish reason\n"
      "# TYPE llamarun_request_success_total counter\n";
  for (const auto& [reason, n] : finished_requests)
    out += "llamarun_request_success_total{finished_reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
  out +=
      "# HELP llamarun_http_responses_total HTTP responses, by status code\n"
      "# TYPE llamarun_http_responses_total counter\n";
  for (const auto& [code, n] : http_responses)
    out += "llamarun_http_responses_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
  gauge(out, "llamarun_rejected_queue_full_total", "Requests refused with 429 because the queue was full",
        double(rejected_queue_full), "counter");
  gauge(out, "llamarun_client_disconnects_total", "Generation requests whose client went away before the end",
        double(client_disconnects), "counter");
  return out;
}

}  // namespace llamarun::server
