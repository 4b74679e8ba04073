#include "core/sweep.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <set>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/folder_lock.h"
#include "core/metrics.h"

extern char** environ;

namespace ef {

namespace fs = std::filesystem;

namespace {
std::string value_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string last_segment(const std::string& key) {
  auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

std::string safe_name(std::string s) {
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '=' || c == ',')) c = '_';
  return s;
}
}  // namespace

std::string point_name(const std::vector<std::pair<std::string, nlohmann::json>>& assignment) {
  std::string name;
  for (const auto& [k, v] : assignment) name += (name.empty() ? "" : ",") + last_segment(k) + "=" + value_text(v);
  return safe_name(name.empty() ? "base" : name);
}

std::vector<SweepPoint> expand_grid(const nlohmann::json& grid) {
  std::vector<std::pair<std::string, nlohmann::json>> axes;
  for (auto it = grid.begin(); it != grid.end(); ++it) {
    if (!it.value().is_array() || it.value().empty())
      throw ConfigError("sweep grid '" + it.key() + "': expected a non-empty array of values");
    axes.emplace_back(it.key(), it.value());
  }
  std::vector<SweepPoint> out;
  if (axes.empty()) return out;
  std::vector<size_t> idx(axes.size(), 0);
  for (;;) {
    std::vector<std::pair<std::string, nlohmann::json>> assignment;
    SweepPoint p;
    for (size_t a = 0; a < axes.size(); ++a) {
      const auto& v = axes[a].second[idx[a]];
      assignment.emplace_back(axes[a].first, v);
      p.overrides.push_back(axes[a].first + "=" + v.dump());
    }
    p.name = point_name(assignment);
    out.push_back(std::move(p));
    size_t a = axes.size();
    while (a > 0) {  // odometer, last axis fastest
      --a;
      if (++idx[a] < axes[a].second.size()) break;
      idx[a] = 0;
      if (a == 0) return out;
    }
  }
}

SweepSpec load_sweep(const fs::path& file, const std::vector<std::string>& extra) {
  Config c = Config::load(file);
  SweepSpec s;
  s.file = file;
  s.base = file.parent_path() / c.require<std::string>("base");
  if (!fs::exists(s.base)) throw ConfigError(file.string() + ": base config not found: " + s.base.string());
  s.out = c.get<std::string>("out", (fs::path("runs") / "sweeps" / file.stem()).string());
  c.accept("set");
  const nlohmann::json common = c.json().value("set", nlohmann::json::object());  // named: items() refers to it
  for (auto& [k, v] : common.items()) s.common.push_back(k + "=" + v.dump());
  for (const auto& e : extra) s.common.push_back(e);
  c.accept("grid");
  if (c.has("grid")) s.points = expand_grid(c.json().at("grid"));
  c.accept("list");
  if (c.has("list")) {
    for (const auto& item : c.json().at("list")) {
      SweepPoint p;
      std::vector<std::pair<std::string, nlohmann::json>> assignment;
      const nlohmann::json set = item.value("set", nlohmann::json::object());
      for (auto& [k, v] : set.items()) {
        p.overrides.push_back(k + "=" + v.dump());
        assignment.emplace_back(k, v);
      }
      p.name = item.contains("name") ? safe_name(item.at("name").get<std::string>()) : point_name(assignment);
      if (item.contains("baseline")) p.baseline = safe_name(item.at("baseline").get<std::string>());
      s.points.push_back(std::move(p));
    }
  }
  if (s.points.empty()) s.points.push_back(SweepPoint{"base", {}});
  c.accept("cross");
  if (c.has("cross")) {  // every point so far, once per point of this grid (seeds, say)
    std::vector<SweepPoint> crossed;
    for (const auto& p : s.points)
      for (const auto& q : expand_grid(c.json().at("cross"))) {
        SweepPoint r = p;
        r.name = p.name == "base" ? q.name : p.name + "," + q.name;
        r.overrides.insert(r.overrides.end(), q.overrides.begin(), q.overrides.end());
        crossed.push_back(std::move(r));
      }
    s.points = std::move(crossed);
  }
  std::set<std::string> seen;
  for (const auto& p : s.points)
    if (!seen.insert(p.name).second) throw ConfigError(file.string() + ": two sweep points are both named '" + p.name + "'");
  for (const auto& p : s.points)
    if (!p.baseline.empty() && !seen.count(p.baseline))
      throw ConfigError(file.string() + ": point '" + p.name + "' names baseline '" + p.baseline + "', which is not a point of the sweep");
  s.metrics = c.get<std::vector<std::string>>("metrics", {"eval/loss"});
  s.relative = c.get<std::vector<std::string>>("relative", {});
  std::string sort = c.get<std::string>("sort", s.metrics.front());
  s.descending = !sort.empty() && sort[0] == '-';
  s.sort_by = s.descending ? sort.substr(1) : sort;
  c.reject_unknown_keys();
  return s;
}

