#pragma once
// One-line progress bar with rate and ETA on an interactive terminal; silent otherwise (the
// console metric sink logs every train.log_every steps instead).
#include <chrono>
#include <cstdint>
#include <string>

namespace ef {

class ProgressBar {
 public:
  ProgressBar(int64_t start, int64_t total, bool enabled);
  void update(int64_t step, const std::string& status);
  void finish();
  double rate() const;  // steps per second since start

 private:
  int64_t start_, total_;
  bool enabled_;
  std::chrono::steady_clock::time_point t0_, last_draw_;
  int64_t step_ = 0;
};

std::string format_duration(double seconds);  // "1:02:03" / "2:03"

}  // namespace ef
