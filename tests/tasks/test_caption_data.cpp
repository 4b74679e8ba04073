// Generated captions and edits: determinism, texts against attributes, edits that change exactly one
// attribute, splits and errors, the CLI; classify on a captions attribute and the AttributeClassifier.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/data_gen.h"
#include "core/metrics.h"
#include "core/run.h"
#include "tasks/attribute_classifier.h"
#include "tasks/caption_data.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
ef::SceneDataParams small_params(uint64_t seed = 3) {
  ef::SceneDataParams p;
  p.n_train = 48;
  p.n_val = 12;
  p.image_size = 24;
  p.seed = seed;
  return p;
}

bool same_file(const fs::path& a, const fs::path& b) { return ef::read_file(a) == ef::read_file(b); }

std::vector<int64_t> row(const torch::Tensor& labels, int64_t i) {
  torch::Tensor r = labels[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}
}  // namespace

TEST_CASE("captions and edits: the same seed gives identical data and another seed other data", "[captions][determinism]") {
  ef::test::ScratchDir dir("cap-det");
  ef::generate_captions(small_params(), dir.path / "a.h5");
  ef::generate_captions(small_params(), dir.path / "b.h5");
  ef::generate_captions(small_params(4), dir.path / "c.h5");
  CHECK(same_file(dir.path / "a.h5", dir.path / "b.h5"));
  ef::CaptionsDataset a(dir.path / "a.h5", "train"), b(dir.path / "b.h5", "train"), c(dir.path / "c.h5", "train");
  CHECK(torch::equal(a.images(), b.images()));
  CHECK(torch::equal(a.labels(), b.labels()));
  CHECK_FALSE(torch::equal(a.images(), c.images()));
  CHECK_FALSE(torch::equal(a.labels(), c.labels()));

  ef::generate_edits(small_params(), dir.path / "e1.h5");
  ef::generate_edits(small_params(), dir.path / "e2.h5");
  ef::generate_edits(small_params(9), dir.path / "e3.h5");
  CHECK(same_file(dir.path / "e1.h5", dir.path / "e2.h5"));
  ef::EditsDataset e1(dir.path / "e1.h5", "val"), e3(dir.path / "e3.h5", "val");
  CHECK_FALSE(torch::equal(e1.source_images(), e3.source_images()));
  // a sample's rendering is a function of its labels and scene seed alone
  CHECK(torch::equal(ef::render_scene(a.attributes(), {0, 1, 2, 1, 2, 1}, 77, 24), ef::render_scene(a.attributes(), {0, 1, 2, 1, 2, 1}, 77, 24)));
  CHECK_FALSE(torch::equal(ef::render_scene(a.attributes(), {0, 1, 2, 1, 2, 1}, 77, 24), ef::render_scene(a.attributes(), {0, 1, 2, 1, 2, 1}, 78, 24)));
}

TEST_CASE("captions: the caption of each image names its stored attributes", "[captions]") {
  ef::test::ScratchDir dir("cap-text");
  ef::generate_captions(small_params(), dir.path / "c.h5");
  ef::CaptionsDataset d(dir.path / "c.h5", "train");
  REQUIRE(d.attribute_names() == std::vector<std::string>{"colour", "shape", "position", "size", "count", "background"});
  CHECK(d.attribute_values("colour").size() == 7);
  CHECK(d.max_text_bytes() == 64);
  for (int64_t i = 0; i < d.size(); ++i) {
    const std::vector<int64_t> labels = row(d.labels(), i);
    const std::string text = d.text_at(i);
    INFO(text);
    CHECK(text == ef::scene_caption(d.attributes(), labels));
    ef::Sample s = d.get(i);
    for (size_t a = 0; a < labels.size(); ++a) CHECK(s.at("attr_" + d.attributes()[a].name).item<int64_t>() == labels[a]);
    // the words of colour, size and count are in the caption as they are stored
    for (const char* attr : {"colour", "size", "count"}) CHECK_THAT(text, Contains(d.attribute_values(attr)[labels[d.attribute_index(attr)]]));
    CHECK_THAT(text, Contains(d.attribute_values("shape")[labels[1]]));
    CHECK(s.at("image").sizes() == torch::IntArrayRef({3, 24, 24}));
    CHECK(s.at("image").min().item<float>() >= -1.0f);
    CHECK(s.at("image").max().item<float>() <= 1.0f);
    CHECK(s.at("text").sizes() == torch::IntArrayRef({64}));
  }
  // the longest caption of the full vocabulary fits the default 64 bytes
  CHECK(ef::scene_caption(d.attributes(), {5, 2, 8, 1, 2, 2}).size() <= 64);
  CHECK(ef::scene_caption(d.attributes(), {0, 0, 0, 1, 1, 1}) == "two large red circles at the top left on stripes");
}

