#include "lora/lora_state.h"

#include <cmath>
#include <sstream>

namespace ef::lora {

std::string shape_string(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

LoraImpl& lora_of(const AdaptedLayer& l, const std::string& layout) {
  auto* lora = dynamic_cast<LoraImpl*>(l.adapter.get());
  if (!lora)
    throw InputError("the adapter at '" + l.path + "' is a " + l.adapter->kind() + " adapter; only lora adapters have a " + layout +
                     " file layout");
  return *lora;
}

void check_pair(const LoraLayerTensors& t, const std::string& file) {
  if (t.A.dim() < 2 || t.B.dim() < 2 || t.A.size(0) != t.B.size(1))
    throw InputError(file + ": '" + t.a_key + "' has shape " + shape_string(t.A.sizes()) + " and '" + t.b_key + "' has shape " +
                     shape_string(t.B.sizes()) + ": not a LoRA pair (A's rows, the rank, must equal B's columns)");
}

namespace {

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

namespace {

using Copies = std::vector<std::pair<torch::Tensor*, torch::Tensor>>;

// Checks everything and lists the copies to make.
Copies checked_copies(AdaptersImpl& adapters, const LoraLayers& layers, const std::string& file, const std::string& layout) {
  Copies copies;
  for (const auto& l : adapters.layers()) {
    LoraImpl& lora = lora_of(l, layout);
    auto it = layers.find(l.path);
    if (it == layers.end()) throw InputError(file + ": no LoRA tensors for the adapted layer '" + l.path + "'");
    const LoraLayerTensors& t = it->second;
    for (auto [key, stored, target] : {std::tuple<const std::string&, const torch::Tensor&, torch::Tensor*>{t.a_key, t.A, &lora.A()},
                                       {t.b_key, t.B, &lora.B()}}) {
      if (!stored.defined()) throw InputError(file + ": missing key '" + key + "'");
      if (stored.sizes() != target->sizes())
        throw InputError(file + ": '" + key + "' has shape " + shape_string(stored.sizes()) + " in the file but " +
                         shape_string(target->sizes()) + " in the adapter");
      copies.emplace_back(target, stored);
    }
    // A stated scale must be the adapter's: loading tensors trained at another scale would change
    // the layer silently.
    const double own = lora.options().scaling();
    if (t.scaling && std::abs(*t.scaling - own) > 1e-3 * std::max(std::abs(own), 1e-12))
      throw InputError(file + ": " + t.scaling_source + " gives the layer '" + l.path + "' the scale " + number(*t.scaling) +
                       " but its adapter has " + number(own) + " (alpha " + number(lora.options().alpha) + ", rank " +
                       std::to_string(lora.options().rank) + (lora.options().rslora ? ", rslora" : "") +
                       "); inject the adapters from the file's own layout");
  }
  for (const auto& [path, t] : layers) {
    bool adapted = false;
    for (const auto& l : adapters.layers()) adapted = adapted || l.path == path;
    if (!adapted) throw InputError(file + ": unexpected key '" + t.a_key + "' (no adapter at that path here)");
  }
  return copies;
}

}  // namespace

void check_lora_layers(AdaptersImpl& adapters, const LoraLayers& layers, const std::string& file, const std::string& layout) {
  checked_copies(adapters, layers, file, layout);
}

void load_lora_layers(AdaptersImpl& adapters, const LoraLayers& layers, const std::string& file, const std::string& layout) {
  // Check everything before copying anything: a bad file leaves the adapters as they were.
  const Copies copies = checked_copies(adapters, layers, file, layout);
  {
    torch::NoGradGuard no_grad;
    for (auto& [target, value] : copies) target->copy_(value.to(target->device(), target->scalar_type()));
  }
  adapters.refresh();
}

}  // namespace ef::lora
