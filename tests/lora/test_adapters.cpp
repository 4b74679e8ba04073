// Adapters (lora/): every registered adapter kind against the contracts injection and merging
// rely on, the frequency transforms, FouRA's straight-through gate, injection into the project's
// ViT and UNet by pattern, and the PEFT file layout, read back by PEFT itself through the venv's
// Python (tests/interop/peft_lora.py).
#include <catch2/catch.hpp>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "lora/foura.h"
#include "lora/inject.h"
#include "lora/lora.h"
#include "lora/peft.h"
#include "lora/transform.h"
#include "models/diffusion/unet.h"
#include "models/vit.h"
#include "tests/gradcheck.h"
#include "tests/lora/adapter_configs.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using ef::Config;

namespace {

using ef::lora::test::all_configs;
using ef::lora::test::cfg;
using ef::lora::test::perturb;
using ef::lora::test::weight_configs;

// A network in the project's style: layers are typed members called directly.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3).padding(1).stride(2)));
    auto block = register_module("block", std::make_shared<torch::nn::Module>());
    fc1 = block->register_module("fc1", torch::nn::Linear(6, 10));
    fc2 = block->register_module("fc2", torch::nn::Linear(10, 5));
  }
  torch::Tensor forward(const torch::Tensor& images) {  // [B, 3, 8, 8] -> [B, 16, 5]
    torch::Tensor t = conv->forward(images).flatten(2).transpose(1, 2);
    return fc2->forward(torch::gelu(fc1->forward(t)));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(TinyNet);

const std::vector<std::string> kTinyTargets{"conv", "block.*"};

}  // namespace

TEST_CASE("lora: every kind, fresh adapters are zero and leave the network unchanged", "[lora]") {
  torch::manual_seed(0);
  for (const auto& c : all_configs()) {
    CAPTURE(c.dump());
    for (auto shape : {ef::lora::LayerShape::linear(12, 7),
                       ef::lora::LayerShape::conv2d(torch::nn::Conv2dOptions(4, 6, 3).padding(1).stride(2))}) {
      if (c.value("axis", "") == "token" && shape.conv()) continue;
      auto a = ef::lora::make_adapter(shape, cfg(c));
      torch::Tensor x = shape.conv() ? torch::randn({2, 4, 9, 9}) : torch::randn({2, 5, 12});
      torch::Tensor y = a->forward(x);
      CHECK(y.sizes() == (shape.conv() ? std::vector<int64_t>{2, 6, 5, 5} : std::vector<int64_t>{2, 5, 7}));
      CHECK(y.abs().max().item<double>() == 0.0);
    }
  }
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) {
      CAPTURE(c.dump());
      torch::manual_seed(1);
      TinyNet net;
      torch::Tensor x = torch::randn({2, 3, 8, 8});
      torch::Tensor before = net->forward(x);
      auto adapters = ef::lora::inject(*net, kTinyTargets, cfg(c));
      CHECK(adapters->paths() == std::vector<std::string>{"conv", "block.fc1", "block.fc2"});
      CHECK(torch::equal(net->forward(x), before));  // bitwise: W0 + 0
    }
}

TEST_CASE("lora: every kind's forward equals the layer map of its delta_weight()", "[lora]") {
  torch::manual_seed(2);
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) {
      CAPTURE(c.dump());
      auto lin = ef::lora::make_adapter(ef::lora::LayerShape::linear(12, 7), cfg(c));
      perturb(*lin);
      torch::Tensor x = torch::randn({3, 4, 12});
      CHECK(torch::allclose(lin->forward(x), torch::nn::functional::linear(x, lin->delta_weight()), 1e-4, 1e-5));
      auto opts = torch::nn::Conv2dOptions(4, 6, 3).padding(1).stride(2);
      auto conv = ef::lora::make_adapter(ef::lora::LayerShape::conv2d(opts), cfg(c));
      perturb(*conv);
      torch::Tensor img = torch::randn({2, 4, 9, 9});
      torch::Tensor ref = torch::conv2d(img, conv->delta_weight(), {}, 2, 1);
      CHECK(torch::allclose(conv->forward(img), ref, 1e-4, 1e-5));
    }
}

