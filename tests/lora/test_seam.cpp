// The layer seam (models/adaptable.h) and what it opens in lora/inject.h: adapters attached as
// hooks to the project's ef::nn layers run as branches y = base(x) + adapter(x), so input-dependent
// ones (LoRA dropout, FouRA's adaptive gate) reach the UNet and the ViT and train there; several
// adapter sets compose on one layer with strengths; merge/unmerge and detach keep their contracts
// on both paths (hook and weight).
#include <catch2/catch.hpp>

#include <functional>
#include <map>

#include "lora/foura.h"
#include "lora/inject.h"
#include "lora/lora.h"
#include "models/adaptable.h"
#include "models/diffusion/unet.h"
#include "models/text/text_encoder.h"
#include "models/vit.h"
#include "tests/lora/adapter_configs.h"

using Catch::Matchers::Contains;
using ef::lora::test::all_configs;
using ef::lora::test::cfg;
using ef::lora::test::perturb;
using ef::lora::test::small_vit;
using ef::lora::test::weight_configs;

namespace {

ef::UNet2DCondition small_unet() {
  ef::UNetOptions uo;
  uo.in_channels = 4;
  uo.block_out_channels = {8, 16};
  uo.cross_attention = {true, true};
  uo.cross_attention_dim = 12;
  uo.norm_num_groups = 4;
  ef::UNet2DCondition unet(uo);
  unet->eval();
  return unet;
}

struct UNetInput {
  torch::Tensor x = torch::randn({2, 4, 8, 8}), t = torch::tensor({10, 500}), ctx = torch::randn({2, 3, 12});
};

const std::vector<std::string> kUNetLinear{"*.attn1.to_q", "*.attn2.to_out.0"};
const std::vector<std::string> kUNetTargets{"*.attn1.to_q", "*.attn2.to_out.0", "down_blocks.*.resnets.*.conv1"};
const std::vector<std::string> kViTTargets{"patch_embed.proj", "blocks.*.attn.qkv", "blocks.*.mlp.fc1"};

std::shared_ptr<torch::nn::Module> module_at(torch::nn::Module& root, const std::string& path) {
  auto modules = root.named_modules("", false);
  const auto* found = modules.find(path);
  REQUIRE(found != nullptr);
  return *found;
}

// The layer as the network calls it: ef::nn layers with their hooks, torch::nn layers plainly.
torch::Tensor layer_call(torch::nn::Module& layer, const torch::Tensor& x) {
  if (auto* l = dynamic_cast<ef::nn::LinearImpl*>(&layer)) return l->forward(x);
  if (auto* c = dynamic_cast<ef::nn::Conv2dImpl*>(&layer)) return c->forward(x);
  if (auto* l = dynamic_cast<torch::nn::LinearImpl*>(&layer)) return l->forward(x);
  return dynamic_cast<torch::nn::Conv2dImpl&>(layer).forward(x);
}

// An input of the layer's kind: tokens [2, 5, in] or an image [2, in, 6, 6].
torch::Tensor layer_input(const ef::lora::AdapterImpl& a) {
  return a.shape().conv() ? torch::randn({2, a.shape().in, 6, 6}) : torch::randn({2, 5, a.shape().in});
}

size_t total_hooks(torch::nn::Module& root) {
  size_t n = 0;
  for (const auto& m : root.modules())
    if (auto* h = ef::nn::hookable(*m)) n += h->hook_count();
  return n;
}

// A torch::nn stack (weight path), called through its members like the project's networks.
struct PlainNetImpl : torch::nn::Module {
  PlainNetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(6, 10));
    fc2 = register_module("fc2", torch::nn::Linear(10, 5));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2->forward(torch::gelu(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(PlainNet);

}  // namespace

TEST_CASE("seam: ef::nn layers keep torch::nn's names and arithmetic, and run their hooks in order", "[lora][seam]") {
  torch::manual_seed(20);
  ef::nn::Linear ours(torch::nn::LinearOptions(6, 4));
  torch::nn::Linear theirs(torch::nn::LinearOptions(6, 4));
  ef::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 5, 3).padding(1));
  CHECK(ours->named_parameters().keys() == theirs->named_parameters().keys());
  CHECK(conv->named_parameters().keys() == std::vector<std::string>{"weight", "bias"});
  {
    torch::NoGradGuard no_grad;
    theirs->weight.copy_(ours->weight);
    theirs->bias.copy_(ours->bias);
  }
  torch::Tensor x = torch::randn({2, 3, 6});
  CHECK(torch::equal(ours->forward(x), theirs->forward(x)));
  // hooks see the input and the output so far, in attachment order
  auto h1 = ours->add_hook([](const torch::Tensor& in, const torch::Tensor& y) { return y + in.sum(-1, true); });
  auto h2 = ours->add_hook([](const torch::Tensor&, const torch::Tensor& y) { return y * 2; });
  torch::Tensor base = theirs->forward(x);
  CHECK(torch::allclose(ours->forward(x), (base + x.sum(-1, true)) * 2));
  CHECK(torch::equal(ours->base_forward(x), base));
  // through a container, the project's type keeps the hooks; torch::nn's bypasses them (the pitfall)
  torch::nn::ModuleList list;
  list->push_back(ours);
  CHECK(torch::equal(list[0]->as<ef::nn::Linear>()->forward(x), ours->forward(x)));
  CHECK(torch::equal(list[0]->as<torch::nn::Linear>()->forward(x), base));
  CHECK(ours->remove_hook(h1));
  CHECK_FALSE(ours->remove_hook(h1));
  CHECK(torch::equal(ours->forward(x), base * 2));
  CHECK(ours->remove_hook(h2));
  CHECK(ours->hook_count() == 0);
  CHECK(torch::equal(ours->forward(x), base));
}

