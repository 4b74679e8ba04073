// The config fuzzer: mutations of every shipped config (configs/*.json and each recipe's
// <domain>/<recipe>.tiny.json), each checked the way `edgeforge train --check` (and so `train`)
// checks a config: the recipe is built, the networks it names are loaded, unknown keys refused.
//  - an unknown key at every depth, and a value of the wrong type at sampled keys: refused with an
//    input error naming the key's dotted path;
//  - out-of-range numbers (-1, 0, 2^63, 1e300) at sampled keys: refused naming the key (or its
//    section), or accepted; an accepted mutation of a tiny config then trains a step without
//    crashing (a NaN loss or a clear input error are fine: a crash or another error is not);
//  - malformed JSON (truncated text, a number that overflows a double): refused naming the file.
// The runs that configs name (runs/<name>) are made first, in a scratch folder, by training the
// shipped config of that name for one step. Generated datasets are shrunk (fewer images, views,
// points) so that the suite does not generate gigabytes; the readers are the same. Mutations are sampled with a fixed seed: every run of
// the suite tries the same ones.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <regex>
#include <set>

#include "core/atomic_file.h"
#include "core/run.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<fs::path> shipped_configs() {
  std::vector<fs::path> out;
  const fs::path src = ef::test::source_dir();
  for (const auto& e : fs::directory_iterator(src / "configs"))
    if (e.path().extension() == ".json") out.push_back(e.path());
  for (const auto& dir : fs::directory_iterator(src))
    if (dir.is_directory() && dir.path().filename() != "build")
      for (const auto& e : fs::directory_iterator(dir.path()))
        if (e.path().filename().string().size() > 10 && e.path().filename().string().find(".tiny.json") != std::string::npos)
          out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// A shipped config with its generated datasets made small (counts of images, pairs, views and
// points capped): the readers under test are the same, and the suite does not generate gigabytes.
json shrunk(json j) {
  static const std::map<std::string, int64_t> caps = {{"n", 256}, {"n_train", 256}, {"n_val", 16}, {"views", 16}, {"points", 2000}, {"n_class", 8}, {"n_unseen", 8}};
  if (!j.is_object()) return j;
  for (auto& [k, v] : j.items()) {
    if (k == "generate" && v.is_object()) {
      for (const auto& [name, cap] : caps)
        if (v.contains(name) && v[name].is_number_integer() && v[name].get<int64_t>() > cap) v[name] = cap;
    } else {
      v = shrunk(v);
    }
  }
  return j;
}

json load_shrunk(const fs::path& config) { return shrunk(ef::Config::load(config).root()); }

bool is_tiny(const fs::path& config) { return config.filename().string().find(".tiny.json") != std::string::npos; }

// A place in a config: its dotted path (as errors name it) and its JSON pointer.
struct Place {
  std::string dotted;
  json::json_pointer at;
};

// Objects (where an unknown key can go) and leaves (scalars and arrays) of a config; null values
// are "unset" keys and are left alone.
void collect(const json& j, const std::string& dotted, const json::json_pointer& at, std::vector<Place>& objects, std::vector<Place>& leaves) {
  if (j.is_object()) {
    objects.push_back({dotted, at});
    for (const auto& [k, v] : j.items()) collect(v, dotted.empty() ? k : dotted + "." + k, at / k, objects, leaves);
  } else if (!j.is_null()) {
    leaves.push_back({dotted, at});
  }
}

// A value of another JSON type than `v`.
json wrong_type(const json& v) {
  if (v.is_string()) return 12345;
  if (v.is_boolean()) return "yes";
  if (v.is_number()) return "fuzz";
  return "fuzz";  // an array
}

struct Outcome {
  bool accepted = false;
  bool input_error = false;  // refused with ef::InputError (the CLI's exit 2)
  std::string message;
};

Outcome check(const json& config, const fs::path& file) {
  ef::write_file_atomically(file, config.dump(2));
  try {
    ef::check_config(file, {});
    return {true, false, ""};
  } catch (const ef::InputError& e) {
    return {false, true, e.what()};
  } catch (const std::exception& e) {
    return {false, false, e.what()};
  }
}

