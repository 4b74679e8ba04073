#include "lora/inject.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "models/adaptable.h"

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

namespace {

// One LayerStack per layer, found again when another set is injected on it. Weak: the stack lives
// as long as an Adapters set holds it.
std::mutex& stacks_mutex() {
  static std::mutex m;
  return m;
}
std::map<const torch::nn::Module*, std::weak_ptr<LayerStack>>& stacks() {
  static std::map<const torch::nn::Module*, std::weak_ptr<LayerStack>> table;
  return table;
}

std::shared_ptr<LayerStack> find_stack(const torch::nn::Module* layer) {
  std::lock_guard<std::mutex> lock(stacks_mutex());
  auto& table = stacks();
  for (auto it = table.begin(); it != table.end();) it = it->second.expired() ? table.erase(it) : std::next(it);
  auto it = table.find(layer);
  return it == table.end() ? nullptr : it->second.lock();
}

void remember_stack(const std::shared_ptr<LayerStack>& stack) {
  std::lock_guard<std::mutex> lock(stacks_mutex());
  stacks()[stack->layer.get()] = stack;
}

// Every distinct stack of `layers` (attached ones), in order.
std::vector<LayerStack*> distinct_stacks(const std::vector<AdaptedLayer>& layers) {
  std::vector<LayerStack*> out;
  for (const auto& l : layers)
    if (l.attached && std::find(out.begin(), out.end(), l.stack.get()) == out.end()) out.push_back(l.stack.get());
  return out;
}

}  // namespace

torch::Tensor& LayerStack::weight_member() const {
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(layer.get())) return l->weight;
  return dynamic_cast<torch::nn::Conv2dImpl&>(*layer).weight;
}

torch::Tensor LayerStack::base_forward(const torch::Tensor& x) const {
  // Through the torch::nn impl's forward (not virtual): an ef::nn layer's hooks do not run.
  torch::Tensor& w = weight_member();
  torch::Tensor keep = w;
  w = w0.defined() ? w0 : param;
  torch::Tensor y;
  try {
    if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(layer.get())) y = l->torch::nn::LinearImpl::forward(x);
    else y = dynamic_cast<torch::nn::Conv2dImpl&>(*layer).torch::nn::Conv2dImpl::forward(x);
  } catch (...) {
    w = keep;
    throw;
  }
  w = keep;
  return y;
}

void LayerStack::update_weight() {
  if (hooked) return;
  torch::Tensor w = param;
  // W0 + ΔW: for a fresh adapter (B = 0) ΔW is exactly 0 and the weight equals W0 bit for bit.
  for (const auto& e : entries)
    if (!e->merged) w = w + e->adapter->delta_weight().to(param.dtype());
  weight_member() = w;
}

void LayerStack::rebuild_param() {
  torch::NoGradGuard no_grad;
  const bool any = std::any_of(entries.begin(), entries.end(), [](const auto& e) { return e->merged; });
  if (!any) {
    if (w0.defined()) param.copy_(w0);  // bitwise W0, not W0 + ΔW − ΔW
    w0 = torch::Tensor();
    return;
  }
  if (!w0.defined()) w0 = param.detach().clone();
  torch::Tensor w = w0.clone();
  for (const auto& e : entries)
    if (e->merged) w.add_(e->adapter->delta_weight().to(w.dtype()));
  param.copy_(w);
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
  for (auto* stack : distinct_stacks(layers_)) stack->update_weight();
}

void AdaptersImpl::merge() {
  for (const auto& l : layers_)
    if (l.attached && !l.merged() && !l.adapter->weight_equivalent())
      throw std::logic_error("cannot merge the adapter at '" + l.path + "' (" + l.adapter->kind() +
                             "): it is not a fixed linear map in this mode (dropout while training, or an input-adaptive gate)");
  for (auto& l : layers_)
    if (l.attached) l.entry->merged = true;
  for (auto* stack : distinct_stacks(layers_)) stack->rebuild_param();
  refresh();  // outside no_grad: other sets' unmerged ΔW terms carry gradients
}

void AdaptersImpl::unmerge() {
  if (merged()) {
    for (auto& l : layers_)
      if (l.attached) l.entry->merged = false;
    for (auto* stack : distinct_stacks(layers_)) stack->rebuild_param();
  }
  refresh();  // outside the no_grad scope: the weights must carry gradients again
}

bool AdaptersImpl::merged() const {
  return std::any_of(layers_.begin(), layers_.end(), [](const AdaptedLayer& l) { return l.attached && l.merged(); });
}

void AdaptersImpl::detach() {
  unmerge();
  for (auto& l : layers_) {
    if (!l.attached) continue;
    if (l.hooked()) ef::nn::hookable(*l.stack->layer)->remove_hook(l.hook);
    auto& entries = l.stack->entries;
    entries.erase(std::remove(entries.begin(), entries.end(), l.entry), entries.end());
    l.stack->update_weight();  // the other sets' terms only (W0 when none is left)
    l.attached = false;
  }
}

