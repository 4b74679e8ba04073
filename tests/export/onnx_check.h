#pragma once
// tests/interop/check_onnx.py from C++: the official checker, ONNX Runtime on given inputs (written
// raw, every graph input in order), and the encodings JSON against the graph's tensor names.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "tests/test_support.h"

namespace ef::test {

namespace fs = std::filesystem;

inline void write_raw(const fs::path& path, const std::vector<torch::Tensor>& tensors) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& t : tensors) {
    torch::Tensor c = (t.is_floating_point() ? t.to(torch::kFloat) : t.to(torch::kLong)).contiguous();  // as check_onnx.py reads them
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  }
}

inline torch::Tensor read_raw(const fs::path& path, const torch::IntArrayRef& shape) {
  std::string bytes = ef::read_file(path);
  return torch::from_blob(bytes.data(), shape, torch::kFloat).clone();
}

// check_onnx.py: the checker, ONNX Runtime on `inputs` (the graph's, in order; output written
// beside them), encodings names.
inline nlohmann::json check_onnx(const fs::path& model, const std::vector<torch::Tensor>& inputs, const fs::path& work, torch::Tensor* output,
                                 const fs::path& encodings = {}, bool optimize = true) {
  write_raw(work / "input.bin", inputs);
  const std::string python = env_or_fail("EDGEFORGE_PYTHON");
  const fs::path script = fs::path(source_dir()) / "tests/interop/check_onnx.py";
  std::string cmd = quote(python) + " " + quote(script.string()) + " " + quote(model.string()) + " " +
                    quote((work / "input.bin").string()) + " " + quote((work / "output.bin").string());
  if (!encodings.empty()) cmd += " --encodings " + quote(encodings.string());
  if (!optimize) cmd += " --no-optimize";
  auto r = run_command(cmd);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  nlohmann::json j = nlohmann::json::parse(r.output.substr(r.output.rfind('{')));
  *output = read_raw(work / "output.bin", j.at("output_shape").get<std::vector<int64_t>>());
  return j;
}
inline nlohmann::json check_onnx(const fs::path& model, const torch::Tensor& input, const fs::path& work, torch::Tensor* output,
                                 const fs::path& encodings = {}, bool optimize = true) {
  return check_onnx(model, std::vector<torch::Tensor>{input}, work, output, encodings, optimize);
}

}  // namespace ef::test
