// Catch2's main, after making sure std::filesystem binds to the C++ runtime (core/cxx_runtime.h).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "core/cxx_runtime.h"

int main(int argc, char** argv) {
  ef::ensure_cxx_runtime_binds_first(argv);
  return Catch::Session().run(argc, argv);
}