TEST_CASE("lora: every kind, merged equals unmerged and unmerge restores the base bit for bit", "[lora]") {
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) {
      CAPTURE(c.dump());
      torch::manual_seed(3);
      TinyNet net;
      std::vector<torch::Tensor> originals;
      for (const auto& p : net->parameters()) originals.push_back(p.detach().clone());
      torch::Tensor x = torch::randn({2, 3, 8, 8});
      torch::Tensor base = net->forward(x);
      auto adapters = ef::lora::inject(*net, kTinyTargets, cfg(c));
      perturb(*adapters);
      adapters->refresh();
      torch::Tensor unmerged = net->forward(x);
      CHECK((unmerged - base).abs().max().item<double>() > 1e-3);
      adapters->merge();
      CHECK(adapters->merged());
      CHECK(torch::allclose(net->forward(x), unmerged, 1e-5, 1e-5));  // float tolerance: (W0+ΔW)x vs the same sum rounded once more
      adapters->unmerge();
      auto params = net->parameters();
      for (size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], originals[i]));  // bitwise
      CHECK(torch::equal(net->forward(x), unmerged));
    }
}

TEST_CASE("lora: only adapter parameters require and receive gradients", "[lora]") {
  for (const auto& kind : ef::lora::adapter_kinds().names())
    for (const auto& c : weight_configs(kind)) {
      CAPTURE(c.dump());
      torch::manual_seed(4);
      TinyNet net;
      auto adapters = ef::lora::inject(*net, kTinyTargets, cfg(c));
      for (const auto& p : net->parameters()) CHECK_FALSE(p.requires_grad());
      for (const auto& p : adapters->parameters()) CHECK(p.requires_grad());
      net->forward(torch::randn({2, 3, 8, 8})).pow(2).sum().backward();
      for (const auto& p : net->parameters()) CHECK_FALSE(p.grad().defined());
      // B starts at zero, so A's gradient (through B) is zero; B's is not.
      for (const auto& item : adapters->named_parameters()) {
        CAPTURE(item.key());
        REQUIRE(item.value().grad().defined());
        if (item.key().find("lora_B") != std::string::npos) CHECK(item.value().grad().abs().sum().item<double>() > 0);
      }
    }
}

