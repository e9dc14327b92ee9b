// A small command-line parser: `--name value`, `-n value`, `--flag`; errors name the option.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace llamarun::cli {

struct OptSpec {
  std::string long_name;   // "--temp"
  std::string short_name;  // "-t" or ""
  bool takes_value = true;
  std::string help;
  std::string def;          // default shown in help
  bool repeatable = false;  // may be given more than once (all()); otherwise a repeat is an error
};

class Args {
 public:
  Args(std::string command, std::string summary, std::vector<OptSpec> specs);
  // Parses argv[first..]; throws llamarun::Error for unknown options, missing values, a repeated
  // option that is not repeatable, and a numeric option outside its range (args.cpp's table:
  // --ctx 1..16777216, --threads 1..1024, ...; checked here so that every command agrees).
  void parse(int argc, char** argv, int first);
  bool help_requested() const { return help_; }
  std::string help_text() const;

  bool has(const std::string& long_name) const { return values_.count(long_name) > 0; }
  std::string str(const std::string& long_name, const std::string& def = "") const;
  std::vector<std::string> all(const std::string& long_name) const;
  long long integer(const std::string& long_name, long long def) const;
  double number(const std::string& long_name, double def) const;

 private:
  const OptSpec* find(const std::string& name) const;
  std::string command_, summary_;
  std::vector<OptSpec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
  bool help_ = false;
};

}  // namespace llamarun::cli
