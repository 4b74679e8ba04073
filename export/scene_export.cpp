// `edgeforge export RUN --format ply` for splat runs: the trained Gaussian scene as the standard
// 3DGS .ply and as the compressed layout (splatting/compact_ply.h), with a report of their sizes
// and of the recipe's own evaluation (test-view PSNR, SSIM) of the scene and of what the compressed
// file decodes to, so the cost of the compression is measured, not assumed.
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/run.h"
#include "export/export.h"
#include "splatting/compact_ply.h"
#include "splatting/ply.h"
#include "splatting/scene_module.h"

namespace ef::exporter {

namespace fs = std::filesystem;

nlohmann::json run_scene_export(const ExportOptions& o) {
  using namespace ef::splat;
  torch::NoGradGuard no_grad;
  OpenedRun run = open_run(o.run_dir, o.overrides, o.checkpoint);
  const std::string recipe = RunSettings::from(run.config).recipe;
  auto mods = run.recipe->modules();
  auto* scene_module = mods.count("scene") ? dynamic_cast<GaussianSceneImpl*>(mods.at("scene")) : nullptr;
  if (!scene_module) throw std::invalid_argument("export: --format ply needs a splat run; " + o.run_dir.string() + " is a '" + recipe + "' run");
  const fs::path out_dir = o.out_dir.empty() ? o.run_dir / "export" / "ply" : o.out_dir;
  GaussianParams cpu = scene_module->params();  // detached copies: they keep the trained values while the module is swapped
  for (auto& [name, t] : cpu.fields()) *t = t->detach().cpu().clone();
  const Scalars trained = run.recipe->evaluate();

  nlohmann::json report = {{"run", o.run_dir.string()}, {"checkpoint", run.checkpoint.string()}, {"recipe", recipe}, {"format", "ply"},
                           {"gaussians", cpu.size()}, {"sh_degree", cpu.sh_degree()}, {"test_views", trained.count("views") ? trained.at("views") : 0.0}};
  write_folder_atomically(out_dir, [&](const fs::path& tmp) {
    write_ply(tmp / "scene.ply", cpu);
    const int64_t compact_bytes = write_compact_ply(tmp / "scene.compact.ply", cpu);
    const int64_t ply_bytes = static_cast<int64_t>(fs::file_size(tmp / "scene.ply"));
    // what a viewer gets back from the compressed file, evaluated by the recipe like the trained scene
    scene_module->set(read_ply(tmp / "scene.compact.ply"));
    Scalars compact;
    try {
      compact = run.recipe->evaluate();
    } catch (...) {
      scene_module->set(cpu);
      throw;
    }
    scene_module->set(cpu);
    report["size"] = {{"ply_bytes", ply_bytes}, {"compact_bytes", compact_bytes},
                      {"ratio", static_cast<double>(compact_bytes) / static_cast<double>(ply_bytes)}};
    report["psnr"] = {{"float", trained.at("psnr")}, {"compact", compact.at("psnr")}};
    report["ssim"] = {{"float", trained.at("ssim")}, {"compact", compact.at("ssim")}};
    std::ostringstream md;
    md << "# Scene export\n\n| | |\n|---|---|\n| run | " << o.run_dir.string() << " |\n| checkpoint | " << run.checkpoint.string()
       << " |\n| Gaussians | " << cpu.size() << " |\n| SH degree | " << cpu.sh_degree() << " |\n\n";
    md << "| file | bytes | PSNR | SSIM |\n|---|---|---|---|\n";
    md << "| scene.ply (standard 3DGS) | " << ply_bytes << " | " << trained.at("psnr") << " | " << trained.at("ssim") << " |\n";
    md << "| scene.compact.ply (compressed) | " << compact_bytes << " | " << compact.at("psnr") << " | " << compact.at("ssim") << " |\n";
    std::ofstream(tmp / "report.json") << report.dump(2);
    std::ofstream(tmp / "report.md") << md.str();
  });
  spdlog::info("export: wrote {} ({} Gaussians; compact {:.3f}x of the .ply, test PSNR {:.2f} -> {:.2f} dB)", out_dir.string(), cpu.size(),
               report["size"]["ratio"].get<double>(), report["psnr"]["float"].get<double>(), report["psnr"]["compact"].get<double>());
  return report;
}

}  // namespace ef::exporter