TEST_CASE("seam: input-dependent adapters inject into the UNet and the ViT, train, and give base + branch", "[lora][seam]") {
  const std::vector<nlohmann::json> configs{
      {{"kind", "lora"}, {"rank", 2}, {"dropout", 0.5}},
      {{"kind", "foura"}, {"rank", 3}},  // gate adaptive (the default)
      {{"kind", "foura"}, {"rank", 3}, {"transform", "dft"}, {"alpha_before_gate", true}, {"gate_hidden", 4}},
      {{"kind", "foura"}, {"rank", 2}, {"gate_entropy", "rank"}},
  };
  for (const auto& c : configs) {
    CAPTURE(c.dump());
    for (bool unet_net : {true, false}) {
      CAPTURE(unet_net);
      torch::manual_seed(21);
      ef::UNet2DCondition unet = small_unet();
      ef::ViT vit = small_vit();
      torch::nn::Module& net = unet_net ? static_cast<torch::nn::Module&>(*unet) : static_cast<torch::nn::Module&>(*vit);
      UNetInput in;
      torch::Tensor images = torch::randn({2, 3, 8, 8});
      auto run = [&] { return unet_net ? unet->forward(in.x, in.t, in.ctx) : vit->forward(images); };
      torch::Tensor before = run().detach();
      auto adapters = ef::lora::inject(net, unet_net ? kUNetTargets : kViTTargets, cfg(c));
      CHECK(total_hooks(net) == adapters->layers().size());
      perturb(*adapters, 0.1);
      adapters->train();

      // In place in the network, each layer computes base(x) + adapter(x): the same numbers as
      // forward_layer (same seed for the dropout mask).
      for (const auto& path : adapters->paths()) {
        CAPTURE(path);
        auto layer = module_at(net, path);
        torch::Tensor x = layer_input(adapters->adapter(path));
        torch::manual_seed(5);
        torch::Tensor in_net = layer_call(*layer, x);
        torch::manual_seed(5);
        torch::Tensor reference = adapters->forward_layer(path, x);
        CHECK(torch::equal(in_net, reference));
        CHECK((in_net - ef::nn::hookable(*layer)->base_forward(x)).abs().max().item<double>() > 0);
      }

      // A training step: gradients reach A, B and the gate, and nothing of the base.
      torch::manual_seed(6);
      torch::Tensor y = run();
      CHECK((y.detach() - before).abs().max().item<double>() > 1e-4);  // the network does run the branches
      y.pow(2).mean().backward();
      for (const auto& p : net.parameters()) CHECK_FALSE(p.grad().defined());
      for (const auto& item : adapters->named_parameters()) {
        CAPTURE(item.key());
        REQUIRE(item.value().grad().defined());
        // (a bias of the gate's last layer shifts every token alike: the softmax cancels it)
        const std::string& k = item.key();
        if (k.size() < 5 || k.compare(k.size() - 5, 5, ".bias") != 0) CHECK(item.value().grad().abs().sum().item<double>() > 0);
      }
      if (c["kind"] == "foura") {
        // the gate is learned: gate_fc1 and gate_shift are among the parameters checked above
        CHECK(adapters->named_parameters().contains(adapters->paths().back() + ".gate_shift"));
        auto& f = dynamic_cast<ef::lora::FouraImpl&>(adapters->adapter(adapters->paths().back()));
        CHECK(f.effective_rank() > 0);
      }
      // input-adaptive: no merge
      CHECK_THROWS_AS(adapters->merge(), std::logic_error);  // (dropout while training)
      // inference: the branch still runs in place (no dropout; FouRA's gate stays adaptive)
      adapters->eval();
      for (const auto& path : adapters->paths()) {
        CAPTURE(path);
        torch::Tensor x = layer_input(adapters->adapter(path));
        CHECK(torch::equal(layer_call(*module_at(net, path), x), adapters->forward_layer(path, x)));
      }
      torch::Tensor eval_y = run().detach();
      CHECK(torch::equal(run().detach(), eval_y));  // deterministic
      if (c["kind"] == "foura") CHECK_THROWS_AS(adapters->merge(), std::logic_error);
      CHECK_FALSE(adapters->merged());

      adapters->detach();
      CHECK(total_hooks(net) == 0);
      CHECK(torch::equal(run().detach(), before));
    }
  }
}

