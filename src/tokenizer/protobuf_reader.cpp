#include "tokenizer/protobuf_reader.h"

#include <cstring>

#include "core/error.h"

namespace llamarun {

void ProtoReader::corrupt(const char* msg) const {
  fail(what_, ": corrupt protobuf at byte ", base_ + pos_, ": ", msg);
}

bool ProtoReader::next(uint32_t* field, WireType* wire) {
  if (pos_ >= data_.size()) return false;
  const uint64_t key = varint();
  const uint64_t f = key >> 3;
  const uint32_t w = static_cast<uint32_t>(key & 7);
  if (f == 0 || f > 0x1FFFFFFF) corrupt("invalid field number");
  if (w != kVarint && w != kFixed64 && w != kLengthDelimited && w != kFixed32) {
    corrupt("unsupported wire type (groups are not supported)");
  }
  *field = static_cast<uint32_t>(f);
  *wire = static_cast<WireType>(w);
  return true;
}

uint64_t ProtoReader::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (pos_ >= data_.size()) corrupt("truncated varint");
    const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
    if (shift == 63 && (b & 0x7E)) corrupt("varint overflows 64 bits");
    v |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
  corrupt("varint longer than 10 bytes");
}

uint32_t ProtoReader::fixed32() {
  if (data_.size() - pos_ < 4) corrupt("truncated fixed32");
  uint8_t b[4];
  std::memcpy(b, data_.data() + pos_, 4);
  pos_ += 4;
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}

float ProtoReader::float32() {
  const uint32_t u = fixed32();
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string_view ProtoReader::bytes() {
  const uint64_t n = varint();
  if (n > data_.size() - pos_) corrupt("length-delimited field runs past the end of its message");
  std::string_view s = data_.substr(pos_, n);
  pos_ += n;
  return s;
}

ProtoReader ProtoReader::message() {
  std::string_view s = bytes();
  return ProtoReader(s, what_, base_ + pos_ - s.size());  // offset of the payload, for messages
}

void ProtoReader::skip(WireType wire) {
  switch (wire) {
    case kVarint:
      varint();
      break;
    case kFixed64:
      if (data_.size() - pos_ < 8) corrupt("truncated fixed64");
      pos_ += 8;
      break;
    case kLengthDelimited:
      bytes();
      break;
    case kFixed32:
      fixed32();
      break;
  }
}

}  // namespace llamarun
