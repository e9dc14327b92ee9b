#include "parallel/communicator.h"

#include <algorithm>

#include "core/error.h"

namespace llamarun {

class InProcessGroup::Rank final : public Communicator {
 public:
  Rank(InProcessGroup& g, int r) : g_(g), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return g_.size_; }
  void all_reduce_sum(float* data, size_t n) override {
    const int size = g_.size_;
    if (size == 1) return;
    g_.bufs_[size_t(r_)] = data;
    if (r_ == 0 && g_.sum_.size() < n) g_.sum_.resize(n);
    g_.sync_.arrive_and_wait();  // every buffer published, the sum sized
    // Rank r sums its slice over the ranks, in rank order.
    const size_t lo = n * size_t(r_) / size_t(size), hi = n * size_t(r_ + 1) / size_t(size);
    for (size_t i = lo; i < hi; ++i) {
      float s = g_.bufs_[0][i];
      for (int k = 1; k < size; ++k) s += g_.bufs_[size_t(k)][i];
      g_.sum_[i] = s;
    }
    g_.sync_.arrive_and_wait();  // the whole sum written
    std::copy(g_.sum_.begin(), g_.sum_.begin() + std::ptrdiff_t(n), data);
    g_.sync_.arrive_and_wait();  // everyone copied: the next call may reuse the sum and the pointers
  }

 private:
  InProcessGroup& g_;
  int r_;
};

InProcessGroup::InProcessGroup(int size)
    : size_(size > 0 ? size : (fail("InProcessGroup: size ", size, " must be >= 1"), 1)),
      bufs_(size_t(size_), nullptr),
      sync_(size_) {
  for (int r = 0; r < size_; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
}

InProcessGroup::~InProcessGroup() = default;

Communicator& InProcessGroup::rank(int r) {
  if (r < 0 || r >= size_) fail("InProcessGroup: rank ", r, " outside [0, ", size_, ")");
  return *ranks_[size_t(r)];
}

}  // namespace llamarun
