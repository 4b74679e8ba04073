#include "core/metrics.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/atomic_file.h"
#include "core/image_io.h"
#include "core/tensorboard_writer.h"

namespace ef {

namespace fs = std::filesystem;

JsonlSink::JsonlSink(const fs::path& file, int64_t resume_step) : file_(file) {
  if (resume_step >= 0 && fs::exists(file)) {
    std::ifstream in(file);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t{0}) <= resume_step) kept += line + "\n";
      } catch (const std::exception&) {
        // a torn last line of a killed run: drop it
      }
    }
    write_file_atomically(file, kept);
  }
  out_ = std::fopen(file.c_str(), "a");
  if (!out_) throw std::runtime_error("cannot open " + file.string() + ": " + std::strerror(errno));
}

void JsonlSink::scalars(int64_t step, const Scalars& values) {
  nlohmann::json j = {{"step", step}};
  for (const auto& [k, v] : values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(std::to_string(v));
  std::string line = j.dump() + "\n";
  // flushed per line, so `tail -f metrics.jsonl` and plotting scripts see progress as it happens
  if (std::fwrite(line.data(), 1, line.size(), out_) != line.size() || std::fflush(out_) != 0)
    throw std::runtime_error("cannot write " + file_.string() + ": " + std::strerror(errno));
}

void JsonlSink::flush() {
  if (std::fflush(out_) != 0) throw std::runtime_error("cannot write " + file_.string() + ": " + std::strerror(errno));
}

TensorBoardSink::TensorBoardSink(const fs::path& dir) : writer_(std::make_unique<TensorBoardWriter>(dir)) {}
TensorBoardSink::~TensorBoardSink() = default;

void TensorBoardSink::scalars(int64_t step, const Scalars& values) {
  for (const auto& [k, v] : values) writer_->add_scalar(k, step, v);
}

void TensorBoardSink::image(const std::string& tag, int64_t step, const torch::Tensor& chw) {
  torch::Tensor hwc = to_uint8_hwc(chw);
  writer_->add_image_png(tag, step, encode_png(hwc), static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)),
                         static_cast<int>(hwc.size(2)));
}

void TensorBoardSink::flush() { writer_->flush(); }

void ConsoleSink::scalars(int64_t step, const Scalars& values) {
  std::string line;
  for (const auto& [k, v] : values) line += fmt::format(" {}={:.4g}", k, v);
  spdlog::info("step {}:{}", step, line);
}

void MetricLogger::scalars(int64_t step, const Scalars& values) {
  for (auto& s : sinks_) s->scalars(step, values);
}
void MetricLogger::image(const std::string& tag, int64_t step, const torch::Tensor& chw) {
  for (auto& s : sinks_) s->image(tag, step, chw);
}
void MetricLogger::flush() {
  for (auto& s : sinks_) s->flush();
}

std::vector<Scalars> read_metrics_jsonl(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  std::vector<Scalars> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Scalars s;
    const nlohmann::json j = nlohmann::json::parse(line);  // named: items() refers to it
    for (auto& [k, v] : j.items())
      if (v.is_number()) s[k] = v.get<double>();
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ef
