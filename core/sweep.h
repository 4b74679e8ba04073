#pragma once
// Sweeps: a base config plus a grid (cartesian product) and/or a list of overrides. Every point is
// an ordinary run in <out>/<point>/; a point whose final.json exists is finished and skipped, one
// with a checkpoint is resumed, so an interrupted sweep continues where it stopped.
//
// {
//   "base": "quickstart.json",                      // relative to the sweep file
//   "out": "runs/sweeps/lr",                        // default: runs/sweeps/<file stem>
//   "set": {"train.steps": 300},                    // overrides for every point
//   "grid": {"optim.lr": [1e-3, 3e-4], "seed": [0, 1]},
//   "list": [{"name": "no-decay", "set": {"optim.weight_decay": 0}, "baseline": "base"}],
//   "cross": {"seed": [0, 1, 2]},                   // every grid/list point once per point of this grid
//                                                   //   (names joined: "no-decay,seed=1")
//   "metrics": ["eval/acc", "train/steps_per_sec"], // summary columns
//   "relative": ["eval/acc"],                       // + one "change %" column each: 100 (v - v_baseline) / |v_baseline|
//                                                   //   against the point a list item names as its "baseline"
//   "sort": "-eval/acc"                             // '-' = descending
// }
#include <nlohmann/json.hpp>
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ef {

struct SweepPoint {
  std::string name;
  std::vector<std::string> overrides;  // "key=<json>"
  std::string baseline;                // point the summary's change columns compare with ("": none)
};

struct SweepSpec {
  std::filesystem::path file, base, out;
  std::vector<std::string> common;  // applied to every point, before the point's own
  std::vector<SweepPoint> points;
  std::vector<std::string> metrics;
  std::vector<std::string> relative;  // metrics that get a change-vs-baseline column
  std::string sort_by;
  bool descending = false;
};

SweepSpec load_sweep(const std::filesystem::path& file, const std::vector<std::string>& extra_overrides);
std::vector<SweepPoint> expand_grid(const nlohmann::json& grid);  // in key order of the file
std::string point_name(const std::vector<std::pair<std::string, nlohmann::json>>& assignment);

bool point_finished(const SweepSpec& spec, const SweepPoint& p);
std::vector<SweepPoint> pending_points(const SweepSpec& spec);

// Runs `executable train <base> --run-dir <out>/<point> --set ...` for each pending point,
// `jobs` at a time; returns the names of points that failed. Holds the lock of spec.out (a second
// sweep of the same folder is refused with an InputError naming this one's PID), and its children
// get SIGTERM when it dies.
std::vector<std::string> run_sweep(const SweepSpec& spec, int jobs, const std::string& executable);

// Starts `args` (args[0]: the executable's path) as a child process that the kernel sends SIGTERM
// when the calling thread dies, however it dies. Returns its PID; an exec failure exits 127.
pid_t spawn_tied_to_parent(std::vector<std::string> args);

struct SweepRow {
  std::string point;
  std::map<std::string, std::string> settings;  // override key -> value text
  std::map<std::string, double> metrics;
  bool finished = false;
};
std::vector<SweepRow> collect_rows(const SweepSpec& spec);
// Writes summary.csv and summary.md into spec.out; rows sorted by spec.sort_by. When points differ
// only in `seed`, also summary_by_seed.md: per setting, each metric's mean ± standard deviation.
void write_summary(const SweepSpec& spec, std::vector<SweepRow> rows);
// The markdown of summary_by_seed.md; empty when no setting has more than one finished seed.
std::string seed_summary(const SweepSpec& spec, const std::vector<SweepRow>& rows);

}  // namespace ef
