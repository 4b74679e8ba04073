#include "lora/adapter_run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "core/atomic_file.h"
#include "core/frozen.h"
#include "core/safetensors.h"
#include "core/run.h"
#include "lora/foura.h"

namespace ef::lora {
namespace fs = std::filesystem;

AdapterRunSpec AdapterRunSpec::parse(const std::string& text) {
  AdapterRunSpec spec;
  spec.run = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon + 1 < text.size()) {
    const std::string tail = text.substr(colon + 1);
    char* end = nullptr;
    const double s = std::strtod(tail.c_str(), &end);
    if (end != nullptr && *end == '\0') {
      if (!std::isfinite(s) || s < 0 || s > 4)
        throw InputError("--adapter " + text + ": the strength " + tail + " is outside [0, 4]");
      spec.run = text.substr(0, colon);
      spec.strength = s;
    }
  }
  if (spec.run.empty()) throw InputError("--adapter " + text + ": name a run folder (RUN or RUN:STRENGTH)");
  return spec;
}

std::vector<Adapters> attach_adapter_run(LatentDiffusion& model, const AdapterRunSpec& spec, const fs::path& base_run) {
  const fs::path dir = resolve_run_folder(spec.run, "--adapter");
  const Config cfg = Config::load(dir / "config.json");
  const nlohmann::json& root = cfg.root();
  if (!root.contains("adapter") || !root["adapter"].is_object())
    throw InputError("--adapter " + dir.string() + ": the run has no adapter block (it is a \"" + root.value("recipe", "?") + "\" run)");
  const std::string recipe = root.value("recipe", "");
  if (recipe != "style" && recipe != "personalize")  // adapters of another recipe's network (lora/finetune.h)
    throw InputError("--adapter " + dir.string() + ": its adapters belong to a \"" + recipe +
                     "\" network; sampling attaches those of a \"style\" or \"personalize\" run");
  const fs::path trained_on = root.value("frozen", nlohmann::json::object()).value("unet", nlohmann::json::object()).value("run", "");
  std::error_code ec;
  if (!trained_on.empty() && !fs::equivalent(trained_on, base_run, ec))
    spdlog::warn("--adapter {}: trained on the base {}, attached to {}; loading it needs every adapted layer's shape to agree",
                 dir.string(), trained_on.string(), base_run.string());
  const Config a = cfg.section("adapter");
  // FouRA's frozen-mask variant: the gates were frozen at adapter.freeze_gate_at, so a checkpoint
  // written after that step holds masks the adapters must use instead of their adaptive gates.
  const int64_t freeze_at = root["adapter"].value("freeze_gate_at", int64_t{-1});
  bool gates_frozen = false;
  if (freeze_at >= 0) {
    const std::string latest = read_file(dir / "ckpt" / "latest");
    const size_t digits = latest.find_first_of("0123456789");
    gates_frozen = digits != std::string::npos && std::stoll(latest.substr(digits)) > freeze_at;
  }
  std::vector<Adapters> out;
  auto attach = [&](torch::nn::Module& network, const std::string& targets_key, const std::string& module) {
    const auto patterns = a.get<std::vector<std::string>>(targets_key, {});
    if (patterns.empty()) return;
    // The layers the patterns match that the run trained: a Hollowed-Net run (personalize with a
    // hollow block) trained none of the layers it left out.
    const TensorMap weights = load_safetensors(network_file_of_run(dir, module, true));
    std::vector<std::string> targets;
    for (const auto& path : adaptable_paths(network)) {
      const bool matched = std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return glob_match(p, path); });
      auto it = weights.lower_bound(path + ".");
      if (matched && it != weights.end() && it->first.rfind(path + ".", 0) == 0) targets.push_back(path);
    }
    if (targets.empty()) throw InputError("--adapter " + dir.string() + ": its " + module + " holds no adapter of a layer its targets match");
    Adapters adapters = inject(network, targets, a);
    load_module_from_run(dir, module, *adapters);
    adapters->to(model.device());
    adapters->eval();
    if (gates_frozen)
      for (const auto& l : adapters->layers())
        if (auto* f = dynamic_cast<FouraImpl*>(l.adapter.get())) f->use_gate_mask();
    adapters->set_strength(spec.strength);
    adapters->refresh();
    out.push_back(adapters);
  };
  attach(*model.unet, "targets", "unet_adapter");
  attach(*model.text, "text_targets", "text_encoder_adapter");
  if (out.empty()) throw InputError("--adapter " + dir.string() + ": its adapter block names no targets");
  spdlog::info("--adapter {} at strength {}: {} adapted layers", dir.string(), spec.strength, out.front()->layers().size());
  return out;
}

}  // namespace ef::lora
