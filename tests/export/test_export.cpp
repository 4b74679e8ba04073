// The export stage on tiny classify runs: ONNX that the official checker accepts and ONNX Runtime
// runs like LibTorch (fp32, every attention kind), w8a8 QDQ against the LibTorch simulation,
// encodings that name graph tensors, clear errors without partial output.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "core/atomic_file.h"
#include "core/run.h"
#include "export/capture.h"
#include "export/export.h"
#include "export/interpreter.h"
#include "export/onnx_writer.h"
#include "export/quantize.h"
#include "core/export_target.h"
#include "core/qat.h"
#include "tests/export/onnx_check.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// A tiny classify run (two blocks, a few steps) with the given attention section.
fs::path tiny_run(const fs::path& dir, const nlohmann::json& attention, const nlohmann::json& more = nlohmann::json::object()) {
  nlohmann::json c = {
      {"recipe", "classify"}, {"name", "tiny"}, {"seed", 3}, {"device", "cpu"},
      {"data", {{"path", (dir / "shapes.h5").string()}, {"generate", {{"n", 160}, {"size", 16}, {"seed", 1}}}, {"batch_size", 16}, {"workers", 1}}},
      {"model", {{"image_size", 16}, {"patch", 4}, {"dim", 16}, {"depth", 2}, {"heads", 2}, {"attention", attention}}},
      {"optim", {{"lr", 3e-3}}},
      {"train", {{"steps", 3}, {"log_every", 1}, {"eval_every", 0}, {"ckpt_every", 0}, {"tensorboard", false}}},
      {"eval", {{"batches", 1}, {"batch_size", 16}, {"samples", 0}}}};
  c.merge_patch(more);
  ef::write_file_atomically(dir / "tiny.json", c.dump(2));
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = dir / "run";
  return ef::launch_training(dir / "tiny.json", o).run_dir;
}

double max_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST_CASE("export: fp32 ONNX of the classify ViT matches LibTorch in ONNX Runtime for every attention kind", "[export]") {
  for (const nlohmann::json& attention : {nlohmann::json{{"kind", "softmax"}}, nlohmann::json{{"kind", "padre"}},
                                          nlohmann::json{{"kind", "tosa"}, {"start_layer", 1}, {"keep_ratio", 0.5}}}) {
    const std::string kind = attention["kind"];
    SECTION(kind) {
      ef::test::ScratchDir dir("export-fp32-" + kind);
      const fs::path run = tiny_run(dir.path, attention);
      ef::exporter::ExportOptions o;
      o.run_dir = run;
      o.out_dir = dir.path / "onnx";
      o.quant = "fp32";
      o.eval_samples = 16;
      nlohmann::json report = ef::exporter::run_export(o);
      CHECK(report["agreement"]["graph_vs_module"].get<double>() < 1e-5);
      CHECK(report["metric"]["onnxruntime"].get<double>() == report["metric"]["float"].get<double>());
      REQUIRE(fs::exists(o.out_dir / "report.md"));

      // independently: the module itself against ONNX Runtime on a random batch
      ef::OpenedRun opened = ef::open_run(run, {});
      auto* model = opened.recipe->modules().at("model");
      auto target = ef::export_targets().create("classify", opened);
      auto spec = target->spec("model", 1);
      torch::Tensor x = torch::rand({1, 3, 16, 16});
      torch::Tensor expected;
      {
        torch::NoGradGuard ng;
        model->eval();
        expected = spec.forward({x});
      }
      torch::Tensor got;
      nlohmann::json info = ef::test::check_onnx(o.out_dir / "model.onnx", x, dir.path, &got);
      CHECK(info["opset"].get<int>() == 17);
      INFO("ops: " << info["ops"].dump());
      CHECK(max_rel(got, expected) < 1e-4);
    }
  }
}

