#include "server/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/clock.h"
#include "core/error.h"
#include "server/api_error.h"

namespace llamarun::server {

namespace {

constexpr uint64_t kListenId = 1, kEventId = 2, kFirstWatcherId = 3;

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace

struct Connection {
  enum State { kReading, kInFlight, kDiscarding, kClosing, kLingering };
  uint64_t id = 0;
  int fd = -1;
  std::string remote;
  std::string in;   // received, not yet consumed
  std::string out;  // queued for sending, from out_off
  size_t out_off = 0;
  State state = kReading;
  std::shared_ptr<Exchange> ex;
  bool keep_alive = true;
  bool close_after_write = false;
  bool parsing = false;
  bool sent_continue = false;
  size_t discard_left = 0;  // body bytes still to read and drop after a 413
  double first_byte_t = 0;  // when the pending partial request began (0: none)
  double last_active = 0;
  double linger_start = 0;
  uint32_t interest = 0;
};

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

// ---- Exchange ----

void Exchange::respond(HttpResponse r) {
  if (!conn_ || started_) return;
  started_ = true;
  status_ = r.status;
  Connection& c = *conn_;
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  head += "Content-Type: " + r.content_type + "\r\n";
  head += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  for (const auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
  const bool ka = keep_alive_ && !server_->draining_;
  head += ka ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  c.keep_alive = ka;
  finished_ = true;
  head += r.body;
  server_->queue_output(c, head);
  if (conn_) server_->finish_exchange(*conn_);
}

void Exchange::start_stream(int status, const std::string& content_type,
                            const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!conn_ || started_) return;
  started_ = true;
  status_ = status;
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  head += "Content-Type: " + content_type + "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n";
  for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  const bool ka = keep_alive_ && !server_->draining_;
  head += ka ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  conn_->keep_alive = ka;
  server_->queue_output(*conn_, head);
}

void Exchange::write(std::string_view data) {
  if (!conn_ || !started_ || finished_ || data.empty()) return;
  char size[24];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string chunk;
  chunk.reserve(data.size() + n + 2);
  chunk.append(size, n);
  chunk.append(data);
  chunk += "\r\n";
  server_->queue_output(*conn_, chunk);
}

void Exchange::end() {
  if (!conn_ || !started_ || finished_) return;
  finished_ = true;
  server_->queue_output(*conn_, "0\r\n\r\n");
  if (conn_) server_->finish_exchange(*conn_);
}

// ---- HttpServer ----

HttpServer::HttpServer(HttpServerOptions opts, Handler handler)
    : opts_(std::move(opts)), handler_(std::move(handler)) {
  if (!opts_.error_body)
    opts_.error_body = [](int, const std::string& m) { return std::make_pair(std::string("text/plain"), m); };
  if (!opts_.log_warning)
    opts_.log_warning = [](const std::string& m) { std::fprintf(stderr, "llamarun serve: %s\n", m.c_str()); };
}

HttpServer::~HttpServer() {
  for (auto& [id, c] : conns_)
    if (c->fd >= 0) ::close(c->fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void HttpServer::listen() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(opts_.port);
  int rc = getaddrinfo(opts_.host.empty() ? nullptr : opts_.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) fail("cannot resolve listen address '", opts_.host, "': ", gai_strerror(rc));
  std::string last_err = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 4096) == 0) {
      listen_fd_ = fd;
      break;
    }
    last_err = std::strerror(errno);
    ::close(fd);
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) fail("cannot listen on ", opts_.host, ":", opts_.port, ": ", last_err);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                   : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || event_fd_ < 0) fail("epoll/eventfd: ", std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.u64 = kEventId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, event_fd_, &ev);
}

void HttpServer::watch_fd(int fd, std::function<void()> cb) {
  LLAMARUN_CHECK(watchers_.size() < kFirstWatcherId + 13 - kFirstWatcherId, "too many fd watchers");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kFirstWatcherId + watchers_.size();
  watchers_.emplace_back(fd, std::move(cb));
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

void HttpServer::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  ssize_t r = ::write(event_fd_, &one, sizeof one);
  (void)r;
}

void HttpServer::stop() {
  stop_ = true;
  uint64_t one = 1;
  ssize_t r = ::write(event_fd_, &one, sizeof one);
  (void)r;
}

void HttpServer::run_posted() {
  uint64_t v;
  while (::read(event_fd_, &v, sizeof v) > 0) {
  }
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn();
}

