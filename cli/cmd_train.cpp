#include <iostream>

#include "cli/commands.h"
#include "core/run.h"

namespace ef::cli {

void add_train(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "Train a recipe from a JSON config (or continue a run with --resume)");
  struct Args {
    std::string config, run_dir, runs = "runs", resume;
    std::vector<std::string> set;
    bool allow_change = false, quiet = false, check = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("config", a->config, "recipe config (configs/*.json)")->check(CLI::ExistingFile);
  cmd->add_option("--set", a->set, "override a config value: key.path=<json> (repeatable)")->take_all()->allow_extra_args(false);
  cmd->add_option("--run-dir", a->run_dir, "run folder to use (default: <runs>/<name>/<timestamp>); continued when it holds a checkpoint");
  cmd->add_option("--runs", a->runs, "root of new run folders")->capture_default_str();
  cmd->add_option("--resume", a->resume, "continue this run folder from its latest checkpoint")->check(CLI::ExistingDirectory);
  cmd->add_flag("--allow-config-change", a->allow_change, "resume even though the resolved config changed");
  cmd->add_flag("--quiet", a->quiet, "no progress bar or console metrics");
  cmd->add_flag("--check", a->check, "validate the config (and --set overrides) as training would, print the resolved config, write no run");
  cmd->callback([a, &action] {
    action = [a] {
      if (a->config.empty() && a->resume.empty()) throw ConfigError("train: give a config file, or --resume RUN_DIR");
      if (a->check) {
        if (a->config.empty()) throw ConfigError("train --check: give a config file");
        std::cout << check_config(a->config, a->set).root().dump(2) << "\n";
        return kOk;
      }
      LaunchOptions o;
      o.overrides = a->set;
      o.runs_root = a->runs;
      o.run_dir = a->resume.empty() ? a->run_dir : a->resume;
      o.resume = !a->resume.empty();
      o.allow_config_change = a->allow_change;
      o.quiet = a->quiet;
      LaunchResult r = launch_training(a->config, o);
      if (r.outcome.status == TrainStatus::Interrupted) {
        std::cerr << "interrupted at step " << r.outcome.step << "; continue with: edgeforge train --resume " << r.run_dir.string() << "\n";
        return kInterrupted;
      }
      std::cout << "run " << r.run_dir.string() << " finished at step " << r.outcome.step;
      for (const auto& [k, v] : r.outcome.final_metrics) std::cout << "  " << k << "=" << v;
      std::cout << "\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