TEST_CASE("export: w8a8 QDQ runs in ONNX Runtime like the LibTorch simulation and its encodings name graph tensors", "[export]") {
  ef::test::ScratchDir dir("export-w8a8");
  const fs::path run = tiny_run(dir.path, {{"kind", "softmax"}});

  // through the CLI, as users run it
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  auto r = ef::test::run_command(ef::test::quote(cli) + " export " + ef::test::quote(run.string()) + " --quant w8a8 --calib 32 --eval-samples 16 --out " +
                                 ef::test::quote((dir.path / "w8a8").string()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* f : {"model.onnx", "encodings.json", "report.json", "report.md"}) CHECK(fs::exists(dir.path / "w8a8" / f));
  nlohmann::json report = nlohmann::json::parse(ef::read_file(dir.path / "w8a8" / "report.json"));
  CHECK(report["quant"] == "w8a8");
  CHECK(report["calib_samples"].get<int>() == 32);
  CHECK(!report["layer_errors"].empty());
  CHECK(report["metric"]["onnxruntime"].is_number());
  // QDQ executed as written in ONNX Runtime scores what the simulation scores (one flip at most)
  CHECK(std::abs(report["metric"]["onnxruntime_unfused"].get<double>() - report["metric"]["simulated"].get<double>()) <= 1.0 / 16 + 1e-9);

  // the simulation, rebuilt in-process with the same calibration, against ONNX Runtime
  ef::OpenedRun opened = ef::open_run(run, {});
  auto target = ef::export_targets().create("classify", opened);
  auto spec = target->spec("model", 1);
  auto cap = ef::exporter::capture(spec);
  auto scheme = ef::exporter::QuantScheme::parse("w8a8", "minmax");
  auto qg = ef::exporter::insert_qdq(cap, ef::exporter::calibrate(cap, target->calibration("model", 32, 1), scheme), scheme);
  CHECK_NOTHROW(ef::exporter::onnx_model_bytes(qg.graph));  // the in-process checker accepts it too
  ef::exporter::Interpreter sim(qg.graph);
  auto held = target->heldout("model", 6, 1);
  std::vector<torch::Tensor> images;
  for (const auto& in : held.inputs) images.push_back(in.at(0));
  torch::Tensor x = torch::stack(images);
  // the logits' quantization step: the scale of the last activation quantizer before the output
  std::string last;
  for (const auto& n : qg.graph.nodes)
    if (n.op == "QuantizeLinear") last = n.inputs[0];
  const double step = ef::exporter::to_tensor(qg.graph.initializers.at(last + "_scale")).item<double>();
  // QDQ executed as written: the simulation's numbers, up to float rounding flipping a few levels.
  // With ONNX Runtime's default optimizations the QDQ groups become integer kernels whose own
  // rounding of intermediates drifts further through the layers: most elements stay within a step.
  int64_t within[2] = {0, 0}, total = 0;
  for (int64_t i = 0; i < 6; ++i) {
    torch::Tensor expected = sim.run1(x[i]);
    for (int opt = 0; opt < 2; ++opt) {
      torch::Tensor got;
      nlohmann::json info = ef::test::check_onnx(dir.path / "w8a8" / "model.onnx", x[i], dir.path, &got, dir.path / "w8a8" / "encodings.json", opt == 1);
      CHECK(info["encodings"].get<int>() > 0);
      CHECK(info["encodings_missing"].empty());
      INFO(info["encodings_mismatched"].dump());
      CHECK(info["encodings_mismatched"].empty());  // scales and offsets are the QDQ initializers', tensor by tensor
      CHECK(info["version"] == "0.6.1");
      within[opt] += ((got - expected).abs() <= step * 1.001).sum().item<int64_t>();
    }
    total += expected.numel();
  }
  INFO("within one step: " << within[0] << " as written, " << within[1] << " optimized, of " << total);
  CHECK(static_cast<double>(within[0]) >= 0.95 * static_cast<double>(total));
  CHECK(static_cast<double>(within[1]) >= 0.6 * static_cast<double>(total));
  // int8 weights; on a model this small the graph's structure outweighs them (bench_export measures a real one)
  CHECK(report["size"]["ratio"].get<double>() < 1.0);
}

namespace {
struct CumsumNet : torch::nn::Module {
  torch::nn::Linear fc{nullptr};
  CumsumNet() { fc = register_module("fc", torch::nn::Linear(4, 4)); }
  torch::Tensor forward(const torch::Tensor& x) { return fc->forward(x).cumsum(1); }
};
}  // namespace

TEST_CASE("export: an op outside the lowering table fails with its name", "[export]") {
  auto net = std::make_shared<CumsumNet>();
  ef::CaptureSpec spec;
  spec.module = net.get();
  spec.forward = [&](const ef::Inputs& x) { return net->forward(x.at(0)); };
  spec.examples = {torch::rand({2, 4})};
  REQUIRE_THROWS_WITH(ef::exporter::capture(spec), Contains("unsupported op aten::cumsum"));
}

TEST_CASE("export: a corrupt checkpoint fails clearly and leaves no output", "[export]") {
  ef::test::ScratchDir dir("export-corrupt");
  const fs::path run = tiny_run(dir.path, {{"kind", "softmax"}});
  fs::path weights;
  for (const auto& e : fs::recursive_directory_iterator(run / "ckpt"))
    if (e.path().filename() == "model.safetensors") weights = e.path();
  REQUIRE(!weights.empty());
  std::string bytes = ef::read_file(weights);
  std::ofstream(weights, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  auto r = ef::test::run_command(ef::test::quote(cli) + " export " + ef::test::quote(run.string()) + " --quant fp32 --out " +
                                 ef::test::quote((dir.path / "out").string()));
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.output, Contains("model.safetensors"));
  CHECK(!fs::exists(dir.path / "out"));
  for (const auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().filename().string().find("out") == std::string::npos);

  // bad options are refused before anything is read
  auto bad = ef::test::run_command(ef::test::quote(cli) + " export " + ef::test::quote(run.string()) + " --quant w3a3");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Contains("w3a3"));
}