TEST_CASE("lora: DCT-II and real DFT transforms round-trip and match their matrices", "[lora]") {
  torch::manual_seed(5);
  for (int64_t n : {1, 2, 7, 16}) {
    CAPTURE(n);
    torch::Tensor c = ef::lora::dct_matrix(n);
    CHECK(torch::allclose(torch::matmul(c, c.t()), torch::eye(n, torch::kFloat64), 1e-12, 1e-12));  // orthonormal
    if (n > 1) CHECK(c[1][0].item<double>() == Approx(std::sqrt(2.0 / n) * std::cos(M_PI / (2.0 * n))).epsilon(1e-12));
    for (auto kind : {ef::lora::TransformKind::dct, ef::lora::TransformKind::dft}) {
      ef::lora::SpectralTransform t(kind, n);
      for (int64_t dim : {int64_t{-1}, int64_t{1}}) {
        torch::Tensor x = dim == -1 ? torch::randn({3, 4, n}, torch::kFloat64) : torch::randn({3, n, 4}, torch::kFloat64);
        torch::Tensor u = t.forward(x, dim);
        CHECK(u.size(0) == 3 * t.parts());
        CHECK(torch::allclose(t.inverse(u, dim), x, 1e-10, 1e-12));
        CHECK(u.pow(2).sum().item<double>() >= 0);
      }
      // The matrices describe the same maps (merging relies on them).
      torch::Tensor x = torch::randn({5, n}, torch::kFloat64);
      torch::Tensor u = t.forward(x, -1);
      auto fwd = t.forward_matrices(), inv = t.inverse_matrices();
      torch::Tensor back;
      for (int64_t p = 0; p < t.parts(); ++p) {
        torch::Tensor part = u.chunk(t.parts(), 0)[p];
        CHECK(torch::allclose(torch::matmul(x, fwd[p].t()), part, 1e-10, 1e-12));
        torch::Tensor term = torch::matmul(part, inv[p].t());
        back = back.defined() ? back + term : term;
      }
      CHECK(torch::allclose(back, x, 1e-10, 1e-12));
    }
    // the DFT is torch's ortho rfft
    torch::Tensor x = torch::randn({2, n}, torch::kFloat64);
    torch::Tensor s = torch::fft::rfft(x, n, -1, "ortho");
    CHECK(torch::allclose(ef::lora::SpectralTransform(ef::lora::TransformKind::dft, n).forward(x, -1), torch::cat({torch::real(s), torch::imag(s)}, 0)));
  }
  // orthonormal DCT: the DCT-II of a constant is √N·value in bin 0 and nothing elsewhere
  torch::Tensor u = ef::lora::SpectralTransform(ef::lora::TransformKind::dct, 9).forward(torch::ones({1, 9}, torch::kFloat64), -1);
  CHECK(u[0][0].item<double>() == Approx(3.0));
  CHECK(u.slice(1, 1).abs().max().item<double>() < 1e-12);
}

TEST_CASE("foura: the gate's straight-through gradient equals the soft gradient, and the mask is hard", "[lora]") {
  for (const char* t : {"dct", "dft"})
    for (bool before : {false, true})
      for (bool conv : {false, true})
        for (const char* entropy : {"tokens", "rank"}) {
          CAPTURE(t, before, conv, entropy);
          nlohmann::json base = {{"kind", "foura"}, {"rank", 4}, {"transform", t}, {"alpha_before_gate", before}, {"alpha", 0.8},
                                 {"gate_entropy", entropy}};
          auto shape = conv ? ef::lora::LayerShape::conv2d(torch::nn::Conv2dOptions(5, 6, 3).padding(1))
                            : ef::lora::LayerShape::linear(10, 6);
          auto make = [&](bool hard) {
            nlohmann::json j = base;
            j["gate_hard"] = hard;
            torch::manual_seed(6);
            auto a = std::dynamic_pointer_cast<ef::lora::FouraImpl>(ef::lora::make_adapter(shape, cfg(j)));
            a->to(torch::kFloat64);
            perturb(*a, 0.5);
            torch::NoGradGuard no_grad;
            // Shifts spread over Ĥ's range, so that some gates are closed and some open.
            a->gate_shift.copy_(torch::linspace(0.2, 1.1, 4, torch::kFloat64));
            return a;
          };
          auto hard = make(true), soft = make(false);
          torch::manual_seed(7);
          torch::Tensor x = conv ? torch::randn({3, 5, 6, 6}, torch::kFloat64) : torch::randn({3, 8, 10}, torch::kFloat64);
          torch::Tensor w = torch::randn_like(hard->forward(x));
          // The output is linear in the mask g (the code z does not depend on it), so dL/dg is the
          // same whether g is round(s) or s: the straight-through gradient of the gate's parameters
          // must equal the soft one exactly, where the soft gradient is what it differentiates.
          (hard->forward(x) * w).sum().backward();
          (soft->forward(x) * w).sum().backward();
          torch::Tensor g = hard->last_gate();
          CHECK(torch::equal(g, torch::round(g)));  // a hard 0/1 mask
          CHECK(hard->effective_rank() == Approx(g.sum(-1).mean().item<double>()));
          for (const char* name : {"gate_shift", "gate_fc1.weight", "gate_fc1.bias"}) {
            CAPTURE(name);
            torch::Tensor gh = hard->named_parameters()[name].grad(), gs = soft->named_parameters()[name].grad();
            CHECK(gh.abs().sum().item<double>() > 0);  // without the STE round() would pass no gradient
            CHECK(torch::allclose(gh, gs, 1e-9, 1e-12));
          }
          // and the soft gradient is right (finite differences)
          std::vector<torch::Tensor> leaves{soft->gate_shift, soft->gate_fc1->weight};
          auto r = ef::test::gradcheck([&] { return soft->forward(x); }, leaves);
          CHECK(r.max_rel_error < 1e-5);
        }
}

