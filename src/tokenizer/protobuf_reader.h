// A minimal reader of the protobuf wire format (enough for sentencepiece's ModelProto). Every read
// is bounds-checked; malformed input throws Error naming `what` (the file) and the byte offset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace llamarun {

class ProtoReader {
 public:
  enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

  // `data` must outlive the reader; `base` is the offset of data[0] in the file (for messages).
  ProtoReader(std::string_view data, std::string what, size_t base = 0)
      : data_(data), what_(std::move(what)), base_(base) {}

  // Reads the next field key; false at the end of the message.
  bool next(uint32_t* field, WireType* wire);
  uint64_t varint();
  uint32_t fixed32();
  float float32();
  // A length-delimited payload (string, bytes or sub-message).
  std::string_view bytes();
  // A sub-message reader over the next length-delimited payload.
  ProtoReader message();
  // Skips the payload of a field of the given wire type.
  void skip(WireType wire);
  size_t offset() const { return base_ + pos_; }
  const std::string& what() const { return what_; }

 private:
  [[noreturn]] void corrupt(const char* msg) const;
  std::string_view data_;
  std::string what_;
  size_t base_;
  size_t pos_ = 0;
};

}  // namespace llamarun