TEST_CASE("export: w4a8 and w8a16 write their bit widths and run in ONNX Runtime", "[export]") {
  ef::test::ScratchDir dir("export-bits");
  const fs::path run = tiny_run(dir.path, {{"kind", "softmax"}});
  for (const auto& [quant, wbits, abits] : std::vector<std::tuple<std::string, int, int>>{{"w4a8", 4, 8}, {"w8a16", 8, 16}}) {
    ef::exporter::ExportOptions o;
    o.run_dir = run;
    o.out_dir = dir.path / quant;
    o.quant = quant;
    o.calib = 16;
    o.eval_samples = 8;
    nlohmann::json report = ef::exporter::run_export(o);
    INFO(quant << ": " << report.dump(1));
    CHECK(report["metric"]["onnxruntime"].is_number());
    // no fusion of these QDQ forms in ONNX Runtime: it computes what the simulation computes
    CHECK(report["agreement"]["onnxruntime_vs_simulated"].get<double>() < 0.05);
    nlohmann::json enc = nlohmann::json::parse(ef::read_file(o.out_dir / "encodings.json"));
    for (const auto& [name, e] : enc["param_encodings"].items()) CHECK(e[0]["bitwidth"].get<int>() == wbits);
    for (const auto& [name, e] : enc["activation_encodings"].items()) CHECK(e[0]["bitwidth"].get<int>() == abits);
    torch::Tensor got;
    nlohmann::json info = ef::test::check_onnx(o.out_dir / "model.onnx", torch::rand({1, 3, 16, 16}), dir.path, &got, o.out_dir / "encodings.json");
    INFO(info["encodings_mismatched"].dump());
    CHECK(info["encodings_mismatched"].empty());
  }
}

