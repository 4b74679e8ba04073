// Our UNet and TAESD against diffusers' UNet2DConditionModel and AutoencoderTiny: the venv's Python
// builds each diffusers model from our `diffusers_config()`, perturbs its weights and saves them with
// fixed inputs and its outputs (tests/interop/diffusers_reference.py); we load the weights with
// load_module_state (every key must match, no extras) and must produce the same outputs. All cases
// run in one Python call per test process (importing torch + diffusers dominates the time).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/safetensors.h"
#include "models/autoencoder/taesd.h"
#include "models/diffusion/unet.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

struct UNetCase {
  std::string name;
  ef::UNetOptions options;
  int64_t batch, height, width, tokens;
};

std::vector<UNetCase> unet_cases() {
  std::vector<UNetCase> cases;
  {  // one plain and one cross-attention level, mid attention, 1x1 conv projections
    ef::UNetOptions o;
    o.block_out_channels = {16, 32};
    o.cross_attention = {false, true};
    o.cross_attention_dim = 24;
    cases.push_back({"unet_conv_proj", o, 2, 8, 12, 5});
  }
  {  // linear projections, two resnets per level, two transformer layers, IP2P's 8 input channels
    ef::UNetOptions o;
    o.in_channels = 8;
    o.block_out_channels = {16, 16, 32};
    o.cross_attention = {true, false, true};
    o.layers_per_block = 2;
    o.transformer_layers_per_block = 2;
    o.use_linear_projection = true;
    o.attention_heads = 4;
    o.cross_attention_dim = 20;
    cases.push_back({"unet_linear_proj", o, 2, 8, 12, 3});
  }
  {  // UNetMidBlock2D (no attention anywhere but one level)
    ef::UNetOptions o;
    o.block_out_channels = {16, 32};
    o.cross_attention = {true, false};
    o.mid_block_attention = false;
    o.norm_num_groups = 4;
    cases.push_back({"unet_plain_mid", o, 1, 8, 8, 4});
  }
  return cases;
}

ef::TinyAutoencoderOptions taesd_options() {
  ef::TinyAutoencoderOptions o;
  o.encoder_block_out_channels = {16, 16, 16, 16};
  o.decoder_block_out_channels = {16, 16, 16, 16};
  o.num_encoder_blocks = {1, 2, 1, 1};
  o.num_decoder_blocks = {1, 1, 2, 1};
  return o;
}

nlohmann::json all_cases() {
  nlohmann::json cases = nlohmann::json::array();
  int seed = 10;
  for (const auto& c : unet_cases())
    cases.push_back({{"name", c.name}, {"model", "unet"}, {"config", c.options.diffusers_config()}, {"seed", seed++}, {"noise", 0.05},
                     {"inputs", {{"batch", c.batch}, {"height", c.height}, {"width", c.width}, {"tokens", c.tokens}}}});
  cases.push_back({{"name", "taesd"}, {"model", "taesd"}, {"config", taesd_options().diffusers_config()}, {"seed", seed++}, {"noise", 0.05},
                   {"inputs", {{"batch", 2}, {"height", 32}, {"width", 24}}}});
  return cases;
}

// Runs the reference script on `cases`; throws std::runtime_error, with the script's output, when it
// fails or leaves a case's files missing. `env` is prepended to the command ("VAR=value ").
void run_reference(const std::string& python, const fs::path& script, const nlohmann::json& cases, const fs::path& out,
                   const std::string& env = "") {
  fs::create_directories(out);
  ef::write_file_atomically(out / "cases.json", nlohmann::json{{"cases", cases}}.dump(1));
  auto r = ef::test::run_command(env + ef::test::quote(python) + " " + ef::test::quote(script.string()) + " " +
                                 ef::test::quote((out / "cases.json").string()) + " " + ef::test::quote(out.string()));
  if (r.exit_code != 0) throw std::runtime_error("diffusers reference failed (exit " + std::to_string(r.exit_code) + "): " + r.output);
  for (const auto& c : cases)
    for (const char* suffix : {".weights.safetensors", ".io.safetensors"})
      if (!fs::exists(out / (c["name"].get<std::string>() + suffix)))
        throw std::runtime_error("diffusers reference wrote no " + c["name"].get<std::string>() + suffix + ": " + r.output);
}

fs::path script_path() { return fs::path(ef::test::source_dir()) / "tests/interop/diffusers_reference.py"; }

// The reference files of every case, made once per process. A failure is reported by every test
// that needs them (never a silent pass).
const fs::path& reference_dir() {
  static ef::test::ScratchDir dir("diffusers-reference");
  static std::string error = [] {
    try {
      run_reference(ef::test::env_or_fail("EDGEFORGE_PYTHON"), script_path(), all_cases(), dir.path);
      return std::string();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  }();
  INFO(error);
  REQUIRE(error.empty());
  return dir.path;
}

double max_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item<double>();
}

const UNetCase& unet_case(const std::string& name) {
  static const std::vector<UNetCase> cases = unet_cases();
  for (const auto& c : cases)
    if (c.name == name) return c;
  throw std::logic_error("no UNet case " + name);
}

