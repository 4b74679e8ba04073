#pragma once
// Adapter option sets shared by the lora/ tests: every registered kind must have an entry in
// weight_configs(), so the tests that loop over the registry cover a newly added kind.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/config.h"
#include "lora/adapter.h"
#include "models/vit.h"

namespace ef::lora::test {

// A two-block ViT on 8x8 images, 3 classes, in eval mode: the small project network the adapter
// tests inject into, with the attention kind `attention`.
inline ef::ViT small_vit(const std::string& attention = "softmax") {
  ef::ViTOptions vo;
  vo.image_size = 8;
  vo.patch = 4;
  vo.dim = 16;
  vo.depth = 2;
  vo.heads = 2;
  vo.num_classes = 3;
  ef::ViT vit(vo, ef::Config::from_json({{"kind", attention}}));
  vit->eval();
  return vit;
}

// Options in which each kind is a fixed linear map of its input (mergeable, injectable). A kind
// registered without an entry here fails the tests that loop over the registry.
inline std::vector<nlohmann::json> weight_configs(const std::string& kind) {
  if (kind == "lora")
    return {{{"kind", "lora"}, {"rank", 3}, {"alpha", 6.0}}, {{"kind", "lora"}, {"rank", 4}, {"alpha", 2.0}, {"rslora", true}}};
  if (kind == "foura")
    return {{{"kind", "foura"}, {"rank", 3}, {"gate", "frozen"}},
            {{"kind", "foura"}, {"rank", 3}, {"gate", "none"}, {"transform", "dft"}, {"alpha", 0.7}},
            {{"kind", "foura"}, {"rank", 2}, {"gate", "frozen"}, {"transform", "dft"}}};
  FAIL("adapter kind '" << kind << "' has no weight-equivalent test config: add one to weight_configs() in " << __FILE__);
  return {};
}

// Every option set of every kind, input-dependent ones included (for the standalone checks).
inline std::vector<nlohmann::json> all_configs() {
  std::vector<nlohmann::json> out;
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) out.push_back(c);
  out.push_back({{"kind", "lora"}, {"rank", 2}, {"dropout", 0.5}});
  for (bool before : {false, true})
    for (const char* t : {"dct", "dft"})
      out.push_back({{"kind", "foura"}, {"rank", 3}, {"transform", t}, {"alpha_before_gate", before}, {"gate_hidden", before ? 5 : 0}});
  out.push_back({{"kind", "foura"}, {"rank", 3}, {"axis", "token"}});
  out.push_back({{"kind", "foura"}, {"rank", 3}, {"gate_entropy", "rank"}, {"transform", "dft"}});
  return out;
}

inline ef::Config cfg(const nlohmann::json& j) { return ef::Config::from_json(j, "<test>"); }

// Random values in every adapter parameter (a fresh B is zero, which would hide most bugs).
inline void perturb(torch::nn::Module& m, double scale = 0.2) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, scale);
}

}  // namespace ef::lora::test