TEST_CASE("export: layers named in float_layers keep float weights and activations", "[export]") {
  ef::test::ScratchDir dir("export-float-layers");
  const fs::path run = tiny_run(dir.path, {{"kind", "softmax"}});
  ef::exporter::ExportOptions o;
  o.run_dir = run;
  o.out_dir = dir.path / "mixed";
  o.quant = "w8a8";
  o.calib = 16;
  o.eval_samples = 8;
  o.float_layers = {"head", "blocks.1"};
  nlohmann::json report = ef::exporter::run_export(o);
  CHECK(report["float_layers"] == nlohmann::json({"head", "blocks.1"}));
  nlohmann::json enc = nlohmann::json::parse(ef::read_file(o.out_dir / "encodings.json"));
  CHECK(enc["param_encodings"].contains("blocks.0.attn.qkv.weight"));
  for (const auto& [name, e] : enc["param_encodings"].items()) {
    CHECK(name.rfind("head", 0) != 0);
    CHECK(name.rfind("blocks.1.", 0) != 0);
  }
  // the graph: no quantizer reads the output of a node that reads a float layer's parameter
  ef::OpenedRun opened = ef::open_run(run, {});
  auto target = ef::export_targets().create("classify", opened);
  auto cap = ef::exporter::capture(target->spec("model", 1));
  auto scheme = ef::exporter::QuantScheme::parse("w8a8", "minmax");
  scheme.float_layers = o.float_layers;
  auto qg = ef::exporter::insert_qdq(cap, ef::exporter::calibrate(cap, target->calibration("model", 8, 1), scheme), scheme);
  std::set<std::string> float_outputs;
  for (const auto& n : cap.graph.nodes)
    for (const auto& i : n.inputs)
      if (cap.parameters.count(i) && scheme.keeps_float(i)) float_outputs.insert(n.outputs.begin(), n.outputs.end());
  REQUIRE(!float_outputs.empty());
  for (const auto& t : float_outputs) CHECK_FALSE(enc["activation_encodings"].contains(t));
  CHECK(qg.graph.initializers.count("head.weight"));  // float, under its own name
  CHECK(qg.graph.initializers.at("head.weight").dtype == ef::exporter::DType::Float);
  CHECK(report["metric"]["onnxruntime"].is_number());
}

