// Helpers for the tokenizer golden tests: the corpus (tests/fixtures/tokenizer/corpus.jsonl) and
// id files written by tools/make_tokenizer_goldens.py / tools/make_bpe_tokenizer_goldens.py.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace llamarun::testutil {

inline std::string fixture_path(const std::string& name) {
  return std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/tokenizer/" + name;
}
// Test assets carried by the repository (tests/fixtures/assets, with their license notes), or the
// directory named by $LLAMARUN_ASSETS_DIR.
inline std::string shared_asset(const std::string& name) {
  if (const char* env = std::getenv("LLAMARUN_ASSETS_DIR")) return std::string(env) + "/" + name;
  return std::string(LLAMARUN_SOURCE_DIR) + "/tests/fixtures/assets/" + name;
}

inline std::string slurp_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string base64_decode(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  int bits = 0, acc = 0;
  for (char c : s) {
    const int v = val(c);
    if (v < 0) continue;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// Corpus lines as raw bytes.
inline std::vector<std::string> read_corpus() {
  std::vector<std::string> out;
  std::istringstream in(slurp_file(fixture_path("corpus.jsonl")));
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out.push_back(j.contains("text") ? j["text"].get<std::string>()
                                     : base64_decode(j["b64"].get<std::string>()));
  }
  return out;
}

inline std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream ss(line);
  int64_t v;
  while (ss >> v) ids.push_back(static_cast<int32_t>(v));
  return ids;
}

// One id list per line.
inline std::vector<std::vector<int32_t>> read_ids(const std::string& name) {
  std::vector<std::vector<int32_t>> out;
  std::istringstream in(slurp_file(fixture_path(name)));
  std::string line;
  while (std::getline(in, line)) out.push_back(parse_ids(line));
  return out;
}

inline std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "]";
}

inline std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

// {"ids": [...], "text": "..."} lines.
struct DecodeCase {
  std::vector<int32_t> ids;
  std::string text;
};
inline std::vector<DecodeCase> read_decode_cases(const std::string& name) {
  std::vector<DecodeCase> out;
  std::istringstream in(slurp_file(fixture_path(name)));
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out.push_back({j["ids"].get<std::vector<int32_t>>(), j["text"].get<std::string>()});
  }
  return out;
}

}  // namespace llamarun::testutil
