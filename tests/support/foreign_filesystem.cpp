// A shared library that defines std::filesystem::remove_all(const path&) itself, as some torch
// wheels export it; it aborts when called. Preloaded ahead of libstdc++, it stands in for such a
// wheel in the test of core/cxx_runtime.h.
#include <cstdlib>

extern "C" __attribute__((visibility("default"))) unsigned long foreign_remove_all(const void*) __asm__(
    "_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE");

unsigned long foreign_remove_all(const void*) { std::abort(); }
