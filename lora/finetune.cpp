#include "lora/finetune.h"

#include <spdlog/spdlog.h>

#include "core/run.h"

namespace ef::lora {

namespace fs = std::filesystem;

namespace {

const char* const kAdapterModule = "adapter";

// The first value that differs between two resolved sections, over the keys both hold (a key only
// one side resolved comes from another version of a reader, not another network): its dotted path
// and both values. False when they agree.
bool first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path, std::string& where,
                      nlohmann::json& va, nlohmann::json& vb) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [key, value] : a.items())
      if (b.contains(key) && first_difference(value, b.at(key), path + "." + key, where, va, vb)) return true;
    return false;
  }
  if (a == b) return false;
  where = path, va = a, vb = b;
  return true;
}

// Checks that the base run is a whole-network run of the same recipe and architecture as `root`.
void check_base(const Config& root, const fs::path& base, const TrainedNetworkSpec& spec) {
  const std::string what = root.source() + ": adapter.base: " + base.string();
  Config c = Config::load(base / "config.json");
  const std::string recipe = c.root().value("recipe", "");
  if (recipe != spec.recipe)
    throw InputError(what + " is a \"" + recipe + "\" run; a \"" + spec.recipe + "\" config adapts a \"" + spec.recipe + "\" run");
  if (c.root().contains("adapter"))
    throw InputError(what + " is itself an adapter run (its checkpoints hold adapters, not the network); name the run it adapted");
  for (const auto& section : spec.model_sections) {
    const nlohmann::json& mine = root.section(section).json();
    const nlohmann::json theirs = c.root().value(section, nlohmann::json::object());
    std::string where;
    nlohmann::json mine_value, theirs_value;
    if (first_difference(mine, theirs, section, where, mine_value, theirs_value))
      throw InputError(what + " was trained with " + where + " = " + theirs_value.dump() + ", this config has " + mine_value.dump() +
                       "; the adapted network must be the base's");
  }
}

// The default targets that match a layer of `network` (a default may name layers only some
// variants have, e.g. one attention kind's qkv).
std::vector<std::string> matching_defaults(torch::nn::Module& network, const std::vector<std::string>& defaults) {
  const std::vector<std::string> layers = adaptable_paths(network);
  std::vector<std::string> out;
  for (const auto& pattern : defaults)
    for (const auto& layer : layers)
      if (glob_match(pattern, layer)) {
        out.push_back(pattern);
        break;
      }
  return out;
}

}  // namespace

TrainedNetwork::TrainedNetwork(const Config& root, torch::nn::Module& network, const TrainedNetworkSpec& spec)
    : network_(&network), spec_(spec) {
  if (!root.has("adapter")) return;  // nothing read: the resolved config stays as it was
  Config a = root.section("adapter");
  base_ = resolve_run_folder(a.require<std::string>("base"), root.source() + ": adapter.base");
  check_base(root, base_, spec);
  a.get<std::string>("kind", "lora");  // the kind reads its options from this same section
  std::vector<std::string> targets = a.get<std::vector<std::string>>("targets", matching_defaults(network, spec.default_targets));
  if (targets.empty()) a.invalid("targets", "no layer to adapt; name some of: " + nlohmann::json(adaptable_paths(network)).dump());
  adapters_ = inject(network, targets, a);
  network.eval();

  double n = 0;
  for (const auto& p : adapters_->parameters()) n += static_cast<double>(p.numel());
  spdlog::info("{}: {} adapters on {} layers of {} from {}, {:.1f} k trainable parameters", spec.recipe, a.get<std::string>("kind", "lora"),
               adapters_->layers().size(), spec.module, base_.string(), n / 1e3);
}

std::map<std::string, torch::nn::Module*> TrainedNetwork::modules() const {
  if (adapted()) return {{kAdapterModule, adapters_.ptr().get()}};
  return {{spec_.module, network_}};
}

std::map<std::string, FrozenNetwork> TrainedNetwork::frozen() const {
  if (!adapted()) return {};
  return {{spec_.module, {network_, {base_, spec_.module, {}}}}};
}

std::vector<std::string> TrainedNetwork::ema_modules() const { return {adapted() ? kAdapterModule : spec_.module}; }

std::vector<ParamGroup> TrainedNetwork::param_groups() const {
  return adapted() ? decay_groups(*adapters_, std::string(kAdapterModule) + ".") : decay_groups(*network_);
}

std::vector<torch::Tensor> TrainedNetwork::parameters() const {
  return adapted() ? adapters_->parameters() : network_->parameters();
}

void TrainedNetwork::train(bool on) {
  if (adapted()) adapters_->train(on);
  else network_->train(on);
}

void merge_adapters_for_export(OpenedRun& run) {
  auto modules = run.recipe->modules();
  auto it = modules.find(kAdapterModule);
  if (it == modules.end()) return;
  auto* adapters = dynamic_cast<AdaptersImpl*>(it->second);
  if (!adapters) return;
  adapters->eval();
  for (const auto& l : adapters->layers())
    if (!l.adapter->weight_equivalent())
      throw InputError("export: the adapter at '" + l.path + "' (" + l.adapter->kind() +
                       ") depends on its input (an adaptive gate), so it cannot be folded into the network's weights; "
                       "train with a fixed gate (gate \"none\" or \"frozen\") to export");
  adapters->merge();
}

}  // namespace ef::lora
