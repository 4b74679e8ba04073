// Every exportable network beyond classify: both flow models, the depth network (ToSA), the tiny
// autoencoder's halves, the text-to-image and editing UNets and the text encoder (causal attention,
// integer token ids in). Each exports in fp32 and runs in
// ONNX Runtime like LibTorch; fp16 halves the file; w8a8 of a flow model follows the LibTorch simulation within one
// quantization step on most elements; the UNet's timestep path stays float.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/run.h"
#include "export/capture.h"
#include "export/export.h"
#include "export/interpreter.h"
#include "export/onnx_writer.h"
#include "export/quantize.h"
#include "core/export_target.h"
#include "tests/export/onnx_check.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using ef::test::quote;

namespace {

void train(const fs::path& config, const fs::path& run, const std::vector<std::string>& sets) {
  std::string args;
  for (std::string s : {"train.log_every=10", "train.eval_every=0", "train.ckpt_every=0", "train.tensorboard=false", "data.workers=1", "threads=1"})
    args += " --set " + quote(s);
  for (const auto& s : sets) args += " --set " + quote(s);
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  auto r = ef::test::run_command(quote(cli) + " train " + quote(config.string()) + args + " --run-dir " + quote(run.string()) + " --quiet");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

fs::path configs() { return fs::path(ef::test::source_dir()) / "configs"; }

std::vector<std::string> tiny_flow(const fs::path& dir) {
  return {"train.steps=3", "data.batch_size=4", "data.generate.n=30", "data.generate.height=32", "data.generate.width=48",
          "data.cross.generate.n=20", "data.cross.generate.height=32", "data.cross.generate.width=48", "model.iters=2",
          "model.levels=2", "eval.batch_size=8", "eval.samples=1", "data.path=\"" + (dir / "chairs.h5").string() + "\"",
          "data.cross.path=\"" + (dir / "cross.h5").string() + "\""};
}

const std::vector<std::string> kTinyCaptions = {"data.batch_size=8", "data.generate.n_train=32", "data.generate.n_val=8",
                                                "data.generate.image_size=16", "eval.images=8", "eval.samples=1"};
const std::vector<std::string> kTinyUNet = {"model.unet.block_out_channels=[16,32]", "model.unet.norm_num_groups=8", "model.unet.attention_heads=2",
                                            "model.unet.cross_attention_dim=32", "model.text.dim=32", "model.text.layers=1", "model.text.heads=2",
                                            "eval.sampler.steps=2"};

std::vector<std::string> join(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("export: flow depth autoencoder and UNets export in fp32 and match LibTorch in ONNX Runtime", "[export]") {
  ef::test::ScratchDir dir("export-models");
  const fs::path& d = dir.path;
  train(configs() / "flow-raft-small.json", d / "raft", tiny_flow(d));
  train(configs() / "flow-mobileflow-sci.json", d / "mobile", tiny_flow(d));
  train(configs() / "depth-tosa.json", d / "depth",
        {"train.steps=3", "data.batch_size=16", "eval.batches=1", "eval.batch_size=16", "eval.samples=1", "model.image_size=16", "model.dim=32",
         "model.depth=2", "model.heads=2", "data.path=\"" + (d / "depth.h5").string() + "\"", "data.generate.n=60", "data.generate.size=16",
         "model.attention.start_layer=1", "model.attention.schedule.dense_steps=1", "model.attention.schedule.selector_steps=1"});
  const std::string captions = "data.path=\"" + (d / "captions.h5").string() + "\"";
  train(configs() / "autoencoder-quick.json", d / "ae",
        join(kTinyCaptions, {"train.steps=3", captions, "model.encoder_block_out_channels=[16,16,16]", "model.decoder_block_out_channels=[16,16,16]"}));
  train(configs() / "diffusion-quick.json", d / "t2i",
        join(join(kTinyCaptions, kTinyUNet), {"train.steps=3", captions, "model.autoencoder.from_run=\"" + (d / "ae").string() + "\""}));
  train(configs() / "edit-quick.json", d / "edit",
        join(join(kTinyCaptions, kTinyUNet), {"train.steps=2", "data.path=\"" + (d / "edits.h5").string() + "\"",
                                              "model.init_from=\"" + (d / "t2i").string() + "\""}));

  const std::vector<std::tuple<std::string, std::string, std::string>> exports = {
      {"raft", "model", "epe"},       {"mobile", "model", "epe"},     {"depth", "model", "abs_rel"}, {"ae", "decoder", "psnr"},
      {"ae", "encoder", "psnr"},      {"t2i", "unet", "denoise_mse"}, {"edit", "unet", "denoise_mse"},
      {"t2i", "text_encoder", "hidden_rel_mse"}};
  for (const auto& [run, model, metric] : exports) {
    INFO(run << " / " << model);
    ef::exporter::ExportOptions o;
    o.run_dir = d / run;
    o.model = model;
    o.out_dir = d / ("onnx-" + run + "-" + model);
    o.quant = "fp32";
    o.eval_samples = 4;
    nlohmann::json report = ef::exporter::run_export(o);
    INFO(report.dump(1));
    CHECK(report["metric"]["name"] == metric);
    CHECK(report["agreement"]["graph_vs_module"].get<double>() < 1e-4);
    CHECK(report["agreement"]["onnxruntime_vs_float"].get<double>() < 1e-4);
    CHECK(std::abs(report["metric"]["onnxruntime"].get<double>() - report["metric"]["float"].get<double>()) <=
          1e-4 * std::abs(report["metric"]["float"].get<double>()) + (metric == "hidden_rel_mse" ? 1e-8 : 0.0));

    // the official checker (full check, shape inference) on the written file, on random inputs
    ef::OpenedRun opened = ef::open_run(d / run, {});
    auto target = ef::export_targets().create(report["recipe"].get<std::string>(), opened);
    auto spec = target->spec(model, 1);
    torch::Tensor got;
    nlohmann::json info = ef::test::check_onnx(o.out_dir / "model.onnx", spec.examples, d, &got);
    CHECK(info["checker"] == true);
    torch::Tensor expected;
    {
      torch::NoGradGuard ng;
      expected = spec.forward(spec.examples);
    }
    CHECK(((got - expected).abs().max() / expected.abs().max()).item<double>() < 1e-4);
  }

  // fp16: about half the bytes, float32 inputs and outputs, close to the float module everywhere
  for (const auto& [run, model] : std::vector<std::pair<std::string, std::string>>{{"mobile", "model"}, {"ae", "decoder"}}) {
    INFO(run << " / " << model << " in fp16");
    ef::exporter::ExportOptions h;
    h.run_dir = d / run;
    h.model = model;
    h.out_dir = d / ("fp16-" + run);
    h.quant = "fp16";
    h.eval_samples = 4;
    nlohmann::json r = ef::exporter::run_export(h);
    INFO(r.dump(1));
    CHECK(r["size"]["ratio"].get<double>() < 0.55);
    CHECK(r["agreement"]["onnxruntime_vs_float"].get<double>() < 1e-2);
    CHECK(r["agreement"]["onnxruntime_vs_simulated"].get<double>() < 1e-1);
    CHECK(std::abs(r["metric"]["simulated"].get<double>() - r["metric"]["float"].get<double>()) <= 1e-2 * std::abs(r["metric"]["float"].get<double>()));
    CHECK(!r["layer_errors"].empty());
    ef::OpenedRun opened = ef::open_run(d / run, {});
    auto target = ef::export_targets().create(r["recipe"].get<std::string>(), opened);
    torch::Tensor got;
    nlohmann::json info = ef::test::check_onnx(h.out_dir / "model.onnx", target->spec(model, 1).examples, d, &got);
    CHECK(info["checker"] == true);
  }

  // the UNet in w8a8: its timestep path (sinusoids, time MLP) keeps float activations
  ef::exporter::ExportOptions o;
  o.run_dir = d / "t2i";
  o.model = "unet";
  o.out_dir = d / "unet-w8a8";
  o.quant = "w8a8";
  o.calib = 8;
  o.eval_samples = 4;
  nlohmann::json report = ef::exporter::run_export(o);
  CHECK(report["metric"]["onnxruntime"].is_number());
  nlohmann::json enc = nlohmann::json::parse(ef::read_file(o.out_dir / "encodings.json"));
  CHECK(enc["activation_encodings"].contains("sample"));
  CHECK(enc["activation_encodings"].contains("encoder_hidden_states"));
  CHECK_FALSE(enc["activation_encodings"].contains("timestep"));
  // the text encoder in w8a8: causal attention's masked scores stay float (their range is infinite)
  o.model = "text_encoder";
  o.out_dir = d / "text-w8a8";
  nlohmann::json text = ef::exporter::run_export(o);
  INFO(text.dump(1));
  CHECK(std::isfinite(text["metric"]["onnxruntime"].get<double>()));
  CHECK(text["metric"]["simulated"].get<double>() < 0.05);  // hidden states within a few % (relative squared error)
  ef::OpenedRun opened = ef::open_run(d / "t2i", {});
  auto target = ef::export_targets().create("diffusion", opened);
  auto cap = ef::exporter::capture(target->spec("unet", 1));
  for (const auto& n : cap.graph.nodes)
    if (n.op == "Sin" || n.op == "Cos") CHECK_FALSE(cap.activation_points.count(n.outputs[0]));
}

TEST_CASE("export: w8a8 flow runs in ONNX Runtime like the LibTorch simulation", "[export]") {
  ef::test::ScratchDir dir("export-flow-w8a8");
  train(configs() / "flow-raft-small.json", dir.path / "raft", tiny_flow(dir.path));
  ef::OpenedRun opened = ef::open_run(dir.path / "raft", {});
  auto target = ef::export_targets().create("flow", opened);
  auto cap = ef::exporter::capture(target->spec("model", 1));
  auto scheme = ef::exporter::QuantScheme::parse("w8a8", "minmax");
  auto qg = ef::exporter::insert_qdq(cap, ef::exporter::calibrate(cap, target->calibration("model", 8, 1), scheme), scheme);
  const fs::path model = dir.path / "model.onnx";
  ef::write_file_atomically(model, ef::exporter::onnx_model_bytes(qg.graph));
  ef::exporter::Interpreter sim(qg.graph);
  std::string last;  // the flow's quantization step: the last activation quantizer's scale
  for (const auto& n : qg.graph.nodes)
    if (n.op == "QuantizeLinear") last = n.inputs[0];
  const double step = ef::exporter::to_tensor(qg.graph.initializers.at(last + "_scale")).item<double>();
  auto held = target->heldout("model", 3, 1);
  int64_t within = 0, total = 0;
  for (const auto& x : held.inputs) {
    torch::Tensor expected = sim.run1(x), got;
    ef::test::check_onnx(model, x, dir.path, &got, {}, /*optimize=*/false);
    within += ((got.view_as(expected) - expected).abs() <= step * 1.001).sum().item<int64_t>();
    total += expected.numel();
  }
  INFO("within one step of the simulation: " << within << " of " << total << " (step " << step << ")");
  CHECK(static_cast<double>(within) >= 0.9 * static_cast<double>(total));
}
