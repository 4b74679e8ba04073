#include "lora/inject.h"

#include <algorithm>
#include <set>
#include <sstream>

namespace ef::lora {

bool glob_match(const std::string& pattern, const std::string& path) {
  // Iterative wildcard match with backtracking to the last `*`.
  size_t p = 0, s = 0, star = std::string::npos, mark = 0;
  while (s < path.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == path[s])) {
      ++p;
      ++s;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = s;
    } else if (star != std::string::npos) {
      p = star + 1;
      s = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

torch::Tensor& AdaptedLayer::weight_member() const {
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(layer.get())) return l->weight;
  return dynamic_cast<torch::nn::Conv2dImpl&>(*layer).weight;
}

torch::Tensor AdaptedLayer::base_forward(const torch::Tensor& x) const {
  torch::Tensor& w = weight_member();
  torch::Tensor keep = w;
  w = merged ? saved_weight : base_weight;
  torch::Tensor y;
  try {
    if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(layer.get())) y = l->forward(x);
    else y = dynamic_cast<torch::nn::Conv2dImpl&>(*layer).forward(x);
  } catch (...) {
    w = keep;
    throw;
  }
  w = keep;
  return y;
}

std::vector<std::string> AdaptersImpl::paths() const {
  std::vector<std::string> out;
  for (const auto& l : layers_) out.push_back(l.path);
  return out;
}

AdapterImpl& AdaptersImpl::adapter(const std::string& path) {
  for (auto& l : layers_)
    if (l.path == path) return *l.adapter;
  throw std::out_of_range("no adapter at '" + path + "'");
}

void AdaptersImpl::add(AdaptedLayer layer) {
  // Register under the layer's path: intermediate segments become empty container modules, so the
  // parameter names are "<path>.<adapter parameter>".
  torch::nn::Module* parent = this;
  std::stringstream parts(layer.path);
  std::vector<std::string> segments;
  for (std::string s; std::getline(parts, s, '.');) segments.push_back(s);
  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    auto children = parent->named_children();
    if (const auto* found = children.find(segments[i])) parent = found->get();
    else parent = parent->register_module(segments[i], std::make_shared<torch::nn::Module>()).get();
  }
  parent->register_module(segments.back(), layer.adapter);
  layers_.push_back(std::move(layer));
}

void AdaptersImpl::refresh() {
  for (auto& l : layers_) {
    if (l.merged) continue;
    // W0 + ΔW: for a fresh adapter (B = 0) ΔW is exactly 0 and the weight equals W0 bit for bit.
    l.weight_member() = l.base_weight + l.adapter->delta_weight().to(l.base_weight.dtype());
  }
}

void AdaptersImpl::merge() {
  for (const auto& l : layers_)
    if (!l.merged && !l.adapter->weight_equivalent())
      throw std::logic_error("cannot merge the adapter at '" + l.path + "' (" + l.adapter->kind() +
                             "): it is not a fixed linear map in this mode (dropout while training, or an input-adaptive gate)");
  torch::NoGradGuard no_grad;
  for (auto& l : layers_) {
    if (l.merged) continue;
    l.saved_weight = l.base_weight.detach().clone();
    l.base_weight.add_(l.adapter->delta_weight().to(l.base_weight.dtype()));
    l.weight_member() = l.base_weight;
    l.merged = true;
  }
}

void AdaptersImpl::unmerge() {
  {
    torch::NoGradGuard no_grad;
    for (auto& l : layers_) {
      if (!l.merged) continue;
      l.base_weight.copy_(l.saved_weight);
      l.saved_weight = torch::Tensor();
      l.merged = false;
    }
  }
  refresh();  // outside the no_grad scope: the weights must carry gradients again
}

bool AdaptersImpl::merged() const {
  return std::any_of(layers_.begin(), layers_.end(), [](const AdaptedLayer& l) { return l.merged; });
}

void AdaptersImpl::detach() {
  unmerge();
  for (auto& l : layers_) l.weight_member() = l.base_weight;
}

torch::Tensor AdaptersImpl::forward_layer(const std::string& path, const torch::Tensor& x) {
  for (auto& l : layers_)
    if (l.path == path) return l.base_forward(x) + l.adapter->forward(x);  // base_forward uses the unmerged W0
  throw std::out_of_range("no adapter at '" + path + "'");
}

