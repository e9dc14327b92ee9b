#include "args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "core/error.h"

namespace llamarun::cli {

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
  if (v.empty() || *end || errno == ERANGE) fail("llamarun ", command_, ": ", n, " needs an integer, got '", v, "'");
  return r;
}

double Args::number(const std::string& n, double def) const {
  if (!has(n)) return def;
  const std::string v = str(n);
  char* end = nullptr;
  double r = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(r)) fail("llamarun ", command_, ": ", n, " needs a number, got '", v, "'");
  return r;
}

}  // namespace llamarun::cli