TEST_CASE("edits: the target differs from the source in exactly the stated attribute", "[edits]") {
  ef::test::ScratchDir dir("edits");
  ef::SceneDataParams p = small_params();
  p.n_train = 120;
  ef::generate_edits(p, dir.path / "e.h5");
  ef::EditsDataset d(dir.path / "e.h5", "train");
  REQUIRE(d.size() == 120);
  std::set<int64_t> seen;
  for (int64_t i = 0; i < d.size(); ++i) {
    const auto from = row(d.source_labels(), i), to = row(d.target_labels(), i);
    const int64_t edited = d.edited_attributes()[i].item<int64_t>();
    INFO(d.text_at(i) << " (attribute " << edited << ")");
    seen.insert(edited);
    for (size_t a = 0; a < from.size(); ++a) CHECK((from[a] != to[a]) == (static_cast<int64_t>(a) == edited));
    CHECK_FALSE(torch::equal(d.source_images()[i], d.target_images()[i]));
    // the target is the rendering of the target attributes with the source's scene
    ef::Sample s = d.get(i);
    CHECK(s.at("edited_attribute").item<int64_t>() == edited);
    for (size_t a = 0; a < to.size(); ++a) {
      CHECK(s.at("attr_" + d.attributes()[a].name).item<int64_t>() == to[a]);
      CHECK(s.at("source_attr_" + d.attributes()[a].name).item<int64_t>() == from[a]);
    }
    const std::string& name = d.attributes()[edited].name;
    const std::string& target_value = d.attribute_values(name)[to[edited]];
    if (name == "colour" || name == "position" || name == "background") CHECK_THAT(d.text_at(i), Contains(target_value));
    if (name == "count") CHECK(std::abs(to[edited] - from[edited]) == 1);
  }
  CHECK(seen.size() == 6);  // every attribute gets edited somewhere in 120 samples
}

TEST_CASE("captions and edits: split sizes parameters and errors", "[captions][errors]") {
  ef::test::ScratchDir dir("cap-err");
  ef::SceneDataParams p = small_params();
  p.vocab = "basic";
  ef::generate_captions(p, dir.path / "c.h5");
  ef::CaptionsDataset train(dir.path / "c.h5", "train"), val(dir.path / "c.h5", "val");
  CHECK(train.size() == 48);
  CHECK(val.size() == 12);
  CHECK(train.image_size() == 24);
  CHECK(train.attribute_values("colour") == std::vector<std::string>{"red", "green", "blue", "yellow"});
  CHECK(ef::stored_generator_params(dir.path / "c.h5") == p.to_json());

  REQUIRE_THROWS_WITH(ef::CaptionsDataset(dir.path / "c.h5", "test"), Contains("no split 'test'"));
  REQUIRE_THROWS_WITH(ef::EditsDataset(dir.path / "c.h5", "train"), Contains("does not hold edits data"));
  REQUIRE_THROWS_WITH(ef::CaptionsDataset(dir.path / "missing.h5", "train"), Contains("not found"));
  ef::write_file_atomically(dir.path / "junk.h5", "not hdf5 at all");
  REQUIRE_THROWS_WITH(ef::CaptionsDataset(dir.path / "junk.h5", "train"), Contains("not a readable HDF5 file"));
  REQUIRE_THROWS_WITH(train.attribute_index("mood"), Contains("no attribute 'mood'"));

  // a text that does not fit is refused, and nothing is written
  p.max_text_bytes = 20;
  REQUIRE_THROWS_WITH(ef::generate_captions(p, dir.path / "short.h5"), Contains("max_text_bytes 20"));
  CHECK_FALSE(fs::exists(dir.path / "short.h5"));
  // parameters come from a config object, checked
  auto cfg = ef::Config::from_json({{"vocab", "tiny"}});
  REQUIRE_THROWS_WITH(ef::SceneDataParams::from(cfg, 10, 10), Contains("vocab"));
}