TEST_CASE("export: a QAT-trained network is written on the grid it trained on (one quantization rule)", "[export][qat]") {
  // For every attention kind (PADRe brings raw coefficient parameters, ToSA a selector): the weights
  // QAT fake-quantizes and the weights the QDQ graph dequantizes are the same numbers, tensor by
  // tensor, float layers included (float in both).
  for (const char* kind : {"softmax", "padre", "tosa"}) {
    INFO("attention " << kind);
    ef::test::ScratchDir dir(std::string("export-qat-") + kind);
    const fs::path run = tiny_run(dir.path, {{"kind", kind}});
    ef::OpenedRun opened = ef::open_run(run, {});
    auto target = ef::export_targets().create("classify", opened);
    auto spec = target->spec("model", 1);
    auto cap = ef::exporter::capture(spec);
    auto scheme = ef::exporter::QuantScheme::parse("w8a8", "minmax");
    scheme.float_layers = {"head"};
    auto qg = ef::exporter::insert_qdq(cap, ef::exporter::calibrate(cap, target->calibration("model", 8, 1), scheme), scheme);

    // the exported weights: DequantizeLinear(codes, scale) as ONNX defines it, per channel along `axis`
    std::map<std::string, torch::Tensor> exported;
    for (const auto& n : qg.graph.nodes) {
      if (n.op != "DequantizeLinear" || !cap.parameters.count(n.outputs[0])) continue;
      torch::Tensor codes = ef::exporter::to_tensor(qg.graph.initializers.at(n.inputs[0])).to(torch::kFloat);
      torch::Tensor scale = ef::exporter::to_tensor(qg.graph.initializers.at(n.inputs[1]));
      if (n.attrs.count("axis")) {
        std::vector<int64_t> shape(codes.dim(), 1);
        shape[n.attrs.at("axis").i] = -1;
        scale = scale.view(shape);
      }
      exported[n.outputs[0]] = codes * scale;
    }
    // the weights QAT trains with, by the same rule and the same float layers
    torch::nn::Module& net = *spec.module;
    std::map<std::string, torch::Tensor> masters;
    for (const auto& p : net.named_parameters()) masters[p.key()] = p.value().detach().clone(), p.value().set_requires_grad(true);
    ef::WeightFakeQuant qat([&] { return std::vector<torch::nn::Module*>{&net}; }, 8, {"head"});
    qat.enter();
    int per_channel = 0, per_tensor = 0;
    for (const auto& p : net.named_parameters()) {
      INFO("parameter " << p.key());
      const ef::ParamQuant rule = cap.param_quant.at(p.key());
      const bool quantized = rule.quantized() && p.key().rfind("head", 0) != 0;
      REQUIRE(exported.count(p.key()) == (quantized ? 1u : 0u));
      if (!quantized) {
        CHECK(torch::equal(p.value(), masters.at(p.key())));  // float in training as in the graph
        continue;
      }
      (rule.kind == ef::ParamQuant::Kind::PerChannel ? per_channel : per_tensor)++;
      torch::Tensor w = exported.at(p.key());
      // the graph holds a Linear weight as MatMul's [in, out]: its output channels along axis 1
      if (rule.kind == ef::ParamQuant::Kind::PerChannel && cap.weight_axes.at(p.key()) != 0) w = w.transpose(0, cap.weight_axes.at(p.key()));
      if (w.sizes() != p.value().sizes()) w = w.t();  // a raw parameter the graph transposed
      CHECK(max_rel(w, p.value().detach()) < 1e-6);
      CHECK(!torch::equal(p.value(), masters.at(p.key())));  // (it did move onto the grid)
    }
    CHECK(per_channel > 0);
    CHECK(per_tensor > 0);  // the position table (and PADRe's coefficients) are per tensor in both
    qat.leave();
  }
}

TEST_CASE("export: a QAT-trained run computes in ONNX Runtime what its fake-quantized LibTorch forward computes", "[export][qat]") {
  // quant.qat trains at the rule's grid, export.float_layers keeps the head float in training and
  // in the graph; 16-bit activations leave the weights as the only quantization that matters.
  ef::test::ScratchDir dir("export-qat-ort");
  const fs::path run = tiny_run(dir.path, {{"kind", "softmax"}}, {{"quant", {{"qat", true}}}, {"export", {{"float_layers", {"head"}}}}});
  ef::exporter::ExportOptions o;
  o.run_dir = run;
  o.out_dir = dir.path / "w8a16";
  o.quant = "w8a16";
  o.calib = 16;
  o.eval_samples = 8;
  nlohmann::json report = ef::exporter::run_export(o);
  CHECK(report["float_layers"] == nlohmann::json({"head"}));

  ef::OpenedRun opened = ef::open_run(run, {});
  auto target = ef::export_targets().create("classify", opened);
  auto spec = target->spec("model", 1);
  spec.module->eval();
  for (auto& p : spec.module->parameters()) p.set_requires_grad(true);
  ef::WeightFakeQuant qat([&] { return std::vector<torch::nn::Module*>{spec.module}; }, 8, {"head"});
  qat.enter();
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({1, 3, 16, 16});
  torch::Tensor want;
  {
    torch::NoGradGuard ng;
    want = spec.forward({x});
  }
  qat.leave();
  torch::Tensor got;
  ef::test::check_onnx(o.out_dir / "model.onnx", {x}, dir.path, &got);
  const double step = (want.max() - want.min()).item<double>() / 255;  // one 8-bit step of the output's range
  INFO("max |ORT - fake-quantized LibTorch| = " << (got.view_as(want) - want).abs().max().item<double>() << ", one step " << step);
  CHECK((got.view_as(want) - want).abs().max().item<double>() <= step);
}
