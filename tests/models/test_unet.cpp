// UNet and TAESD without diffusers: options from a config, diffusers' parameter names, input checks
// that print the sizes, timestep features, the block hooks, shapes. Agreement with diffusers itself
// is in test_diffusers_interop.cpp.
#include <catch2/catch.hpp>

#include "core/safetensors.h"
#include "models/autoencoder/taesd.h"
#include "models/diffusion/unet.h"

using Catch::Matchers::Contains;

namespace {
ef::UNetOptions tiny() {
  ef::UNetOptions o;
  o.block_out_channels = {8, 16};
  o.norm_num_groups = 4;
  o.cross_attention_dim = 12;
  return o;
}
}  // namespace

TEST_CASE("unet: options from a config section, with errors naming the key", "[unet]") {
  ef::Config root = ef::Config::from_json({{"model", {{"unet", {{"block_out_channels", {32, 64, 64}}, {"cross_attention", {false, true, true}},
                                                                 {"attention_heads", 4}, {"use_linear_projection", true}}}}}});
  ef::UNetOptions o = ef::UNetOptions::from(root.section("model").section("unet"));
  CHECK(o.levels() == 3);
  CHECK(o.downsampling() == 4);
  CHECK(o.attention_heads == 4);
  CHECK(o.use_linear_projection);
  CHECK(o.cross_attention == std::vector<bool>{false, true, true});
  nlohmann::json d = o.diffusers_config();
  CHECK(d["down_block_types"] == nlohmann::json({"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"}));
  CHECK(d["up_block_types"] == nlohmann::json({"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"}));
  CHECK(d["attention_head_dim"] == 4);
  CHECK(d["mid_block_type"] == "UNetMidBlock2DCrossAttn");

  auto bad = [](nlohmann::json unet) { return ef::Config::from_json({{"unet", unet}}).section("unet"); };
  CHECK_THROWS_WITH(ef::UNetOptions::from(bad({{"cross_attention", {true}}})), Contains("unet.cross_attention") && Contains("1 entries for 2 levels"));
  CHECK_THROWS_WITH(ef::UNetOptions::from(bad({{"cross_attention", {1, 0}}})), Contains("array of booleans"));
  CHECK_THROWS_WITH(ef::UNetOptions::from(bad({{"block_out_channels", {32, 60}}})), Contains("unet.block_out_channels") && Contains("60"));
  CHECK_THROWS_WITH(ef::UNetOptions::from(bad({{"attention_heads", 3}})), Contains("unet.attention_heads") && Contains("3 heads"));
}

TEST_CASE("unet: parameter names are diffusers' UNet2DConditionModel names", "[unet]") {
  ef::UNetOptions o = tiny();
  o.layers_per_block = 2;
  ef::UNet2DCondition unet(o);
  ef::TensorMap state = ef::module_state(*unet);
  for (const char* key : {"conv_in.weight", "time_embedding.linear_1.weight", "time_embedding.linear_2.bias",
                          "down_blocks.0.resnets.1.conv2.weight", "down_blocks.0.downsamplers.0.conv.weight",
                          "down_blocks.1.resnets.0.conv_shortcut.weight", "down_blocks.1.attentions.1.proj_in.weight",
                          "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                          "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                          "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.bias",
                          "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
                          "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight",
                          "down_blocks.1.attentions.0.transformer_blocks.0.norm3.weight", "mid_block.resnets.1.norm1.weight",
                          "mid_block.attentions.0.norm.bias", "up_blocks.0.resnets.2.time_emb_proj.weight", "up_blocks.0.attentions.2.proj_out.bias",
                          "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.1.resnets.0.conv_shortcut.weight", "conv_norm_out.weight",
                          "conv_out.bias"})
    CHECK(state.count(key) == 1);
  for (const auto& [name, t] : state) {
    INFO(name);
    CHECK(name.find("down_blocks.0.attentions") == std::string::npos);  // level 0 is a plain DownBlock2D
    CHECK(name.find("down_blocks.1.downsamplers") == std::string::npos);  // the last level does not downsample
    CHECK(name.find("to_q.bias") == std::string::npos);
  }
  // up block 0 mirrors level 1: resnets take (16 from below + 16 skip, 16 + 16, 16 + 8 from level 0's downsampler)
  CHECK(state.at("up_blocks.0.resnets.0.conv1.weight").size(1) == 32);
  CHECK(state.at("up_blocks.0.resnets.2.conv1.weight").size(1) == 24);
  CHECK(state.at("up_blocks.1.resnets.0.conv1.weight").size(1) == 24);
  CHECK(state.at("up_blocks.1.resnets.2.conv1.weight").size(1) == 16);
  CHECK(state.at("down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight").sizes() == torch::IntArrayRef{128, 16});
  CHECK(state.at("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight").sizes() == torch::IntArrayRef{16, 12});
}

