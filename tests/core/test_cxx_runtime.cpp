// std::filesystem must bind to the C++ runtime, even beside a library that exports its own copies
// (core/cxx_runtime.h).
#include <catch2/catch.hpp>
#include <dlfcn.h>

#include <string>

#include "tests/test_support.h"

using Catch::Matchers::Contains;

TEST_CASE("cxx runtime: std::filesystem binds to libstdc++ in this process", "[core][runtime]") {
  void* bound = dlsym(RTLD_DEFAULT, "_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE");
  Dl_info where{};
  REQUIRE(bound != nullptr);
  REQUIRE(dladdr(bound, &where) != 0);
  CHECK_THAT(std::string(where.dli_fname), Contains("libstdc++"));
}

TEST_CASE("cxx runtime: the CLI restarts with libstdc++ first beside a foreign std::filesystem", "[core][runtime][cli]") {
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI");
  const std::string foreign = EDGEFORGE_FOREIGN_FILESYSTEM_LIB;
  auto r = ef::test::run_command("LD_PRELOAD=" + ef::test::quote(foreign) + " " + cli + " list");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("restarting with LD_PRELOAD="));
  CHECK_THAT(r.output, Contains("recipes"));
}