TEST_CASE("foura: a learned gate freezes into a mask that merges, and token-axis FouRA is LoRA", "[lora]") {
  torch::manual_seed(8);
  auto a = std::dynamic_pointer_cast<ef::lora::FouraImpl>(
      ef::lora::make_adapter(ef::lora::LayerShape::linear(8, 8), cfg({{"kind", "foura"}, {"rank", 4}})));
  perturb(*a, 0.5);
  {
    torch::NoGradGuard no_grad;
    a->gate_shift.copy_(torch::tensor({-1.0, 2.0, -1.0, 2.0}));  // gates 0 and 2 open, 1 and 3 closed
  }
  torch::Tensor x = torch::randn({2, 6, 8});
  torch::Tensor adaptive = a->forward(x);
  CHECK(a->effective_rank() == Approx(2.0));
  CHECK_FALSE(a->weight_equivalent());
  a->freeze_gate();
  CHECK(a->options().gate == "frozen");
  CHECK(torch::equal(a->gate_mask, torch::tensor({1.0f, 0.0f, 1.0f, 0.0f})));
  CHECK(torch::allclose(a->forward(x), adaptive, 1e-5, 1e-6));
  CHECK(torch::allclose(torch::nn::functional::linear(x, a->delta_weight()), adaptive, 1e-4, 1e-5));

  // Pitfall of brief §2.1: along the token axis the transform cancels.
  auto token = std::dynamic_pointer_cast<ef::lora::FouraImpl>(ef::lora::make_adapter(
      ef::lora::LayerShape::linear(8, 5), cfg({{"kind", "foura"}, {"rank", 3}, {"axis", "token"}, {"gate", "none"}, {"transform", "dft"}})));
  perturb(*token);
  torch::Tensor lora = torch::matmul(torch::matmul(x, token->A().t()), token->B().t());
  CHECK(torch::allclose(token->forward(x), lora, 1e-4, 1e-5));
}