void HttpServer::run() {
  std::vector<epoll_event> events(512);
  while (!stop_) {
    int n = epoll_wait(epoll_fd_, events.data(), int(events.size()), 250);
    if (n < 0 && errno != EINTR) fail("epoll_wait: ", std::strerror(errno));
    for (int i = 0; i < n; ++i) {
      const uint64_t id = events[i].data.u64;
      if (id == kListenId)
        accept_all();
      else if (id == kEventId)
        run_posted();
      else if (id < 16)
        watchers_[id - kFirstWatcherId].second();
      else
        on_event(id, events[i].events);
    }
    const double t = now_seconds();
    if (t - last_sweep_ > 0.5) {
      last_sweep_ = t;
      sweep_timeouts();
    }
    for (uint64_t id : dead_) conns_.erase(id);
    dead_.clear();
  }
  run_posted();
  // Give responses already queued (the last events of drained requests) up to 2 s to reach their clients.
  const double linger_until = now_seconds() + 2;
  while (now_seconds() < linger_until) {
    bool pending = false;
    for (auto& [id, c] : conns_)
      if (c->fd >= 0 && c->out_off < c->out.size()) pending = true;
    if (!pending) break;
    int n = epoll_wait(epoll_fd_, events.data(), int(events.size()), 50);
    for (int i = 0; i < n; ++i)
      if (events[i].data.u64 >= 16) on_event(events[i].data.u64, events[i].events & (EPOLLOUT | EPOLLERR));
  }
  for (auto& [id, c] : conns_)
    if (c->fd >= 0) close_conn(*c);
  conns_.clear();
  dead_.clear();
}

void HttpServer::accept_all() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop watching the listen socket until the next sweep frees some.
        epoll_event ev{};
        ev.data.u64 = kListenId;
        epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
      }
      return;
    }
    if (open_.load() >= size_t(opts_.max_connections)) {
      // At the cap: a best-effort 503 and close, and a warning at most every 10 s.
      static const std::string kFull =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n"
          "Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections; retry later";
      ssize_t w = ::send(fd, kFull.data(), kFull.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w;
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
      ++refused_;
      const double t = now_seconds();
      if (t - last_refused_log_ >= 10) {
        opts_.log_warning("connection limit reached: " + std::to_string(opts_.max_connections) +
                          " connections are open (--max-connections); refused " + std::to_string(refused_) +
                          " new connection(s) with 503");
        last_refused_log_ = t;
        refused_ = 0;
      }
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->id = next_id_++;
    c->fd = fd;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
    c->remote = std::string(host) + ":" + std::to_string(port);
    c->last_active = now_seconds();
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->id;
    c->interest = ev.events;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    ++open_;
    conns_.emplace(c->id, std::move(c));
  }
}

void HttpServer::on_event(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second->fd < 0) return;
  Connection& c = *it->second;
  if (events & EPOLLERR) {
    close_conn(c);
    return;
  }
  if (events & EPOLLOUT) flush(c);
  if (c.fd < 0) return;
  if (c.state == Connection::kReading || c.state == Connection::kDiscarding ||
      c.state == Connection::kLingering) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) read_from(c);
  } else if (events & (EPOLLRDHUP | EPOLLHUP)) {
    // The client closed its side while its request is in flight (or its response unsent): it is gone.
    close_conn(c);
  }
}

void HttpServer::read_from(Connection& c) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.last_active = now_seconds();
      if (c.state == Connection::kLingering) continue;  // dropped
      if (c.state == Connection::kDiscarding) {
        size_t drop = std::min(size_t(n), c.discard_left);
        c.discard_left -= drop;
        if (c.discard_left == 0 && c.out_off >= c.out.size()) {
          linger_close(c);
          return;
        }
        continue;
      }
      if (c.in.empty() && c.first_byte_t == 0) c.first_byte_t = c.last_active;
      c.in.append(buf, size_t(n));
      if (c.state == Connection::kReading) parse_requests(c);
      if (c.fd < 0) return;
      if (c.state != Connection::kReading && c.state != Connection::kDiscarding) return;
      continue;
    }
    if (n == 0) {  // the client closed its side
      close_conn(c);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    close_conn(c);
    return;
  }
}

void HttpServer::send_error(Connection& c, int status, const std::string& msg, bool close) {
  auto [type, body] = opts_.error_body(status, msg);
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  head += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  head += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  if (close) {
    c.close_after_write = true;
    if (c.state != Connection::kDiscarding) c.state = Connection::kClosing;
  }
  queue_output(c, head + body);
}

