#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/sweep.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;

TEST_CASE("sweep: grid expansion is the cartesian product / last axis fastest", "[sweep]") {
  auto pts = ef::expand_grid(nlohmann::json::parse(R"({"optim.lr": [0.1, 0.01], "model.attention.kind": ["softmax", "padre", "tosa"]})"));
  REQUIRE(pts.size() == 6);
  // nlohmann orders object keys alphabetically
  CHECK(pts[0].overrides == std::vector<std::string>{"model.attention.kind=\"softmax\"", "optim.lr=0.1"});
  CHECK(pts[1].overrides == std::vector<std::string>{"model.attention.kind=\"softmax\"", "optim.lr=0.01"});
  CHECK(pts[0].name == "kind=softmax,lr=0.1");
  CHECK(pts[5].name == "kind=tosa,lr=0.01");
}

TEST_CASE("sweep: load / list points / skip finished ones / summary sorted", "[sweep]") {
  ef::test::ScratchDir dir("sweep");
  ef::write_file_atomically(dir.path / "base.json", R"({"recipe": "classify"})");
  ef::write_file_atomically(dir.path / "s.json", R"({
    "base": "base.json", "out": ")" + (dir.path / "out").string() + R"(",
    "set": {"train.steps": 5},
    "grid": {"seed": [0, 1]},
    "list": [{"name": "special", "set": {"optim.lr": 0.5}}],
    "metrics": ["eval/acc"], "sort": "-eval/acc"})");
  ef::SweepSpec spec = ef::load_sweep(dir.path / "s.json", {"train.log_every=1"});
  REQUIRE(spec.points.size() == 3);
  CHECK(spec.common == std::vector<std::string>{"train.steps=5", "train.log_every=1"});
  CHECK(ef::pending_points(spec).size() == 3);

  // pretend two points finished
  ef::write_file_atomically(spec.out / "seed=0" / "final.json", R"({"step": 5, "metrics": {"eval/acc": 0.5}})");
  ef::write_file_atomically(spec.out / "special" / "final.json", R"({"step": 5, "metrics": {"eval/acc": 0.9}})");
  auto pending = ef::pending_points(spec);
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].name == "seed=1");

  ef::write_summary(spec, ef::collect_rows(spec));
  std::string csv = ef::read_file(spec.out / "summary.csv");
  CHECK(csv.find("point,finished,seed,optim.lr,eval/acc") == 0);
  // sorted by descending accuracy: special (0.9) before seed=0 (0.5), unfinished last
  CHECK(csv.find("special") < csv.find("seed=0,"));
  CHECK(csv.find("seed=0,") < csv.find("seed=1,"));
  CHECK(ef::read_file(spec.out / "summary.md").find("| special | ") != std::string::npos);
}

TEST_CASE("sweep: bad files give clear errors", "[sweep]") {
  ef::test::ScratchDir dir("sweepbad");
  ef::write_file_atomically(dir.path / "s.json", R"({"base": "missing.json"})");
  REQUIRE_THROWS_WITH(ef::load_sweep(dir.path / "s.json", {}), Catch::Matchers::Contains("base config not found"));
  ef::write_file_atomically(dir.path / "base.json", "{}");
  ef::write_file_atomically(dir.path / "t.json", R"({"base": "base.json", "grid": {"seed": []}})");
  REQUIRE_THROWS_WITH(ef::load_sweep(dir.path / "t.json", {}), Catch::Matchers::Contains("non-empty array"));
  ef::write_file_atomically(dir.path / "u.json", R"({"base": "base.json", "metrix": ["x"]})");
  REQUIRE_THROWS_WITH(ef::load_sweep(dir.path / "u.json", {}), Catch::Matchers::Contains("did you mean 'metrics'"));
}

TEST_CASE("sweep: the summary shows the change of each point relative to its baseline", "[sweep][flow]") {
  ef::test::ScratchDir dir("flow-sweep");
  ef::write_file_atomically(dir.path / "base.json", R"({"recipe": "flow"})");
  ef::write_file_atomically(dir.path / "s.json", R"({
    "base": "base.json", "out": ")" + (dir.path / "out").string() + R"(",
    "list": [{"name": "base", "set": {"flow.sci": false}}, {"name": "sci", "set": {"flow.sci": true}, "baseline": "base"}],
    "metrics": ["eval/epe"], "relative": ["eval/epe"]})");
  ef::SweepSpec spec = ef::load_sweep(dir.path / "s.json", {});
  ef::write_file_atomically(spec.out / "base" / "final.json", R"({"step": 5, "metrics": {"eval/epe": 2.0}})");
  ef::write_file_atomically(spec.out / "sci" / "final.json", R"({"step": 5, "metrics": {"eval/epe": 1.5}})");
  ef::write_summary(spec, ef::collect_rows(spec));
  std::string csv = ef::read_file(spec.out / "summary.csv");
  CHECK(csv.find("point,finished,flow.sci,eval/epe,change eval/epe") == 0);
  CHECK(csv.find("sci,yes,true,1.5,-25.0%") != std::string::npos);
  ef::write_file_atomically(dir.path / "bad.json", R"({"base": "base.json", "list": [{"name": "a", "baseline": "nope"}]})");
  CHECK_THROWS_WITH(ef::load_sweep(dir.path / "bad.json", {}), Catch::Contains("baseline 'nope'"));
}

TEST_CASE("sweep: cross repeats every point per seed, and the summary gives each setting's mean and spread", "[sweep]") {
  ef::test::ScratchDir dir("sweepcross");
  ef::write_file_atomically(dir.path / "base.json", R"({"recipe": "classify"})");
  ef::write_file_atomically(dir.path / "s.json", R"({
    "base": "base.json", "out": ")" + (dir.path / "out").string() + R"(",
    "list": [{"name": "a", "set": {"optim.lr": 0.1}}, {"name": "b", "set": {"optim.lr": 0.2}}],
    "cross": {"seed": [0, 1, 2]},
    "metrics": ["eval/acc"]})");
  ef::SweepSpec spec = ef::load_sweep(dir.path / "s.json", {});
  REQUIRE(spec.points.size() == 6);
  CHECK(spec.points[0].name == "a,seed=0");
  CHECK(spec.points[5].name == "b,seed=2");
  CHECK(spec.points[4].overrides == std::vector<std::string>{"optim.lr=0.2", "seed=1"});
  // a: three seeds at 0.5, 0.6, 0.7 (mean 0.6, sample sd 0.1); b: one finished seed only
  for (int s = 0; s < 3; ++s)
    ef::write_file_atomically(spec.out / ("a,seed=" + std::to_string(s)) / "final.json",
                              R"({"step": 5, "metrics": {"eval/acc": )" + std::to_string(0.5 + 0.1 * s) + "}}");
  ef::write_file_atomically(spec.out / "b,seed=0" / "final.json", R"({"step": 5, "metrics": {"eval/acc": 0.9}})");
  ef::write_summary(spec, ef::collect_rows(spec));
  const std::string md = ef::read_file(spec.out / "summary_by_seed.md");
  CHECK(md.find("| optim.lr=0.1 | 3 | 0.6 ± 0.1 |") != std::string::npos);
  CHECK(md.find("| optim.lr=0.2 | 1 | 0.9 ± 0 |") != std::string::npos);
  CHECK(md.find("optim.lr=0.1") < md.find("optim.lr=0.2"));
}
