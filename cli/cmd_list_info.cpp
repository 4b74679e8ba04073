#include <torch/version.h>

#include <iostream>

#include "cli/commands.h"
#include "core/data_gen.h"
#include "core/device.h"
#include "core/recipe.h"
#include "models/attention/attention.h"
#include "splatting/renderer.h"

namespace ef::cli {

namespace {
template <class R>
void print_registry(const R& registry) {
  std::cout << registry.what() << "s:\n";
  for (const auto& [name, entry] : registry.entries()) std::cout << "  " << name << (entry.description.empty() ? "" : "  - " + entry.description) << "\n";
}
}  // namespace

void add_list_and_info(CLI::App& app, Action& action) {
  auto* list = app.add_subcommand("list", "List the registered recipes, attention kinds, splat renderers and data generators");
  list->callback([&action] {
    action = [] {
      print_registry(recipes());
      print_registry(attention_kinds());
      print_registry(splat::renderers());
      print_registry(data_generators());
      return kOk;
    };
  });

  auto* info = app.add_subcommand("info", "Print versions, build options and devices");
  info->callback([&action] {
    action = [] {
      std::cout << "edgeforge 0.1.0\n"
                << "libtorch " << TORCH_VERSION << "\n"
                << "build: " << EDGEFORGE_BUILD_TYPE << ", CUDA sources " << (EDGEFORGE_WITH_CUDA ? "on" : "off") << "\n"
                << "devices: " << describe_devices() << "\n"
                << "intra-op threads: " << at::get_num_threads() << "\n";
      return kOk;
    };
  });
}

}  // namespace ef::cli
