#include "lora/diffusers_files.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <sstream>

#include "core/safetensors.h"
#include "lora/peft.h"

namespace fs = std::filesystem;

namespace ef::lora {

namespace {

// kohya's prefixes and the network each stands for; the first one of a network is what is written.
const std::vector<std::pair<std::string, std::string>>& kohya_prefixes() {
  static const std::vector<std::pair<std::string, std::string>> p{{"lora_unet_", "unet"},
                                                                   {"lora_te_", "text_encoder"},
                                                                   {"lora_te1_", "text_encoder"},
                                                                   {"lora_te2_", "text_encoder_2"}};
  return p;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string flat(std::string path) {
  for (char& c : path)
    if (c == '.') c = '_';
  return path;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// ---- writing --------------------------------------------------------------------------------

std::string kohya_prefix(const std::string& network) {
  for (const auto& [prefix, net] : kohya_prefixes())
    if (net == network) return prefix;
  throw InputError("save_lora_file: kohya's layout names only the networks unet, text_encoder and text_encoder_2, not '" + network + "'");
}

}  // namespace

void save_lora_file(const fs::path& file, const NetworkAdapters& adapters, LoraFileLayout layout) {
  if (adapters.empty()) throw InputError("save_lora_file: no networks' adapters to save");
  TensorMap tensors;
  nlohmann::json metadata = nlohmann::json::object();
  for (const auto& [network, a] : adapters) {
    if (network.empty() || network.find('.') != std::string::npos)
      throw InputError("save_lora_file: the network name '" + network + "' cannot prefix keys (it must be non-empty, without dots)");
    // The LoraConfig also checks that every adapter is a LoRA one.
    const nlohmann::json config = peft_lora_config(*a, "save_lora_file: network '" + network + "'");
    std::map<std::string, std::string> written;  // kohya name -> path, to refuse two paths of one name
    for (const auto& l : a->layers()) {
      LoraImpl& lora = lora_of(l, "diffusers/kohya");
      torch::Tensor A = lora.A().detach().to(torch::kCPU).contiguous(), B = lora.B().detach().to(torch::kCPU).contiguous();
      if (layout == LoraFileLayout::diffusers) {
        tensors[network + "." + l.path + ".lora_A.weight"] = A;
        tensors[network + "." + l.path + ".lora_B.weight"] = B;
        continue;
      }
      const std::string name = kohya_prefix(network) + flat(l.path);
      if (auto [it, fresh] = written.emplace(name, l.path); !fresh)
        throw InputError("save_lora_file: '" + it->second + "' and '" + l.path + "' both become '" + name + "' in kohya's layout");
      const LoraOptions& o = lora.options();
      // kohya's scale is alpha / r; rsLoRA's alpha / sqrt(r) is the same scale with alpha * sqrt(r).
      const double alpha = o.rslora ? o.alpha * std::sqrt(static_cast<double>(o.rank)) : o.alpha;
      tensors[name + ".lora_down.weight"] = A;
      tensors[name + ".lora_up.weight"] = B;
      tensors[name + ".alpha"] = torch::tensor(alpha, torch::kFloat32);
    }
    for (const auto& [key, value] : config.items()) metadata[network + "." + key] = value;
  }
  Metadata meta{{"format", "pt"}};
  if (layout == LoraFileLayout::diffusers) meta[kDiffusersLoraMetadata] = metadata.dump(2);
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  save_safetensors(file, tensors, meta);
}

// ---- reading --------------------------------------------------------------------------------

namespace {

enum class Part { A, B, alpha };

// One key, parsed: the network, the layer path candidates (diffusers) or kohya's flat name, and
// which tensor it is.
struct ParsedKey {
  std::string network;
  std::vector<std::string> candidates;  // diffusers forms: the first one that is a layer wins
  std::string kohya_name;               // kohya: the path with '.' -> '_'
  Part part = Part::A;
  std::string form;  // "diffusers", "diffusers (older keys)", "kohya"
};

const char* const kKnownForms =
    "the forms read are diffusers' <network>.<path>.lora_A.weight / .lora_B.weight, its older .lora.down.weight / "
    ".lora.up.weight, .processor.to_q_lora.down.weight, .lora_linear_layer.down.weight and .alpha, and kohya's "
    "lora_unet_<path>.lora_down.weight / .lora_up.weight / .alpha (lora_te_, lora_te1_, lora_te2_); only LoRA is read, "
    "not FouRA, LoHa, LoKr, DoRA magnitudes or LoRA biases";

// Older attention-processor names of a projection: the UNet's to_q ... to_out.0, a CLIP text
// encoder's q_proj ... out_proj.
std::vector<std::string> processor_candidates(const std::string& base) {
  const size_t dot = base.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : base.substr(0, dot + 1), last = base.substr(parent.size());
  static const std::map<std::string, std::vector<std::string>> names{
      {"to_q", {"to_q", "q_proj"}}, {"to_k", {"to_k", "k_proj"}}, {"to_v", {"to_v", "v_proj"}}, {"to_out", {"to_out.0", "out_proj"}}};
  auto it = names.find(last);
  if (it == names.end()) return {base};
  std::vector<std::string> out;
  for (const auto& n : it->second) out.push_back(parent + n);
  return out;
}

// diffusers' older keys put the projection under ".processor." (attention processors); the layer
// path has no such segment.
std::string without_processor(std::string path) {
  for (size_t at; (at = path.find(".processor.")) != std::string::npos;) path.erase(at, 10);
  if (ends_with(path, ".processor")) path.erase(path.size() - 10);
  return path;
}

std::optional<ParsedKey> parse_key(const std::string& key) {
  for (const auto& [prefix, network] : kohya_prefixes()) {
    if (key.rfind(prefix, 0) != 0) continue;
    const size_t dot = key.find('.', prefix.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string suffix = key.substr(dot + 1);
    ParsedKey k{network, {}, key.substr(prefix.size(), dot - prefix.size()), Part::A, "kohya"};
    if (suffix == "lora_down.weight") k.part = Part::A;
    else if (suffix == "lora_up.weight") k.part = Part::B;
    else if (suffix == "alpha") k.part = Part::alpha;
    else return std::nullopt;
    return k;
  }
  const size_t dot = key.find('.');
  if (dot == std::string::npos || dot == 0) return std::nullopt;
  ParsedKey k;
  k.network = key.substr(0, dot);
  const std::string rest = key.substr(dot + 1);
  struct Form {
    const char* suffix;
    Part part;
    bool older, processor;
  };
  static const Form forms[] = {{".lora_A.weight", Part::A, false, false},
                               {".lora_B.weight", Part::B, false, false},
                               {".lora.down.weight", Part::A, true, false},
                               {".lora.up.weight", Part::B, true, false},
                               {".lora_linear_layer.down.weight", Part::A, true, true},
                               {".lora_linear_layer.up.weight", Part::B, true, true},
                               {"_lora.down.weight", Part::A, true, true},
                               {"_lora.up.weight", Part::B, true, true},
                               {".alpha", Part::alpha, true, false}};  // network_alphas naming
  for (const Form& f : forms) {
    if (!ends_with(rest, f.suffix) || rest.size() == std::char_traits<char>::length(f.suffix)) continue;
    const std::string base = without_processor(rest.substr(0, rest.size() - std::char_traits<char>::length(f.suffix)));
    k.part = f.part;
    k.form = f.older ? "diffusers (older keys)" : "diffusers";
    k.candidates = f.processor ? processor_candidates(base) : std::vector<std::string>{base};
    return k;
  }
  return std::nullopt;
}

// The Linear/Conv2d layers of a network by path, and their paths with dots made underscores.
struct NetworkLayers {
  std::vector<std::string> paths;  // module order
  std::map<std::string, LayerShape> shapes;
  std::map<std::string, std::vector<std::string>> by_flat;
  std::map<std::string, std::string> refused;  // path -> why it takes no LoRA

  explicit NetworkLayers(torch::nn::Module& net) {
    paths = adaptable_paths(net);
    const std::set<std::string> wanted(paths.begin(), paths.end());
    for (const auto& item : net.named_modules("", false)) {
      if (!wanted.count(item.key()) || shapes.count(item.key()) || refused.count(item.key())) continue;
      try {
        if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(item.value().get())) shapes.emplace(item.key(), LayerShape::of(*l));
        else shapes.emplace(item.key(), LayerShape::of(dynamic_cast<torch::nn::Conv2dImpl&>(*item.value())));
      } catch (const InputError& e) {
        refused.emplace(item.key(), e.what());  // grouped or transposed convolutions take no LoRA
      }
    }
    for (const auto& p : paths) by_flat[flat(p)].push_back(p);
  }
};

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// `t` in the layout `want` (a layer's A or B): a Linear's [o, i] and a 1x1 convolution's
// [o, i, 1, 1] are the same map, and kohya's files use either for the UNet's projections.
torch::Tensor fitted(const torch::Tensor& t, const std::vector<int64_t>& want) {
  if (t.sizes() == want) return t;
  auto squeezed = [](std::vector<int64_t> s) {
    if (s.size() == 4 && s[2] == 1 && s[3] == 1) s.resize(2);
    return s;
  };
  if (squeezed(t.sizes().vec()) == squeezed(want)) return t.reshape(want);
  return t;
}

}  // namespace

LoraFile LoraFile::read(const fs::path& path, const Networks& networks) {
  LoraFile f;
  f.file = path.string();
  if (!fs::exists(path)) throw InputError(f.file + ": no such file");
  Metadata meta;
  const TensorMap stored = load_safetensors(path, &meta);
  if (stored.empty()) throw InputError(f.file + ": no tensors");

  std::map<std::string, NetworkLayers> nets;
  for (const auto& [name, net] : networks) nets.emplace(name, NetworkLayers(net.get()));
  std::vector<std::string> given;
  for (const auto& [name, n] : networks) given.push_back(name);

  // Every key to (network, path, part); unknown and unmatched keys are refused here.
  struct Found {
    std::string key;
    torch::Tensor value;
  };
  std::map<std::string, std::map<std::string, std::map<Part, Found>>> found;  // network -> path -> part
  std::set<std::string> forms;
  for (const auto& [key, value] : stored) {
    const std::optional<ParsedKey> k = parse_key(key);
    if (!k) throw InputError(f.file + ": key '" + key + "' is not a LoRA key this reader knows (" + kKnownForms + ")");
    auto net = nets.find(k->network);
    if (net == nets.end())
      throw InputError(f.file + ": key '" + key + "' belongs to the network '" + k->network + "', which was not given (given: " +
                       join(given, ", ") + ")");
    const NetworkLayers& layers = net->second;
    std::string layer;
    if (k->form == "kohya") {
      auto it = layers.by_flat.find(k->kohya_name);
      if (it == layers.by_flat.end()) {
        std::vector<std::string> flats;
        for (const auto& [name, p] : layers.by_flat) flats.push_back(name);
        const std::string near = closest_match(k->kohya_name, flats);
        throw InputError(f.file + ": key '" + key + "' names no Linear or Conv2d layer of the network '" + k->network + "'" +
                         (near.empty() ? "" : " (closest: '" + layers.by_flat.at(near).front() + "')"));
      }
      if (it->second.size() > 1)
        throw InputError(f.file + ": key '" + key + "' is ambiguous: the layers '" + join(it->second, "', '") +
                         "' all read '" + k->kohya_name + "' once their dots are underscores");
      layer = it->second.front();
    } else {
      for (const auto& c : k->candidates)
        if (layers.shapes.count(c) || layers.refused.count(c)) {
          layer = c;
          break;
        }
      if (layer.empty()) {
        const std::string near = closest_match(k->candidates.front(), layers.paths);
        throw InputError(f.file + ": key '" + key + "': the network '" + k->network + "' has no Linear or Conv2d layer '" +
                         join(k->candidates, "' or '") + "'" + (near.empty() ? "" : " (closest: '" + near + "')"));
      }
    }
    if (auto why = layers.refused.find(layer); why != layers.refused.end())
      throw InputError(f.file + ": key '" + key + "': the layer '" + layer + "' takes no LoRA: " + why->second);
    Found& slot = found[k->network][layer][k->part];
    if (!slot.key.empty())
      throw InputError(f.file + ": keys '" + slot.key + "' and '" + key + "' are the same tensor of the layer '" + layer + "'");
    slot = {key, value};
    forms.insert(k->form);
  }
  f.layout = join(std::vector<std::string>(forms.begin(), forms.end()), " + ");

  // diffusers' adapter metadata: each network's LoraConfig, its keys prefixed by the network's name.
  nlohmann::json metadata;
  if (auto it = meta.find(kDiffusersLoraMetadata); it != meta.end()) {
    try {
      metadata = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(f.file + ": __metadata__ " + kDiffusersLoraMetadata + " is not valid JSON: " + e.what());
    }
    if (!metadata.is_object()) throw InputError(f.file + ": __metadata__ " + kDiffusersLoraMetadata + " is not a JSON object");
  }

  for (const auto& [network, by_path] : found) {
    nlohmann::json config = nlohmann::json::object();
    for (const auto& [key, value] : metadata.items())
      if (key.rfind(network + ".", 0) == 0) config[key.substr(network.size() + 1)] = value;
    const std::string config_source = f.file + ": " + kDiffusersLoraMetadata + " of '" + network + "'";
    const NetworkLayers& layers = nets.at(network);
    LoraLayers& out = f.tensors[network];
    std::map<std::string, LoraOptions> options;
    for (const auto& [layer, parts] : by_path) {
      const auto a = parts.find(Part::A), b = parts.find(Part::B), alpha = parts.find(Part::alpha);
      if (a == parts.end() || b == parts.end()) {
        const std::string& have = (a != parts.end() ? a : b != parts.end() ? b : alpha)->second.key;
        throw InputError(f.file + ": the layer '" + layer + "' of '" + network + "' has '" + have + "' but no LoRA " +
                         (a == parts.end() ? "A (down)" : "B (up)") + " weight");
      }
      const LayerShape& shape = layers.shapes.at(layer);
      LoraLayerTensors t;
      t.a_key = a->second.key;
      t.b_key = b->second.key;
      t.A = a->second.value;
      t.B = b->second.value;
      check_pair(t, f.file);
      const int64_t r = t.rank();
      // The layer's shapes at this rank: A as the base weight with r outputs, B as r -> d_out (1x1).
      std::vector<int64_t> want_a = shape.weight_shape(), want_b{shape.out, r};
      want_a[0] = r;
      if (shape.conv()) want_b = {shape.out, r, 1, 1};
      t.A = fitted(t.A, want_a);
      t.B = fitted(t.B, want_b);
      for (auto [key, tensor, want] : {std::tuple<const std::string&, const torch::Tensor&, const std::vector<int64_t>&>{t.a_key, t.A, want_a},
                                       {t.b_key, t.B, want_b}})
        if (tensor.sizes() != want)
          throw InputError(f.file + ": '" + key + "' has shape " + shape_string(tensor.sizes()) + " but the layer '" + layer + "' (" +
                           shape.describe() + ") takes " + shape_string(want) + " at rank " + std::to_string(r));

      LoraOptions o;
      o.rank = r;
      o.alpha = static_cast<double>(r);  // no stated alpha: s = 1 (kohya's rule and diffusers' reading)
      o.dropout = 0.0;
      if (alpha != parts.end()) {
        if (!config.empty())
          throw InputError(f.file + ": '" + alpha->second.key + "' and the adapter metadata both give the alpha of '" + layer +
                           "' (diffusers refuses network alphas together with metadata)");
        if (alpha->second.value.numel() != 1)
          throw InputError(f.file + ": '" + alpha->second.key + "' has shape " + shape_string(alpha->second.value.sizes()) +
                           ", expected one number");
        o.alpha = alpha->second.value.to(torch::kFloat64).item<double>();
        t.scaling = o.scaling();
        t.scaling_source = "'" + alpha->second.key + "'";
      } else if (!config.empty()) {
        const LoraOptions c = peft_layer_options(config, layer, config_source);
        if (c.rank != r)
          throw InputError(config_source + " gives the layer '" + layer + "' rank " + std::to_string(c.rank) + " but '" + t.b_key +
                           "' has shape " + shape_string(t.B.sizes()) + " (rank " + std::to_string(r) + ")");
        o.alpha = c.alpha;
        o.rslora = c.rslora;
        t.scaling = o.scaling();
        t.scaling_source = "the adapter metadata";
      }
      if (!(o.alpha > 0.0) || !std::isfinite(o.alpha))
        throw InputError(f.file + ": the alpha of '" + layer + "' is " + number(o.alpha) + " (a positive number is needed)");
      out.emplace(layer, std::move(t));
      options.emplace(layer, o);
    }
    // In the network's module order, as inject() builds them.
    auto& list = f.layers[network];
    for (const auto& p : layers.paths)
      if (options.count(p)) list.push_back({p, options.at(p)});
  }
  return f;
}

std::vector<std::string> LoraFile::paths(const std::string& network) const {
  std::vector<std::string> out;
  if (auto it = layers.find(network); it != layers.end())
    for (const auto& l : it->second) out.push_back(l.path);
  return out;
}

NetworkAdapters LoraFile::inject(const Networks& networks) const {
  NetworkAdapters out;
  try {
    for (const auto& [network, list] : layers) {
      auto net = networks.find(network);
      if (net == networks.end()) throw InputError(file + ": the file adapts the network '" + network + "', which was not given");
      // inject() takes one adapter section for all its patterns: one call per distinct
      // rank/alpha/rslora, with the layers' exact paths as patterns, then one module per network.
      std::vector<std::pair<LoraOptions, std::vector<std::string>>> groups;
      for (const auto& l : list) {
        auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& e) {
          return e.first.rank == l.options.rank && e.first.alpha == l.options.alpha && e.first.rslora == l.options.rslora;
        });
        if (g == groups.end()) groups.push_back({l.options, {l.path}});
        else g->second.push_back(l.path);
      }
      Adapters all;
      out.emplace(network, all);
      for (const auto& [o, paths] : groups) {
        const nlohmann::json section{{"kind", "lora"}, {"rank", o.rank}, {"alpha", o.alpha}, {"rslora", o.rslora}, {"dropout", 0.0}};
        Adapters part = ef::lora::inject(net->second.get(), paths, Config::from_json(section, file));
        for (const auto& l : part->layers()) all->add(l);
      }
    }
    load(out);
  } catch (...) {
    for (auto& [network, a] : out) a->detach();  // the networks as they were
    throw;
  }
  return out;
}

void LoraFile::load(const NetworkAdapters& adapters) const {
  for (const auto& [network, t] : tensors)
    if (!adapters.count(network))
      throw InputError(file + ": the file has LoRA tensors for the network '" + network + "' but no adapters were given for it");
  static const LoraLayers none;
  auto of = [&](const std::string& network) -> const LoraLayers& {
    auto it = tensors.find(network);
    return it == tensors.end() ? none : it->second;
  };
  // Every network checks before any is loaded.
  for (const auto& [network, a] : adapters) check_lora_layers(*a.ptr(), of(network), file + " (network '" + network + "')", "diffusers");
  for (const auto& [network, a] : adapters) load_lora_layers(*a.ptr(), of(network), file + " (network '" + network + "')", "diffusers");
}

NetworkAdapters load_lora_file(const fs::path& file, const Networks& networks) { return LoraFile::read(file, networks).inject(networks); }

}  // namespace ef::lora

