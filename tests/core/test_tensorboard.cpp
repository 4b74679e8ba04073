// Checks the TensorBoard event writer against TensorBoard's own Python reader, which verifies the
// TFRecord framing and both CRCs: a record that fails them is dropped and its data goes missing.
#include <catch2/catch.hpp>

#include "tests/test_support.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/crc32c.h"
#include "core/tensorboard_writer.h"

#ifndef EDGEFORGE_SOURCE_DIR
#define EDGEFORGE_SOURCE_DIR "."  // the build normally passes the repository root
#endif

namespace fs = std::filesystem;

namespace {

// A 3x2 RGB PNG (8-bit, a small gradient), so the image event carries a real, decodable image.
const unsigned char kPng3x2[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
    0x52, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0x12,
    0x16, 0xf1, 0x4d, 0x00, 0x00, 0x00, 0x1c, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x60,
    0x60, 0x60, 0x08, 0x08, 0x08, 0x58, 0xb0, 0x60, 0x01, 0x83, 0x86, 0x86, 0x46, 0x45, 0x45,
    0xc5, 0x89, 0x13, 0x27, 0x00, 0x34, 0x1c, 0x07, 0x09, 0x48, 0x62, 0x3b, 0x1a, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

// A fresh directory removed again when the test ends, pass or fail.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() /
           ("edgeforge_tb_" + std::to_string(::getpid()) + "_" + std::to_string(ticks));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a command and returns its stdout; stderr passes through to help diagnose failures.
std::string run_capture(const std::string& command, int* status) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  *status = ::pclose(pipe);
  return out;
}

double expected_loss(int step) { return 2.0 * std::exp(-0.3 * step) + 0.1; }

}  // namespace

TEST_CASE("crc32c matches the Castagnoli check values", "[core][tensorboard]") {
  const std::string digits = "123456789";
  CHECK(ef::crc32c(digits.data(), digits.size()) == 0xE3069283u);
  const std::vector<unsigned char> zeros(32, 0);
  CHECK(ef::crc32c(zeros.data(), zeros.size()) == 0x8A9136AAu);
  CHECK(ef::crc32c(nullptr, 0) == 0u);
  // Reference value from TensorBoard's Python masked_crc32c.
  CHECK(ef::masked_crc32c(digits.data(), digits.size()) == 0xC78AB0E5u);
}

TEST_CASE("TensorBoardWriter output is read back by TensorBoard", "[core][tensorboard]") {
  const std::string python_path = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  const char* python = python_path.c_str();
  TempDir dir;
  const std::string png(reinterpret_cast<const char*>(kPng3x2), sizeof(kPng3x2));
  {
    ef::TensorBoardWriter writer(dir.path);
    CHECK(writer.path().parent_path() == dir.path);
    CHECK(writer.path().filename().string().rfind("events.out.tfevents.", 0) == 0);
    for (int step = 0; step < 10; ++step) writer.add_scalar("train/loss", step, expected_loss(step));
    writer.add_image_png("samples/input", 7, png, /*height=*/2, /*width=*/3, /*channels=*/3);
  }  // the destructor flushes

  const fs::path script = fs::path(EDGEFORGE_SOURCE_DIR) / "tests/interop/read_tensorboard.py";
  int status = 0;
  const std::string out = run_capture(
      shell_quote(python) + " " + shell_quote(script.string()) + " " + shell_quote(dir.path.string()),
      &status);
  INFO("reader output: " << out);
  REQUIRE(status == 0);
  const auto result = nlohmann::json::parse(out);

  const auto& loss = result.at("scalars").at("train/loss");
  REQUIRE(loss.size() == 10);
  for (int step = 0; step < 10; ++step) {
    CHECK(loss[step][0].get<int64_t>() == step);
    // TensorBoard keeps scalars as float32.
    const double expected = static_cast<float>(expected_loss(step));
    CHECK(loss[step][1].get<double>() == Approx(expected).epsilon(1e-6));
  }

  const auto& images = result.at("images").at("samples/input");
  REQUIRE(images.size() == 1);
  CHECK(images[0][0].get<int64_t>() == 7);  // step
  CHECK(images[0][1].get<int>() == 3);      // width
  CHECK(images[0][2].get<int>() == 2);      // height
}

TEST_CASE("TensorBoardWriter keeps writers in one directory apart", "[core][tensorboard]") {
  TempDir dir;
  ef::TensorBoardWriter first(dir.path);
  ef::TensorBoardWriter second(dir.path);  // most likely the same second, so the same base name
  CHECK(first.path() != second.path());
  CHECK(fs::exists(first.path()));
  CHECK(fs::exists(second.path()));
}

TEST_CASE("TensorBoardWriter reports an unusable log directory", "[core][tensorboard]") {
  TempDir dir;
  const fs::path blocker = dir.path / "not_a_dir";
  std::ofstream(blocker) << "x";
  CHECK_THROWS_WITH(ef::TensorBoardWriter(blocker / "logs"), Catch::Contains("not_a_dir"));
}
