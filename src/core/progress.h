// A one-line progress bar on stderr for long operations (loading weights to the GPU, converting,
// quantising, long benchmarks):
//
//   GPU weight upload [##########..........]  52%  6.98 GiB / 13.5 GiB  2.31 GiB/s  ETA 0:03
//
// It draws only when stderr is a terminal (isatty), so logs, pipes and CI output stay clean; the
// environment variable LLAMARUN_PROGRESS=0 turns it off, =1 forces it on. Redraws are throttled
// (10 per second), so calling add() for every chunk costs a clock read.
//
// Usage (bytes):
//   Progress bar("converting", total_bytes);   // total 0: unknown (no percentage, no ETA)
//   for (...) { ...; bar.add(chunk_bytes); }
//   bar.finish();                              // or let the destructor do it
// Usage (counts, e.g. benchmark repetitions):
//   Progress bar("bench tg128", reps, Progress::Unit::kCount);
//
// add() and set() may be called from several threads. The formatting helpers are public so that
// they can be tested (render() is a pure function of its arguments).
#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace llamarun {

class Progress {
 public:
  enum class Unit { kBytes, kCount };
  enum class Mode { kAuto, kOn, kOff };  // kAuto: on when `out` is a terminal (and not LLAMARUN_PROGRESS=0)

  Progress(std::string label, uint64_t total, Unit unit = Unit::kBytes, Mode mode = Mode::kAuto,
           std::FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void add(uint64_t n);     // n more bytes (or items) done
  void set(uint64_t done);  // done so far
  void finish();            // draws the final line (total and average rate) and a newline; idempotent
  bool enabled() const { return enabled_; }
  uint64_t done() const;

  // "0 B", "512 B", "1.50 KiB", "13.5 GiB" (binary units, 3 significant digits).
  static std::string format_bytes(double bytes);
  // "0:07", "12:34", "1:02:03"; "--:--" when not finite or negative.
  static std::string format_duration(double seconds);
  // The line without the leading '\r': label, bar (when the total is known), percentage, done / total,
  // rate (per second, averaged since the start) and time left. `width` is the terminal width; the bar
  // shrinks to fit and disappears below 10 columns.
  static std::string render(const std::string& label, uint64_t done, uint64_t total, double elapsed_s,
                            Unit unit, int width = 80);
  // The final line: "label: 13.5 GiB in 5.8 s (2.31 GiB/s)".
  static std::string render_final(const std::string& label, uint64_t done, double elapsed_s, Unit unit);

 private:
  void draw_locked(bool final);
  std::string label_;
  uint64_t total_, done_ = 0;
  Unit unit_;
  std::FILE* out_;
  bool enabled_, finished_ = false;
  double start_s_, last_draw_s_ = -1;
  int width_;
  mutable std::mutex mu_;
};

}  // namespace llamarun
