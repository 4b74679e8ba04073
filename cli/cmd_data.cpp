#include <iostream>

#include "cli/commands.h"
#include "core/data_gen.h"

namespace ef::cli {

void add_data(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "Dataset tools");
  data->require_subcommand(1);
  auto* gen = data->add_subcommand("gen", "Generate a dataset (deterministic from its seed) as HDF5");
  struct Args {
    std::string kind, out;
    std::vector<std::string> set;
  };
  auto a = std::make_shared<Args>();
  gen->add_option("kind", a->kind, "generator (see `edgeforge list`)")->required();
  gen->add_option("--out,-o", a->out, "output file (default: the generator's data/<kind>.h5)");
  gen->add_option("--set", a->set, "generator parameter: key=<json>, e.g. n=2000 seed=1")->take_all()->allow_extra_args(false);
  gen->callback([a, &action] {
    action = [a] {
      auto generator = data_generators().create(a->kind);
      Config params;
      for (const auto& s : a->set) params.apply_override(s);
      std::string out = a->out.empty() ? generator->default_path() : a->out;
      generator->generate(params, out);
      params.reject_unknown_keys();
      std::cout << "wrote " << out << " (" << params.json().dump() << ")\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
