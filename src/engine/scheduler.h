// The iteration-level scheduler: pure CPU logic over sequence states and a BlockAllocator, no model.
//
// Each schedule() call picks the work of one engine step under a token budget:
//   1. running sequences, oldest first: a decode takes 1 token, a sequence still in (chunked)
//      prefill takes what is left of the budget after reserving 1 token per remaining decode.
//      When a sequence needs a KV block and none is available, the NEWEST running sequence is
//      preempted (its blocks are released and it goes back to the front of the waiting queue, to
//      be recomputed from its tokens later; possibly the sequence itself when it is the newest).
//   2. then, if nothing was preempted, waiting sequences strictly first come first served: the
//      head's full prompt blocks are looked up in the prefix cache, and it is admitted when the
//      blocks of its first chunk are available (admission control); otherwise admission stops.
// After the step ran, on_computed() advances each chunk and registers newly full blocks in the
// prefix cache. The engine appends sampled tokens to Sequence::tokens itself.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "kv/block_allocator.h"

namespace llamarun {

struct SeqState;  // the engine's per-sequence state (engine.cpp); the scheduler never looks inside

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // prompt + generated so far
  int prompt_len = 0;
  int num_computed = 0;          // leading tokens whose K/V are in `blocks`
  std::vector<int32_t> blocks;   // block table: position p is in blocks[p / block_size]
  std::vector<uint64_t> hashes;  // prefix hash of each full block, blocks 0..hashes.size()-1
  int cached_prompt_tokens = 0;  // prompt tokens found in the prefix cache at first admission
  bool admitted_once = false;
  int preemptions = 0;
  SeqStatus status = SeqStatus::kWaiting;
  SeqState* owner = nullptr;  // the engine's state of this sequence (not used by the scheduler)
};

struct SchedulerConfig {
  int max_num_seqs = 256;      // running sequences at most (capped at max_batch_tokens)
  int max_batch_tokens = 512;  // tokens per step (prefill chunks + decodes), >= 1
  // Blocks kept free when admitting while others run (avoids admit-then-preempt thrashing).
  int watermark_blocks = 0;
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int start = 0;        // first position computed (== seq->num_computed at schedule time)
  int n = 0;            // tokens computed this step: positions start..start+n-1
  bool sample = false;  // the chunk reaches the last known token: its logits give the next token
};

struct SchedulerOutput {
  std::vector<ScheduledChunk> chunks;  // running order
  std::vector<Sequence*> preempted;    // sequences preempted in this step
  int num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& cfg, BlockAllocator& blocks);

  // Queues a new sequence (status waiting, no blocks) at the back.
  void add(Sequence* s);
  // Removes a sequence wherever it is, releases its blocks and marks it finished. Idempotent.
  void finish(Sequence* s);

  // Plans one step. The result stays valid until the next schedule() call.
  const SchedulerOutput& schedule();
  // Records that the chunk's K/V were written: advances num_computed, registers full blocks.
  void on_computed(const ScheduledChunk& c);

  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }
  BlockAllocator& blocks() { return blocks_; }
  const SchedulerConfig& config() const { return cfg_; }

  uint64_t preemptions() const { return preemptions_; }
  uint64_t prefix_queries() const { return prefix_queries_; }  // prompt tokens looked up
  uint64_t prefix_hits() const { return prefix_hits_; }        // prompt tokens found

 private:
  bool ensure_blocks(Sequence* s, int n_tokens);
  void release_blocks(Sequence* s);
  void preempt(Sequence* s);
  void match_prefix(Sequence* s);

  SchedulerConfig cfg_;
  BlockAllocator& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // admission order (oldest first)
  SchedulerOutput out_;
  uint64_t preemptions_ = 0, prefix_queries_ = 0, prefix_hits_ = 0;
};

}  // namespace llamarun
