// `llamarun serve`: an OpenAI-compatible HTTP server over the Engine.
//
// Routes: POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models[/{id}],
// POST /tokenize, POST /detokenize, GET /health (503 while loading or draining, 200 when ready),
// GET /metrics (Prometheus text). With an API key every route but /health needs
// "Authorization: Bearer KEY".
//
// Lifecycle: run() listens first and loads the model on a background thread (health says 503 until
// it is ready). SIGTERM or SIGINT starts a graceful drain: new requests get 503, running ones finish
// (up to drain_timeout_s), then run() returns 0. One JSON log line per request goes to stderr.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "engine/engine.h"
#include "model/model.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"

namespace llamarun::server {

struct ServerOptions {
  std::string model_path;
  std::string served_model_name;  // "" -> the model file's name without .gguf
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;  // "" -> no authentication
  size_t max_body_bytes = 8u << 20;
  double idle_timeout_s = 30;  // idle connections (nothing in flight, nothing received) are closed
  int max_connections = 4096;  // open connections beyond which new ones get 503 and a log line
  int max_n = 16;
  double drain_timeout_s = 30;
  bool log_requests = true;
  bool allow_special_in_content = false;  // special-token strings in chat content become tokens
  double load_delay_s = 0;  // testing: wait this long before loading (makes the 503 phase observable)
  LoadOptions load;
  EngineConfig engine;
  // Builds the model instead of load_model(model_path) (e.g. random weights for benchmarks). Optional.
  std::function<std::unique_ptr<Model>()> make_model;
  // Builds the engine's forward-pass backend once the model is loaded (e.g. the CUDA backend); null or
  // returning null: the CPU forward pass.
  std::function<std::unique_ptr<StepModel>(Model&)> make_backend;
};

class Server {
 public:
  explicit Server(ServerOptions opts);
  ~Server();
  // Serves until SIGTERM/SIGINT; returns the process exit code (0 after a drain, 1 when the model
  // could not be loaded). Blocks SIGTERM/SIGINT in the calling thread (call it before starting
  // other threads so that they inherit the mask).
  int run();

 private:
  struct RequestLog;
  void handle(HttpRequest& req, const std::shared_ptr<Exchange>& ex);
  void route(HttpRequest& req, const std::shared_ptr<Exchange>& ex, RequestLog& log);
  void generate(HttpRequest& req, const std::shared_ptr<Exchange>& ex, bool chat, RequestLog& log);
  void check_auth(const HttpRequest& req) const;
  void reply_json(const std::shared_ptr<Exchange>& ex, int status, const nlohmann::json& body,
                  RequestLog& log);
  void write_log(const RequestLog& log);
  void on_loaded();
  void begin_drain();
  void maybe_exit();

  ServerOptions opts_;
  HttpServer http_;
  ServerMetrics metrics_;
  std::unique_ptr<Model> model_;  // set by the loader thread before on_loaded() is posted
  std::unique_ptr<Engine> engine_;
  ApiContext api_;
  std::thread loader_, drainer_;
  bool ready_ = false, draining_ = false, engine_stopped_ = false;
  std::atomic<bool> exit_ok_{false};
  int exit_code_ = 0;
  int active_ = 0;  // generation requests in flight
  uint64_t next_request_ = 0;
  std::string id_prefix_;
};

}  // namespace llamarun::server
