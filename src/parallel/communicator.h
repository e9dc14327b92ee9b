// Tensor parallelism's collectives (issue: several GPUs). A group of `size` ranks, each running one shard
// of every layer, sums partial results elementwise after the row-parallel projections (o_proj, down_proj).
// The interface has two implementations: InProcessGroup here (threads sharing memory: the sharding is tested
// on the CPU) and, in CUDA builds, NCCL (not written yet: it needs a multi-GPU machine to be tested).
#pragma once

#include <barrier>
#include <cstddef>
#include <memory>
#include <vector>

namespace llamarun {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[0, n) becomes the elementwise sum over the ranks' data. Every rank calls it with the same n, in
  // the same order of calls; the sum is taken in rank order, so every rank ends with the same bits.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
};

// `size` ranks in one process, one thread each (the caller's threads). rank(r) is rank r's communicator;
// each must be used by one thread only. Throws Error for size < 1.
class InProcessGroup {
 public:
  explicit InProcessGroup(int size);
  ~InProcessGroup();
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;
  Communicator& rank(int r);
  int size() const { return size_; }

 private:
  class Rank;
  int size_;
  std::vector<float*> bufs_;  // each rank's buffer of the call in progress
  std::vector<float> sum_;    // the reduced values
  std::barrier<> sync_;
  std::vector<std::unique_ptr<Rank>> ranks_;
};

}  // namespace llamarun