TEST_CASE("lora: injection into the project's ViT and UNet by pattern", "[lora]") {
  torch::manual_seed(9);
  ef::ViT vit = ef::lora::test::small_vit();
  torch::Tensor images = torch::randn({2, 3, 8, 8});
  torch::Tensor before = vit->forward(images);
  auto adapters = ef::lora::inject(*vit, {"blocks.*.mlp.fc1", "blocks.*.attn.qkv", "patch_embed.proj"}, cfg({{"kind", "lora"}, {"rank", 2}}));
  CHECK(adapters->paths() == std::vector<std::string>{"patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.attn.qkv",
                                                      "blocks.1.mlp.fc1"});
  CHECK(adapters->named_parameters().contains("blocks.1.mlp.fc1.lora_B.weight"));
  CHECK(torch::equal(vit->forward(images), before));
  perturb(*adapters);
  adapters->refresh();
  torch::Tensor adapted = vit->forward(images);
  CHECK((adapted - before).abs().max().item<double>() > 1e-3);  // the network does run the adapters
  adapters->merge();
  CHECK(torch::allclose(vit->forward(images), adapted, 1e-5, 1e-5));
  adapters->detach();
  CHECK(torch::equal(vit->forward(images), before));

  ef::UNetOptions uo;
  uo.in_channels = 4;
  uo.block_out_channels = {8, 16};
  uo.cross_attention = {true, true};
  uo.cross_attention_dim = 12;
  uo.norm_num_groups = 4;
  ef::UNet2DCondition unet(uo);
  unet->eval();
  torch::Tensor x = torch::randn({1, 4, 8, 8}), t = torch::tensor({10, 500}).slice(0, 0, 1), ctx = torch::randn({1, 3, 12});
  torch::Tensor ub = unet->forward(x, t, ctx);
  for (const auto& kind : ef::lora::adapter_kinds().names()) {
    CAPTURE(kind);
    auto ua = ef::lora::inject(*unet, {"*.attn1.to_q", "*.attn2.to_out.0", "down_blocks.*.resnets.*.conv1"}, cfg(weight_configs(kind).front()));
    for (const auto& p : ua->paths()) {
      CAPTURE(p);
      CHECK((ef::lora::glob_match("*.attn1.to_q", p) || ef::lora::glob_match("*.attn2.to_out.0", p) ||
             ef::lora::glob_match("down_blocks.*.resnets.*.conv1", p)));
    }
    // attn1.to_q and attn2.to_out.0 in 7 transformer blocks (2 down, 1 mid, 2 x 2 up), conv1 in 2 down resnets
    CHECK(ua->paths().size() == 2 * 7 + 2);
    CHECK(torch::equal(unet->forward(x, t, ctx), ub));
    perturb(*ua, 0.05);
    ua->refresh();
    torch::Tensor y = unet->forward(x, t, ctx);
    CHECK((y - ub).abs().max().item<double>() > 1e-5);
    ua->merge();
    CHECK(torch::allclose(unet->forward(x, t, ctx), y, 1e-4, 1e-5));
    ua->detach();
    CHECK(torch::equal(unet->forward(x, t, ctx), ub));
  }
}

TEST_CASE("lora: a target pattern that matches nothing names the closest layer paths", "[lora]") {
  TinyNet net;
  auto lora = cfg({{"kind", "lora"}, {"rank", 4}});
  CHECK_THROWS_AS(ef::lora::inject(*net, {"block.fc3"}, lora), ef::ConfigError);
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"block.fc3"}, lora), Contains("block.fc3") && Contains("block.fc1"));
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"conv", "*.attn.qkv"}, lora), Contains("*.attn.qkv") && Contains("closest layer paths"));
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"block"}, lora), Contains("neither"));
  // input-dependent adapters cannot enter through the weight: refused with the reason
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"conv"}, cfg({{"kind", "foura"}, {"rank", 4}})), Contains("input"));
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"conv"}, cfg({{"kind", "lora"}, {"rank", 4}, {"dropout", 0.1}})), Contains("dropout"));
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"conv"}, cfg({{"kind", "lorra"}})), Contains("did you mean 'lora'"));
  for (auto& p : net->parameters()) CHECK(p.requires_grad());  // a failed injection changes nothing
  // a second set on a layer composes with the first (W0 + ΔW1 + ΔW2, tests/lora/test_seam.cpp)
  auto first = ef::lora::inject(*net, {"conv"}, lora);
  auto second = ef::lora::inject(*net, {"co*"}, lora);
  CHECK(second->paths() == std::vector<std::string>{"conv"});
  first->detach();
  second->detach();
  CHECK(net->conv->weight.is_same(net->conv->named_parameters(false)["weight"]));
  // a weight member that something else drives would be silently replaced: refused
  net->conv->weight = net->conv->weight * 1.0;
  CHECK_THROWS_WITH(ef::lora::inject(*net, {"conv"}, lora), Contains("'conv'") && Contains("driven by something else"));
  net->conv->weight = net->conv->named_parameters(false)["weight"];
  CHECK_NOTHROW(ef::lora::inject(*net, {"conv"}, lora));
}