bool point_finished(const SweepSpec& spec, const SweepPoint& p) { return fs::exists(spec.out / p.name / "final.json"); }

std::vector<SweepPoint> pending_points(const SweepSpec& spec) {
  std::vector<SweepPoint> out;
  for (const auto& p : spec.points)
    if (!point_finished(spec, p)) out.push_back(p);
  return out;
}

pid_t spawn_tied_to_parent(std::vector<std::string> args) {
  if (args.empty()) throw std::logic_error("spawn_tied_to_parent: no program");
  // everything the child needs is prepared before fork(): in a multi-threaded process the child may
  // only make async-signal-safe calls (prctl, getppid, execv, _exit) until it has exec'ed
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("cannot start " + args[0] + ": " + std::strerror(errno));
  if (pid == 0) {
    // SIGTERM when the thread that forked dies: a training run stops (with a final checkpoint)
    // instead of running on unwatched after its sweep was killed
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) ::_exit(127);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

std::vector<std::string> run_sweep(const SweepSpec& spec, int jobs, const std::string& executable) {
  // one sweep process per folder: a second one would start the same points twice
  FolderLock lock(spec.out, "sweep folder");
  std::vector<SweepPoint> todo = pending_points(spec);
  spdlog::info("sweep {}: {} points, {} to run, {} at a time", spec.file.string(), spec.points.size(), todo.size(), jobs);
  std::map<pid_t, std::string> running;
  std::vector<std::string> failed;
  size_t next = 0;
  auto wait_one = [&] {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid <= 0) return;
    std::string name = running[pid];
    running.erase(pid);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) failed.push_back(name);
    spdlog::info("sweep point {} {}", name, ok ? "finished" : "FAILED (see its log.txt)");
  };
  while (next < todo.size() || !running.empty()) {
    while (next < todo.size() && static_cast<int>(running.size()) < std::max(1, jobs)) {
      const SweepPoint& p = todo[next++];
      fs::path dir = spec.out / p.name;
      fs::create_directories(dir);
      std::vector<std::string> args = {executable, "train", spec.base.string(), "--run-dir", dir.string(), "--quiet"};
      for (const auto& o : spec.common) args.insert(args.end(), {"--set", o});
      for (const auto& o : p.overrides) args.insert(args.end(), {"--set", o});
      running[spawn_tied_to_parent(args)] = p.name;
      spdlog::info("sweep point {} started", p.name);
    }
    wait_one();
  }
  return failed;
}

std::vector<SweepRow> collect_rows(const SweepSpec& spec) {
  std::vector<SweepRow> rows;
  for (const auto& p : spec.points) {
    SweepRow r;
    r.point = p.name;
    for (const auto& o : p.overrides) {
      auto eq = o.find('=');
      r.settings[o.substr(0, eq)] = o.substr(eq + 1);
    }
    fs::path dir = spec.out / p.name;
    r.finished = fs::exists(dir / "final.json");
    if (r.finished) {
      auto final = nlohmann::json::parse(read_file(dir / "final.json"));
      const nlohmann::json metrics = final.value("metrics", nlohmann::json::object());
      for (auto& [k, v] : metrics.items())
        if (v.is_number()) r.metrics[k] = v.get<double>();
    }
    // metrics the final eval does not carry (train/*, info/*): their last logged value
    if (fs::exists(dir / "metrics.jsonl"))
      for (const auto& line : read_metrics_jsonl(dir / "metrics.jsonl"))
        for (const auto& [k, v] : line)
          if (k != "step" && (!r.finished || !r.metrics.count(k) || k.rfind("eval/", 0) != 0)) r.metrics[k] = v;
    rows.push_back(std::move(r));
  }
  return rows;
}

