#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/sweep.h"

namespace ef::cli {

namespace {
std::string self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot locate the edgeforge executable (/proc/self/exe)");
  return p.string();
}
}  // namespace

void add_sweep(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("sweep", "Run every point of a sweep file (skipping finished ones) and write summary.csv/.md");
  struct Args {
    std::string file;
    std::vector<std::string> set;
    int jobs = 1;
    bool summary_only = false, dry_run = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("sweep", a->file, "sweep file (configs/sweeps/*.json)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--set", a->set, "override for every point (repeatable)")->take_all()->allow_extra_args(false);
  cmd->add_option("--jobs,-j", a->jobs, "points run at once, as separate processes")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--summary-only", a->summary_only, "only (re)write the summary from finished points");
  cmd->add_flag("--dry-run", a->dry_run, "list the points and their overrides, run nothing");
  cmd->callback([a, &action] {
    action = [a] {
      SweepSpec spec = load_sweep(a->file, a->set);
      if (a->dry_run) {
        for (const auto& p : spec.points) {
          std::cout << (point_finished(spec, p) ? "[done] " : "[todo] ") << p.name << ":";
          for (const auto& o : p.overrides) std::cout << " --set " << o;
          std::cout << "\n";
        }
        return kOk;
      }
      std::vector<std::string> failed;
      if (!a->summary_only) failed = run_sweep(spec, a->jobs, self_executable());
      write_summary(spec, collect_rows(spec));
      std::cout << read_file(spec.out / "summary.md");
      if (!failed.empty()) {
        std::cerr << failed.size() << " point(s) failed:";
        for (const auto& f : failed) std::cerr << " " << f;
        std::cerr << "\n";
        return kFailed;
      }
      return kOk;
    };
  });
}

}  // namespace ef::cli
