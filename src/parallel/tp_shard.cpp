#include "parallel/tp_shard.h"

#include "core/error.h"

namespace llamarun {

TpShard tp_shard(const LlamaConfig& cfg, int rank, int size) {
  const int nh = cfg.num_heads, nkv = cfg.num_kv_heads > 0 ? cfg.num_kv_heads : cfg.num_heads;
  const int I = cfg.intermediate_size;
  if (size < 1 || rank < 0 || rank >= size) fail("tensor parallel: rank ", rank, " of ", size);
  if (nh <= 0 || nh % size)
    fail("tensor parallel: ", nh, " attention heads do not divide over ", size, " ranks");
  if (I <= 0 || I % size)
    fail("tensor parallel: intermediate size ", I, " does not divide over ", size, " ranks");
  if (nh % nkv) fail("tensor parallel: ", nh, " heads are not a multiple of ", nkv, " KV heads");
  if (nkv % size && size % nkv)
    fail("tensor parallel: ", nkv, " KV heads neither divide over ", size, " ranks nor ", size,
         " ranks over them");
  TpShard s;
  s.rank = rank;
  s.size = size;
  s.q_heads = nh / size;
  s.q_head0 = rank * s.q_heads;
  if (nkv >= size) {
    s.kv_heads = nkv / size;
    s.kv_head0 = rank * s.kv_heads;
  } else {  // replicated: the one KV head this rank's query heads read
    s.kv_heads = 1;
    s.kv_head0 = s.q_head0 / (nh / nkv);
  }
  s.inter = I / size;
  s.inter0 = rank * s.inter;
  return s;
}

}  // namespace llamarun
