// Read-only memory mapping of a whole file. Weights are used in place from the mapping: loading a
// model maps its files and never copies tensor data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace llamarun {

class MappedFile {
 public:
  // Maps `path` read-only. Throws Error naming the path if it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole (small) file into a string. Throws Error naming the path on failure.
std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace llamarun