void AdaptersImpl::set_strength(double s) {
  if (!std::isfinite(s)) throw ConfigError("adapter strength must be a finite number, got " + std::to_string(s));
  const bool was_merged = merged();
  if (was_merged) unmerge();
  strength_ = s;
  for (auto& l : layers_) l.adapter->set_strength(s);
  if (was_merged) merge();
  else refresh();
}

torch::Tensor AdaptersImpl::forward_layer(const std::string& path, const torch::Tensor& x) {
  for (auto& l : layers_)
    if (l.path == path) return l.stack->base_forward(x) + l.adapter->forward(x);
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

  const double strength = adapter.get<double>("strength", 1.0);
  if (!std::isfinite(strength)) adapter.invalid("strength", "must be a finite number");

  // Build every adapter before touching the network: a refused one leaves it as it was.
  struct Planned {
    std::string path;
    std::shared_ptr<torch::nn::Module> module;
    std::shared_ptr<AdapterImpl> adapter;
  };
  std::vector<Planned> built;
  for (const auto& [path, module] : targets) {
    LayerShape shape;
    try {
      if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(module.get())) shape = LayerShape::of(*l);
      else shape = LayerShape::of(dynamic_cast<torch::nn::Conv2dImpl&>(*module));
    } catch (const InputError& e) {
      throw ConfigError("adapter target '" + path + "': " + e.what());
    }
    auto a = make_adapter(shape, adapter);
    // A rank above min(fan_in, out) adds parameters but no directions: ΔW cannot have more.
    const int64_t fan_in = shape.in * (shape.conv() ? shape.kernel[0] * shape.kernel[1] : 1);
    const int64_t max_rank = std::min(fan_in, shape.out);
    if (const auto o = a->options_json(); o.contains("rank") && o["rank"].get<int64_t>() > max_rank)
      adapter.invalid("rank", std::to_string(o["rank"].get<int64_t>()) + " is larger than the layer '" + path + "' (" + shape.describe() +
                                  ") allows: at most " + std::to_string(max_rank) + " = min(fan-in, out)");
    const bool hooked = ef::nn::hookable(*module) != nullptr;
    if (!hooked) {
      // Weight path. The member the forward reads differs from the registered parameter only while
      // adapters drive it; with none of ours attached, something else does, and we would replace it.
      const torch::Tensor param = module->named_parameters(/*recurse=*/false)["weight"];
      auto* w = dynamic_cast<torch::nn::LinearImpl*>(module.get());
      const torch::Tensor& member = w ? w->weight : dynamic_cast<torch::nn::Conv2dImpl&>(*module).weight;
      const auto stack = find_stack(module.get());
      if ((!stack || stack->entries.empty()) && !member.is_same(param))
        throw ConfigError("adapter target '" + path + "': its weight is driven by something else (an Adapters set "
                          "dropped without detach()?); detach those adapters first");
      if (!a->trains_as_weight())
        adapter.invalid("kind", "the " + a->kind() + " adapter with these options depends on the layer's input (dropout, or an "
                                "input-adaptive gate), and '" + path + "' is a plain torch::nn layer, which adapters reach only "
                                "through its weight (lora/inject.h). Use dropout 0 / gate none or frozen, or build the network "
                                "from ef::nn::Linear / ef::nn::Conv2d (models/adaptable.h)");
    }
    const torch::Tensor param = module->named_parameters(/*recurse=*/false)["weight"];
    a->to(param.device(), param.scalar_type());
    a->set_strength(strength);
    built.push_back({path, module, std::move(a)});
  }

  for (auto& p : root.parameters()) p.set_requires_grad(false);
  Adapters out;
  for (auto& plan : built) {
    AdaptedLayer layer;
    layer.path = plan.path;
    layer.adapter = plan.adapter;
    layer.stack = find_stack(plan.module.get());
    if (!layer.stack) {
      layer.stack = std::make_shared<LayerStack>();
      layer.stack->layer = plan.module;
      layer.stack->hooked = ef::nn::hookable(*plan.module) != nullptr;
      layer.stack->param = plan.module->named_parameters(/*recurse=*/false)["weight"];
      remember_stack(layer.stack);
    }
    layer.entry = std::make_shared<LayerStack::Entry>();
    layer.entry->adapter = plan.adapter;
    layer.stack->entries.push_back(layer.entry);
    if (layer.stack->hooked) {
      // y = base(x) + adapter(x): the branch on the layer's own input; off while merged. The hook
      // holds the entry (and so the adapter) until detach().
      std::shared_ptr<LayerStack::Entry> entry = layer.entry;
      layer.hook = ef::nn::hookable(*plan.module)->add_hook([entry](const torch::Tensor& x, const torch::Tensor& y) {
        return entry->merged ? y : y + entry->adapter->forward(x);
      });
    }
    out->add(std::move(layer));
  }
  out->set_strength(strength);  // records it; also refreshes the weight-path layers
  return out;
}

}  // namespace ef::lora
