#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "core/run.h"

namespace ef::cli {

void add_eval(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a run's checkpoint with its recipe's own evaluation");
  struct Args {
    std::string run_dir, ckpt, data, format;
    std::vector<std::string> set;
    bool no_ema = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("run_dir", a->run_dir, "run folder (holds config.json and ckpt/)")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--ckpt", a->ckpt, "checkpoint folder (default: the run's latest)")->check(CLI::ExistingDirectory);
  cmd->add_option("--set", a->set, "override a config value, e.g. eval.batches=0")->take_all()->allow_extra_args(false);
  cmd->add_flag("--no-ema", a->no_ema, "use the raw weights even when EMA weights exist");
  cmd->add_option("--data", a->data,
                  "evaluate on this folder instead of the run's own validation data (recipes that read eval.data; flow: an "
                  "MPI-Sintel or KITTI 2015 folder); same as --set eval.data=DIR")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--format", a->format, "layout of --data (flow: auto, sintel, kitti); same as --set eval.format=...");
  cmd->callback([a, &action] {
    action = [a] {
      std::vector<std::string> sets = a->set;
      // JSON-encoded so that any path is one string value
      if (!a->data.empty()) sets.push_back("eval.data=" + nlohmann::json(std::filesystem::absolute(a->data).string()).dump());
      if (!a->format.empty()) sets.push_back("eval.format=" + nlohmann::json(a->format).dump());
      OpenedRun run = open_run(a->run_dir, sets, a->ckpt, !a->no_ema);
      Scalars m = run.recipe->evaluate();
      nlohmann::json out = {{"checkpoint", run.checkpoint.string()}};
      for (const auto& [k, v] : m) out["eval/" + k] = v;
      std::cout << out.dump(2) << "\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
