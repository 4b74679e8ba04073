#include "splatting/scene_module.h"

namespace ef::splat {

void GaussianSceneImpl::set(GaussianParams p) {
  p.check();
  torch::NoGradGuard no_grad;
  auto incoming = p.fields();
  auto mine = params_.fields();
  for (auto& [name, value] : incoming) {
    auto it = mine.find(name);
    if (it != mine.end() && it->second->defined()) {
      it->second->set_data(value->detach().to(it->second->options()));  // keeps the registered tensor
      it->second->mutable_grad() = torch::Tensor();
      continue;
    }
    auto t = value->detach().clone();
    if (name == "means") params_.means = register_parameter(name, t);
    else if (name == "scales") params_.scales = register_parameter(name, t);
    else if (name == "quats") params_.quats = register_parameter(name, t);
    else if (name == "opacities") params_.opacities = register_parameter(name, t);
    else if (name == "sh") params_.sh = register_parameter(name, t);
    else params_.extras[name] = register_parameter(name, t);
  }
  TORCH_CHECK(params_.fields().size() == incoming.size(), "scene: a field cannot be removed (", params_.fields().size(), " vs ",
              incoming.size(), ")");
}

void GaussianSceneImpl::adopt_shapes(const TensorMap& state) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : params_.fields()) {
    auto it = state.find(name);
    if (it != state.end() && it->second.sizes() != t->sizes()) t->set_data(torch::zeros(it->second.sizes(), t->options()));
  }
}

}  // namespace ef::splat
