#pragma once
// Each subcommand registers itself on the app; main() only dispatches and reports errors.
#include <CLI/CLI.hpp>

#include <functional>

namespace ef::cli {

// A subcommand's action returns the process exit code.
using Action = std::function<int()>;

void add_train(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_sweep(CLI::App& app, Action& action);
void add_list_and_info(CLI::App& app, Action& action);
void add_data(CLI::App& app, Action& action);
void add_render(CLI::App& app, Action& action);
void add_export(CLI::App& app, Action& action);
void add_sample_and_edit(CLI::App& app, Action& action);
void add_adapters(CLI::App& app, Action& action);

// Exit codes
constexpr int kOk = 0, kFailed = 1, kBadInput = 2, kInterrupted = 130;

}  // namespace ef::cli
