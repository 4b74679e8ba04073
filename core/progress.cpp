#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace ef {

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "--:--";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

ProgressBar::ProgressBar(int64_t start, int64_t total, bool enabled)
    : start_(start), total_(total), enabled_(enabled && ::isatty(STDERR_FILENO)), t0_(std::chrono::steady_clock::now()),
      last_draw_(t0_), step_(start) {}

double ProgressBar::rate() const {
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  return dt > 0 ? static_cast<double>(step_ - start_) / dt : 0.0;
}

void ProgressBar::update(int64_t step, const std::string& status) {
  step_ = step;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (step < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
  last_draw_ = now;
  const int width = 30;
  int filled = total_ > 0 ? static_cast<int>(width * step / total_) : width;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  double r = rate();
  double eta = r > 0 ? static_cast<double>(total_ - step) / r : -1;
  std::fprintf(stderr, "\r%lld/%lld [%s] %.2f it/s ETA %s %s\x1b[K", static_cast<long long>(step),
               static_cast<long long>(total_), bar.c_str(), r, format_duration(eta).c_str(), status.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (enabled_) std::fprintf(stderr, "\n");
}

}  // namespace ef