void check_unet(const std::string& name) {
  const UNetCase& c = unet_case(name);
  const fs::path dir = reference_dir();
  ef::UNet2DCondition unet(c.options);
  ef::load_module_state(*unet, ef::load_safetensors(dir / (name + ".weights.safetensors")), name + ".weights.safetensors");
  unet->eval();
  ef::TensorMap io = ef::load_safetensors(dir / (name + ".io.safetensors"));
  torch::NoGradGuard no_grad;
  torch::Tensor out = unet->forward(io.at("sample"), io.at("timesteps"), io.at("context"));
  REQUIRE(out.sizes() == io.at("out").sizes());
  CHECK(max_rel(out, io.at("out")) < 1e-4);
}

void check_widened() {
  const UNetCase& c = unet_case("unet_conv_proj");
  const fs::path dir = reference_dir();
  ef::UNet2DCondition unet(c.options);
  ef::load_module_state(*unet, ef::load_safetensors(dir / (c.name + ".weights.safetensors")), c.name);
  unet->eval();
  unet->widen_input(8);
  CHECK(unet->options().in_channels == 8);
  CHECK(unet->options().diffusers_config()["in_channels"] == 8);
  REQUIRE(unet->conv_in->weight.sizes() == torch::IntArrayRef{16, 8, 3, 3});
  CHECK(unet->conv_in->weight.narrow(1, 4, 4).abs().max().item<double>() == 0.0);
  CHECK(unet->named_parameters().contains("conv_in.weight"));
  ef::TensorMap io = ef::load_safetensors(dir / (c.name + ".io.safetensors"));
  torch::NoGradGuard no_grad;
  torch::Tensor sample = io.at("sample");
  torch::Tensor image_latent = torch::randn_like(sample) * 3;  // any content in the new channels
  torch::Tensor out = unet->forward(torch::cat({sample, image_latent}, 1), io.at("timesteps"), io.at("context"));
  CHECK(max_rel(out, io.at("out")) < 1e-4);
  // the widened weights are trainable parameters like the others: gradients reach the new channels
  torch::Tensor x = torch::cat({sample, image_latent}, 1);
  {
    torch::AutoGradMode grad(true);
    unet->forward(x, io.at("timesteps"), io.at("context")).square().mean().backward();
  }
  REQUIRE(unet->conv_in->weight.grad().defined());
  CHECK(unet->conv_in->weight.grad().narrow(1, 4, 4).abs().max().item<double>() > 0.0);
}

}  // namespace

// One test case with a section per configuration: CTest runs every test case in its own process,
// and each process pays the Python import once.
TEST_CASE("unet: matches diffusers' UNet2DConditionModel key for key and output for output", "[interop][unet]") {
  SECTION("a plain and a cross-attention level, mid attention, conv projections") { check_unet("unet_conv_proj"); }
  SECTION("linear projections, 2 resnets per level, 2 transformer layers, 8 input channels") { check_unet("unet_linear_proj"); }
  SECTION("UNetMidBlock2D (no mid attention)") { check_unet("unet_plain_mid"); }
  SECTION("widen_input to 8 channels with zero new weights keeps diffusers' 4-channel output") { check_widened(); }
}

TEST_CASE("taesd: encode and decode match diffusers' AutoencoderTiny", "[interop][taesd]") {
  const fs::path dir = reference_dir();
  ef::TinyAutoencoder taesd(taesd_options());
  ef::load_module_state(*taesd, ef::load_safetensors(dir / "taesd.weights.safetensors"), "taesd.weights.safetensors");
  taesd->eval();
  ef::TensorMap io = ef::load_safetensors(dir / "taesd.io.safetensors");
  torch::NoGradGuard no_grad;
  torch::Tensor latent = taesd->encode(io.at("image"));
  REQUIRE(latent.sizes() == io.at("latent").sizes());
  CHECK(max_rel(latent, io.at("latent")) < 1e-4);
  torch::Tensor decoded = taesd->decode(io.at("latent_in"));
  REQUIRE(decoded.sizes() == io.at("decoded").sizes());
  CHECK(max_rel(decoded, io.at("decoded")) < 1e-4);
}

TEST_CASE("diffusers interop: a missing script or a Python without diffusers is a clear failure, not a pass", "[interop]") {
  ef::test::ScratchDir dir("diffusers-missing");
  const std::string python = ef::test::env_or_fail("EDGEFORGE_PYTHON");
  nlohmann::json one = nlohmann::json::array({all_cases().back()});
  SECTION("missing script") {
    CHECK_THROWS_WITH(run_reference(python, dir.path / "no_such_script.py", one, dir.path / "out"), Contains("no_such_script.py"));
  }
  SECTION("diffusers not importable") {
    // a package named diffusers that fails to import shadows the installed one
    fs::create_directories(dir.path / "shadow/diffusers");
    ef::write_file_atomically(dir.path / "shadow/diffusers/__init__.py", "raise ImportError('diffusers hidden by the test')\n");
    CHECK_THROWS_WITH(run_reference(python, script_path(), one, dir.path / "out", "PYTHONPATH=" + ef::test::quote((dir.path / "shadow").string()) + " "),
                      Contains("cannot import") && Contains("diffusers hidden by the test"));
  }
  SECTION("no output files") {
    // a script that exits 0 without writing anything is caught too
    ef::write_file_atomically(dir.path / "silent.py", "print('{}')\n");
    CHECK_THROWS_WITH(run_reference(python, dir.path / "silent.py", one, dir.path / "out"), Contains("wrote no taesd.weights.safetensors"));
  }
}