TEST_CASE("seam: fresh adapters of every option set leave the UNet's output bitwise unchanged", "[lora][seam]") {
  torch::manual_seed(22);
  ef::UNet2DCondition unet = small_unet();
  UNetInput in;
  torch::Tensor before = unet->forward(in.x, in.t, in.ctx);
  for (const auto& c : all_configs()) {
    CAPTURE(c.dump());
    auto adapters = ef::lora::inject(*unet, c.value("axis", "") == "token" ? kUNetLinear : kUNetTargets, cfg(c));
    for (bool training : {true, false}) {
      adapters->train(training);
      CHECK(torch::equal(unet->forward(in.x, in.t, in.ctx), before));
    }
    adapters->detach();
  }
}

TEST_CASE("seam: every kind, merged equals unmerged in the UNet, and unmerge restores W0 bit for bit", "[lora][seam]") {
  std::vector<nlohmann::json> configs;
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) configs.push_back(c);
  configs.push_back({{"kind", "lora"}, {"rank", 2}, {"dropout", 0.5}});  // weight-equivalent in eval mode
  for (const auto& c : configs) {
    CAPTURE(c.dump());
    torch::manual_seed(23);
    ef::UNet2DCondition unet = small_unet();
    std::vector<torch::Tensor> originals;
    for (const auto& p : unet->parameters()) originals.push_back(p.detach().clone());
    UNetInput in;
    torch::Tensor base = unet->forward(in.x, in.t, in.ctx);
    auto adapters = ef::lora::inject(*unet, kUNetTargets, cfg(c));
    perturb(*adapters, 0.05);
    adapters->eval();
    torch::Tensor unmerged = unet->forward(in.x, in.t, in.ctx);
    CHECK((unmerged - base).abs().max().item<double>() > 1e-4);
    adapters->merge();
    CHECK(adapters->merged());
    CHECK(total_hooks(*unet) == adapters->layers().size());  // the hooks stay, their branches are off
    CHECK(torch::allclose(unet->forward(in.x, in.t, in.ctx), unmerged, 1e-5, 1e-5));
    adapters->unmerge();
    auto params = unet->parameters();
    for (size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], originals[i]));
    CHECK(torch::equal(unet->forward(in.x, in.t, in.ctx), unmerged));
    adapters->detach();
    CHECK(torch::equal(unet->forward(in.x, in.t, in.ctx), base));
  }
}

