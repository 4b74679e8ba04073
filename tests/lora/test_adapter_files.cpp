// A pipeline's LoRA in one file (lora/diffusers_files.h): diffusers' layout written and read back
// on the project's UNet and text encoder, kohya's layout (built by hand, with `.alpha`) read with the
// scale it states, the older diffusers keys, the errors that name the key and both shapes, and
// diffusers itself reading our files onto its UNet2DConditionModel through the venv's Python
// (tests/interop/diffusers_lora.py).
#include <catch2/catch.hpp>

#include <cmath>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "lora/diffusers_files.h"
#include "models/diffusion/unet.h"
#include "models/text/text_encoder.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using ef::lora::Adapters;

namespace {

ef::Config cfg(const nlohmann::json& j) { return ef::Config::from_json(j, "<test>"); }

void perturb(torch::nn::Module& m, double scale = 0.2) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, scale);
}

ef::UNetOptions unet_options() {
  ef::UNetOptions o;
  o.block_out_channels = {8, 16};
  o.cross_attention = {true, true};
  o.cross_attention_dim = 12;
  o.norm_num_groups = 4;
  return o;
}

ef::TextEncoderOptions text_options() {
  ef::TextEncoderOptions o;
  o.dim = 16;
  o.layers = 2;
  o.heads = 2;
  o.mlp_dim = 32;
  o.max_length = 8;
  return o;
}

// A second network with the first one's base weights (its registered parameters: W0, not W0 + ΔW).
template <class Net>
Net copy_of(Net& net, Net fresh) {
  ef::load_module_state(*fresh, ef::module_state(*net), "copy");
  fresh->eval();
  return fresh;
}

// Layers of several inject() calls (different ranks and alphas) in one module per network.
Adapters gather(const std::vector<Adapters>& parts) {
  Adapters all;
  for (const auto& p : parts)
    for (const auto& l : p->layers()) all->add(l);
  return all;
}

// UNet adapters with two ranks (attention projections; convolutions, a 1x1 projection and the time
// embedding's projection), and text-encoder adapters with rsLoRA.
struct Pipeline {
  ef::UNet2DCondition unet{unet_options()};
  ef::TextEncoder text{text_options()};
  Adapters unet_adapters{nullptr}, text_adapters{nullptr};
  torch::Tensor x = torch::randn({1, 4, 8, 8}), t = torch::tensor({321}), ctx = torch::randn({1, 3, 12});
  torch::Tensor ids = torch::randint(0, 200, {2, 6});
  Pipeline(double alpha_attn, double alpha_conv) {
    unet->eval();
    text->eval();
    unet_adapters = gather(
        {ef::lora::inject(*unet, {"*.attn1.to_q", "*.attn1.to_k", "*.attn1.to_v", "*.attn1.to_out.0", "*.attn2.to_k"},
                          cfg({{"kind", "lora"}, {"rank", 4}, {"alpha", alpha_attn}})),
         ef::lora::inject(*unet, {"*.resnets.0.conv1", "*.proj_in", "*.time_emb_proj", "*.ff.net.2"},
                          cfg({{"kind", "lora"}, {"rank", 2}, {"alpha", alpha_conv}}))});
    text_adapters = ef::lora::inject(*text, {"*.self_attn.q_proj", "*.self_attn.out_proj", "*.mlp.fc1"},
                                     cfg({{"kind", "lora"}, {"rank", 3}, {"alpha", 2.0}, {"rslora", true}}));
    perturb(*unet_adapters);
    perturb(*text_adapters);
    unet_adapters->refresh();
    text_adapters->refresh();
  }
  torch::Tensor unet_out(ef::UNet2DCondition& u) {
    torch::NoGradGuard no_grad;
    return u->forward(x, t, ctx);
  }
  torch::Tensor text_out(ef::TextEncoder& te) {
    torch::NoGradGuard no_grad;
    return te->forward(ids);
  }
};

