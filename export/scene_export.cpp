// `edgeforge export RUN --format ply` for splat runs: the trained Gaussian scene as the standard
// 3DGS .ply and as the compressed layout (splatting/compact_ply.h), with a report of their sizes
// and of the test-view PSNR rendered from each (the recipe's own eval), so the cost of the
// compression is measured, not assumed.
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/image_metrics.h"
#include "core/run.h"
#include "export/export.h"
#include "splatting/compact_ply.h"
#include "splatting/dataset.h"
#include "splatting/ply.h"
#include "splatting/renderer.h"
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
  auto* renderer = mods.count("renderer") ? dynamic_cast<SplatRendererImpl*>(mods.at("renderer")) : nullptr;
  if (!scene_module || !renderer)
    throw std::invalid_argument("export: --format ply needs a splat run; " + o.run_dir.string() + " is a '" + recipe + "' run");
  const fs::path out_dir = o.out_dir.empty() ? o.run_dir / "export" / "ply" : o.out_dir;
  GaussianParams scene = scene_module->params();
  GaussianParams cpu = scene;
  for (auto& [name, t] : cpu.fields()) *t = t->detach().cpu();
  SceneData data = load_scene(run.config.section("data"));
  const torch::Device device = run.ctx.device;
  const int64_t degree = scene.sh_degree();
  RenderSettings rs{degree, data.background.to(device)};
  const int64_t views = o.eval_samples <= 0 ? static_cast<int64_t>(data.test.size()) : std::min<int64_t>(o.eval_samples, data.test.size());
  auto mean_psnr = [&](const GaussianParams& g) {
    double sum = 0;
    for (int64_t i = 0; i < views; ++i)
      sum += psnr(renderer->render(g, data.test[i].camera, rs).image.clamp(0, 1).cpu(), data.test[i].image.cpu()).item<double>();
    return views > 0 ? sum / static_cast<double>(views) : 0.0;
  };

  nlohmann::json report = {{"run", o.run_dir.string()}, {"checkpoint", run.checkpoint.string()}, {"recipe", recipe}, {"format", "ply"},
                           {"gaussians", scene.size()}, {"sh_degree", degree}, {"test_views", views}};
  write_folder_atomically(out_dir, [&](const fs::path& tmp) {
    write_ply(tmp / "scene.ply", cpu);
    const int64_t compact_bytes = write_compact_ply(tmp / "scene.compact.ply", cpu);
    const int64_t ply_bytes = static_cast<int64_t>(fs::file_size(tmp / "scene.ply"));
    // what a viewer gets back from the compressed file, rendered like the trained scene
    GaussianParams decoded = read_ply(tmp / "scene.compact.ply");
    for (auto& [name, t] : decoded.fields()) *t = t->to(device);
    report["size"] = {{"ply_bytes", ply_bytes}, {"compact_bytes", compact_bytes},
                      {"ratio", static_cast<double>(compact_bytes) / static_cast<double>(ply_bytes)}};
    report["psnr"] = {{"float", mean_psnr(scene)}, {"compact", mean_psnr(decoded)}};
    std::ostringstream md;
    md << "# Scene export\n\n| | |\n|---|---|\n| run | " << o.run_dir.string() << " |\n| checkpoint | " << run.checkpoint.string()
       << " |\n| Gaussians | " << scene.size() << " |\n| SH degree | " << degree << " |\n\n";
    md << "| file | bytes | test-view PSNR (" << views << " views) |\n|---|---|---|\n";
    md << "| scene.ply (standard 3DGS) | " << ply_bytes << " | " << report["psnr"]["float"].get<double>() << " |\n";
    md << "| scene.compact.ply (compressed) | " << compact_bytes << " | " << report["psnr"]["compact"].get<double>() << " |\n";
    std::ofstream(tmp / "report.json") << report.dump(2);
    std::ofstream(tmp / "report.md") << md.str();
  });
  spdlog::info("export: wrote {} ({} Gaussians; compact {:.3f}x of the .ply, test PSNR {:.2f} -> {:.2f} dB)", out_dir.string(), scene.size(),
               report["size"]["ratio"].get<double>(), report["psnr"]["float"].get<double>(), report["psnr"]["compact"].get<double>());
  return report;
}

}  // namespace ef::exporter
