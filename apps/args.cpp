#include "args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/error.h"

namespace llamarun::cli {

namespace {

// Integer options and their ranges, the same for every command that takes them.
struct IntRange {
  const char* name;
  long long lo, hi;
};
constexpr IntRange kIntRanges[] = {
    {"--ctx", 1, 1 << 24},
    {"--threads", 1, 1024},
    {"--n-predict", 1, 1 << 24},
    {"--port", 0, 65535},
    {"--repeat-last-n", -1, 1 << 24},
    {"--top-k", -1, 2147483647},
    {"--seed", 0, 9223372036854775807LL},
    {"--pp", 0, 1 << 24},
    {"--tg", 0, 1 << 24},
    {"--depth", 0, 1 << 24},
    {"--reps", 1, 100000},
    {"--block-size", 1, 1024},
    {"--kv-cache-mb", 1, 1 << 22},
    {"--max-n", 1, 1024},
    {"--max-queue", 0, 1 << 20},
    {"--max-num-seqs", 1, 1 << 16},
    {"--max-batch-tokens", 1, 1 << 20},
    {"--max-body-bytes", 1024, 1ll << 32},
    {"--max-connections", 1, 1 << 20},
    {"--gpu-quant-rows", 0, 4},
};

const IntRange* int_range(const std::string& name) {
  for (const auto& r : kIntRanges)
    if (name == r.name) return &r;
  return nullptr;
}

}  // namespace

Args::Args(std::string command, std::string summary, std::vector<OptSpec> specs)
    : command_(std::move(command)), summary_(std::move(summary)), specs_(std::move(specs)) {}

const OptSpec* Args::find(const std::string& name) const {
  for (auto& s : specs_)
    if (s.long_name == name || (!s.short_name.empty() && s.short_name == name)) return &s;
  return nullptr;
}

void Args::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      continue;
    }
    std::string val;
    bool inline_val = false;
    if (a.rfind("--", 0) == 0) {
      auto eq = a.find('=');
      if (eq != std::string::npos) {
        val = a.substr(eq + 1);
        a = a.substr(0, eq);
        inline_val = true;
      }
    }
    const OptSpec* s = find(a);
    if (!s) fail("llamarun ", command_, ": unknown option '", a, "' (see llamarun ", command_, " --help)");
    if (s->takes_value) {
      if (!inline_val) {
        if (i + 1 >= argc) fail("llamarun ", command_, ": option ", s->long_name, " needs a value");
        val = argv[++i];
      }
      if (!s->repeatable && values_.count(s->long_name))
        fail("llamarun ", command_, ": option ", s->long_name, " is given more than once (",
             values_[s->long_name][0], " and ", val, "); give it once");
      if (const IntRange* r = int_range(s->long_name)) {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(val.c_str(), &end, 10);
        if (val.empty() || *end || errno == ERANGE || v < r->lo || v > r->hi)
          fail("llamarun ", command_, ": ", s->long_name, " must be an integer between ", r->lo, " and ",
               r->hi, ", got '", val, "'");
      }
      values_[s->long_name].push_back(val);
    } else {
      if (inline_val) fail("llamarun ", command_, ": option ", s->long_name, " takes no value");
      values_[s->long_name].push_back("1");
    }
  }
}

std::string Args::help_text() const {
  std::ostringstream os;
  os << "usage: llamarun " << command_ << " [options]\n\n" << summary_ << "\n\noptions:\n";
  for (auto& s : specs_) {
    std::string names = (s.short_name.empty() ? "    " : s.short_name + ", ") + s.long_name;
    if (s.takes_value) names += " V";
    os << "  " << names;
    for (size_t pad = names.size(); pad < 26; ++pad) os << ' ';
    os << " " << s.help;
    if (!s.def.empty()) os << " (default: " << s.def << ")";
    os << "\n";
  }
  os << "  -h, --help                   show this help\n";
  return os.str();
}

std::string Args::str(const std::string& n, const std::string& def) const {
  auto it = values_.find(n);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::all(const std::string& n) const {
  auto it = values_.find(n);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

long long Args::integer(const std::string& n, long long def) const {
  if (!has(n)) return def;
  const std::string v = str(n);
  errno = 0;
  char* end = nullptr;
  long long r = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE)
    fail("llamarun ", command_, ": ", n, " needs an integer, got '", v, "'");
  return r;
}

double Args::number(const std::string& n, double def) const {
  if (!has(n)) return def;
  const std::string v = str(n);
  char* end = nullptr;
  double r = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(r))
    fail("llamarun ", command_, ": ", n, " needs a number, got '", v, "'");
  return r;
}

}  // namespace llamarun::cli
