#include <catch2/catch.hpp>

#include "core/config.h"

using ef::Config;
using ef::ConfigError;
using Catch::Matchers::Contains;

TEST_CASE("config: typed getters report the dotted path and the expected type", "[config]") {
  Config c = Config::from_json({{"optim", {{"lr", "fast"}, {"schedule", {{"warmup", 1.5}}}}}}, "cfg.json");
  REQUIRE_THROWS_WITH(c.section("optim").get<double>("lr", 1e-3), Contains("optim.lr: expected number, got \"fast\""));
  REQUIRE_THROWS_WITH(c.section("optim").section("schedule").get<int64_t>("warmup", 0),
                      Contains("optim.schedule.warmup: expected integer, got 1.5"));
  REQUIRE_THROWS_WITH(c.require<std::string>("recipe"), Contains("cfg.json: recipe: required string is missing"));
}

TEST_CASE("config: defaults are written back so the resolved config is complete", "[config]") {
  Config c = Config::from_json({{"train", {{"steps", 10}}}});
  auto t = c.section("train");
  CHECK(t.get<int64_t>("steps", 99) == 10);
  CHECK(t.get<double>("ema", 0.5) == 0.5);
  CHECK(c.root()["train"]["ema"] == 0.5);
  CHECK(c.section("model").get<std::string>("kind", "vit") == "vit");
  CHECK(c.root()["model"]["kind"] == "vit");
}

TEST_CASE("config: unknown keys are rejected with a suggestion", "[config]") {
  Config c = Config::from_json({{"optim", {{"lr", 0.1}, {"weight_decy", 0.0}}}, {"seed", 1}}, "cfg.json");
  c.get<int64_t>("seed", 0);
  auto o = c.section("optim");
  o.get<double>("lr", 0.0);
  o.get<double>("weight_decay", 0.0);
  REQUIRE_THROWS_WITH(c.reject_unknown_keys(), Contains("unknown key 'optim.weight_decy' (did you mean 'optim.weight_decay'?)"));

  Config d = Config::from_json({{"seed", 1}, {"zzz", 2}});
  d.get<int64_t>("seed", 0);
  REQUIRE_THROWS_WITH(d.reject_unknown_keys(), Contains("unknown key 'zzz'"));

  Config e = Config::from_json({{"export", {{"anything", 1}}}});
  e.accept("export");
  REQUIRE_NOTHROW(e.reject_unknown_keys());

  // null is "unset" (how a sweep removes a block): has() is false and it is not an unknown key
  Config f = Config::from_json({{"seed", 1}, {"hollow", nullptr}});
  f.get<int64_t>("seed", 0);
  CHECK_FALSE(f.has("hollow"));
  REQUIRE_NOTHROW(f.reject_unknown_keys());
}

TEST_CASE("config: overrides parse JSON values and create paths", "[config]") {
  Config c = Config::from_json({{"optim", {{"lr", 0.1}}}});
  c.apply_override("optim.lr=3e-4");
  c.apply_override("name=run-1");
  c.apply_override("model.attention.kind=\"padre\"");
  c.apply_override("grid=[1,2,3]");
  c.apply_override("train.ema=0");
  CHECK(c.section("optim").get<double>("lr", 0) == Approx(3e-4));
  CHECK(c.get<std::string>("name", "") == "run-1");
  CHECK(c.section("model").section("attention").get<std::string>("kind", "") == "padre");
  CHECK(c.root()["grid"] == nlohmann::json::array({1, 2, 3}));
  CHECK(c.section("train").get<double>("ema", 1.0) == 0.0);
  REQUIRE_THROWS_WITH(c.apply_override("novalue"), Contains("expected key.path=value"));
  REQUIRE_THROWS_WITH(c.apply_override("optim.lr.x=1"), Contains("optim.lr is 0.0003, not an object"));
}

TEST_CASE("config: a file that is not JSON names the file", "[config]") {
  REQUIRE_THROWS_WITH(Config::load("/nonexistent/x.json"), Contains("/nonexistent/x.json"));
}