namespace {

bool adaptable(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::LinearImpl*>(&m) || dynamic_cast<const torch::nn::Conv2dImpl*>(&m);
}


// The `n` layer paths closest to a pattern, for the error message: closest_match's pick first,
// then by edit distance to the pattern with its wildcards removed.
std::vector<std::string> closest_paths(const std::string& pattern, const std::vector<std::string>& paths, size_t n) {
  std::string bare;
  for (char c : pattern)
    if (c != '*' && c != '?') bare += c;
  std::vector<std::pair<size_t, std::string>> ranked;
  for (const auto& p : paths) {
    // Compare against the path's tail of the pattern's length too: "*.to_q" is about the ends.
    size_t d = edit_distance(bare, p);
    if (p.size() > bare.size()) d = std::min(d, edit_distance(bare, p.substr(p.size() - bare.size())) + 1);
    ranked.emplace_back(d, p);
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  std::string hint = closest_match(pattern, paths);
  if (!hint.empty()) out.push_back(hint);
  for (const auto& [d, p] : ranked) {
    if (out.size() >= n) break;
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  return out;
}

}  // namespace

std::vector<std::string> adaptable_paths(torch::nn::Module& root) {
  std::vector<std::string> out;
  std::set<const torch::nn::Module*> seen;
  for (const auto& item : root.named_modules("", false))
    if (adaptable(*item.value()) && seen.insert(item.value().get()).second) out.push_back(item.key());
  return out;
}

Adapters inject(torch::nn::Module& root, const std::vector<std::string>& patterns, const Config& adapter) {
  if (patterns.empty()) throw ConfigError("adapter injection: no target patterns given");
  auto modules = root.named_modules("", false);
  const auto candidates = adaptable_paths(root);
  std::set<std::string> matched;
  for (const auto& pattern : patterns) {
    bool any = false;
    std::vector<std::string> wrong_type;
    for (const auto& item : modules) {
      if (!glob_match(pattern, item.key())) continue;
      if (!adaptable(*item.value())) {
        wrong_type.push_back(item.key());
        continue;
      }
      any = true;
      matched.insert(item.key());
    }
    if (any) continue;
    std::string msg = "adapter target '" + pattern + "' matches no Linear or Conv2d layer";
    if (!wrong_type.empty()) msg += " (it matches '" + wrong_type.front() + "', which is neither)";
    std::string near;
    for (const auto& p : closest_paths(pattern, candidates, 5)) near += (near.empty() ? "" : ", ") + p;
    throw ConfigError(msg + "; closest layer paths: " + (near.empty() ? "(the network has no Linear or Conv2d layer)" : near));
  }
  // In module order; a layer reachable under several paths once, under its first path.
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> targets;
  std::set<const torch::nn::Module*> taken;
  for (const auto& item : modules)
    if (matched.count(item.key()) && taken.insert(item.value().get()).second) targets.emplace_back(item.key(), item.value());

  // Build every adapter before touching the network: a refused one leaves it as it was.
  std::vector<AdaptedLayer> built;
  for (const auto& [path, module] : targets) {
    AdaptedLayer layer;
    layer.path = path;
    layer.layer = module;
    LayerShape shape;
    try {
      if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(module.get())) shape = LayerShape::of(*l);
      else shape = LayerShape::of(dynamic_cast<torch::nn::Conv2dImpl&>(*module));
    } catch (const InputError& e) {
      throw ConfigError("adapter target '" + path + "': " + e.what());
    }
    // W0 is the registered parameter; the member the forward reads differs from it only while
    // another Adapters module drives the layer, whose ΔW this one would silently replace.
    layer.base_weight = module->named_parameters(/*recurse=*/false)["weight"];
    if (!layer.weight_member().is_same(layer.base_weight))
      throw ConfigError("adapter target '" + path + "' already has an adapter (detach() those adapters first; "
                        "several adapters on one layer are not supported yet)");
    layer.adapter = make_adapter(shape, adapter);
    if (!layer.adapter->trains_as_weight())
      adapter.invalid("kind", "the " + layer.adapter->kind() +
                                  " adapter with these options depends on the layer's input (dropout, or an input-adaptive gate), "
                                  "which injection into a network cannot reach: the networks call their layers directly, so "
                                  "adapters enter through the layer's weight (lora/inject.h). Use dropout 0 / gate none or frozen");
    layer.adapter->to(layer.base_weight.device(), layer.base_weight.scalar_type());
    built.push_back(std::move(layer));
  }

  for (auto& p : root.parameters()) p.set_requires_grad(false);
  Adapters out;
  for (auto& layer : built) out->add(std::move(layer));
  out->refresh();
  return out;
}

}  // namespace ef::lora
