// Export target of the `style` and `personalize` recipes: the adapters as files, no graph of their
// own (an adapter is not a network; deploy the merged UNet, or load the files into the base):
//   --format peft     PEFT's folder (adapter_config.json + adapter_model.safetensors) of the UNet's
//                     adapters (and text_encoder/ for the text encoder's), LoRA only;
//   --format diffusers  diffusers' pytorch_lora_weights.safetensors ("unet." / "text_encoder."
//                     prefixes), which diffusers' load_lora_weights reads; LoRA only;
//   --format kohya    the same adapters in kohya's single-file layout (lora_unet_..., .alpha); LoRA only;
//   --format merged   the base UNet (and text encoder) with ΔW folded into the weights, as diffusers'
//                     diffusion_pytorch_model.safetensors + config.json: a plain UNet that runs at the
//                     base's cost (LoRA; FouRA with gate none or frozen). ΔW is added to the
//                     model's UNet weights by layer name, so the adapters of a Hollowed-Net run,
//                     trained on the hollowed UNet, fold into the full UNet. A personalize run that
//                     fine-tuned the whole UNet has no adapters: `merged` is then its UNet, the only
//                     format.
#include "core/atomic_file.h"
#include "core/export_target.h"
#include "core/run.h"
#include "core/safetensors.h"
#include "lora/diffusers_files.h"
#include "lora/inject.h"
#include "lora/peft.h"
#include "models/diffusion/latent_diffusion.h"

namespace ef::lora {
namespace {

namespace fs = std::filesystem;

class AdapterExportTarget : public ExportTarget {
 public:
  explicit AdapterExportTarget(OpenedRun& run) : run_(run) {}
  std::vector<std::string> models() const override { return {}; }
  std::vector<std::string> file_formats() const override {
    if (!run_.recipe->modules().count("unet_adapter")) return {"merged"};
    return {"peft", "diffusers", "kohya", "merged"};
  }

  nlohmann::json write_files(const std::string& format, const fs::path& dir) override {
    if (!run_.recipe->modules().count("unet_adapter")) {
      if (format != "merged") return ExportTarget::write_files(format, dir);
      LatentDiffusion& ld = model();
      save_safetensors(dir / "unet" / "diffusion_pytorch_model.safetensors", module_state(*ld.unet));
      write_file_atomically(dir / "unet" / "config.json", ld.unet->options().diffusers_config().dump(2));
      nlohmann::json report = {{"format", format}, {"run", run_.checkpoint.string()}, {"files", {"unet/diffusion_pytorch_model.safetensors", "unet/config.json"}}};
      write_file_atomically(dir / "report.json", report.dump(2));
      return report;
    }
    auto* unet_adapter = recipe_module<AdaptersImpl>(run_, "unet_adapter", "UNet adapter");
    AdaptersImpl* text_adapter = nullptr;
    if (run_.recipe->modules().count("text_encoder_adapter")) text_adapter = recipe_module<AdaptersImpl>(run_, "text_encoder_adapter", "text encoder adapter");
    nlohmann::json report = {{"format", format}, {"run", run_.checkpoint.string()}};
    if (format == "peft") {
      save_peft(*unet_adapter, dir);
      if (text_adapter) save_peft(*text_adapter, dir / "text_encoder");
      report["files"] = {kPeftConfigFile, kPeftWeightsFile};
      report["layers"] = unet_adapter->layers().size() + (text_adapter ? text_adapter->layers().size() : 0);
    } else if (format == "diffusers" || format == "kohya") {
      // the recipe owns the adapters; the holders only borrow them for the write
      auto borrow = [](AdaptersImpl* a) { return Adapters(std::shared_ptr<AdaptersImpl>(a, [](AdaptersImpl*) {})); };
      NetworkAdapters networks = {{"unet", borrow(unet_adapter)}};
      if (text_adapter) networks.emplace("text_encoder", borrow(text_adapter));
      const std::string name = format == "diffusers" ? kDiffusersLoraFile : "lora_kohya.safetensors";
      save_lora_file(dir / name, networks, format == "diffusers" ? LoraFileLayout::diffusers : LoraFileLayout::kohya);
      report["files"] = {name};
    } else if (format == "merged") {
      LatentDiffusion& ld = model();
      merged_copy(*unet_adapter, *ld.unet, dir / "unet" / "diffusion_pytorch_model.safetensors");
      write_file_atomically(dir / "unet" / "config.json", ld.unet->options().diffusers_config().dump(2));
      if (text_adapter) merged_copy(*text_adapter, *ld.text, dir / "text_encoder.safetensors");
      report["files"] = {"unet/diffusion_pytorch_model.safetensors", "unet/config.json"};
    } else {
      return ExportTarget::write_files(format, dir);
    }
    write_file_atomically(dir / "report.json", report.dump(2));
    write_file_atomically(dir / "report.md", "# " + run_.config.root().value("recipe", std::string("adapter")) + " adapters: --format " + format + "\n\n```json\n" + report.dump(2) + "\n```\n");
    return report;
  }

 private:
  LatentDiffusion& model() {
    auto* has = dynamic_cast<HasLatentDiffusion*>(run_.recipe.get());
    if (!has) throw std::logic_error("adapter export: the recipe holds no latent diffusion model");
    return has->diffusion();
  }

  // The network's weights with each adapter's ΔW added to the weight of its layer's name (the
  // adapters may sit on another copy of the network: a hollowed UNet's are named as the full one's).
  static void merged_copy(AdaptersImpl& adapters, torch::nn::Module& network, const fs::path& file) {
    for (const auto& l : adapters.layers())
      if (!l.adapter->weight_equivalent())
        throw InputError("export --format merged: the adapter at '" + l.path + "' depends on its input (" + l.adapter->kind() +
                         " with an adaptive gate or dropout) and cannot be folded into the weights; export --format peft or use a frozen gate");
    torch::NoGradGuard no_grad;
    TensorMap state = module_state(network);
    for (auto& [k, v] : state) v = v.clone();
    for (const auto& l : adapters.layers()) {
      auto it = state.find(l.path + ".weight");
      if (it == state.end()) throw std::logic_error("export --format merged: the network has no layer '" + l.path + "'");
      it->second.add_(l.adapter->delta_weight().to(it->second.device(), it->second.scalar_type()).view_as(it->second));
    }
    fs::create_directories(file.parent_path());
    save_safetensors(file, state);
  }

  OpenedRun& run_;
};

EF_REGISTER(export_targets(), "style", [](OpenedRun& run) { return std::make_unique<AdapterExportTarget>(run); },
            "style adapters: PEFT folder, diffusers or kohya file, or the UNet with the adapters merged");
EF_REGISTER(export_targets(), "personalize", [](OpenedRun& run) { return std::make_unique<AdapterExportTarget>(run); },
            "personalized adapters (PEFT folder, diffusers or kohya file) or the personalized UNet (merged)");

}  // namespace
}  // namespace ef::lora
