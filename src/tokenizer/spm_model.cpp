#include "tokenizer/spm_model.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/protobuf_reader.h"

namespace llamarun {
namespace {

constexpr size_t kMaxPieces = 16u << 20;  // far above any real vocabulary

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

void parse_piece(ProtoReader r, SpmModel& m) {
  std::string piece;
  float score = 0.0f;
  uint64_t type = 1;  // NORMAL is the proto default
  uint32_t field;
  ProtoReader::WireType wire;
  while (r.next(&field, &wire)) {
    if (field == 1 && wire == ProtoReader::kLengthDelimited) {
      piece = std::string(r.bytes());
    } else if (field == 2 && wire == ProtoReader::kFixed32) {
      score = r.float32();
    } else if (field == 3 && wire == ProtoReader::kVarint) {
      type = r.varint();
    } else {
      r.skip(wire);
    }
  }
  if (type < 1 || type > 6) {
    fail(r.what(), ": piece ", m.pieces.size(), " ('", piece, "') has unknown type ", type);
  }
  m.pieces.push_back(std::move(piece));
  m.scores.push_back(score);
  m.types.push_back(static_cast<SpmPieceType>(type));
}

void parse_trainer(ProtoReader r, SpmModel& m) {
  uint32_t field;
  ProtoReader::WireType wire;
  while (r.next(&field, &wire)) {
    if (wire == ProtoReader::kVarint) {
      const uint64_t v = r.varint();
      switch (field) {
        case 3:
          m.model_type = as_int32(v);
          break;
        case 24:
          m.treat_whitespace_as_suffix = v != 0;
          break;
        case 35:
          m.byte_fallback = v != 0;
          break;
        case 40:
          m.unk_id = as_int32(v);
          break;
        case 41:
          m.bos_id = as_int32(v);
          break;
        case 42:
          m.eos_id = as_int32(v);
          break;
        case 43:
          m.pad_id = as_int32(v);
          break;
        default:
          break;
      }
    } else if (field == 44 && wire == ProtoReader::kLengthDelimited) {
      m.unk_surface = std::string(r.bytes());
    } else {
      r.skip(wire);
    }
  }
}

void parse_normalizer(ProtoReader r, SpmModel& m) {
  uint32_t field;
  ProtoReader::WireType wire;
  while (r.next(&field, &wire)) {
    if (field == 1 && wire == ProtoReader::kLengthDelimited) {
      m.normalizer_name = std::string(r.bytes());
    } else if (field == 2 && wire == ProtoReader::kLengthDelimited) {
      if (!r.bytes().empty()) {
        fail(r.what(), ": the normalizer has a precompiled character map (rule '", m.normalizer_name,
             "'); only identity normalization is supported");
      }
    } else if (wire == ProtoReader::kVarint && field >= 3 && field <= 5) {
      const bool v = r.varint() != 0;
      if (field == 3) m.add_dummy_prefix = v;
      if (field == 4) m.remove_extra_whitespaces = v;
      if (field == 5) m.escape_whitespaces = v;
    } else {
      r.skip(wire);
    }
  }
}

}  // namespace

SpmModel parse_spm_model(std::string_view data, const std::string& what) {
  SpmModel m;
  ProtoReader r(data, what);
  uint32_t field;
  ProtoReader::WireType wire;
  bool have_normalizer = false;
  while (r.next(&field, &wire)) {
    if (field >= 1 && field <= 3 && wire != ProtoReader::kLengthDelimited) {
      fail(what, ": corrupt sentencepiece model: field ", field, " has wire type ", int(wire),
           " (expected a message)");
    }
    if (field == 1) {
      if (m.pieces.size() >= kMaxPieces) fail(what, ": more than ", kMaxPieces, " pieces");
      parse_piece(r.message(), m);
    } else if (field == 2) {
      parse_trainer(r.message(), m);
    } else if (field == 3) {
      parse_normalizer(r.message(), m);
      have_normalizer = true;
    } else {
      r.skip(wire);
    }
  }
  if (m.pieces.empty()) fail(what, ": not a sentencepiece model (no pieces)");
  if (!have_normalizer) m.normalizer_name = "identity";
  if (m.model_type != 2) {
    fail(what, ": sentencepiece model_type ", m.model_type, " is not supported (only BPE = 2; 1 is unigram)");
  }
  return m;
}

SpmModel read_spm_model_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return parse_spm_model(ss.str(), path);
}

}  // namespace llamarun
