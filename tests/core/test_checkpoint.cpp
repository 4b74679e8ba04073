#include <catch2/catch.hpp>

#include <fstream>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/safetensors.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

TEST_CASE("safetensors: round trip of dtypes and shapes and metadata", "[checkpoint][safetensors]") {
  ef::test::ScratchDir dir("st");
  ef::TensorMap t = {{"a.weight", torch::randn({3, 4})},
                     {"b", torch::arange(10, torch::kInt64)},
                     {"c", torch::randn({2, 2}, torch::kFloat64)},
                     {"d", torch::tensor({true, false})},
                     {"e", torch::randn({5}).to(torch::kBFloat16)},
                     {"scalar", torch::tensor(3.5f)}};
  ef::save_safetensors(dir.path / "x.safetensors", t, {{"format", "pt"}});
  ef::Metadata meta;
  auto back = ef::load_safetensors(dir.path / "x.safetensors", &meta);
  CHECK(meta.at("format") == "pt");
  REQUIRE(back.size() == t.size());
  for (const auto& [k, v] : t) {
    INFO(k);
    CHECK(back.at(k).scalar_type() == v.scalar_type());
    CHECK(back.at(k).sizes() == v.sizes());
    CHECK(torch::equal(back.at(k), v));
  }
}

TEST_CASE("safetensors: files written by the Python package load", "[checkpoint][safetensors][interop]") {
  ef::test::ScratchDir dir("stpy");
  std::string py = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  fs::path f = dir.path / "py.safetensors";
  auto r = ef::test::run_command(py + " -c \"import numpy as np; from safetensors.numpy import save_file; "
                                 "save_file({'w': np.arange(6, dtype=np.float32).reshape(2,3), 'i': np.array([7,8], dtype=np.int64)}, '" +
                                 f.string() + "')\"");
  REQUIRE(r.exit_code == 0);
  auto t = ef::load_safetensors(f);
  CHECK(torch::equal(t.at("w"), torch::arange(6, torch::kFloat32).view({2, 3})));
  CHECK(torch::equal(t.at("i"), torch::tensor({7, 8}, torch::kInt64)));
  // and Python reads ours
  ef::save_safetensors(dir.path / "ours.safetensors", {{"x", torch::ones({2, 2})}});
  r = ef::test::run_command(py + " -c \"from safetensors.numpy import load_file; d = load_file('" + (dir.path / "ours.safetensors").string() +
                            "'); assert d['x'].sum() == 4, d\"");
  CHECK(r.exit_code == 0);
}

TEST_CASE("safetensors: corrupt files and shape mismatches give clear errors", "[checkpoint][safetensors]") {
  ef::test::ScratchDir dir("stbad");
  ef::write_file_atomically(dir.path / "bad.safetensors", std::string("\xff\xff\xff\xff\xff\xff\x00\x00garbage", 16));
  REQUIRE_THROWS_WITH(ef::load_safetensors(dir.path / "bad.safetensors"), Contains("bad.safetensors"));
  torch::nn::Linear lin(3, 2);
  ef::TensorMap wrong = {{"weight", torch::zeros({2, 4})}, {"bias", torch::zeros({2})}};
  REQUIRE_THROWS_WITH(ef::load_module_state(*lin, wrong, "w.safetensors"), Contains("'weight' has shape [2, 4], the model expects [2, 3]"));
}

TEST_CASE("checkpoint: retention keeps the newest / latest names the newest", "[checkpoint]") {
  ef::test::ScratchDir dir("ckpt");
  ef::CheckpointStore store(dir.path / "ckpt", 2);
  for (int64_t s : {10, 20, 30}) {
    store.save(s, [&](const fs::path& d) { ef::save_safetensors(d / "model.safetensors", {{"x", torch::full({1}, (double)s)}}); },
               {{"step", s}});
  }
  CHECK(store.steps() == std::vector<int64_t>{20, 30});
  REQUIRE(store.latest());
  CHECK(store.latest()->filename() == "step_30");
  CHECK(ef::load_safetensors(*store.latest() / "model.safetensors").at("x").item<double>() == 30.0);
}

TEST_CASE("checkpoint: a write interrupted midway leaves the previous checkpoint loadable", "[checkpoint]") {
  ef::test::ScratchDir dir("ckpt-int");
  ef::CheckpointStore store(dir.path / "ckpt", 3);
  store.save(1, [&](const fs::path& d) { ef::save_safetensors(d / "model.safetensors", {{"x", torch::ones({4})}}); }, {{"step", 1}});
  REQUIRE_THROWS_WITH(store.save(2, [&](const fs::path& d) {
    ef::save_safetensors(d / "model.safetensors", {{"x", torch::zeros({4})}});
    throw std::runtime_error("disk full");  // dies after writing part of the checkpoint
  }, {{"step", 2}}), Contains("disk full"));
  REQUIRE(store.latest());
  CHECK(store.latest()->filename() == "step_1");
  CHECK(torch::equal(ef::load_safetensors(*store.latest() / "model.safetensors").at("x"), torch::ones({4})));
  CHECK(store.steps() == std::vector<int64_t>{1});
  for (const auto& e : fs::directory_iterator(dir.path / "ckpt")) CHECK(e.path().filename().string().find("partial") == std::string::npos);

  // a process killed mid-write leaves a .partial folder: ignored, then cleaned by the next save
  fs::create_directories(dir.path / "ckpt" / ".step_5.partial");
  CHECK(store.latest()->filename() == "step_1");
  store.save(6, [&](const fs::path& d) { ef::save_safetensors(d / "model.safetensors", {{"x", torch::ones({1})}}); }, {{"step", 6}});
  CHECK_FALSE(fs::exists(dir.path / "ckpt" / ".step_5.partial"));
}