void HttpServer::parse_requests(Connection& c) {
  c.parsing = true;
  while (c.fd >= 0 && c.state == Connection::kReading && !c.in.empty()) {
    size_t he = c.in.find("\r\n\r\n");
    if (he == std::string::npos) {
      if (c.in.size() > opts_.max_header_bytes)
        send_error(c, 431,
                   "the request line and headers exceed " + std::to_string(opts_.max_header_bytes) + " bytes",
                   true);
      break;
    }
    if (he + 4 > opts_.max_header_bytes) {
      send_error(c, 431,
                 "the request line and headers exceed " + std::to_string(opts_.max_header_bytes) + " bytes",
                 true);
      break;
    }
    // Content-Length from the headers (full parse happens in dispatch).
    std::string_view head(c.in.data(), he);
    size_t body_len = 0;
    bool bad = false, chunked = false, have_len = false;
    std::string bad_msg;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      size_t next = head.find("\r\n", pos + 2);
      std::string_view line =
          head.substr(pos + 2, (next == std::string_view::npos ? head.size() : next) - pos - 2);
      pos = next;
      size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        bad = true;
        bad_msg = "malformed header line";
        break;
      }
      std::string name = lower(line.substr(0, colon));
      std::string_view value = trim(line.substr(colon + 1));
      if (name == "content-length") {
        if (value.empty() || value.size() > 18 ||
            !std::all_of(value.begin(), value.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
          bad = true;
          bad_msg = "Content-Length is not a number: '" + quote_text(value, 40) + "'";
          break;
        }
        size_t v = std::stoull(std::string(value));
        if (have_len && v != body_len) {
          bad = true;
          bad_msg = "conflicting Content-Length headers";
          break;
        }
        have_len = true;
        body_len = v;
      } else if (name == "transfer-encoding") {
        chunked = true;
      }
    }
    if (bad) {
      send_error(c, 400, bad_msg, true);
      break;
    }
    if (chunked) {
      send_error(c, 411, "chunked request bodies are not supported: send a Content-Length", true);
      break;
    }
    if (body_len > opts_.max_body_bytes) {
      send_error(c, 413,
                 "the request body is " + std::to_string(body_len) + " bytes; the limit is " +
                     std::to_string(opts_.max_body_bytes) + " bytes",
                 true);
      // Read and drop the body the client is sending so that it sees the 413 rather than a reset.
      size_t have = c.in.size() - (he + 4);
      size_t left = body_len > have ? body_len - have : 0;
      c.in.clear();
      if (left > 0 && left <= (256u << 20)) {
        c.state = Connection::kDiscarding;
        c.discard_left = left;
      }
      break;
    }
    if (c.in.size() < he + 4 + body_len) {
      if (!c.sent_continue) {
        std::string_view h = head;
        std::string lh = lower(h);
        if (lh.find("\r\nexpect: 100-continue") != std::string::npos) {
          c.sent_continue = true;
          queue_output(c, "HTTP/1.1 100 Continue\r\n\r\n");
        }
      }
      break;
    }
    dispatch(c, he, body_len);
  }
  if (c.fd >= 0) {
    c.parsing = false;
    update_interest(c);
  }
}

void HttpServer::dispatch(Connection& c, size_t he, size_t body_len) {
  HttpRequest req;
  req.remote = c.remote;
  std::string_view head(c.in.data(), he);
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  std::string version;
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1) {
    c.in.clear();
    send_error(c, 400, "malformed request line", true);
    return;
  }
  req.method = std::string(line.substr(0, sp1));
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  version = std::string(line.substr(sp2 + 1));
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    c.in.clear();
    send_error(c, 505, "unsupported HTTP version '" + quote_text(version, 20) + "'", true);
    return;
  }
  size_t q = target.find('?');
  req.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  size_t pos = eol;
  while (pos != std::string_view::npos && pos < head.size()) {
    size_t next = head.find("\r\n", pos + 2);
    std::string_view l =
        head.substr(pos + 2, (next == std::string_view::npos ? head.size() : next) - pos - 2);
    pos = next;
    size_t colon = l.find(':');
    req.headers.emplace_back(lower(l.substr(0, colon)), std::string(trim(l.substr(colon + 1))));
  }
  req.body = c.in.substr(he + 4, body_len);
  c.in.erase(0, he + 4 + body_len);
  c.first_byte_t = c.in.empty() ? 0 : now_seconds();
  c.sent_continue = false;

  bool ka = version == "HTTP/1.1";
  if (const std::string* conn = req.header("connection")) {
    std::string v = lower(*conn);
    if (v.find("close") != std::string::npos) ka = false;
    if (v.find("keep-alive") != std::string::npos && version == "HTTP/1.0") ka = true;
  }
  auto ex = std::make_shared<Exchange>();
  ex->server_ = this;
  ex->conn_ = &c;
  ex->keep_alive_ = ka;
  c.ex = ex;
  c.state = Connection::kInFlight;
  try {
    handler_(req, ex);
  } catch (const std::exception& e) {
    if (!ex->started()) send_error(c, 500, std::string("internal error: ") + e.what(), true);
  }
}

void HttpServer::queue_output(Connection& c, std::string_view data) {
  if (c.fd < 0) return;
  c.out.append(data);
  if (c.out.size() - c.out_off > opts_.max_output_bytes) {  // the client does not read: drop it
    close_conn(c);
    return;
  }
  flush(c);
}

