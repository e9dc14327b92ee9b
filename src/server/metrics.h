// Server metrics in the Prometheus text exposition format: request latency histograms kept here
// (time to first token, inter-token latency, end-to-end latency) plus the engine's gauges and
// counters (running/waiting requests, KV cache usage, token counters, preemptions, prefix cache).
// Loop thread only: no locking.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace llamarun::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds in seconds, increasing
  void observe(double v);
  // Appends the _bucket/_sum/_count lines of metric `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // [bounds + 1], non-cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct ServerMetrics {
  ServerMetrics();
  Histogram ttft, itl, e2e;
  std::map<int, uint64_t> http_responses;             // status -> count
  std::map<std::string, uint64_t> finished_requests;  // finish reason -> count
  uint64_t rejected_queue_full = 0;
  uint64_t client_disconnects = 0;

  // The full /metrics page. engine is null while the model loads.
  std::string render(const EngineStats* engine, bool ready, size_t open_connections) const;
};

}  // namespace llamarun::server
