#include "server/server.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

#include "core/clock.h"
#include "core/error.h"
#include "server/api_error.h"
#include "server/chat_page.h"
#include "server/completion_session.h"
#include "server/json_text.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace llamarun::server {

using nlohmann::json;

namespace {

std::string iso_time() {
  using namespace std::chrono;
  auto t = system_clock::now();
  std::time_t tt = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  int ms = int(duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000);
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::string model_name_from_path(const std::string& path) {
  std::string s = path;
  while (!s.empty() && s.back() == '/') s.pop_back();
  size_t slash = s.rfind('/');
  if (slash != std::string::npos) s = s.substr(slash + 1);
  if (s.size() > 5 && s.compare(s.size() - 5, 5, ".gguf") == 0) s.resize(s.size() - 5);
  return s;
}

void log_event(const json& j) {
  std::string line = json_text(j) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

// Constant-time comparison (the key's length is not secret).
bool same_key(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace

struct Server::RequestLog {
  std::string id, method, path, remote;
  double start_s = 0;
  int status = 0;
  bool logged = false;
  std::string error;
};

Server::Server(ServerOptions opts)
    : opts_(std::move(opts)),
      http_(
          [&] {
            HttpServerOptions h;
            h.host = opts_.host;
            h.port = opts_.port;
            h.max_body_bytes = opts_.max_body_bytes;
            h.idle_timeout_s = opts_.idle_timeout_s;
            h.max_connections = opts_.max_connections;
            h.log_warning = [](const std::string& m) {
              log_event({{"ts", iso_time()}, {"event", "warning"}, {"message", m}});
            };
            h.error_body = [](int status, const std::string& msg) {
              return std::make_pair(std::string("application/json"), error_body(status, msg));
            };
            return h;
          }(),
          [this](HttpRequest& req, const std::shared_ptr<Exchange>& ex) { handle(req, ex); }) {
  if (opts_.served_model_name.empty()) opts_.served_model_name = model_name_from_path(opts_.model_path);
  std::random_device rd;
  char buf[24];
  std::snprintf(buf, sizeof buf, "%08x", unsigned(rd()));
  id_prefix_ = buf;
}

Server::~Server() {
  if (loader_.joinable()) loader_.join();
  if (drainer_.joinable()) drainer_.join();
}

int Server::run() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) fail("signalfd failed");

  http_.listen();
  http_.watch_fd(sfd, [this, sfd] {
    signalfd_siginfo si;
    while (::read(sfd, &si, sizeof si) == ssize_t(sizeof si)) {
      log_event({{"ts", iso_time()}, {"event", "signal"}, {"signal", strsignal(int(si.ssi_signo))}});
      begin_drain();
    }
  });
  log_event({{"ts", iso_time()},
             {"event", "listening"},
             {"host", opts_.host},
             {"port", http_.port()},
             {"model", opts_.model_path}});

  loader_ = std::thread([this] {
    try {
      if (opts_.load_delay_s > 0)
        std::this_thread::sleep_for(std::chrono::duration<double>(opts_.load_delay_s));
      auto m = opts_.make_model ? opts_.make_model() : load_model(opts_.model_path, opts_.load);
      if (!m->tokenizer) fail(m->path, ": the model has no tokenizer");
      auto e =
          std::make_unique<Engine>(*m, opts_.engine, opts_.make_backend ? opts_.make_backend(*m) : nullptr);
      e->start();
      model_ = std::move(m);
      engine_ = std::move(e);
      http_.post([this] { on_loaded(); });
    } catch (const std::exception& ex) {
      std::string msg = ex.what();
      http_.post([this, msg] {
        log_event({{"ts", iso_time()}, {"event", "load_failed"}, {"error", msg}});
        std::fprintf(stderr, "llamarun serve: error: %s\n", msg.c_str());
        exit_code_ = 1;
        http_.stop();
      });
    }
  });

  http_.run();
  if (loader_.joinable()) loader_.join();
  if (drainer_.joinable()) drainer_.join();
  if (engine_ && !engine_stopped_) engine_->stop(false, 0);
  ::close(sfd);
  log_event({{"ts", iso_time()}, {"event", "exit"}, {"code", exit_code_}});
  return exit_code_;
}

void Server::on_loaded() {
  const Tokenizer& tok = *model_->tokenizer;
  api_.tok = &tok;
  api_.chat_format = detect_chat_format(model_->chat_template, tok);
  api_.chat_options = chat_options_from_template(api_.chat_format, model_->chat_template);
  api_.vocab_size = model_->cfg.vocab_size;
  api_.max_model_len = engine_->max_model_len();
  api_.kv_capacity_tokens = int64_t(engine_->num_kv_blocks()) * opts_.engine.block_size;
  api_.model_name = opts_.served_model_name;
  api_.max_n = opts_.max_n;
  api_.special_in_content = opts_.allow_special_in_content;
  ready_ = true;
  log_event({{"ts", iso_time()},
             {"event", "ready"},
             {"model", api_.model_name},
             {"max_model_len", api_.max_model_len},
             {"backend", engine_->backend_name()},
             {"kv_blocks", engine_->num_kv_blocks()},
             {"warmup_s", engine_->backend_stats().warmup_seconds},
             {"chat_format", chat_format_name(api_.chat_format)}});
}

void Server::begin_drain() {
  if (draining_) return;
  draining_ = true;
  http_.close_idle();
  drainer_ = std::thread([this] {
    if (loader_.joinable()) loader_.join();
    if (engine_) engine_->stop(/*drain=*/true, opts_.drain_timeout_s);
    http_.post([this] {
      engine_stopped_ = true;
      maybe_exit();
    });
    // Sessions end when their last outputs (posted before this point) are written; give them a moment.
    for (int i = 0; i < 50 && !exit_ok_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    http_.stop();
  });
}

void Server::maybe_exit() {
  if (draining_ && engine_stopped_ && active_ == 0) {
    exit_ok_ = true;
    http_.stop();
  }
}

void Server::write_log(const RequestLog& log) {
  metrics_.http_responses[log.status]++;
  if (!opts_.log_requests) return;
  json j{{"ts", iso_time()},     {"event", "request"},
         {"id", log.id},         {"method", log.method},
         {"path", log.path},     {"status", log.status},
         {"remote", log.remote}, {"duration_ms", (now_seconds() - log.start_s) * 1000.0}};
  if (!log.error.empty()) j["error"] = log.error;
  log_event(j);
}

void Server::reply_json(const std::shared_ptr<Exchange>& ex, int status, const json& body, RequestLog& log) {
  HttpResponse r;
  r.status = status;
  r.body = json_text(body);
  ex->respond(std::move(r));
  log.status = status;
}

void Server::check_auth(const HttpRequest& req) const {
  if (opts_.api_key.empty()) return;
  const std::string* h = req.header("authorization");
  if (!h) throw ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'");
  const std::string& v = *h;
  if (v.size() < 7 || (v.compare(0, 7, "Bearer ") != 0 && v.compare(0, 7, "bearer ") != 0))
    throw ApiError(401, "the Authorization header must be 'Bearer <key>'");
  std::string key = v.substr(7);
  while (!key.empty() && key.front() == ' ') key.erase(0, 1);
  if (key.empty()) throw ApiError(401, "empty API key after 'Bearer '");
  if (!same_key(key, opts_.api_key)) throw ApiError(401, "invalid API key");
}

void Server::handle(HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
  RequestLog log;
  log.start_s = now_seconds();
  log.method = req.method;
  log.path = req.path.substr(0, 200);
  log.remote = req.remote;
  log.id = id_prefix_ + "-" + std::to_string(++next_request_);
  try {
    route(req, ex, log);
  } catch (const ApiError& e) {
    HttpResponse r;
    r.status = e.status;
    r.body = error_body(e.status, e.message, e.param, e.type);
    if (e.retry_after_s > 0) r.headers.push_back({"Retry-After", std::to_string(e.retry_after_s)});
    ex->respond(std::move(r));
    log.status = e.status;
    log.error = e.message;
  } catch (const Error& e) {  // a library error while handling this request's input
    HttpResponse r;
    r.status = 400;
    r.body = error_body(400, e.what());
    ex->respond(std::move(r));
    log.status = 400;
    log.error = e.what();
  } catch (const std::bad_alloc&) {
    HttpResponse r;
    r.status = 503;
    r.body = error_body(503, "out of memory while handling the request");
    ex->respond(std::move(r));
    log.status = 503;
    log.error = "out of memory";
  } catch (const std::exception& e) {
    HttpResponse r;
    r.status = 500;
    r.body = error_body(500, std::string("internal error: ") + e.what());
    ex->respond(std::move(r));
    log.status = 500;
    log.error = e.what();
  }
  if (log.status != 0) write_log(log);  // sessions log when they end
}

void Server::route(HttpRequest& req, const std::shared_ptr<Exchange>& ex, RequestLog& log) {
  const std::string& p = req.path;
  auto method = [&](const char* m) {
    if (req.method != m) {
      ApiError e(405, "method '" + quote_text(req.method, 20) + "' is not allowed on " + quote_text(p) +
                          "; use " + m);
      throw e;
    }
  };
  if (p == "/health") {
    method("GET");
    if (draining_)
      reply_json(ex, 503, {{"status", "draining"}}, log);
    else if (!ready_)
      reply_json(ex, 503, {{"status", "loading"}}, log);
    else
      reply_json(ex, 200, {{"status", "ok"}}, log);
    return;
  }
  if (is_chat_page_path(p)) {  // the page needs no key; the API calls it makes do
    method("GET");
    ex->respond(chat_page_response());
    log.status = 200;
    return;
  }
  check_auth(req);
  if (p == "/metrics") {
    method("GET");
    EngineStats st;
    if (ready_) st = engine_->stats();
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.render(ready_ ? &st : nullptr, ready_, http_.open_connections());
    ex->respond(std::move(r));
    log.status = 200;
    return;
  }
  const bool known = p == "/v1/models" || p.rfind("/v1/models/", 0) == 0 || p == "/v1/completions" ||
                     p == "/v1/chat/completions" || p == "/tokenize" || p == "/detokenize";
  if (!known) throw ApiError(404, "no route for " + quote_text(p));
  if (draining_) {
    ApiError e(503, "the server is shutting down");
    throw e;
  }
  if (!ready_) {
    ApiError e(503, "the model is still loading; retry shortly");
    e.retry_after_s = 1;
    throw e;
  }
  if (p == "/v1/models" || p.rfind("/v1/models/", 0) == 0) {
    method("GET");
    json m{{"id", api_.model_name},
           {"object", "model"},
           {"created", int64_t(std::time(nullptr))},
           {"owned_by", "llamarun"},
           {"max_model_len", api_.max_model_len}};
    if (p == "/v1/models") {
      reply_json(ex, 200, {{"object", "list"}, {"data", json::array({m})}}, log);
    } else {
      if (p.substr(11) != api_.model_name)
        throw ApiError(404, "The model '" + quote_text(p.substr(11)) + "' does not exist", "model");
      reply_json(ex, 200, m, log);
    }
    return;
  }
  method("POST");
  if (p == "/v1/completions" || p == "/v1/chat/completions") {
    generate(req, ex, p == "/v1/chat/completions", log);
    return;
  }
  json body = parse_json_body(req.body);
  if (p == "/tokenize") {
    auto ids = parse_tokenize(body, api_);
    reply_json(ex, 200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", api_.max_model_len}}, log);
  } else {
    auto ids = parse_detokenize(body, api_);
    reply_json(ex, 200, {{"prompt", model_->tokenizer->decode(ids)}}, log);
  }
}

void Server::generate(HttpRequest& req, const std::shared_ptr<Exchange>& ex, bool chat, RequestLog& log) {
  json body = parse_json_body(req.body);
  CompletionJob job = chat ? parse_chat_completion(body, api_) : parse_completion(body, api_);
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + log.id;
  std::weak_ptr<Exchange> wex = ex;
  const bool stream = job.stream;
  const int n = job.n;
  auto on_done = [this, wex, log, stream, n](const SessionSummary& s) mutable {
    if (auto e = wex.lock()) e->on_close(nullptr);
    --active_;
    metrics_.http_responses[s.status]++;
    if (opts_.log_requests) {
      json j{{"ts", iso_time()},
             {"event", "request"},
             {"id", log.id},
             {"method", log.method},
             {"path", log.path},
             {"status", s.status},
             {"remote", log.remote},
             {"stream", stream},
             {"n", n},
             {"prompt_tokens", s.prompt_tokens},
             {"completion_tokens", s.completion_tokens},
             {"cached_tokens", s.cached_tokens},
             {"finish_reason", s.finish_reason},
             {"ttft_ms", s.ttft_s >= 0 ? json(s.ttft_s * 1000.0) : json(nullptr)},
             {"duration_ms", (now_seconds() - log.start_s) * 1000.0}};
      log_event(j);
    }
    maybe_exit();
  };
  auto session = std::make_shared<CompletionSession>(std::move(job), ex, *model_->tokenizer, id,
                                                     api_.model_name, log.start_s, metrics_, on_done);
  const CompletionJob& jb = session->job();
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < jb.prompts.size(); ++i) {
    GenerationRequest g;
    g.prompt = jb.prompts[i];
    g.params = jb.params;
    g.n = jb.n;
    const int pi = int(i);
    HttpServer* http = &http_;
    g.on_output = [http, session, pi](const RequestOutput& o) {
      http->post([session, pi, o] { session->on_output(pi, o); });
    };
    try {
      ids.push_back(engine_->submit(std::move(g)));
    } catch (const QueueFull&) {
      session->abandon();
      for (uint64_t r : ids) engine_->cancel(r);
      metrics_.rejected_queue_full++;
      ApiError e(
          429,
          "the request queue is full (" + std::to_string(opts_.engine.max_queue) + " waiting); retry later",
          "", "rate_limit_error");
      e.retry_after_s = 1;
      throw e;
    } catch (const Error& err) {
      session->abandon();
      for (uint64_t r : ids) engine_->cancel(r);
      throw ApiError(400, err.what());
    }
  }
  ++active_;
  Engine* engine = engine_.get();
  std::weak_ptr<CompletionSession> ws = session;
  ex->on_close([engine, ids, ws] {
    auto s = ws.lock();
    if (!s || s->done()) return;
    for (uint64_t r : ids) engine->cancel(r);
    s->client_gone();
  });
  session->begin();
}

}  // namespace llamarun::server