TEST_CASE("unet: forward checks its inputs and names the sizes it got", "[unet]") {
  ef::UNet2DCondition unet(tiny());
  torch::Tensor t = torch::tensor({3, 700}), ctx = torch::randn({2, 5, 12});
  torch::NoGradGuard no_grad;
  CHECK(unet->forward(torch::randn({2, 4, 8, 6}), t, ctx).sizes() == torch::IntArrayRef{2, 4, 8, 6});
  CHECK(unet->forward(torch::randn({2, 4, 8, 6}), torch::tensor(5.5), ctx).sizes() == torch::IntArrayRef{2, 4, 8, 6});  // one timestep for all
  CHECK_THROWS_WITH(unet->forward(torch::randn({2, 4, 8, 7}), t, ctx), Contains("multiples of 2") && Contains("8x7"));
  CHECK_THROWS_WITH(unet->forward(torch::randn({2, 3, 8, 8}), t, ctx), Contains("[B, 4, H, W]") && Contains("[2, 3, 8, 8]"));
  CHECK_THROWS_WITH(unet->forward(torch::randn({2, 4, 8, 8}), torch::tensor({1, 2, 3}), ctx), Contains("timesteps") && Contains("[3]"));
  CHECK_THROWS_WITH(unet->forward(torch::randn({2, 4, 8, 8}), t, torch::randn({2, 5, 10})), Contains("[2, L, 12]") && Contains("[2, 5, 10]"));
  CHECK_THROWS_WITH(unet->forward(torch::randn({2, 4, 8, 8}), t, torch::Tensor()), Contains("context"));
  CHECK_THROWS_WITH(unet->widen_input(2), Contains("narrow"));
}

TEST_CASE("unet: sinusoidal timestep features are [cos, sin] of t * 10000^(-i/half)", "[unet]") {
  torch::Tensor f = ef::timestep_features(torch::tensor({0, 1, 999}), 8);
  REQUIRE(f.sizes() == torch::IntArrayRef{3, 8});
  CHECK(torch::allclose(f[0], torch::tensor({1.f, 1.f, 1.f, 1.f, 0.f, 0.f, 0.f, 0.f})));
  for (int64_t i = 0; i < 4; ++i) {
    const double freq = std::exp(-std::log(10000.0) * i / 4.0);
    CHECK(f[1][i].item<double>() == Approx(std::cos(freq)).margin(1e-6));
    CHECK(f[1][4 + i].item<double>() == Approx(std::sin(freq)).margin(1e-6));
  }
  torch::Tensor unflipped = ef::timestep_features(torch::tensor({1}), 8, /*flip_sin_to_cos=*/false);
  CHECK(torch::allclose(unflipped[0].narrow(0, 0, 4), f[1].narrow(0, 4, 4)));
}