const ef::lora::LoraOptions& options_of(Adapters& a, const std::string& path) {
  return dynamic_cast<ef::lora::LoraImpl&>(a->adapter(path)).options();
}

// The message of the ef::InputError that `f` throws ("" when it throws none).
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const ef::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("lora files: a diffusers file round-trips a UNet's and a text encoder's adapters", "[lora]") {
  ef::test::ScratchDir dir("lora-files");
  torch::manual_seed(20);
  Pipeline p(6.0, 1.5);
  const torch::Tensor unet_y = p.unet_out(p.unet), text_y = p.text_out(p.text);
  const fs::path file = dir.path / ef::lora::kDiffusersLoraFile;
  ef::lora::save_lora_file(file, {{"unet", p.unet_adapters}, {"text_encoder", p.text_adapters}});

  ef::Metadata meta;
  const ef::TensorMap stored = ef::load_safetensors(file, &meta);
  CHECK(stored.size() == 2 * (p.unet_adapters->layers().size() + p.text_adapters->layers().size()));
  CHECK(stored.count("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"));
  CHECK(stored.at("unet.down_blocks.0.resnets.0.conv1.lora_A.weight").sizes() == torch::IntArrayRef{2, 8, 3, 3});
  CHECK(stored.at("unet.down_blocks.0.resnets.0.conv1.lora_B.weight").sizes() == torch::IntArrayRef{8, 2, 1, 1});
  CHECK(stored.count("text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_B.weight"));
  REQUIRE(meta.count(ef::lora::kDiffusersLoraMetadata));
  const auto config = nlohmann::json::parse(meta.at(ef::lora::kDiffusersLoraMetadata));
  CHECK(config["unet.r"] == 4);
  CHECK(config["unet.lora_alpha"] == 6.0);
  CHECK(config["unet.rank_pattern"]["down_blocks.0.resnets.0.conv1"] == 2);
  CHECK(config["unet.alpha_pattern"]["down_blocks.0.resnets.0.conv1"] == 1.5);
  CHECK(config["text_encoder.use_rslora"] == true);

  // Fresh networks with the same base weights: the file alone rebuilds the adapters.
  ef::UNet2DCondition unet2 = copy_of(p.unet, ef::UNet2DCondition(unet_options()));
  ef::TextEncoder text2 = copy_of(p.text, ef::TextEncoder(text_options()));
  const ef::lora::Networks networks{{"unet", *unet2}, {"text_encoder", *text2}};
  const auto read = ef::lora::LoraFile::read(file, networks);
  CHECK(read.layout == "diffusers");
  CHECK(read.paths("unet").size() == p.unet_adapters->layers().size());
  auto loaded = read.inject(networks);
  REQUIRE(loaded.size() == 2);
  for (auto [name, original] : {std::pair<std::string, Adapters>{"unet", p.unet_adapters}, {"text_encoder", p.text_adapters}}) {
    Adapters again = loaded.at(name);
    CAPTURE(name);
    REQUIRE(again->layers().size() == original->layers().size());
    for (const auto& l : original->layers()) {
      CAPTURE(l.path);
      auto& a = dynamic_cast<ef::lora::LoraImpl&>(again->adapter(l.path));
      auto& o = dynamic_cast<ef::lora::LoraImpl&>(*l.adapter);
      CHECK(a.options().rank == o.options().rank);
      CHECK(a.options().alpha == o.options().alpha);
      CHECK(a.options().rslora == o.options().rslora);
      CHECK(torch::equal(a.A(), o.A()));
      CHECK(torch::equal(a.B(), o.B()));
    }
  }
  CHECK(torch::equal(p.unet_out(unet2), unet_y));
  CHECK(torch::equal(p.text_out(text2), text_y));
  // the base without its adapters is another network: the comparison above can fail
  p.unet_adapters->detach();
  CHECK_FALSE(torch::allclose(p.unet_out(p.unet), unet_y));
}