void write_summary(const SweepSpec& spec, std::vector<SweepRow> rows) {
  std::stable_sort(rows.begin(), rows.end(), [&](const SweepRow& a, const SweepRow& b) {
    auto va = a.metrics.find(spec.sort_by), vb = b.metrics.find(spec.sort_by);
    if (va == a.metrics.end()) return false;
    if (vb == b.metrics.end()) return true;
    return spec.descending ? va->second > vb->second : va->second < vb->second;
  });
  std::vector<std::string> keys;  // override columns in the order the sweep file gives them
  for (const auto& p : spec.points)
    for (const auto& o : p.overrides) {
      std::string k = o.substr(0, o.find('='));
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    }
  auto fmt_metric = [](const SweepRow& r, const std::string& m) {
    auto it = r.metrics.find(m);
    return it == r.metrics.end() ? std::string("") : fmt::format("{:.6g}", it->second);
  };
  // change relative to each point's baseline, in percent of the baseline's value
  std::map<std::string, const SweepRow*> by_name;
  for (const auto& r : rows) by_name[r.point] = &r;
  std::map<std::string, std::string> baseline_of;
  for (const auto& p : spec.points) baseline_of[p.name] = p.baseline;
  auto fmt_change = [&](const SweepRow& r, const std::string& m) {
    const std::string& base = baseline_of[r.point];
    if (base.empty() || !by_name.count(base)) return std::string("");
    auto v = r.metrics.find(m), b = by_name[base]->metrics.find(m);
    if (v == r.metrics.end() || b == by_name[base]->metrics.end() || b->second == 0) return std::string("");
    return fmt::format("{:+.1f}%", 100.0 * (v->second - b->second) / std::abs(b->second));
  };
  std::string csv = "point,finished";
  for (const auto& k : keys) csv += "," + k;
  for (const auto& m : spec.metrics) csv += "," + m;
  for (const auto& m : spec.relative) csv += ",change " + m;
  csv += "\n";
  std::string md = "| point | " ;
  for (const auto& k : keys) md += k + " | ";
  for (const auto& m : spec.metrics) md += m + " | ";
  for (const auto& m : spec.relative) md += "change " + m + " | ";
  md += "\n|---|";
  for (size_t i = 0; i < keys.size() + spec.metrics.size() + spec.relative.size(); ++i) md += "---|";
  md += "\n";
  auto csv_cell = [](std::string s) {
    if (s.find_first_of(",\"") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  for (const auto& r : rows) {
    csv += csv_cell(r.point) + "," + (r.finished ? "yes" : "no");
    md += "| " + r.point + (r.finished ? "" : " (unfinished)") + " | ";
    for (const auto& k : keys) {
      auto it = r.settings.find(k);
      std::string v = it == r.settings.end() ? "" : it->second;
      csv += "," + csv_cell(v);
      md += v + " | ";
    }
    for (const auto& m : spec.metrics) {
      csv += "," + fmt_metric(r, m);
      md += fmt_metric(r, m) + " | ";
    }
    for (const auto& m : spec.relative) {
      csv += "," + fmt_change(r, m);
      md += fmt_change(r, m) + " | ";
    }
    csv += "\n";
    md += "\n";
  }
  std::string title = "# Sweep " + spec.file.filename().string() + "\n\nSorted by " + (spec.descending ? "descending " : "ascending ") + spec.sort_by + ".\n\n";
  write_file_atomically(spec.out / "summary.csv", csv);
  write_file_atomically(spec.out / "summary.md", title + md);
  if (const std::string by_seed = seed_summary(spec, rows); !by_seed.empty()) write_file_atomically(spec.out / "summary_by_seed.md", by_seed);
}

std::string seed_summary(const SweepSpec& spec, const std::vector<SweepRow>& rows) {
  // Groups: the finished points that differ only in `seed`, in the order the sweep file gives them.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const SweepRow*>> groups;
  for (const auto& p : spec.points)
    for (const auto& r : rows)
      if (r.point == p.name && r.finished && r.settings.count("seed")) {
        std::string key;
        for (const auto& [k, v] : r.settings)
          if (k != "seed") key += (key.empty() ? "" : ", ") + k + "=" + v;
        if (key.empty()) key = "(base)";
        if (!groups.count(key)) order.push_back(key);
        groups[key].push_back(&r);
      }
  bool repeated = false;
  for (const auto& [k, g] : groups) repeated |= g.size() > 1;
  if (!repeated) return "";
  std::string md = "# Sweep " + spec.file.filename().string() + " over seeds\n\nMean ± sample standard deviation over the seeds of each setting (n: finished seeds).\n\n| setting | n | ";
  for (const auto& m : spec.metrics) md += m + " | ";
  md += "\n|---|---|";
  for (size_t i = 0; i < spec.metrics.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& key : order) {
    const auto& g = groups[key];
    md += "| " + key + " | " + std::to_string(g.size()) + " | ";
    for (const auto& m : spec.metrics) {
      std::vector<double> v;
      for (const auto* r : g)
        if (auto it = r->metrics.find(m); it != r->metrics.end()) v.push_back(it->second);
      if (v.empty()) {
        md += " | ";
        continue;
      }
      double mean = 0, var = 0;
      for (double x : v) mean += x;
      mean /= static_cast<double>(v.size());
      for (double x : v) var += (x - mean) * (x - mean);
      const double sd = v.size() > 1 ? std::sqrt(var / static_cast<double>(v.size() - 1)) : 0.0;
      md += fmt::format("{:.4g} ± {:.2g}", mean, sd) + " | ";
    }
    md += "\n";
  }
  return md;
}

}  // namespace ef
