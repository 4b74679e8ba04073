#pragma once
// Timing shared by the bench programs: wall-clock median of repeated runs, waiting for the GPU.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace ef::bench {

inline void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// Median of repeated runs after one warm-up: at least `min_reps`, until about `budget_s` seconds
// are spent, at most `max_reps`.
inline double time_ms(const std::function<void()>& fn, const torch::Device& dev, int min_reps, double budget_s, int max_reps = 50) {
  using Clock = std::chrono::steady_clock;
  fn();
  sync(dev);
  std::vector<double> ms;
  auto start = Clock::now();
  while (static_cast<int>(ms.size()) < min_reps || std::chrono::duration<double>(Clock::now() - start).count() < budget_s) {
    auto t0 = Clock::now();
    fn();
    sync(dev);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (static_cast<int>(ms.size()) >= max_reps) break;
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace ef::bench
