// Export target "splat" (`edgeforge export RUN --format ply`): the trained Gaussian scene as the standard
// 3DGS .ply and as the compressed layout (splatting/compact_ply.h), with a report of their sizes
// and of the recipe's own evaluation (test-view PSNR, SSIM) of the scene and of what the compressed
// file decodes to, so the cost of the compression is measured, not assumed.
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "core/export_target.h"
#include "splatting/compact_ply.h"
#include "splatting/ply.h"
#include "splatting/scene_module.h"

namespace ef::splat {
namespace {

namespace fs = std::filesystem;

class SceneTarget : public ExportTarget {
 public:
  explicit SceneTarget(OpenedRun& run)
      : run_(run), scene_(recipe_module<GaussianSceneImpl>(run, "scene", "Gaussian scene")) {}
  std::vector<std::string> models() const override { return {}; }  // a scene, not a network
  std::vector<std::string> file_formats() const override { return {"ply"}; }
  nlohmann::json write_files(const std::string& format, const fs::path& tmp) override;

 private:
  OpenedRun& run_;
  GaussianSceneImpl* scene_ = nullptr;
};

nlohmann::json SceneTarget::write_files(const std::string& format, const fs::path& tmp) {
  if (format != "ply") return ExportTarget::write_files(format, tmp);
  torch::NoGradGuard no_grad;
  GaussianParams cpu = scene_->params();  // detached copies: they keep the trained values while the module is swapped
  for (auto& [name, t] : cpu.fields()) *t = t->detach().cpu().clone();
  const Scalars trained = run_.recipe->evaluate();
  const std::string run_dir = run_.ctx.run_dir.string();
  nlohmann::json report = {{"run", run_dir}, {"checkpoint", run_.checkpoint.string()}, {"recipe", "splat"}, {"format", "ply"},
                           {"gaussians", cpu.size()}, {"sh_degree", cpu.sh_degree()}, {"test_views", trained.count("views") ? trained.at("views") : 0.0}};
  write_ply(tmp / "scene.ply", cpu);
  const int64_t compact_bytes = write_compact_ply(tmp / "scene.compact.ply", cpu);
  const int64_t ply_bytes = static_cast<int64_t>(fs::file_size(tmp / "scene.ply"));
  // what a viewer gets back from the compressed file, evaluated by the recipe like the trained scene
  scene_->set(read_ply(tmp / "scene.compact.ply"));
  Scalars compact;
  try {
    compact = run_.recipe->evaluate();
  } catch (...) {
    scene_->set(cpu);
    throw;
  }
  scene_->set(cpu);
  report["size"] = {{"ply_bytes", ply_bytes}, {"compact_bytes", compact_bytes},
                    {"ratio", static_cast<double>(compact_bytes) / static_cast<double>(ply_bytes)}};
  report["psnr"] = {{"float", trained.at("psnr")}, {"compact", compact.at("psnr")}};
  report["ssim"] = {{"float", trained.at("ssim")}, {"compact", compact.at("ssim")}};
  std::ostringstream md;
  md << "# Scene export\n\n| | |\n|---|---|\n| run | " << run_dir << " |\n| checkpoint | " << run_.checkpoint.string()
     << " |\n| Gaussians | " << cpu.size() << " |\n| SH degree | " << cpu.sh_degree() << " |\n\n";
  md << "| file | bytes | PSNR | SSIM |\n|---|---|---|---|\n";
  md << "| scene.ply (standard 3DGS) | " << ply_bytes << " | " << trained.at("psnr") << " | " << trained.at("ssim") << " |\n";
  md << "| scene.compact.ply (compressed) | " << compact_bytes << " | " << compact.at("psnr") << " | " << compact.at("ssim") << " |\n";
  std::ofstream(tmp / "report.json") << report.dump(2);
  std::ofstream(tmp / "report.md") << md.str();
  spdlog::info("export: {} Gaussians; compact {:.3f}x of the .ply, test PSNR {:.2f} -> {:.2f} dB", cpu.size(),
               report["size"]["ratio"].get<double>(), report["psnr"]["float"].get<double>(), report["psnr"]["compact"].get<double>());
  return report;
}

}  // namespace

EF_REGISTER(export_targets(), "splat", [](OpenedRun& run) { return std::make_unique<SceneTarget>(run); },
            "the Gaussian scene (--format ply): standard 3DGS .ply and the compressed layout, test-view PSNR of each");

}  // namespace ef::splat
