// edgeforge: train, evaluate, sweep, export and inspect EdgeForge runs.
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.h"
#include "core/config.h"
#include "core/cxx_runtime.h"
#include "core/run.h"

int main(int argc, char** argv) {
  ef::ensure_cxx_runtime_binds_first(argv);
  CLI::App app{"EdgeForge: train, distill, fine-tune and export efficient vision models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "edgeforge 0.1.0");
  ef::cli::Action action;
  ef::cli::add_train(app, action);
  ef::cli::add_eval(app, action);
  ef::cli::add_sweep(app, action);
  ef::cli::add_list_and_info(app, action);
  ef::cli::add_data(app, action);
  ef::cli::add_render(app, action);
  ef::cli::add_export(app, action);
  ef::cli::add_sample_and_edit(app, action);
  ef::cli::add_adapters(app, action);
  // Logs go to stderr from the start (commands that open a run add its log file), so that stdout
  // holds only what a command prints as its result (`eval`'s JSON, `list`, tables).
  ef::setup_logging({}, false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a missing file, an unknown flag or a missing value is bad input
    return app.exit(e) == 0 ? ef::cli::kOk : ef::cli::kBadInput;
  }
  try {
    return action ? action() : ef::cli::kOk;
  } catch (const ef::InputError& e) {  // a config key, a file, an argument: named in the message
    std::cerr << "error: " << e.what() << "\n";
    return ef::cli::kBadInput;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return ef::cli::kFailed;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return ef::cli::kFailed;
  }
}