TEST_CASE("seam: two adapter sets at strengths s1, s2 add their branches", "[lora][seam]") {
  const double s1 = 0.6, s2 = -1.5;
  SECTION("hooked layers (UNet): any kinds, input-dependent ones included") {
    torch::manual_seed(24);
    ef::UNet2DCondition unet = small_unet();
    nlohmann::json second = {{"kind", "foura"}, {"rank", 3}, {"alpha_before_gate", true}, {"strength", s2}};
    auto a1 = ef::lora::inject(*unet, kUNetTargets, cfg({{"kind", "lora"}, {"rank", 2}}));
    auto a2 = ef::lora::inject(*unet, {"*.attn1.to_q", "down_blocks.*.resnets.*.conv1"}, cfg(second));
    CHECK(a2->strength() == s2);
    a1->set_strength(s1);
    perturb(*a1);
    perturb(*a2);
    std::string shared;
    for (const auto& p : a2->paths())
      for (const auto& q : a1->paths())
        if (p == q && shared.empty()) shared = p;
    REQUIRE_FALSE(shared.empty());
    auto layer = module_at(*unet, shared);
    torch::Tensor x = layer_input(a1->adapter(shared));
    torch::Tensor base = ef::nn::hookable(*layer)->base_forward(x);
    torch::Tensor b1 = a1->forward_layer(shared, x) - base, b2 = a2->forward_layer(shared, x) - base;
    CHECK(torch::allclose(layer_call(*layer, x), base + b1 + b2, 1e-5, 1e-6));
    // LoRA's strength scales its branch
    a1->set_strength(1.0);
    CHECK(torch::allclose(a1->forward_layer(shared, x) - base, b1 / s1, 1e-4, 1e-6));
    // merging one set turns its branch into weight; the other keeps running as a hook
    a1->merge();
    CHECK(torch::allclose(layer_call(*layer, x), base + b1 / s1 + b2, 1e-4, 1e-5));
    a1->unmerge();
    a1->detach();
    CHECK(torch::allclose(layer_call(*layer, x), base + b2, 1e-5, 1e-6));
    a2->detach();
    CHECK(torch::equal(layer_call(*layer, x), base));
  }
  SECTION("weight path (torch::nn stack): W0 + s1 ΔW1 + s2 ΔW2, merge and unmerge in any order") {
    torch::manual_seed(25);
    PlainNet net;
    std::vector<torch::Tensor> originals;
    for (const auto& p : net->parameters()) originals.push_back(p.detach().clone());
    torch::Tensor x = torch::randn({3, 6});
    torch::Tensor base = net->fc1->forward(x).detach();
    auto a1 = ef::lora::inject(*net, {"fc1", "fc2"}, cfg({{"kind", "lora"}, {"rank", 2}, {"strength", s1}}));
    auto a2 = ef::lora::inject(*net, {"fc1"}, cfg({{"kind", "foura"}, {"rank", 2}, {"gate", "none"}, {"strength", s2}}));
    perturb(*a1);
    perturb(*a2);
    a1->refresh();  // either set's refresh rebuilds the layer's weight from both
    torch::Tensor b1 = a1->adapter("fc1").forward(x), b2 = a2->adapter("fc1").forward(x);
    torch::Tensor both = net->fc1->forward(x);
    CHECK(torch::allclose(both, base + b1 + b2, 1e-5, 1e-6));
    CHECK(torch::allclose(torch::nn::functional::linear(x, a1->adapter("fc1").delta_weight()), b1, 1e-5, 1e-6));
    torch::Tensor y = net->forward(x).detach();
    a2->merge();
    CHECK(torch::allclose(net->forward(x), y, 1e-5, 1e-5));
    a1->merge();
    CHECK(torch::allclose(net->forward(x), y, 1e-5, 1e-5));
    a2->unmerge();  // out of order
    CHECK(torch::allclose(net->forward(x), y, 1e-5, 1e-5));
    a1->unmerge();
    auto params = net->parameters();
    for (size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], originals[i]));
    a2->detach();
    CHECK(torch::allclose(net->fc1->forward(x), base + b1, 1e-5, 1e-6));
    a1->detach();
    CHECK(torch::equal(net->fc1->forward(x), base));
    CHECK(net->fc1->weight.is_same(params[0]));
  }
}

