// What a run folder guarantees when things go wrong (README "Reliability"): checksummed checkpoints.
// The crash states of a checkpoint save are in test_checkpoint.cpp.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/run.h"
#include "core/sweep.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path tiny_config() { return fs::path(ef::test::source_dir()) / "tasks" / "classify.tiny.json"; }

// classify.tiny.json (4 steps, checkpoints at 2 and 4, EMA) trained into `run`, its data beside it
ef::LaunchOptions tiny_launch(const fs::path& run) {
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = run;
  o.overrides = {"device=\"cpu\"", "train.tensorboard=false", "data.path=\"" + (run.parent_path() / "shapes.h5").string() + "\""};
  return o;
}

void flip_middle_byte(const fs::path& file) {
  std::string bytes = ef::read_file(file);
  bytes[bytes.size() / 2] ^= 0x01;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ef::InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}
}  // namespace

TEST_CASE("checkpoint integrity: a flipped byte in the weights or the trainer state is reported, naming the file", "[checkpoint][integrity]") {
  ef::test::ScratchDir dir("integrity");
  const fs::path run = dir.path / "run";
  REQUIRE(ef::launch_training(tiny_config(), tiny_launch(run)).outcome.step == 4);
  const fs::path ckpt = run / "ckpt" / "step_4";
  const nlohmann::json files = ef::CheckpointStore::read_meta(ckpt).at("files");
  for (const char* f : {"model.safetensors", "model.ema.safetensors", "trainer.pt"}) {
    INFO(f);
    REQUIRE(files.contains(f));
    CHECK(files.at(f).get<std::string>().size() == 8);
  }
  CHECK_NOTHROW(ef::open_run(run, {}));

  SECTION("weights: eval refuses them") {
    flip_middle_byte(ckpt / "model.ema.safetensors");
    std::string e = input_error_of([&] { ef::open_run(run, {}); });
    CHECK_THAT(e, Contains("model.ema.safetensors is corrupt") && Contains("CRC32C"));
    flip_middle_byte(ckpt / "model.safetensors");
    e = input_error_of([&] { ef::open_run(run, {}, {}, /*prefer_ema=*/false); });
    CHECK_THAT(e, Contains((ckpt / "model.safetensors").string() + " is corrupt"));
  }
  SECTION("trainer state: resume refuses it") {
    flip_middle_byte(ckpt / "trainer.pt");
    ef::LaunchOptions o = tiny_launch(run);
    o.resume = true;
    o.allow_config_change = true;
    o.overrides.push_back("train.steps=6");
    CHECK_THAT(input_error_of([&] { ef::launch_training({}, o); }), Contains((ckpt / "trainer.pt").string() + " is corrupt"));
  }
  SECTION("a checkpoint written before checksums were recorded still loads") {
    nlohmann::json meta = ef::CheckpointStore::read_meta(ckpt);
    meta.erase("files");
    ef::write_file_atomically(ckpt / "meta.json", meta.dump(2));
    CHECK_NOTHROW(ef::open_run(run, {}));
  }
}
