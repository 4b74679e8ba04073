#include <torch/version.h>

#include <iostream>

#include "cli/commands.h"
#include "core/device.h"
#include "core/registry_index.h"

namespace ef::cli {

void add_list_and_info(CLI::App& app, Action& action) {
  auto* list = app.add_subcommand("list", "List every registry (recipes, data generators, attention kinds, samplers, renderers, ...) with its entries");
  list->callback([&action] {
    action = [] {
      // from the index every registry enters when the linked libraries fill it: cli/ names no domain
      for (const RegistryListing* registry : registry_index()) {
        std::cout << registry->what() << "s:\n";
        for (const auto& item : registry->items())
          std::cout << "  " << item.name << (item.description.empty() ? "" : "  - " + item.description) << "\n";
      }
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
