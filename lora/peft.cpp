#include "lora/peft.h"

#include <regex>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "lora/lora_state.h"

namespace fs = std::filesystem;

namespace ef::lora {

nlohmann::json peft_lora_config(const AdaptersImpl& adapters, const std::string& what) {
  if (adapters.layers().empty()) throw InputError(what + ": no adapters to save");
  nlohmann::json targets = nlohmann::json::array(), rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  const LoraOptions first = lora_of(adapters.layers().front(), "PEFT").options();
  for (const auto& l : adapters.layers()) {
    const LoraOptions& o = lora_of(l, "PEFT").options();
    if (o.rslora != first.rslora) throw InputError(what + ": PEFT has one use_rslora for all layers; '" + l.path + "' differs");
    if (o.rank != first.rank) rank_pattern[l.path] = o.rank;
    if (o.alpha != first.alpha) alpha_pattern[l.path] = o.alpha;
    targets.push_back(l.path);
  }
  return {{"peft_type", "LORA"},
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
}

namespace {

// The value of the first key of `patterns` (an object) that matches `path` by PEFT's rule.
const nlohmann::json* pattern_value(const nlohmann::json& patterns, const std::string& path, const std::string& source,
                                    const char* field) {
  if (patterns.is_null() || path.empty()) return nullptr;
  if (!patterns.is_object()) throw InputError(source + ": " + field + " is " + describe_json(patterns) + ", expected an object");
  for (const auto& [key, value] : patterns.items()) {
    std::regex re;
    try {
      re = std::regex("(.*\\.)?(" + key + ")");
    } catch (const std::regex_error& e) {
      throw InputError(source + ": " + field + " key '" + key + "' is not a regular expression: " + e.what());
    }
    if (std::regex_match(path, re)) return &value;
  }
  return nullptr;
}

template <class T>
T number_field(const nlohmann::json& j, const std::string& source, const std::string& field) {
  if (!j.is_number()) throw InputError(source + ": " + field + " is " + describe_json(j) + ", expected a number");
  return j.get<T>();
}

}  // namespace

LoraOptions peft_layer_options(const nlohmann::json& c, const std::string& path, const std::string& source) {
  if (!c.is_object()) throw InputError(source + ": a LoraConfig must be an object, got " + describe_json(c));
  LoraOptions o;
  o.rank = number_field<int64_t>(c.value("r", nlohmann::json(8)), source, "r");
  o.alpha = number_field<double>(c.value("lora_alpha", nlohmann::json(8)), source, "lora_alpha");
  const nlohmann::json rslora = c.value("use_rslora", nlohmann::json(false));
  if (!rslora.is_boolean()) throw InputError(source + ": use_rslora is " + describe_json(rslora) + ", expected a boolean");
  o.rslora = rslora.get<bool>();
  const nlohmann::json rank_pattern = c.value("rank_pattern", nlohmann::json()), alpha_pattern = c.value("alpha_pattern", nlohmann::json());
  if (const auto* r = pattern_value(rank_pattern, path, source, "rank_pattern")) o.rank = number_field<int64_t>(*r, source, "rank_pattern");
  if (const auto* a = pattern_value(alpha_pattern, path, source, "alpha_pattern")) o.alpha = number_field<double>(*a, source, "alpha_pattern");
  if (o.rank < 1) throw InputError(source + ": rank " + std::to_string(o.rank) + " for '" + path + "' (must be >= 1)");
  o.dropout = 0.0;  // a training option; injection needs none (lora/inject.h)
  return o;
}

void save_peft(const AdaptersImpl& adapters, const fs::path& dir) {
  const nlohmann::json config = peft_lora_config(adapters, "save_peft");
  TensorMap tensors;
  for (const auto& l : adapters.layers()) {
    LoraImpl& lora = lora_of(l, "PEFT");
    tensors[kPeftPrefix + l.path + ".lora_A.weight"] = lora.A().detach().to(torch::kCPU).contiguous();
    tensors[kPeftPrefix + l.path + ".lora_B.weight"] = lora.B().detach().to(torch::kCPU).contiguous();
  }
  fs::create_directories(dir);
  save_safetensors(dir / kPeftWeightsFile, tensors, {{"format", "pt"}});
  write_file_atomically(dir / kPeftConfigFile, config.dump(2) + "\n");
}

void load_peft(AdaptersImpl& adapters, const fs::path& dir) {
  const fs::path file = dir / kPeftWeightsFile;
  if (!fs::exists(file)) throw InputError(file.string() + ": no such file (a PEFT adapter folder holds " + kPeftWeightsFile + ")");
  LoraLayers layers;
  const std::string prefix = kPeftPrefix;
  for (const auto& [key, t] : load_safetensors(file)) {
    bool placed = false;
    for (auto [suffix, is_a] : {std::pair<std::string, bool>{".lora_A.weight", true}, {".lora_B.weight", false}}) {
      if (key.size() <= prefix.size() + suffix.size() || key.rfind(prefix, 0) != 0 ||
          key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      const std::string path = key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
      LoraLayerTensors& entry = layers[path];
      entry.a_key = prefix + path + ".lora_A.weight";
      entry.b_key = prefix + path + ".lora_B.weight";
      (is_a ? entry.A : entry.B) = t;
      placed = true;
    }
    if (!placed) throw InputError(file.string() + ": unexpected key '" + key + "' (not a '" + prefix + "<path>.lora_A/lora_B.weight' key)");
  }
  load_lora_layers(adapters, layers, file.string(), "PEFT");
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
  const LoraOptions o = peft_layer_options(c, "", config_file.string());
  f.adapter = {{"kind", "lora"}, {"rank", o.rank}, {"alpha", o.alpha}, {"rslora", o.rslora}, {"dropout", o.dropout}};
  const std::string suffix = ".lora_A.weight", prefix = kPeftPrefix;
  for (const auto& [key, t] : load_safetensors(dir / kPeftWeightsFile))
    if (key.rfind(prefix, 0) == 0 && key.size() > prefix.size() + suffix.size() &&
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
      f.paths.push_back(key.substr(prefix.size(), key.size() - prefix.size() - suffix.size()));
  if (f.paths.empty()) throw InputError((dir / kPeftWeightsFile).string() + ": no '" + prefix + "<path>.lora_A.weight' keys");
  return f;
}

}  // namespace ef::lora