TEST_CASE("lora files: a kohya file with .alpha loads with the scale it states", "[lora]") {
  ef::test::ScratchDir dir("lora-kohya");
  torch::manual_seed(21);
  ef::UNet2DCondition unet(unet_options());
  ef::TextEncoder text(text_options());
  // By hand, as kohya's sd-scripts writes: dots made underscores, down/up, alpha in half precision.
  ef::TensorMap t;
  const std::string to_k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k";  // Linear 12 -> 16
  const std::string conv1 = "lora_unet_down_blocks_0_resnets_0_conv1";                              // Conv2d 8 -> 8, 3x3
  const std::string proj_in = "lora_unet_mid_block_attentions_0_proj_in";                           // Conv2d 16 -> 16, 1x1
  const std::string fc1 = "lora_te_text_model_encoder_layers_0_mlp_fc1";                            // Linear 16 -> 32
  t[to_k + ".lora_down.weight"] = torch::randn({2, 12});
  t[to_k + ".lora_up.weight"] = torch::randn({16, 2});
  t[to_k + ".alpha"] = torch::tensor(1.0, torch::kFloat16);  // scale 1 / 2
  t[conv1 + ".lora_down.weight"] = torch::randn({3, 8, 3, 3});
  t[conv1 + ".lora_up.weight"] = torch::randn({8, 3, 1, 1});  // no alpha: scale 1
  t[proj_in + ".lora_down.weight"] = torch::randn({2, 16});   // a Linear's layout for a 1x1 convolution
  t[proj_in + ".lora_up.weight"] = torch::randn({16, 2});
  t[proj_in + ".alpha"] = torch::tensor(5.0);  // scale 5 / 2
  t[fc1 + ".lora_down.weight"] = torch::randn({4, 16});
  t[fc1 + ".lora_up.weight"] = torch::randn({32, 4});
  t[fc1 + ".alpha"] = torch::tensor(2.0, torch::kBFloat16);  // scale 2 / 4
  const fs::path file = dir.path / "style.safetensors";
  ef::save_safetensors(file, t);

  const ef::lora::Networks networks{{"unet", *unet}, {"text_encoder", *text}};
  const auto read = ef::lora::LoraFile::read(file, networks);
  CHECK(read.layout == "kohya");
  CHECK(read.paths("unet") == std::vector<std::string>{"down_blocks.0.resnets.0.conv1",
                                                       "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                                                       "mid_block.attentions.0.proj_in"});
  auto adapters = read.inject(networks);
  Adapters u = adapters.at("unet"), te = adapters.at("text_encoder");
  struct Expect {
    Adapters a;
    std::string path, name;
    int64_t rank;
    double scale;
  };
  for (const Expect& e : {Expect{u, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", to_k, 2, 0.5},
                          Expect{u, "down_blocks.0.resnets.0.conv1", conv1, 3, 1.0},
                          Expect{u, "mid_block.attentions.0.proj_in", proj_in, 2, 2.5},
                          Expect{te, "text_model.encoder.layers.0.mlp.fc1", fc1, 4, 0.5}}) {
    CAPTURE(e.path);
    auto& lora = dynamic_cast<ef::lora::LoraImpl&>(e.a.ptr()->adapter(e.path));
    CHECK(lora.options().rank == e.rank);
    CHECK(lora.options().scaling() == Approx(e.scale));
    // ΔW = (alpha / r) · up · down, in the layer's own layout
    const torch::Tensor down = t.at(e.name + ".lora_down.weight").flatten(1), up = t.at(e.name + ".lora_up.weight").flatten(1);
    torch::Tensor expected = (e.scale * up.matmul(down)).reshape(lora.delta_weight().sizes());
    CHECK(torch::allclose(lora.delta_weight().detach(), expected, 1e-5, 1e-6));
  }

  // Writing kohya's layout from adapters (rsLoRA included: alpha * sqrt(r) keeps the scale) and
  // reading it back gives the same network.
  torch::manual_seed(22);
  Pipeline p(3.0, 3.0);
  const torch::Tensor unet_y = p.unet_out(p.unet), text_y = p.text_out(p.text);
  const fs::path kohya = dir.path / "ours.safetensors";
  ef::lora::save_lora_file(kohya, {{"unet", p.unet_adapters}, {"text_encoder", p.text_adapters}}, ef::lora::LoraFileLayout::kohya);
  const ef::TensorMap written = ef::load_safetensors(kohya);
  CHECK(written.count("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_up.weight"));
  CHECK(written.at("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha").item<double>() == Approx(2.0 * std::sqrt(3.0)));
  ef::UNet2DCondition unet2 = copy_of(p.unet, ef::UNet2DCondition(unet_options()));
  ef::TextEncoder text2 = copy_of(p.text, ef::TextEncoder(text_options()));
  auto again = ef::lora::load_lora_file(kohya, {{"unet", *unet2}, {"text_encoder", *text2}});
  CHECK(torch::allclose(p.unet_out(unet2), unet_y, 1e-5, 1e-6));
  CHECK(torch::allclose(p.text_out(text2), text_y, 1e-5, 1e-6));
  // and it loads into the original adapters, whose scale it states
  ef::lora::LoraFile::read(kohya, {{"unet", *unet2}, {"text_encoder", *text2}}).load({{"unet", p.unet_adapters}, {"text_encoder", p.text_adapters}});
}

TEST_CASE("lora files: diffusers' older keys (lora.down/up, attention processors, lora_linear_layer) map to the same layers", "[lora]") {
  ef::test::ScratchDir dir("lora-old");
  torch::manual_seed(23);
  ef::UNet2DCondition unet(unet_options());
  ef::TextEncoder text(text_options());
  ef::TensorMap t;
  const std::string attn = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1";
  t[attn + ".processor.to_q_lora.down.weight"] = torch::randn({2, 16});
  t[attn + ".processor.to_q_lora.up.weight"] = torch::randn({16, 2});
  t[attn + ".processor.to_out_lora.down.weight"] = torch::randn({2, 16});
  t[attn + ".processor.to_out_lora.up.weight"] = torch::randn({16, 2});
  t["unet.mid_block.attentions.0.proj_out.lora.down.weight"] = torch::randn({2, 16, 1, 1});
  t["unet.mid_block.attentions.0.proj_out.lora.up.weight"] = torch::randn({16, 2, 1, 1});
  t["unet.mid_block.attentions.0.proj_out.alpha"] = torch::tensor(4.0);
  t["text_encoder.text_model.encoder.layers.1.self_attn.to_k_lora.down.weight"] = torch::randn({2, 16});
  t["text_encoder.text_model.encoder.layers.1.self_attn.to_k_lora.up.weight"] = torch::randn({16, 2});
  t["text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_linear_layer.down.weight"] = torch::randn({2, 32});
  t["text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_linear_layer.up.weight"] = torch::randn({16, 2});
  const fs::path file = dir.path / "old.safetensors";
  ef::save_safetensors(file, t);
  const auto read = ef::lora::LoraFile::read(file, {{"unet", *unet}, {"text_encoder", *text}});
  CHECK(read.layout == "diffusers (older keys)");
  CHECK(read.paths("unet") == std::vector<std::string>{attn.substr(5) + ".to_q", attn.substr(5) + ".to_out.0",
                                                       "mid_block.attentions.0.proj_out"});
  CHECK(read.paths("text_encoder") ==
        std::vector<std::string>{"text_model.encoder.layers.1.self_attn.k_proj", "text_model.encoder.layers.1.mlp.fc2"});
  auto adapters = read.inject({{"unet", *unet}, {"text_encoder", *text}});
  Adapters u = adapters.at("unet");
  CHECK(options_of(u, attn.substr(5) + ".to_q").scaling() == 1.0);  // no alpha stated: alpha = r
  CHECK(options_of(u, "mid_block.attentions.0.proj_out").scaling() == 2.0);
  CHECK(torch::equal(dynamic_cast<ef::lora::LoraImpl&>(u->adapter(attn.substr(5) + ".to_out.0")).A(),
                     t.at(attn + ".processor.to_out_lora.down.weight")));
}

TEST_CASE("lora files: bad files name the file, the key and both shapes, and change nothing", "[lora]") {
  ef::test::ScratchDir dir("lora-errors");
  torch::manual_seed(24);
  ef::UNet2DCondition unet(unet_options());
  const ef::lora::Networks networks{{"unet", *unet}};
  const std::string to_k = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";  // Linear 12 -> 16
  auto write = [&](const std::string& name, const ef::TensorMap& t) {
    const fs::path f = dir.path / name;
    ef::save_safetensors(f, t);
    return f;
  };
  auto read_error = [&](const fs::path& f) { return input_error([&] { ef::lora::LoraFile::read(f, networks); }); };

  const fs::path unknown = write("unknown.safetensors", {{"lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", torch::randn({2, 8})}});
  CHECK_THAT(read_error(unknown), Contains("unknown.safetensors") && Contains("hada_w1_a") && Contains("not a LoRA key"));

  const fs::path unmatched = write("unmatched.safetensors", {{"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_kk.lora_A.weight",
                                                              torch::randn({2, 12})}});
  CHECK_THAT(read_error(unmatched), Contains("attn2.to_kk.lora_A.weight") && Contains("no Linear or Conv2d layer") &&
                                        Contains("closest: '" + to_k.substr(5) + "'"));

  const fs::path kohya_unmatched = write("kohya.safetensors", {{"lora_unet_down_blocks_0_resnets_0_conv9.lora_down.weight", torch::randn({2, 8})}});
  CHECK_THAT(read_error(kohya_unmatched), Contains("conv9") && Contains("closest: 'down_blocks.0.resnets.0.conv1'"));

  const fs::path other_net = write("te.safetensors", {{"text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight", torch::randn({2, 16})}});
  CHECK_THAT(read_error(other_net), Contains("'text_encoder', which was not given"));

  const fs::path no_b = write("no_b.safetensors", {{to_k + ".lora_A.weight", torch::randn({2, 12})}});
  CHECK_THAT(read_error(no_b), Contains(to_k + ".lora_A.weight") && Contains("no LoRA B (up) weight"));

  const fs::path ranks = write("ranks.safetensors", {{to_k + ".lora_A.weight", torch::randn({2, 12})}, {to_k + ".lora_B.weight", torch::randn({16, 3})}});
  CHECK_THAT(read_error(ranks), Contains(to_k + ".lora_A.weight") && Contains("[2, 12]") && Contains(to_k + ".lora_B.weight") &&
                                    Contains("[16, 3]"));

  const fs::path base = write("base.safetensors", {{to_k + ".lora_A.weight", torch::randn({2, 11})}, {to_k + ".lora_B.weight", torch::randn({16, 2})}});
  CHECK_THAT(read_error(base), Contains("base.safetensors") && Contains(to_k + ".lora_A.weight") && Contains("[2, 11]") &&
                                   Contains("[2, 12]"));

  // Loading into adapters injected by hand: another rank, another scale, fewer layers.
  const fs::path good = write("good.safetensors", {{to_k + ".lora_A.weight", torch::randn({2, 12})},
                                                   {to_k + ".lora_B.weight", torch::randn({16, 2})},
                                                   {to_k + ".alpha", torch::tensor(4.0)}});
  const auto file = ef::lora::LoraFile::read(good, networks);
  {
    auto wrong_rank = ef::lora::inject(*unet, {to_k.substr(5)}, cfg({{"kind", "lora"}, {"rank", 3}}));
    const torch::Tensor before = dynamic_cast<ef::lora::LoraImpl&>(wrong_rank->adapter(to_k.substr(5))).A().clone();
    CHECK_THAT(input_error([&] { file.load({{"unet", wrong_rank}}); }),
               Contains(to_k + ".lora_A.weight") && Contains("[2, 12]") && Contains("[3, 12]"));
    CHECK(torch::equal(dynamic_cast<ef::lora::LoraImpl&>(wrong_rank->adapter(to_k.substr(5))).A(), before));
    wrong_rank->detach();
  }
  {
    auto wrong_scale = ef::lora::inject(*unet, {to_k.substr(5)}, cfg({{"kind", "lora"}, {"rank", 2}, {"alpha", 2.0}}));
    CHECK_THAT(input_error([&] { file.load({{"unet", wrong_scale}}); }), Contains(to_k + ".alpha") && Contains("scale 2") && Contains("has 1"));
    wrong_scale->detach();
  }
  {
    auto right = ef::lora::inject(*unet, {to_k.substr(5)}, cfg({{"kind", "lora"}, {"rank", 2}, {"alpha", 4.0}}));
    CHECK(input_error([&] { file.load({{"unet", right}}); }).empty());
    right->detach();
  }
  {
    auto more = ef::lora::inject(*unet, {to_k.substr(5), to_k.substr(5, to_k.size() - 6) + "v"}, cfg({{"kind", "lora"}, {"rank", 2}, {"alpha", 4.0}}));
    CHECK_THAT(input_error([&] { file.load({{"unet", more}}); }), Contains("no LoRA tensors") && Contains("attn2.to_v"));
    more->detach();
  }
}

TEST_CASE("lora files: diffusers loads our diffusers and kohya files onto its UNet2DConditionModel with the same output",
          "[lora][interop]") {
  ef::test::ScratchDir dir("lora-files-interop");
  const std::string python = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  const fs::path script = fs::path(ef::test::source_dir()) / "tests/interop/diffusers_lora.py";
  // Two cases. "same_alpha": one alpha for every layer, written in both layouts: diffusers'
  // conversion of kohya's per-layer alphas keys those of attention projections by their processor
  // names, which match no module, so it falls back to the most common alpha for them. Ranks differ
  // (rank_pattern in the metadata, ranks from the tensors). "mixed_alpha": two alphas, diffusers'
  // layout only (alpha_pattern in the metadata).
  for (auto [name, alpha_attn, alpha_conv, kohya] : {std::tuple<const char*, double, double, bool>{"same_alpha", 3.0, 3.0, true},
                                                     {"mixed_alpha", 6.0, 1.5, false}}) {
    CAPTURE(name);
    torch::manual_seed(25);
    Pipeline p(alpha_attn, alpha_conv);
    const fs::path out = dir.path / name;
    const torch::Tensor y = p.unet_out(p.unet);
    fs::create_directories(out);
    ef::save_safetensors(out / "base.safetensors", ef::module_state(*p.unet));
    ef::write_file_atomically(out / "config.json", unet_options().diffusers_config().dump(1));
    ef::lora::save_lora_file(out / ef::lora::kDiffusersLoraFile, {{"unet", p.unet_adapters}});
    if (kohya) ef::lora::save_lora_file(out / "kohya.safetensors", {{"unet", p.unet_adapters}}, ef::lora::LoraFileLayout::kohya);
    ef::save_safetensors(out / "io.safetensors", {{"sample", p.x}, {"timesteps", p.t}, {"context", p.ctx}, {"y", y}});
    auto r = ef::test::run_command(ef::test::quote(python) + " " + ef::test::quote(script.string()) + " " + ef::test::quote(out.string()));
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Contains("diffusers layout: diffusers output matches"));
    if (kohya) CHECK_THAT(r.output, Contains("kohya layout: diffusers output matches"));
  }
}
