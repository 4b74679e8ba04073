#include "lora/peft.h"

#include <set>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "lora/lora.h"

namespace fs = std::filesystem;

namespace ef::lora {

namespace {

std::string shape_string(const torch::IntArrayRef& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

LoraImpl& as_lora(const AdaptedLayer& l) {
  auto* lora = dynamic_cast<LoraImpl*>(l.adapter.get());
  if (!lora)
    throw InputError("the adapter at '" + l.path + "' is a " + l.adapter->kind() + " adapter; only lora adapters have a PEFT file layout");
  return *lora;
}

}  // namespace

void save_peft(const AdaptersImpl& adapters, const fs::path& dir) {
  if (adapters.layers().empty()) throw InputError("save_peft: no adapters to save");
  TensorMap tensors;
  nlohmann::json targets = nlohmann::json::array(), rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  const LoraOptions first = as_lora(adapters.layers().front()).options();
  for (const auto& l : adapters.layers()) {
    LoraImpl& lora = as_lora(l);
    const LoraOptions& o = lora.options();
    if (o.rslora != first.rslora) throw InputError("save_peft: PEFT has one use_rslora for all layers; '" + l.path + "' differs");
    if (o.rank != first.rank) rank_pattern[l.path] = o.rank;
    if (o.alpha != first.alpha) alpha_pattern[l.path] = o.alpha;
    targets.push_back(l.path);
    tensors[kPeftPrefix + l.path + ".lora_A.weight"] = lora.A().detach().to(torch::kCPU).contiguous();
    tensors[kPeftPrefix + l.path + ".lora_B.weight"] = lora.B().detach().to(torch::kCPU).contiguous();
  }
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"task_type", nullptr},
                           {"base_model_name_or_path", nullptr},
                           {"inference_mode", true},
                           {"r", first.rank},
                           {"lora_alpha", first.alpha},
                           {"lora_dropout", first.dropout},
                           {"use_rslora", first.rslora},
                           {"target_modules", targets},
                           {"rank_pattern", rank_pattern},
                           {"alpha_pattern", alpha_pattern},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"init_lora_weights", true},
                           {"modules_to_save", nullptr}};
  fs::create_directories(dir);
  save_safetensors(dir / kPeftWeightsFile, tensors, {{"format", "pt"}});
  write_file_atomically(dir / kPeftConfigFile, config.dump(2) + "\n");
}

void load_peft(AdaptersImpl& adapters, const fs::path& dir) {
  const fs::path file = dir / kPeftWeightsFile;
  if (!fs::exists(file)) throw InputError(file.string() + ": no such file (a PEFT adapter folder holds " + kPeftWeightsFile + ")");
  TensorMap stored = load_safetensors(file);
  std::set<std::string> used;
  // Check everything before copying anything: a bad file leaves the adapters as they were.
  std::vector<std::pair<torch::Tensor*, torch::Tensor>> copies;
  for (const auto& l : adapters.layers()) {
    LoraImpl& lora = as_lora(l);
    for (auto [suffix, target] : {std::pair<const char*, torch::Tensor*>{".lora_A.weight", &lora.A()}, {".lora_B.weight", &lora.B()}}) {
      const std::string key = kPeftPrefix + l.path + suffix;
      auto it = stored.find(key);
      if (it == stored.end()) throw InputError(file.string() + ": missing key '" + key + "'");
      if (it->second.sizes() != target->sizes())
        throw InputError(file.string() + ": '" + key + "' has shape " + shape_string(it->second.sizes()) + " in the file but " +
                         shape_string(target->sizes()) + " in the adapter");
      used.insert(key);
      copies.emplace_back(target, it->second);
    }
  }
  for (const auto& [key, t] : stored)
    if (!used.count(key)) throw InputError(file.string() + ": unexpected key '" + key + "' (no adapter at that path here)");
  {
    torch::NoGradGuard no_grad;
    for (auto& [target, value] : copies) target->copy_(value.to(target->device(), target->scalar_type()));
  }
  adapters.refresh();
}

PeftFolder PeftFolder::read(const fs::path& dir) {
  const fs::path config_file = dir / kPeftConfigFile;
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_file(config_file));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(config_file.string() + ": not valid JSON: " + e.what());
  }
  if (c.value("peft_type", std::string()) != "LORA")
    throw InputError(config_file.string() + ": peft_type is " + c.value("peft_type", nlohmann::json()).dump() + ", only LORA is read");
  PeftFolder f;
  const int64_t r = c.value("r", 8);
  f.adapter = {{"kind", "lora"},
               {"rank", r},
               {"alpha", c.value("lora_alpha", static_cast<double>(r))},
               {"rslora", c.value("use_rslora", false)},
               // lora_dropout is a training option; injection needs none (lora/inject.h), so it is not carried over
               {"dropout", 0.0}};
  const std::string suffix = ".lora_A.weight", prefix = kPeftPrefix;
  for (const auto& [key, t] : load_safetensors(dir / kPeftWeightsFile))
    if (key.rfind(prefix, 0) == 0 && key.size() > prefix.size() + suffix.size() &&
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
      f.paths.push_back(key.substr(prefix.size(), key.size() - prefix.size() - suffix.size()));
  if (f.paths.empty()) throw InputError((dir / kPeftWeightsFile).string() + ": no '" + prefix + "<path>.lora_A.weight' keys");
  return f;
}

}  // namespace ef::lora
