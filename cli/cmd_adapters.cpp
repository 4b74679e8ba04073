// `edgeforge adapters`: parse into the lora/ report job.
#include <iostream>

#include "cli/commands.h"
#include "lora/adapter_report.h"

namespace ef::cli {

void add_adapters(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("adapters", "Print the weight-space analyses of an adapter run's ΔW per layer (singular-value spread, "
                                             "amplification factor; subspace similarity against a second run)");
  auto job = std::make_shared<lora::AdapterReportJob>();
  auto run = std::make_shared<std::string>(), against = std::make_shared<std::string>(), json = std::make_shared<std::string>();
  cmd->add_option("run_dir", *run, "an adapter run (a style run), or runs/<name>/ for its newest")->required();
  cmd->add_option("--against", *against, "a second adapter run on the same base: adds the subspace similarity φ per layer");
  cmd->add_option("--json", *json, "also write the rows as JSON to this file");
  cmd->callback([=, &action] {
    action = [=] {
      job->run = *run;
      job->against = *against;
      job->json = *json;
      std::cout << lora::run_adapter_report(*job);
      return kOk;
    };
  });
}

}  // namespace ef::cli