TEST_CASE("seam: FouRA's strength multiplies alpha, and the gate sees it with alpha_before_gate", "[lora][seam]") {
  for (bool before : {false, true}) {
    CAPTURE(before);
    const double s = 2.5, alpha = 0.8;
    torch::manual_seed(26);
    auto shape = ef::lora::LayerShape::linear(12, 7);
    nlohmann::json c = {{"kind", "foura"}, {"rank", 3}, {"alpha", alpha}, {"alpha_before_gate", before}, {"gate_hard", false}};
    auto scaled = ef::lora::make_adapter(shape, cfg(c));
    c["alpha"] = alpha * s;
    auto reference = ef::lora::make_adapter(shape, cfg(c));
    perturb(*scaled);
    {
      torch::NoGradGuard no_grad;
      auto from = scaled->parameters(), to = reference->parameters();
      for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
    }
    scaled->set_strength(s);
    torch::Tensor x = torch::randn({2, 5, 12});
    CHECK(torch::allclose(scaled->forward(x), reference->forward(x), 1e-5, 1e-6));
    // without alpha_before_gate the branch is linear in the strength; with it, the gate's input moves
    torch::Tensor at_s = scaled->forward(x);
    scaled->set_strength(1.0);
    const bool linear = torch::allclose(at_s, scaled->forward(x) * s, 1e-4, 1e-6);
    CHECK(linear == !before);
  }
}

TEST_CASE("seam: a non-finite strength is refused", "[lora][seam]") {
  ef::UNet2DCondition unet = small_unet();
  CHECK_THROWS_WITH(ef::lora::inject(*unet, kUNetLinear, cfg({{"kind", "lora"}, {"strength", "x"}})), Contains("strength"));
  auto a = ef::lora::inject(*unet, kUNetLinear, cfg({{"kind", "lora"}}));
  CHECK_THROWS_AS(a->set_strength(std::nan("")), ef::ConfigError);
  CHECK(a->strength() == 1.0);
}

TEST_CASE("seam: every Linear and Conv2d of the project's networks is called through its hooks", "[lora][seam]") {
  // A call site that casts to the torch::nn impl (`as<torch::nn::Linear>()`) or builds a plain
  // torch::nn layer would silently skip the adapters there: every layer must be an ef::nn layer
  // whose hook runs in a forward pass.
  auto check_all_called = [](torch::nn::Module& net, const std::function<void()>& run) {
    std::map<std::string, int> calls;
    std::vector<std::pair<ef::nn::Hookable*, uint64_t>> handles;
    for (const auto& item : net.named_modules("", false)) {
      const bool layer = dynamic_cast<torch::nn::LinearImpl*>(item.value().get()) || dynamic_cast<torch::nn::Conv2dImpl*>(item.value().get());
      if (!layer) continue;
      auto* h = ef::nn::hookable(*item.value());
      CHECK(h != nullptr);  // a plain torch::nn layer in a project network
      if (!h) continue;
      calls[item.key()] = 0;
      int* count = &calls[item.key()];
      handles.emplace_back(h, h->add_hook([count](const torch::Tensor&, const torch::Tensor& y) {
        ++*count;
        return y;
      }));
    }
    REQUIRE_FALSE(calls.empty());
    run();
    for (const auto& [path, n] : calls) {
      CAPTURE(path);
      CHECK(n > 0);
    }
    for (auto& [h, handle] : handles) h->remove_hook(handle);
  };
  torch::manual_seed(27);
  for (bool linear_projection : {false, true}) {
    ef::UNetOptions uo;
    uo.block_out_channels = {8, 16};
    uo.cross_attention = {true, true};
    uo.cross_attention_dim = 12;
    uo.norm_num_groups = 4;
    uo.use_linear_projection = linear_projection;
    ef::UNet2DCondition unet(uo);
    UNetInput in;
    check_all_called(*unet, [&] { unet->forward(in.x, in.t, in.ctx); });
  }
  for (const auto& kind : ef::attention_kinds().names()) {
    CAPTURE(kind);
    ef::ViT vit = small_vit(kind);
    check_all_called(*vit, [&] { vit->forward(torch::randn({2, 3, 8, 8})); });
  }
  ef::TextEncoderOptions to;
  to.dim = 16;
  to.heads = 2;
  to.mlp_dim = 32;
  to.max_length = 8;
  ef::TextEncoder text(to);
  check_all_called(*text, [&] { text->forward(torch::randint(0, to.vocab_size, {2, 8}, torch::kInt64)); });
}