TEST_CASE("lora: a training step without refresh() fails loudly instead of training stale weights", "[lora]") {
  torch::manual_seed(13);
  TinyNet net;
  auto adapters = ef::lora::inject(*net, kTinyTargets, cfg({{"kind", "lora"}, {"rank", 2}}));
  torch::optim::SGD opt(adapters->parameters(), 0.1);
  torch::Tensor x = torch::randn({2, 3, 8, 8});
  net->forward(x).pow(2).sum().backward();
  opt.step();
  opt.zero_grad();
  CHECK_THROWS(net->forward(x).pow(2).sum().backward());  // the previous step's W0 + ΔW graph
  adapters->refresh();
  torch::Tensor before = net->forward(x).detach();
  net->forward(x).pow(2).sum().backward();
  opt.step();
  adapters->refresh();
  CHECK((net->forward(x).detach() - before).abs().max().item<double>() > 0);  // the step reached the network
}

TEST_CASE("lora: forward_layer runs base(x) + adapter(x), input-dependent adapters included", "[lora]") {
  torch::manual_seed(12);
  TinyNet net;
  auto adapters = ef::lora::inject(*net, {"block.fc1"}, cfg({{"kind", "lora"}, {"rank", 2}}));
  perturb(*adapters);
  adapters->refresh();
  torch::Tensor x = torch::randn({2, 4, 6});
  torch::Tensor expected = net->fc1->forward(x);  // the network's own call: W0 + ΔW
  CHECK(torch::allclose(adapters->forward_layer("block.fc1", x), expected, 1e-5, 1e-6));
  adapters->merge();
  CHECK(torch::allclose(adapters->forward_layer("block.fc1", x), expected, 1e-5, 1e-6));
  adapters->unmerge();
  CHECK_THROWS_AS(adapters->forward_layer("block.fc9", x), std::out_of_range);
}

TEST_CASE("lora: PEFT folders round-trip, and a wrong shape names the key and both shapes", "[lora]") {
  ef::test::ScratchDir dir("peft");
  torch::manual_seed(10);
  TinyNet net;
  auto adapters = ef::lora::inject(*net, kTinyTargets, cfg({{"kind", "lora"}, {"rank", 3}, {"alpha", 5.0}}));
  perturb(*adapters);
  adapters->refresh();
  torch::Tensor x = torch::randn({2, 3, 8, 8});
  torch::Tensor y = net->forward(x);
  ef::lora::save_peft(*adapters, dir.path / "a");
  auto config = nlohmann::json::parse(ef::read_file(dir.path / "a" / "adapter_config.json"));
  CHECK(config["peft_type"] == "LORA");
  CHECK(config["r"] == 3);
  CHECK(config["target_modules"] == nlohmann::json{"conv", "block.fc1", "block.fc2"});
  auto tensors = ef::load_safetensors(dir.path / "a" / "adapter_model.safetensors");
  CHECK(tensors.count("base_model.model.block.fc1.lora_A.weight"));
  CHECK(tensors.at("base_model.model.conv.lora_B.weight").sizes() == std::vector<int64_t>{6, 3, 1, 1});

  auto folder = ef::lora::PeftFolder::read(dir.path / "a");
  CHECK(folder.paths.size() == 3);
  adapters->detach();
  auto again = ef::lora::inject(*net, folder.paths, cfg(folder.adapter));
  ef::lora::load_peft(*again, dir.path / "a");
  CHECK(torch::equal(net->forward(x), y));

  auto other = ef::lora::inject(*TinyNet(), kTinyTargets, cfg({{"kind", "lora"}, {"rank", 2}}));
  CHECK_THROWS_AS(ef::lora::load_peft(*other, dir.path / "a"), ef::InputError);
  CHECK_THROWS_WITH(ef::lora::load_peft(*other, dir.path / "a"),
                    Contains("base_model.model.conv.lora_A.weight") && Contains("[3, 3, 3, 3]") && Contains("[2, 3, 3, 3]"));
  auto fewer = ef::lora::inject(*TinyNet(), {"conv"}, cfg({{"kind", "lora"}, {"rank", 3}}));
  CHECK_THROWS_WITH(ef::lora::load_peft(*fewer, dir.path / "a"), Contains("unexpected key 'base_model.model.block.fc1.lora_A.weight'"));
  auto foura = ef::lora::inject(*TinyNet(), {"conv"}, cfg({{"kind", "foura"}, {"rank", 4}, {"gate", "none"}}));
  CHECK_THROWS_WITH(ef::lora::save_peft(*foura, dir.path / "b"), Contains("only lora adapters"));
}

