// CTest learns the test cases from `--list-test-names-only` and keeps them in a CMake list, where a
// ';' splits a name in two and an unbalanced '[' or ']' glues the following names together: either
// way tests silently stop running under `ctest` (it happened twice). Every name is checked here.
#include <catch2/catch.hpp>

TEST_CASE("test names: none holds a semicolon or an unbalanced square bracket", "[meta]") {
  const auto& tests = Catch::getRegistryHub().getTestCaseRegistry().getAllTests();
  REQUIRE(!tests.empty());
  for (const auto& t : tests) {
    INFO(t.name);
    CHECK(t.name.find(';') == std::string::npos);
    int depth = 0;
    bool balanced = true;
    for (char c : t.name) {
      depth += c == '[' ? 1 : c == ']' ? -1 : 0;
      balanced = balanced && depth >= 0;
    }
    CHECK((balanced && depth == 0));
  }
}
