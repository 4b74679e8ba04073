#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "core/config.h"
#include "splatting/render_job.h"

namespace ef::cli {

void add_render(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("render", "Render a trained Gaussian scene to PNG frames (dataset views or an orbit); export it as .ply");
  auto job = std::make_shared<splat::RenderJob>();
  auto run_dir = std::make_shared<std::string>(), ply = std::make_shared<std::string>(), data = std::make_shared<std::string>(),
       out = std::make_shared<std::string>(), export_ply = std::make_shared<std::string>();
  cmd->add_option("run_dir", *run_dir, "a splat run folder (its latest checkpoint is rendered)")->check(CLI::ExistingDirectory);
  cmd->add_option("--ply", *ply, "render this standard 3DGS .ply instead of a run (needs --data for the cameras)")->check(CLI::ExistingFile);
  cmd->add_option("--data", *data, "scene folder whose cameras to use (default: the run's data.path)")->check(CLI::ExistingDirectory);
  std::string renderer_kinds;  // the registry's, so that a new renderer needs no change here
  for (const auto& kind : splat::renderers().names()) renderer_kinds += (renderer_kinds.empty() ? "" : ", ") + kind;
  cmd->add_option("--renderer", job->renderer, "with --ply: the renderer kind, one of " + renderer_kinds + " (default alpha)");
  cmd->add_option("--views", job->views, "dataset views to render: test, train, all or none")->check(CLI::IsMember({"test", "train", "all", "none"}));
  cmd->add_option("--orbit", job->orbit, "also render N frames on an orbit around the scene");
  cmd->add_option("--out", *out, "output folder (default: <run>/render)");
  cmd->add_option("--export-ply", *export_ply, "write the scene as a standard 3DGS .ply here");
  cmd->add_option("--set", job->overrides, "override a run config value")->take_all()->allow_extra_args(false);
  cmd->callback([=, &action] {
    action = [=] {
      job->run_dir = *run_dir;
      job->ply = *ply;
      job->data = *data;
      job->out = *out;
      job->export_ply = *export_ply;
      if (job->run_dir.empty() == job->ply.empty()) throw InputError("render: give a run folder or --ply, not both or neither");
      auto r = splat::run_render_job(*job);
      nlohmann::json report = {{"frames", r.frames}, {"seconds", r.seconds}, {"fps", r.seconds > 0 ? r.frames / r.seconds : 0.0},
                               {"out", r.out.string()}};
      if (r.mean_psnr > 0) report["psnr"] = r.mean_psnr;
      if (!job->export_ply.empty()) report["ply"] = job->export_ply.string();
      std::cout << report.dump(2) << "\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
