#pragma once
// Metric sinks. Names are "train/<name>" and "eval/<name>" so that sweeps and plots compare runs of
// different recipes by name. Every logged point goes to all sinks: console (spdlog),
// metrics.jsonl (one JSON object per line) and TensorBoard event files.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ef {

using Scalars = std::map<std::string, double>;

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void scalars(int64_t step, const Scalars& values) = 0;
  // image: float [C,H,W] in [0,1] (C = 1 or 3)
  virtual void image(const std::string& tag, int64_t step, const torch::Tensor& chw) {}
  virtual void flush() {}
};

class JsonlSink : public MetricSink {
 public:
  // resume_step >= 0 drops lines of later steps first (they belong to the run's killed tail).
  JsonlSink(const std::filesystem::path& file, int64_t resume_step = -1);
  void scalars(int64_t step, const Scalars& values) override;
  void flush() override;

 private:
  std::filesystem::path file_;
  std::FILE* out_ = nullptr;
};

class TensorBoardWriter;
class TensorBoardSink : public MetricSink {
 public:
  explicit TensorBoardSink(const std::filesystem::path& dir);
  ~TensorBoardSink() override;
  void scalars(int64_t step, const Scalars& values) override;
  void image(const std::string& tag, int64_t step, const torch::Tensor& chw) override;
  void flush() override;

 private:
  std::unique_ptr<TensorBoardWriter> writer_;
};

class ConsoleSink : public MetricSink {
 public:
  void scalars(int64_t step, const Scalars& values) override;
};

class MetricLogger {
 public:
  void add(std::unique_ptr<MetricSink> sink) { sinks_.push_back(std::move(sink)); }
  void scalars(int64_t step, const Scalars& values);
  void image(const std::string& tag, int64_t step, const torch::Tensor& chw);
  void flush();

 private:
  std::vector<std::unique_ptr<MetricSink>> sinks_;
};

// Reads metrics.jsonl back: one map per line (with "step").
std::vector<Scalars> read_metrics_jsonl(const std::filesystem::path& file);

}  // namespace ef
