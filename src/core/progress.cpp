#include "core/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/clock.h"

namespace llamarun {

namespace {

std::string printf_str(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// 3 significant digits: 1.23, 12.3, 123.
std::string sig3(double v) {
  if (v < 10) return printf_str("%.2f", v);
  if (v < 100) return printf_str("%.1f", v);
  return printf_str("%.0f", v);
}

std::string format_count(double n) {
  if (n < 1000) return printf_str("%.0f", n);
  const char* units[] = {"k", "M", "G", "T"};
  int u = -1;
  while (n >= 999.5 && u < 3) {
    n /= 1000;
    ++u;
  }
  return sig3(n) + units[u];
}

std::string format_amount(double v, Progress::Unit unit) {
  return unit == Progress::Unit::kBytes ? Progress::format_bytes(v) : format_count(v);
}

int terminal_width(std::FILE* out) {
  struct winsize ws {};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    int w = std::atoi(c);
    if (w > 0) return w;
  }
  return 80;
}

}  // namespace

std::string Progress::format_bytes(double bytes) {
  if (!(bytes >= 0) || !std::isfinite(bytes)) return "? B";
  if (bytes < 999.5) return printf_str("%.0f", bytes) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = -1;
  // Switch unit at 999.5 so that the 3-digit rounding never prints "1024 KiB" or "1000 KiB".
  while (bytes >= 999.5 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return sig3(bytes) + " " + units[u];
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e8) return "--:--";
  long long s = std::llround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::string Progress::render(const std::string& label, uint64_t done, uint64_t total, double elapsed_s,
                             Unit unit, int width) {
  const double rate = elapsed_s > 0 ? double(done) / elapsed_s : 0;
  std::string amounts, tail;
  std::string pct;
  if (total > 0) {
    const double frac = std::min(1.0, double(done) / double(total));
    pct = printf_str("%3.0f%%", std::floor(frac * 100));
    amounts = format_amount(double(done), unit) + " / " + format_amount(double(total), unit);
    const double left = done >= total ? 0.0 : rate > 0 ? double(total - done) / rate : NAN;
    tail = "ETA " + format_duration(left);
  } else {
    amounts = format_amount(double(done), unit);
    tail = "elapsed " + format_duration(elapsed_s);
  }
  std::string rate_s = (unit == Unit::kBytes ? format_bytes(rate) : format_count(rate)) + "/s";
  if (unit == Unit::kCount && rate < 10) rate_s = printf_str("%.2f", rate) + "/s";
  const std::string right = (pct.empty() ? "" : pct + "  ") + amounts + "  " + rate_s + "  " + tail;
  std::string line = label;
  if (total > 0) {
    const int bar = std::min(30, width - 1 - int(label.size()) - 3 - 2 - int(right.size()));
    if (bar >= 10) {
      const double frac = std::min(1.0, double(done) / double(total));
      const int full = int(std::floor(frac * bar));
      line += " [" + std::string(full, '#') + std::string(bar - full, '.') + "]";
    }
  }
  line += "  " + right;
  if (width > 1 && int(line.size()) > width - 1) {  // too narrow: cut at a space, never mid-word
    line.resize(width - 1);
    size_t sp = line.find_last_of(' ');
    if (sp != std::string::npos && sp > label.size()) line.resize(sp);
    while (!line.empty() && line.back() == ' ') line.pop_back();
  }
  return line;
}

std::string Progress::render_final(const std::string& label, uint64_t done, double elapsed_s, Unit unit) {
  const double rate = elapsed_s > 0 ? double(done) / elapsed_s : 0;
  const std::string secs = elapsed_s < 10 ? printf_str("%.1f s", elapsed_s) : format_duration(elapsed_s);
  std::string rate_s = (unit == Unit::kBytes ? format_bytes(rate) : format_count(rate)) + "/s";
  if (unit == Unit::kCount && rate < 10) rate_s = printf_str("%.2f", rate) + "/s";
  return label + ": " + format_amount(double(done), unit) + " in " + secs + " (" + rate_s + ")";
}

Progress::Progress(std::string label, uint64_t total, Unit unit, Mode mode, std::FILE* out)
    : label_(std::move(label)), total_(total), unit_(unit), out_(out), start_s_(now_seconds()) {
  if (mode == Mode::kAuto) {
    const char* env = std::getenv("LLAMARUN_PROGRESS");
    if (env && std::strcmp(env, "0") == 0)
      enabled_ = false;
    else if (env && std::strcmp(env, "1") == 0)
      enabled_ = true;
    else
      enabled_ = out_ && isatty(fileno(out_));
  } else {
    enabled_ = mode == Mode::kOn && out_;
  }
  width_ = enabled_ ? terminal_width(out_) : 80;
}

Progress::~Progress() { finish(); }

uint64_t Progress::done() const {
  std::lock_guard<std::mutex> lk(mu_);
  return done_;
}

void Progress::add(uint64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  done_ += n;
  draw_locked(false);
}

void Progress::set(uint64_t done) {
  std::lock_guard<std::mutex> lk(mu_);
  done_ = done;
  draw_locked(false);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lk(mu_);
  if (finished_) return;
  finished_ = true;
  draw_locked(true);
}

void Progress::draw_locked(bool final) {
  if (!enabled_ || (finished_ && !final)) return;
  const double t = now_seconds();
  if (!final && last_draw_s_ >= 0 && t - last_draw_s_ < 0.1) return;
  last_draw_s_ = t;
  const double elapsed = t - start_s_;
  std::string line = final ? render_final(label_, done_, elapsed, unit_)
                           : render(label_, done_, total_, elapsed, unit_, width_);
  // \r returns to the start of the line, \033[K clears what a longer previous line left behind.
  std::fprintf(out_, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
  std::fflush(out_);
}

}  // namespace llamarun