TEST_CASE("lora: PEFT loads our adapter folder onto the same torch.nn model and gives the same output", "[lora][interop]") {
  ef::test::ScratchDir dir("peft-interop");
  torch::manual_seed(11);
  // A small stack in PEFT's own terms (tests/interop/peft_lora.py): conv (3 -> 12, 3x3, stride 2,
  // padding 1) -> tokens -> fc1 -> gelu -> fc2 -> gelu -> head. The conv checks PEFT's Conv2d layout.
  auto net = std::make_shared<torch::nn::Module>();
  auto conv = net->register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 12, 3).stride(2).padding(1)));
  auto fc1 = net->register_module("fc1", torch::nn::Linear(12, 16));
  auto fc2 = net->register_module("fc2", torch::nn::Linear(16, 16));
  auto head = net->register_module("head", torch::nn::Linear(torch::nn::LinearOptions(16, 5).bias(false)));
  auto forward = [&](const torch::Tensor& images) {
    torch::Tensor x = conv->forward(images).flatten(2).transpose(1, 2);
    return head->forward(torch::gelu(fc2->forward(torch::gelu(fc1->forward(x)))));
  };
  ef::save_safetensors(dir.path / "base.safetensors", ef::module_state(*net));
  for (bool rslora : {false, true}) {
    CAPTURE(rslora);
    auto adapters =
        ef::lora::inject(*net, {"conv", "fc?", "head"}, cfg({{"kind", "lora"}, {"rank", 4}, {"alpha", 6.0}, {"rslora", rslora}}));
    perturb(*adapters);
    adapters->refresh();
    torch::Tensor x = torch::randn({3, 3, 8, 6});
    torch::NoGradGuard no_grad;
    const fs::path out = dir.path / (rslora ? "rs" : "plain");
    ef::lora::save_peft(*adapters, out / "adapter");
    ef::save_safetensors(out / "io.safetensors", {{"x", x}, {"y", forward(x)}});
    const std::string python = ef::test::env_or_fail("EDGEFORGE_PYTHON");
    const fs::path script = fs::path(ef::test::source_dir()) / "tests/interop/peft_lora.py";
    auto r = ef::test::run_command(ef::test::quote(python) + " " + ef::test::quote(script.string()) + " " +
                                   ef::test::quote((dir.path / "base.safetensors").string()) + " " + ef::test::quote(out.string()));
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("peft output matches"));
    adapters->detach();
  }
}

TEST_CASE("a rank larger than the layer allows is refused, naming the layer and the limit", "[lora]") {
  for (const auto& kind : ef::lora::adapter_kinds().names()) {
    INFO("kind " << kind);
    torch::nn::Sequential net(torch::nn::Linear(8, 4));
    CHECK_THROWS_WITH(ef::lora::inject(*net, {"0"}, Config::from_json({{"kind", kind}, {"rank", 5}})),
                      Contains("rank") && Contains("'0'") && Contains("at most 4"));
    nlohmann::json ok = {{"kind", kind}, {"rank", 4}};
    if (kind == "foura") ok["gate"] = "none";  // a plain torch::nn layer takes fixed linear maps only
    CHECK_NOTHROW(ef::lora::inject(*net, {"0"}, Config::from_json(ok))->detach());
  }
}
