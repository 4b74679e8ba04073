#pragma once
// Helpers shared by the tests: scratch folders, the CLI and the venv's Python.
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <string>

namespace ef::test {

// A fresh empty folder under the test's working directory, removed at the end of the scope.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& name) {
    std::random_device rd;
    path = std::filesystem::absolute("scratch") / (name + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Runs the scope inside a fresh scratch folder (the working directory relative paths in tiny
// configs, like runs/<name>, resolve against), and returns to the previous one at its end.
struct InScratch {
  ScratchDir dir;
  std::filesystem::path before = std::filesystem::current_path();
  explicit InScratch(const std::string& name) : dir(name) { std::filesystem::current_path(dir.path); }
  ~InScratch() { std::filesystem::current_path(before); }
};

// The .safetensors file names of a checkpoint folder.
inline std::set<std::string> weight_files(const std::filesystem::path& ckpt) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(ckpt))
    if (e.path().extension() == ".safetensors") out.insert(e.path().filename().string());
  return out;
}

// EDGEFORGE_CLI / EDGEFORGE_PYTHON from the environment, else the paths the build compiled in.
inline std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (v && *v) return v;
  std::string fallback = std::string(name) == "EDGEFORGE_CLI" ? EDGEFORGE_DEFAULT_CLI
                         : std::string(name) == "EDGEFORGE_PYTHON" ? EDGEFORGE_DEFAULT_PYTHON : "";
  if (fallback.empty()) throw std::runtime_error(std::string("test environment variable ") + name + " is not set");
  return fallback;
}

inline std::string source_dir() {
  const char* v = std::getenv("EDGEFORGE_SOURCE_DIR");
  return v ? v : EDGEFORGE_SOURCE_DIR;
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace ef::test
