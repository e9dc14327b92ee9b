// Runs the llamarun executable as a child process and captures its output: for tests of the
// command-line contracts (exit codes, JSON on stdout, error messages on stderr).
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace llamarun::testutil {

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that killed it, 0 when it exited
  std::string out, err;
};

inline std::string temp_path(const std::string& name) {
  return (access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm/") : std::string("/tmp/")) +
         "llamarun_test_" + std::to_string(getpid()) + "_" + name;
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_all(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

// Runs LLAMARUN_BINARY with `args`; stdin from `input` (empty: /dev/null).
inline RunResult run_llamarun(const std::vector<std::string>& args, const std::string& input = "") {
  static int counter = 0;
  const std::string tag = std::to_string(counter++);
  const std::string out_p = temp_path("out" + tag), err_p = temp_path("err" + tag),
                    in_p = temp_path("in" + tag);
  write_all(in_p, input);
  pid_t pid = fork();
  if (pid == 0) {
    int in = open(in_p.c_str(), O_RDONLY);
    int out = open(out_p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = open(err_p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(in, 0), dup2(out, 1), dup2(err, 2);
    std::vector<char*> argv;
    std::string bin = LLAMARUN_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_all(out_p);
  r.err = read_all(err_p);
  unlink(out_p.c_str()), unlink(err_p.c_str()), unlink(in_p.c_str());
  return r;
}

}  // namespace llamarun::testutil