void HttpServer::flush(Connection& c) {
  while (c.fd >= 0 && c.out_off < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close_conn(c);  // EPIPE, ECONNRESET, ...: the client is gone
    return;
  }
  if (c.fd < 0) return;
  if (c.out_off >= c.out.size()) {
    c.out.clear();
    c.out_off = 0;
    if (c.close_after_write && (c.state != Connection::kDiscarding || c.discard_left == 0)) {
      linger_close(c);
      return;
    }
  } else if (c.out_off > (1u << 20) && c.out_off * 2 > c.out.size()) {
    c.out.erase(0, c.out_off);
    c.out_off = 0;
  }
  if (!c.parsing) update_interest(c);
}

void HttpServer::finish_exchange(Connection& c) {
  if (c.ex) c.ex->conn_ = nullptr;
  c.ex.reset();
  c.last_active = now_seconds();
  if (!c.keep_alive) {
    c.close_after_write = true;
    c.state = Connection::kClosing;
    flush(c);
    return;
  }
  c.state = Connection::kReading;
  if (!c.in.empty() && !c.parsing) parse_requests(c);
  if (c.fd >= 0 && !c.parsing) update_interest(c);
}

void HttpServer::update_interest(Connection& c) {
  if (c.fd < 0) return;
  uint32_t want = EPOLLRDHUP;
  if (c.state == Connection::kReading || c.state == Connection::kDiscarding ||
      c.state == Connection::kLingering)
    want |= EPOLLIN;
  if (c.out_off < c.out.size()) want |= EPOLLOUT;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  c.interest = want;
}

void HttpServer::close_conn(Connection& c) {
  if (c.fd < 0) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  c.fd = -1;
  --open_;
  dead_.push_back(c.id);
  c.out.clear();
  c.in.clear();
  if (auto ex = std::move(c.ex)) {
    ex->conn_ = nullptr;
    if (!ex->finished_ && ex->on_close_) {
      auto cb = std::move(ex->on_close_);
      cb();
    }
  }
}

void HttpServer::linger_close(Connection& c) {
  if (c.fd < 0) return;
  if (c.state == Connection::kLingering) return;
  // Anything unread in the receive buffer would make close() send a reset, which can destroy the
  // response before the client reads it: half-close, drain, then close.
  ::shutdown(c.fd, SHUT_WR);
  c.state = Connection::kLingering;
  c.in.clear();
  c.out.clear();
  c.out_off = 0;
  c.linger_start = c.last_active = now_seconds();
  if (auto ex = std::move(c.ex)) {
    ex->conn_ = nullptr;
    if (!ex->finished_ && ex->on_close_) {
      auto cb = std::move(ex->on_close_);
      cb();
    }
  }
  update_interest(c);
}

void HttpServer::process_for_fuzzing(std::string_view bytes) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return;
  auto owned = std::make_unique<Connection>();
  Connection& c = *owned;
  c.id = next_id_++;
  c.fd = sv[0];
  c.remote = "fuzz";
  c.last_active = c.first_byte_t = now_seconds();
  ++open_;
  conns_.emplace(c.id, std::move(owned));
  c.in.assign(bytes.data(), bytes.size());
  parse_requests(c);
  char buf[65536];
  while (::read(sv[1], buf, sizeof buf) > 0) {
  }
  ::close(sv[1]);
  if (c.fd >= 0) close_conn(c);
  for (uint64_t id : dead_) conns_.erase(id);
  dead_.clear();
}

void HttpServer::close_idle() {
  draining_ = true;
  for (auto& [id, c] : conns_)
    if (c->fd >= 0 && c->state == Connection::kReading && c->in.empty() && c->out_off >= c->out.size())
      close_conn(*c);
}

void HttpServer::sweep_timeouts() {
  const double t = now_seconds();
  // Re-arm the listen socket if descriptors ran out earlier.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, listen_fd_, &ev);
  for (auto& [id, cp] : conns_) {
    Connection& c = *cp;
    if (c.fd < 0) continue;
    if (c.state == Connection::kReading) {
      if (c.first_byte_t > 0 && t - c.first_byte_t > opts_.header_timeout_s) {
        c.in.clear();
        send_error(c, 408,
                   "the request did not arrive completely within " +
                       std::to_string(int(opts_.header_timeout_s)) + " s",
                   true);
      } else if (c.in.empty() && t - c.last_active > opts_.idle_timeout_s) {
        close_conn(c);
      }
    } else if ((c.state == Connection::kDiscarding || c.state == Connection::kClosing) &&
               t - c.last_active > 10) {
      close_conn(c);
    } else if (c.state == Connection::kLingering && (t - c.last_active > 2 || t - c.linger_start > 10)) {
      close_conn(c);
    }
  }
}

}  // namespace llamarun::server