// Overrides that shrink a dependency run to one cheap step, for the keys its config has.
std::vector<std::string> one_step_overrides(const json& config) {
  std::vector<std::string> out = {"train.steps=1", "train.eval_every=0", "train.ckpt_every=1", "train.log_every=1"};
  if (config.contains("data") && config["data"].contains("batch_size")) out.push_back("data.batch_size=2");
  if (config.contains("eval") && config["eval"].contains("images")) out.push_back("eval.images=2");
  if (config.contains("eval") && config["eval"].contains("samples")) out.push_back("eval.samples=1");
  return out;
}

// The scratch folder every check runs in, with the runs the shipped configs name.
class Workspace {
 public:
  Workspace() : scratch_("config-fuzz") {
    // checks are small: one thread each, so that the suite's parallel tests do not oversubscribe the cores
    at::set_num_threads(1);
    for (const auto& c : shipped_configs()) by_name_[ef::Config::load(c).root().value("name", "")] = c;
    for (const auto& c : shipped_configs()) make_runs_named_by(ef::Config::load(c).root());
  }

 private:
  void make_runs_named_by(const json& j) {
    static const std::regex run_ref("^runs/([^/]+)/?$");
    std::smatch m;
    if (j.is_structured()) {
      for (const auto& v : j) make_runs_named_by(v);
    } else if (j.is_string()) {
      const std::string s = j.get<std::string>();
      if (std::regex_match(s, m, run_ref)) make_run(m[1]);
    }
  }
  void make_run(const std::string& name) {
    if (made_.count(name)) return;
    INFO("a config names runs/" << name);
    REQUIRE(by_name_.count(name));
    const json config = load_shrunk(by_name_.at(name));
    make_runs_named_by(config);
    const fs::path file = fs::absolute("dependency-" + name + ".json");
    ef::write_file_atomically(file, config.dump(2));
    ef::LaunchOptions o;
    o.run_dir = fs::path("runs") / name / "0";
    o.overrides = one_step_overrides(config);
    o.quiet = true;
    REQUIRE(ef::launch_training(file, o).outcome.status == ef::TrainStatus::Finished);
    made_.insert(name);
  }
  ef::test::InScratch scratch_;
  std::map<std::string, fs::path> by_name_;
  std::set<std::string> made_;
};

Workspace& workspace() {
  static Workspace w;
  return w;
}

// `k` distinct indices below `n` (all of them when n <= k), the same on every run.
std::vector<size_t> sample(size_t n, size_t k, std::mt19937& rng) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(std::min(n, k));
  return idx;
}

std::string section_of(const std::string& dotted) {
  const auto dot = dotted.rfind('.');
  return dot == std::string::npos ? dotted : dotted.substr(0, dot);
}

}  // namespace

TEST_CASE("config fuzzer: an unknown key at any depth, or a value of the wrong type, is refused naming the key", "[config][fuzz]") {
  workspace();
  std::mt19937 rng(7);
  for (const auto& file : shipped_configs()) {
    INFO("config " << file.string());
    const json original = load_shrunk(file);
    const fs::path mutated = fs::absolute("mutated-" + file.filename().string());
    {
      const Outcome o = check(original, mutated);
      INFO(o.message);
      REQUIRE(o.accepted);  // the shipped config itself is valid
    }
    std::vector<Place> objects, leaves;
    collect(original, "", json::json_pointer(), objects, leaves);
    for (const auto& obj : objects) {
      json j = original;
      j[obj.at]["fuzz_unknown_key"] = 1;
      const std::string key = obj.dotted.empty() ? "fuzz_unknown_key" : obj.dotted + ".fuzz_unknown_key";
      const Outcome o = check(j, mutated);
      INFO("unknown key " << key << ": " << (o.accepted ? "accepted" : o.message));
      CHECK(o.input_error);
      CHECK(o.message.find("'" + key + "'") != std::string::npos);
    }
    for (size_t i : sample(leaves.size(), 4, rng)) {
      json j = original;
      j[leaves[i].at] = wrong_type(original[leaves[i].at]);
      const Outcome o = check(j, mutated);
      INFO(leaves[i].dotted << " = " << j[leaves[i].at].dump() << ": " << (o.accepted ? "accepted" : o.message));
      CHECK(o.input_error);
      CHECK(o.message.find(leaves[i].dotted) != std::string::npos);
    }
  }
}

