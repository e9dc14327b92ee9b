// A small HTTP/1.1 server on one epoll thread: keep-alive, Content-Length request bodies, complete
// and chunked (streaming) responses, and detection of clients that go away (FIN, reset or a failed
// write) while their request is in flight. Thousands of idle or streaming connections cost one
// socket and a few buffers each, no thread.
//
// Threading: run() owns every socket. Handlers and Exchange methods run on that loop thread only;
// other threads hand work to it with post(). Nothing here knows about JSON: the errors this layer
// produces itself (413, 431, 400 for an unparsable request) get their body from error_body.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llamarun::server {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string path;                                          // target before '?', e.g. "/v1/completions"
  std::string query;                                         // after '?', without it
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote;  // "ip:port" of the client
  // The first header of that (lower-case) name, or null.
  const std::string* header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
};

class HttpServer;
struct Connection;

// One request/response exchange. Loop thread only. Holding a shared_ptr keeps the handle valid after
// the connection is gone (then every write is dropped and closed() is true).
class Exchange {
 public:
  // A complete response (Content-Length). Ignored when a response was already started.
  void respond(HttpResponse r);
  // A chunked response: headers now, then write() pieces, then end().
  void start_stream(int status, const std::string& content_type,
                    const std::vector<std::pair<std::string, std::string>>& headers = {});
  void write(std::string_view data);
  void end();
  // True once the client went away (or the server closed the connection).
  bool closed() const { return conn_ == nullptr; }
  // Called once, on the loop thread, when the client goes away before the response has ended.
  void on_close(std::function<void()> cb) { on_close_ = std::move(cb); }
  bool started() const { return started_; }
  bool finished() const { return finished_; }
  int status() const { return status_; }

 private:
  friend class HttpServer;
  HttpServer* server_ = nullptr;
  Connection* conn_ = nullptr;
  std::function<void()> on_close_;
  bool started_ = false, finished_ = false, keep_alive_ = true;
  int status_ = 0;
};

using Handler = std::function<void(HttpRequest& req, const std::shared_ptr<Exchange>& ex)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (see port())
  size_t max_body_bytes = 8u << 20;     // larger bodies get 413
  size_t max_header_bytes = 16 << 10;   // request line + headers; larger get 431
  size_t max_output_bytes = 64u << 20;  // unsent bytes of a slow reader before it is dropped
  // Open connections beyond which new ones are refused (a 503 and close), with a log line.
  int max_connections = 4096;
  double header_timeout_s = 30;  // a request must arrive completely within this after its first byte
  // Connections with nothing in flight and nothing received (a new one that sends nothing, or
  // keep-alive between requests) are closed after this.
  double idle_timeout_s = 30;
  // Warnings this layer logs (the connection cap reached). Optional; default: a line on stderr.
  std::function<void(const std::string&)> log_warning;
  // Body of the errors this layer sends itself: (status, message) -> (content type, body).
  std::function<std::pair<std::string, std::string>(int, const std::string&)> error_body;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions opts, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; throws Error naming the address when that fails.
  void listen();
  int port() const { return port_; }
  // Serves until stop(); returns after closing every connection.
  void run();
  // Thread-safe: runs fn on the loop thread soon.
  void post(std::function<void()> fn);
  // Thread-safe: makes run() return.
  void stop();
  // Loop thread: calls cb when fd becomes readable (e.g. a signalfd).
  void watch_fd(int fd, std::function<void()> cb);
  // Loop thread: closes idle keep-alive connections and makes every later response "Connection: close".
  void close_idle();
  size_t open_connections() const { return open_.load(); }

  // Fuzzing and tests: runs the request parser and handler on `bytes` as if one client had sent
  // them on a fresh connection (responses go to a socketpair and are discarded). Needs no listen();
  // loop thread only.
  void process_for_fuzzing(std::string_view bytes);

 private:
  friend class Exchange;
  void accept_all();
  void on_event(uint64_t id, uint32_t events);
  void read_from(Connection& c);
  void parse_requests(Connection& c);
  void dispatch(Connection& c, size_t header_end, size_t body_len);
  void send_error(Connection& c, int status, const std::string& msg, bool close);
  void queue_output(Connection& c, std::string_view data);
  void flush(Connection& c);
  void finish_exchange(Connection& c);
  void close_conn(Connection& c);
  // After an error response: stop writing (FIN) and read and drop what the client still sends,
  // so that it sees the response instead of a reset; closed on EOF or after a few seconds.
  void linger_close(Connection& c);
  void update_interest(Connection& c);
  void run_posted();
  void sweep_timeouts();

  HttpServerOptions opts_;
  Handler handler_;
  int listen_fd_ = -1, epoll_fd_ = -1, event_fd_ = -1;
  int port_ = 0;
  uint64_t next_id_ = 16;  // ids < 16 are reserved: 1 = listen socket, 2 = eventfd, 3+ watchers
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::vector<uint64_t> dead_;  // closed connections, freed at the end of the loop iteration
  std::vector<std::pair<int, std::function<void()>>> watchers_;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> open_{0};
  bool draining_ = false;
  double last_sweep_ = 0;
  uint64_t refused_ = 0;  // connections refused at the cap since the last warning
  double last_refused_log_ = -1e9;
};

}  // namespace llamarun::server