TEST_CASE("unet: the attention and resnet hooks change a pass only when they change something", "[unet]") {
  torch::manual_seed(1);
  ef::UNet2DCondition unet(tiny());
  unet->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({2, 4, 8, 8}), t = torch::tensor({10, 500}), ctx = torch::randn({2, 3, 12});
  torch::Tensor base = unet->forward(x, t, ctx);
  auto* down = unet->down_blocks[1]->as<ef::UNetDownBlock>();
  auto* attn1 = down->attentions[0]->as<ef::Transformer2D>()->transformer_blocks[0]->as<ef::BasicTransformerBlock>()->attn1.get();
  auto* resnet = down->resnets[0]->as<ef::ResnetBlock2D>();

  attn1->key_value_source = [](const torch::Tensor& h) { return h; };
  CHECK(torch::allclose(unet->forward(x, t, ctx), base, 1e-5, 1e-6));
  // cross-frame style: every sample attends to the tokens of sample 0
  attn1->key_value_source = [](const torch::Tensor& h) { return h.narrow(0, 0, 1).expand_as(h); };
  torch::Tensor anchored = unet->forward(x, t, ctx);
  CHECK(torch::allclose(anchored[0], base[0], 1e-5, 1e-6));
  CHECK_FALSE(torch::allclose(anchored[1], base[1], 1e-5, 1e-6));
  attn1->key_value_source = nullptr;

  resnet->extra_embedding = [](const torch::Tensor& temb) { return torch::zeros({temb.size(0), 16}); };
  CHECK(torch::allclose(unet->forward(x, t, ctx), base, 1e-5, 1e-6));
  // (a constant over the channels of a group would vanish in the next GroupNorm)
  resnet->extra_embedding = [](const torch::Tensor& temb) { return torch::linspace(-1, 1, 16).expand({temb.size(0), 16}); };
  CHECK_FALSE(torch::allclose(unet->forward(x, t, ctx), base, 1e-5, 1e-6));
}

TEST_CASE("unet: gradients reach every parameter", "[unet]") {
  ef::UNet2DCondition unet(tiny());
  unet->forward(torch::randn({2, 4, 8, 8}), torch::tensor({1, 2}), torch::randn({2, 3, 12})).square().mean().backward();
  for (const auto& p : unet->named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(p.value().grad().abs().sum().item<double>() > 0);
  }
}

TEST_CASE("taesd: shapes, diffusers names and option checks", "[taesd]") {
  ef::TinyAutoencoder taesd;  // the released TAESD shape
  ef::TensorMap state = ef::module_state(*taesd);
  int64_t encoder = 0, decoder = 0;
  for (const auto& [name, t] : state) (name.rfind("encoder.", 0) == 0 ? encoder : decoder) += t.numel();
  CHECK(encoder == 1222532);  // ~1.22M each (background notes, section 8)
  CHECK(decoder == 1222531);
  for (const char* key : {"encoder.layers.0.weight", "encoder.layers.1.conv.4.bias", "encoder.layers.2.weight", "encoder.layers.14.weight",
                          "decoder.layers.0.weight", "decoder.layers.2.conv.0.weight", "decoder.layers.6.weight", "decoder.layers.18.bias"})
    CHECK(state.count(key) == 1);
  CHECK(state.count("encoder.layers.2.bias") == 0);  // stride-2 convs have no bias
  torch::NoGradGuard no_grad;
  torch::Tensor z = taesd->encode(torch::rand({1, 3, 64, 48}) * 2 - 1);
  CHECK(z.sizes() == torch::IntArrayRef{1, 4, 8, 6});
  CHECK(taesd->decode(z).sizes() == torch::IntArrayRef{1, 3, 64, 48});
  CHECK_THROWS_WITH(taesd->encode(torch::rand({1, 4, 64, 64})), Contains("[B, 3, H, W]") && Contains("[1, 4, 64, 64]"));
  CHECK_THROWS_WITH(taesd->decode(torch::rand({1, 3, 8, 8})), Contains("[B, 4, h, w]") && Contains("[1, 3, 8, 8]"));

  auto section = [](nlohmann::json ae) { return ef::Config::from_json({{"autoencoder", ae}}).section("autoencoder"); };
  CHECK(ef::TinyAutoencoderOptions::from(section({{"latent_channels", 16}})).diffusers_config()["latent_channels"] == 16);
  CHECK_THROWS_WITH(ef::TinyAutoencoderOptions::from(section({{"encoder_block_out_channels", {64, 64, 32, 64}}})),
                    Contains("autoencoder.encoder_block_out_channels") && Contains("one width"));
  CHECK_THROWS_WITH(ef::TinyAutoencoderOptions::from(section({{"num_decoder_blocks", {3, 3}}})), Contains("decoder_block_out_channels"));
}