TEST_CASE("cli: data gen captions and edits write their files", "[cli][captions]") {
  ef::test::ScratchDir dir("cap-cli");
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  for (const std::string kind : {"captions", "edits"}) {
    const fs::path out = dir.path / (kind + ".h5");
    auto r = ef::test::run_command(cli + " data gen " + kind + " --out " + ef::test::quote(out.string()) +
                                   " --set n_train=20 --set n_val=5 --set image_size=16 --set seed=2");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    REQUIRE(fs::exists(out));
    if (kind == "captions") CHECK(ef::CaptionsDataset(out, "val").size() == 5);
    else CHECK(ef::EditsDataset(out, "train").size() == 20);
  }
  auto bad = ef::test::run_command(cli + " data gen captions --out " + ef::test::quote((dir.path / "x.h5").string()) + " --set n_trian=3");
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Contains("n_train"));
}

TEST_CASE("classify on a captions attribute: loss falls and AttributeClassifier predicts", "[classify][captions]") {
  ef::test::ScratchDir dir("cap-cls");
  nlohmann::json c = {
      {"recipe", "classify"}, {"name", "colour"}, {"seed", 1}, {"device", "cpu"}, {"threads", 1},
      {"data", {{"kind", "captions"}, {"attribute", "colour"}, {"path", (dir.path / "captions.h5").string()},
                {"generate", {{"n_train", 512}, {"n_val", 64}, {"image_size", 16}, {"seed", 5}}}, {"batch_size", 32}, {"workers", 0}}},
      {"model", {{"image_size", 16}, {"patch", 4}, {"dim", 32}, {"depth", 1}, {"heads", 2}}},
      {"optim", {{"lr", 5e-3}, {"schedule", {{"kind", "cosine"}, {"warmup", 5}}}}},
      {"train", {{"steps", 80}, {"log_every", 10}, {"eval_every", 80}, {"ckpt_every", 80}, {"tensorboard", false}}},
      {"eval", {{"batches", 1}, {"batch_size", 64}, {"samples", 4}}}};
  ef::write_file_atomically(dir.path / "colour.json", c.dump(2));
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = dir.path / "run";
  auto r = ef::launch_training(dir.path / "colour.json", o);
  REQUIRE(r.outcome.step == 80);
  std::vector<double> losses;
  for (const auto& m : ef::read_metrics_jsonl(dir.path / "run/metrics.jsonl"))
    if (m.count("train/loss")) losses.push_back(m.at("train/loss"));
  REQUIRE(losses.size() == 8);
  INFO("losses " << losses.front() << " ... " << losses.back());
  CHECK(losses.back() < 0.8 * losses.front());  // untrained: ln(7) = 1.95

  auto clf = ef::AttributeClassifier::load(dir.path / "run", torch::kCPU);
  CHECK(clf.attribute() == "colour");
  CHECK(clf.classes().size() == 7);
  CHECK(clf.image_size() == 16);
  ef::CaptionsDataset val(dir.path / "captions.h5", "val");
  std::vector<ef::Sample> samples;
  for (int64_t i = 0; i < val.size(); ++i) samples.push_back(val.get(i));
  ef::Batch b = ef::collate(samples);
  torch::Tensor pred = clf.predict(b.at("image"));
  CHECK(pred.sizes() == torch::IntArrayRef({64}));
  CHECK(pred.scalar_type() == torch::kInt64);
  const double acc = clf.accuracy(b.at("image"), b.at("attr_colour"), 16);
  CHECK(acc == (pred == b.at("attr_colour")).to(torch::kFloat64).mean().item<double>());
  CHECK(acc > 0.5);  // chance is 1/7

  REQUIRE_THROWS_WITH(clf.predict(torch::zeros({2, 3, 8, 8})), Contains("expected images [B, 3, 16, 16]"));
  REQUIRE_THROWS_WITH(ef::AttributeClassifier::load(dir.path, torch::kCPU), Contains("not a run folder"));
  // a bad attribute name is refused before training
  o.run_dir = dir.path / "run2";
  o.overrides = {"data.attribute=\"mood\""};
  REQUIRE_THROWS_WITH(ef::launch_training(dir.path / "colour.json", o), Contains("data.attribute") && Contains("mood"));
}
