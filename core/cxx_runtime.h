#pragma once
// Some torch wheels (2.11) export their own copies of libstdc++'s std::filesystem functions. When a
// toolchain orders libtorch ahead of libstdc++ among an executable's needed libraries, our calls
// bind to those copies, and file removals crash. Called first in main(): when the process's
// remove_all does not come from libstdc++, it restarts the program once with libstdc++ preloaded
// (LD_PRELOAD puts it first in symbol lookup), printing why. Otherwise it does nothing.
namespace ef {

void ensure_cxx_runtime_binds_first(char** argv);

}  // namespace ef