namespace {
// A complete checkpoint whose weights hold `value`, saved through the store.
void save_value(ef::CheckpointStore& store, int64_t step, double value) {
  store.save(step, [&](const fs::path& d) { ef::save_safetensors(d / "model.safetensors", {{"x", torch::full({1}, value)}}); },
             {{"step", step}});
}
double value_in(const fs::path& folder) { return ef::load_safetensors(folder / "model.safetensors").at("x").item<double>(); }
std::vector<std::string> hidden_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string()[0] == '.') out.push_back(e.path().filename().string());
  return out;
}
}  // namespace

TEST_CASE("checkpoint: re-saving a step replaces it and leaves nothing behind", "[checkpoint]") {
  ef::test::ScratchDir dir("ckpt-resave");
  ef::CheckpointStore store(dir.path / "ckpt", 3);
  save_value(store, 10, 1.0);
  save_value(store, 20, 2.0);
  save_value(store, 20, 3.0);  // a resumed run saving the step it resumed from
  REQUIRE(store.latest());
  CHECK(store.latest()->filename() == "step_20");
  CHECK(value_in(*store.latest()) == 3.0);
  CHECK(store.steps() == std::vector<int64_t>{10, 20});
  CHECK(hidden_entries(dir.path / "ckpt").empty());
}

// The states a writer killed at any instant of a save can leave, made by hand: the store must name a
// complete checkpoint through latest() (readers) and after recover() (the next writer), and keep the
// last complete one.
TEST_CASE("checkpoint: every state a killed save leaves recovers the last complete checkpoint", "[checkpoint]") {
  ef::test::ScratchDir dir("ckpt-crash");
  const fs::path ckpt = dir.path / "ckpt";
  ef::CheckpointStore store(ckpt, 3);
  save_value(store, 10, 1.0);
  save_value(store, 20, 2.0);
  auto copy_folder = [](const fs::path& from, const fs::path& to) { fs::copy(from, to, fs::copy_options::recursive); };

  SECTION("killed after moving the named folder aside, before renaming its replacement in") {
    fs::rename(ckpt / "step_20", ckpt / ".step_20.old");
    copy_folder(ckpt / "step_10", ckpt / ".step_20.partial");  // the replacement, complete or not
    REQUIRE(store.latest());  // a reader (eval) finds the moved folder
    CHECK(value_in(*store.latest()) == 2.0);
    store.recover();  // the next writer puts it back
    CHECK(store.latest()->filename() == "step_20");
    CHECK(value_in(ckpt / "step_20") == 2.0);
    CHECK(hidden_entries(ckpt).empty());
  }
  SECTION("killed after renaming the replacement in, before removing the old folder") {
    copy_folder(ckpt / "step_20", ckpt / ".step_20.old");
    CHECK(store.latest()->filename() == "step_20");
    store.recover();
    CHECK(value_in(ckpt / "step_20") == 2.0);
    CHECK(hidden_entries(ckpt).empty());
  }
  SECTION("latest names a folder that no longer exists") {
    ef::write_file_atomically(ckpt / "latest", "step_30\n");
    REQUIRE(store.latest());
    CHECK(store.latest()->filename() == "step_20");  // the newest complete one
    store.recover();
    CHECK(ef::read_file(ckpt / "latest") == "step_20\n");
  }
  SECTION("killed after renaming a first checkpoint in, before writing latest") {
    fs::remove(ckpt / "latest");
    REQUIRE(store.latest());
    CHECK(store.latest()->filename() == "step_20");
    store.recover();
    CHECK(ef::read_file(ckpt / "latest") == "step_20\n");
  }
  SECTION("half-written temporaries are removed when a writer opens the store") {
    fs::create_directories(ckpt / ".step_30.partial");
    ef::write_file_atomically(ckpt / ".step_30.partial" / "model.safetensors", "half");
    std::ofstream(ckpt / ".latest.tmp123-0") << "step_3";
    CHECK(store.latest()->filename() == "step_20");
    store.recover();
    CHECK(hidden_entries(ckpt).empty());
    CHECK(store.steps() == std::vector<int64_t>{10, 20});
  }
  SECTION("a dangling latest with no complete checkpoint left is reported, naming it") {
    fs::remove_all(ckpt / "step_10");
    fs::remove_all(ckpt / "step_20");
    REQUIRE_THROWS_AS(store.latest(), ef::InputError);
    REQUIRE_THROWS_WITH(store.latest(), Contains("step_20") && Contains("latest"));
    return;
  }
  // and the recovered store saves on
  save_value(store, 30, 4.0);
  CHECK(store.latest()->filename() == "step_30");
  CHECK(value_in(*store.latest()) == 4.0);
  CHECK(hidden_entries(ckpt).empty());
}

TEST_CASE("checkpoint: module state round trip", "[checkpoint]") {
  ef::test::ScratchDir dir("modrt");
  torch::nn::Sequential a(torch::nn::Linear(4, 8), torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 2));
  torch::nn::Sequential b(torch::nn::Linear(4, 8), torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 2));
  a->train();
  a->forward(torch::randn({16, 4}));  // moves BatchNorm's running stats (buffers)
  ef::save_safetensors(dir.path / "m.safetensors", ef::module_state(*a));
  ef::load_module_state(*b, ef::load_safetensors(dir.path / "m.safetensors"), "m.safetensors");
  a->eval(), b->eval();
  torch::Tensor x = torch::randn({5, 4});
  CHECK(torch::equal(a->forward(x), b->forward(x)));
}
