#include "lora/adapter_report.h"

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "lora/adapter_run.h"
#include "lora/analysis.h"
#include "lora/hollow.h"

namespace ef::lora {
namespace fs = std::filesystem;

namespace {

// The UNet weights the adapter run trained against: its resolved config's frozen record.
fs::path base_unet_file(const fs::path& run, const nlohmann::json& root) {
  const nlohmann::json rec = root.value("frozen", nlohmann::json::object()).value("unet", nlohmann::json::object());
  if (!rec.contains("run") || !rec.contains("checkpoint"))
    throw InputError(run.string() + ": its config records no frozen base UNet (is it a style run that has trained?)");
  const std::string file = rec.value("ema", false) ? "unet.ema.safetensors" : "unet.safetensors";
  return fs::path(rec["run"].get<std::string>()) / "ckpt" / rec["checkpoint"].get<std::string>() / file;
}

}  // namespace

std::string run_adapter_report(const AdapterReportJob& job) {
  const fs::path dir = resolve_run_folder(job.run, "run");
  const Config cfg = Config::load(dir / "config.json");
  const nlohmann::json& root = cfg.root();
  const fs::path base = root.value("frozen", nlohmann::json::object()).value("unet", nlohmann::json::object()).value("run", "");
  if (base.empty()) throw InputError(dir.string() + ": its config records no frozen base UNet (is it a style run that has trained?)");
  const Config base_cfg = Config::load(base / "config.json");
  LatentDiffusion model(base_cfg.section("model"), false, torch::kCPU);
  const fs::path unet_file = base_unet_file(dir, root);
  load_module_state(*model.unet, load_safetensors(unet_file), unet_file.string());

  std::vector<Adapters> own = attach_adapter_run(model, {dir, 1.0}, base);
  std::vector<Adapters> other;
  if (!job.against.empty()) other = attach_adapter_run(model, {job.against, 1.0}, base);
  std::vector<LayerAnalysis> rows = analyse(*own.front().ptr(), other.empty() ? nullptr : other.front().ptr().get());
  std::string text = "adapters of " + dir.string() + (other.empty() ? "" : " (φ against " + job.against.string() + ")") + "\n" + format_table(rows);
  // Hollowed Net's layer-significance analysis: mean |ΔW| per UNet unit (lora/hollow.h)
  bool linear = true;
  for (const auto& l : own.front()->layers()) linear = linear && l.adapter->weight_equivalent();
  if (linear) text += "\nmean |ΔW| per UNet unit, largest first:\n" + format_significance(unit_significance(*own.front().ptr(), model.unet->options()));
  if (!job.json.empty()) write_file_atomically(job.json, to_json(rows).dump(2));
  return text;
}

}  // namespace ef::lora
