#include "core/cxx_runtime.h"

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace ef {

void ensure_cxx_runtime_binds_first(char** argv) {
  if (std::getenv("EDGEFORGE_CXX_RUNTIME_PRELOADED") != nullptr) return;  // restarted once already
  // the definition that global symbol lookup gives our calls to std::filesystem::remove_all(path const&)
  void* bound = dlsym(RTLD_DEFAULT, "_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE");
  Dl_info where{};
  if (bound == nullptr || dladdr(bound, &where) == 0 || where.dli_fname == nullptr) return;
  const std::string provider = where.dli_fname;
  if (provider.find("libstdc++") != std::string::npos) return;  // the C++ runtime's own: fine

  void* runtime = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_NOLOAD);
  link_map* map = nullptr;
  if (runtime == nullptr || dlinfo(runtime, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr || map->l_name == nullptr) return;
  std::string preload = map->l_name;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') preload += std::string(":") + old;
  std::fprintf(stderr, "note: std::filesystem binds to %s, not to libstdc++; restarting with LD_PRELOAD=%s\n", provider.c_str(),
               map->l_name);
  setenv("LD_PRELOAD", preload.c_str(), 1);
  setenv("EDGEFORGE_CXX_RUNTIME_PRELOADED", "1", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "note: restart failed; file removals may crash (set LD_PRELOAD=%s by hand)\n", map->l_name);
}

}  // namespace ef
