#include <iostream>

#include "cli/commands.h"
#include "core/data_gen.h"

namespace ef::cli {

void add_data(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "Dataset tools");
  data->require_subcommand(1);
  auto* gen = data->add_subcommand("gen", "Generate a dataset (deterministic from its seed): an HDF5 file or a scene folder");
  struct Args {
    std::string kind, out;
    std::vector<std::string> set;
  };
  auto a = std::make_shared<Args>();
  gen->add_option("kind", a->kind, "generator (see `edgeforge list`)")->required();
  gen->add_option("--out,-o", a->out, "output file or folder (default: the generator's, e.g. data/<kind>.h5)");
  gen->add_option("--set", a->set, "generator parameter key=<json>; repeat it: --set n=2000 --set seed=1")->take_all()->allow_extra_args(false);
  gen->callback([a, &action] {
    action = [a] {
      auto generator = data_generators().create(a->kind);
      Config params;
      for (const auto& s : a->set) params.apply_override(s);
      std::string out = a->out.empty() ? generator->default_path() : a->out;
      // Reading the parameters first rejects a misspelt one before any (possibly long) generation.
      generator->resolved_params(params);
      params.reject_unknown_keys();
      generator->generate(params, out);
      std::cout << "wrote " << out << " (" << params.json().dump() << ")\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
