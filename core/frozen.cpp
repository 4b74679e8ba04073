#include "core/frozen.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/crc32c.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "core/trainer.h"

namespace ef {

namespace fs = std::filesystem;

namespace {

std::string crc_of(const fs::path& file) {
  const std::string bytes = read_file(file);
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08x", crc32c(bytes.data(), bytes.size()));
  return hex;
}

fs::path ema_file(const fs::path& checkpoint, const std::string& module) { return checkpoint / (module + ".ema.safetensors"); }
fs::path plain_file(const fs::path& checkpoint, const std::string& module) { return checkpoint / (module + ".safetensors"); }

// The record of network `module` of the run `run_dir`, following runs that froze it in turn.
nlohmann::json record_from_run(const fs::path& run_dir, const std::string& module, bool prefer_ema, int depth = 0) {
  if (depth > 16) throw InputError(run_dir.string() + ": frozen network '" + module + "' is recorded in a cycle of runs");
  CheckpointStore store(run_dir / "ckpt", 0);
  auto latest = store.latest();
  if (latest && fs::exists(plain_file(*latest, module))) {
    const bool ema = prefer_ema && fs::exists(ema_file(*latest, module));
    const fs::path file = ema ? ema_file(*latest, module) : plain_file(*latest, module);
    return {{"run", fs::absolute(run_dir).lexically_normal().string()}, {"checkpoint", latest->filename().string()},
            {"module", module}, {"ema", ema}, {"crc32c", crc_of(file)}};
  }
  // not trained there: the run may have used it frozen
  if (fs::exists(run_dir / "config.json")) {
    Config c = Config::load(run_dir / "config.json");
    const nlohmann::json& root = c.root();
    if (root.contains("frozen") && root["frozen"].contains(module)) {
      nlohmann::json rec = root["frozen"][module];
      if (rec.contains("run")) return record_from_run(rec.at("run").get<std::string>(), rec.value("module", module), rec.value("ema", false), depth + 1);
      return rec;
    }
  }
  if (!latest) throw InputError(run_dir.string() + " has no checkpoint yet (train it first)");
  throw InputError(latest->string() + " holds no network named \"" + module + "\" and the run records no frozen one of that name");
}

nlohmann::json record_of(const FrozenSource& src) {
  if (!src.file.empty()) {
    if (!fs::is_regular_file(src.file)) throw InputError("weight file " + src.file.string() + " does not exist");
    return {{"file", fs::absolute(src.file).lexically_normal().string()}, {"crc32c", crc_of(src.file)}};
  }
  return record_from_run(resolve_run_folder(src.run, "frozen network source"), src.module, /*prefer_ema=*/true);
}

// The file a record names (the EMA file when it says so).
fs::path file_of(const nlohmann::json& rec) {
  if (rec.contains("file")) return rec.at("file").get<std::string>();
  const fs::path ckpt = fs::path(rec.at("run").get<std::string>()) / "ckpt" / rec.at("checkpoint").get<std::string>();
  const std::string module = rec.at("module").get<std::string>();
  return rec.value("ema", false) ? ema_file(ckpt, module) : plain_file(ckpt, module);
}

// `verify`: compare the file with the record's checksum (not needed right after the record was made from it).
void load_recorded(torch::nn::Module& module, const std::string& name, const nlohmann::json& rec, bool verify) {
  const fs::path file = file_of(rec);
  const std::string where = "frozen network '" + name + "'";
  if (!fs::exists(file)) throw InputError(where + ": " + file.string() + " no longer exists (the source run was pruned or moved)");
  if (verify && rec.contains("crc32c") && crc_of(file) != rec.at("crc32c").get<std::string>())
    throw InputError(where + ": " + file.string() + " changed since this run recorded it (crc32c " + rec.at("crc32c").get<std::string>() + ")");
  if (rec.contains("file")) {
    load_module_state(module, load_safetensors(file), file.string());
  } else {
    load_module_weights(module, file.parent_path(), rec.at("module").get<std::string>(), rec.value("ema", false));
  }
}

}  // namespace

void load_frozen_networks(Recipe& recipe, const Config& root, torch::Device device) {
  auto frozen = recipe.frozen();
  if (frozen.empty()) return;
  auto trained = recipe.modules();
  Config records = root.section("frozen");
  for (auto& [name, net] : frozen) {
    if (trained.count(name)) throw std::logic_error("recipe names '" + name + "' both trained and frozen");
    const bool recorded_now = !records.has(name);
    if (recorded_now) {
      if (net.source.empty()) throw ConfigError(root.source() + ": frozen network '" + name + "' has no source (the recipe names no run or file)");
      records.get<nlohmann::json>(name, record_of(net.source));  // writes the record into the resolved config
    }
    const nlohmann::json rec = records.get<nlohmann::json>(name, nullptr);
    records.accept(name);  // the record's fields are ours
    load_recorded(*net.module, name, rec, /*verify=*/!recorded_now);
    net.module->to(device);
    net.module->eval();
    for (auto& p : net.module->parameters()) p.set_requires_grad(false);
    spdlog::info("frozen {}: {}", name, file_of(rec).string());
  }
  records.reject_unknown_keys();
}

fs::path network_file_of_run(const fs::path& run_dir, const std::string& module, bool prefer_ema) {
  return file_of(record_from_run(run_dir, module, prefer_ema));
}

}  // namespace ef