TEST_CASE("config fuzzer: an out-of-range number is refused naming the key, or trains without crashing", "[config][fuzz]") {
  workspace();
  std::mt19937 rng(11);
  const std::vector<json> extremes = {-1, 0, json(uint64_t(1) << 63), 1e300};
  for (const auto& file : shipped_configs()) {
    if (!is_tiny(file)) continue;  // the tiny configs train in seconds
    INFO("config " << file.string());
    const json original = load_shrunk(file);
    const fs::path mutated = fs::absolute("mutated-" + file.filename().string());
    std::vector<Place> objects, leaves, numbers;
    collect(original, "", json::json_pointer(), objects, leaves);
    for (const auto& l : leaves)
      if (original[l.at].is_number() && l.dotted != "seed") numbers.push_back(l);
    for (size_t i : sample(numbers.size(), 8, rng)) {
      json j = original;
      j[numbers[i].at] = extremes[rng() % extremes.size()];
      const Outcome o = check(j, mutated);
      INFO(numbers[i].dotted << " = " << j[numbers[i].at].dump() << ": " << (o.accepted ? "accepted" : o.message));
      if (!o.accepted) {
        CHECK(o.input_error);
        CHECK(o.message.find(section_of(numbers[i].dotted)) != std::string::npos);
        continue;
      }
      // accepted: it must train (a few steps, as the tiny config says) without crashing
      ef::LaunchOptions opts;
      opts.run_dir = fs::absolute("accepted-run");
      opts.quiet = true;
      std::error_code ec;
      fs::remove_all(opts.run_dir, ec);
      try {
        ef::launch_training(mutated, opts);
      } catch (const ef::InputError&) {
      } catch (const std::exception& e) {
        const std::string what = e.what();
        INFO("training failed: " << what);
        std::string lower = what;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
        CHECK((lower.find("nan") != std::string::npos || lower.find("non-finite") != std::string::npos));
      }
      fs::remove_all(opts.run_dir, ec);
    }
  }
}

TEST_CASE("config fuzzer: malformed JSON is refused naming the file", "[config][fuzz]") {
  ef::test::ScratchDir dir("config-fuzz-json");
  std::mt19937 rng(13);
  for (const auto& file : shipped_configs()) {
    INFO("config " << file.string());
    const std::string text = ef::read_file(file);
    const fs::path bad = dir.path / file.filename();
    // cut before the closing brace, a brace too many, a number no double holds (alone, and as a value)
    std::vector<std::string> mutations = {text.substr(0, rng() % text.rfind('}')), text + "}", "1e400",
                                          std::regex_replace(text, std::regex("\"name\": *\"[^\"]*\""), "\"name\": 1e400")};
    REQUIRE(mutations.back() != text);
    for (const auto& m : mutations) {
      ef::write_file_atomically(bad, m);
      try {
        ef::Config::load(bad);
        FAIL("accepted: " << m.substr(0, 200));
      } catch (const ef::ConfigError& e) {
        CHECK_THAT(e.what(), Catch::Contains(bad.string()));
      }
    }
  }
}

TEST_CASE("train --check validates a config and its overrides, writes no run, and exits 2 naming a bad key", "[config][cli]") {
  ef::test::ScratchDir dir("train-check");
  const std::string in_dir = "cd " + ef::test::quote(dir.path.string()) + " && ";
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const std::string tiny = ef::test::quote(ef::test::source_dir() + "/tasks/classify.tiny.json");
  auto r = ef::test::run_command("(" + in_dir + cli + " train " + tiny + " --check 2>/dev/null)");  // run_command adds 2>&1 outside
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json resolved = json::parse(r.output);  // stdout: the resolved config, defaults written in
  CHECK(resolved["train"].contains("grad_accum"));
  CHECK(!fs::exists(dir.path / "runs"));
  r = ef::test::run_command(in_dir + cli + " train " + tiny + " --check --set model.depth=1e400");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("model.depth=1e400"));
  r = ef::test::run_command(in_dir + cli + " train " + tiny + " --check --set model.heads=9223372036854775808");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("model.heads") && Catch::Contains("out of range"));
  r = ef::test::run_command(in_dir + cli + " train " + tiny + " --check --set export.quant=w3a3");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("export.quant") && Catch::Contains("w3a3"));
  CHECK(!fs::exists(dir.path / "runs"));
}
