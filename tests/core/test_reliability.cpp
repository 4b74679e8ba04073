// What a run folder guarantees when things go wrong (README "Reliability"): checksummed checkpoints,
// one writer per run or sweep folder, sweep children that die with the sweep, and integer options
// that would crash or hang refused by key. The crash states of a checkpoint save are in
// test_checkpoint.cpp.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <fstream>
#include <thread>

#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/run.h"
#include "core/sweep.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
fs::path tiny_config() { return fs::path(ef::test::source_dir()) / "tasks" / "classify.tiny.json"; }

// classify.tiny.json (4 steps, checkpoints at 2 and 4, EMA) trained into `run`, its data beside it
ef::LaunchOptions tiny_launch(const fs::path& run) {
  ef::LaunchOptions o;
  o.quiet = true;
  o.run_dir = run;
  o.overrides = {"device=\"cpu\"", "train.tensorboard=false", "data.path=\"" + (run.parent_path() / "shapes.h5").string() + "\""};
  return o;
}

void flip_middle_byte(const fs::path& file) {
  std::string bytes = ef::read_file(file);
  bytes[bytes.size() / 2] ^= 0x01;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
}

std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ef::InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// Holds <folder>/.lock the way a training process does, with this process's PID in it.
struct HeldLock {
  int fd;
  explicit HeldLock(const fs::path& folder) {
    fs::create_directories(folder);
    fd = ::open((folder / ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
    const std::string pid = std::to_string(::getpid()) + "\n";
    REQUIRE(::ftruncate(fd, 0) == 0);
    REQUIRE(::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size()));
  }
  ~HeldLock() { ::close(fd); }
};

bool process_gone(pid_t pid) {  // a zombie waiting to be reaped counts as gone
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && line.size() > close_paren + 2 && line[close_paren + 2] == 'Z';
}

// A small tmpfs mounted at <scratch>/<name> for the life of the object (root only: `mounted` is
// false where it cannot be mounted, and the test is then skipped with a warning). Unmounting first
// closes the log file a run opened there.
struct SmallTmpfs {
  fs::path at;
  bool mounted = false;
  SmallTmpfs(const fs::path& folder, const std::string& size) : at(folder) {
    fs::create_directories(at);
    mounted = ::geteuid() == 0 &&
              std::system(("mount -t tmpfs -o size=" + size + " tmpfs " + ef::test::quote(at.string()) + " 2>/dev/null").c_str()) == 0;
  }
  bool remount(const std::string& options) const {
    return std::system(("mount -o remount," + options + " " + ef::test::quote(at.string())).c_str()) == 0;
  }
  ~SmallTmpfs() {
    if (!mounted) return;
    ef::setup_logging({}, true);
    (void)std::system(("umount -l " + ef::test::quote(at.string())).c_str());
  }
};
}  // namespace

TEST_CASE("checkpoint integrity: a flipped byte in the weights or the trainer state is reported, naming the file", "[checkpoint][integrity]") {
  ef::test::ScratchDir dir("integrity");
  const fs::path run = dir.path / "run";
  REQUIRE(ef::launch_training(tiny_config(), tiny_launch(run)).outcome.step == 4);
  const fs::path ckpt = run / "ckpt" / "step_4";
  const nlohmann::json files = ef::CheckpointStore::read_meta(ckpt).at("files");
  for (const char* f : {"model.safetensors", "model.ema.safetensors", "trainer.pt"}) {
    INFO(f);
    REQUIRE(files.contains(f));
    CHECK(files.at(f).get<std::string>().size() == 8);
  }
  CHECK_NOTHROW(ef::open_run(run, {}));

  SECTION("weights: eval refuses them") {
    flip_middle_byte(ckpt / "model.ema.safetensors");
    std::string e = input_error_of([&] { ef::open_run(run, {}); });
    CHECK_THAT(e, Contains("model.ema.safetensors is corrupt") && Contains("CRC32C"));
    flip_middle_byte(ckpt / "model.safetensors");
    e = input_error_of([&] { ef::open_run(run, {}, {}, /*prefer_ema=*/false); });
    CHECK_THAT(e, Contains((ckpt / "model.safetensors").string() + " is corrupt"));
  }
  SECTION("trainer state: resume refuses it") {
    flip_middle_byte(ckpt / "trainer.pt");
    ef::LaunchOptions o = tiny_launch(run);
    o.resume = true;
    o.allow_config_change = true;
    o.overrides.push_back("train.steps=6");
    CHECK_THAT(input_error_of([&] { ef::launch_training({}, o); }), Contains((ckpt / "trainer.pt").string() + " is corrupt"));
  }
  SECTION("a checkpoint written before checksums were recorded still loads") {
    nlohmann::json meta = ef::CheckpointStore::read_meta(ckpt);
    meta.erase("files");
    ef::write_file_atomically(ckpt / "meta.json", meta.dump(2));
    CHECK_NOTHROW(ef::open_run(run, {}));
  }
}

TEST_CASE("run lock: a second writer of a run folder is refused, naming the holder's PID, and eval takes no lock", "[lock]") {
  ef::test::ScratchDir dir("lock");
  const fs::path run = dir.path / "run";
  const std::string pid = std::to_string(::getpid());
  {
    HeldLock held(run);
    const std::string e = input_error_of([&] { ef::launch_training(tiny_config(), tiny_launch(run)); });
    CHECK_THAT(e, Contains("run folder " + run.string() + " is in use by process " + pid));
    CHECK_FALSE(fs::exists(run / "config.json"));  // refused before writing anything
    // through the CLI: bad input, exit 2
    const auto r = ef::test::run_command(ef::test::env_or_fail("EDGEFORGE_CLI") + " train " + ef::test::quote(tiny_config().string()) +
                                         " --run-dir " + ef::test::quote(run.string()) + " --quiet");
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Contains("in use by process " + pid));
  }
  REQUIRE(ef::launch_training(tiny_config(), tiny_launch(run)).outcome.step == 4);  // released: it goes ahead
  HeldLock held(run);  // as if a run were training it
  CHECK_NOTHROW(ef::open_run(run, {}));
}

TEST_CASE("sweep lock: a second sweep of one folder is refused, naming the holder's PID", "[lock][sweep]") {
  ef::test::ScratchDir dir("sweeplock");
  ef::SweepSpec spec;
  spec.file = dir.path / "s.json";
  spec.base = tiny_config();
  spec.out = dir.path / "out";
  spec.points = {ef::SweepPoint{"base", {}, ""}};
  HeldLock held(spec.out);
  CHECK_THAT(input_error_of([&] { ef::run_sweep(spec, 1, "/bin/false"); }),
             Contains("sweep folder " + spec.out.string() + " is in use by process " + std::to_string(::getpid())));
  CHECK_FALSE(fs::exists(spec.out / "base"));  // no point was started
}

TEST_CASE("sweep: a child process gets SIGTERM when its sweep dies", "[sweep][pdeathsig]") {
  int pipe_fd[2];
  REQUIRE(::pipe(pipe_fd) == 0);
  // a stand-in for the sweep: starts a long child, reports its PID, and dies at once
  const pid_t sweep = ::fork();
  REQUIRE(sweep >= 0);
  if (sweep == 0) {
    ::close(pipe_fd[0]);
    pid_t child = ef::spawn_tied_to_parent({"/bin/sleep", "60"});
    (void)!::write(pipe_fd[1], &child, sizeof child);
    ::_exit(0);
  }
  ::close(pipe_fd[1]);
  pid_t child = 0;
  REQUIRE(::read(pipe_fd[0], &child, sizeof child) == static_cast<ssize_t>(sizeof child));
  ::close(pipe_fd[0]);
  int status = 0;
  REQUIRE(::waitpid(sweep, &status, 0) == sweep);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!process_gone(child) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const bool gone = process_gone(child);
  if (!gone) ::kill(child, SIGKILL);
  CHECK(gone);
}

TEST_CASE("sweep: killing the sweep stops its training run, which writes a final checkpoint", "[sweep][pdeathsig][e2e]") {
  ef::test::ScratchDir dir("sweepkill");
  const fs::path out = dir.path / "out", point = out / "base";
  ef::write_file_atomically(dir.path / "s.json", nlohmann::json{{"base", tiny_config().string()}, {"out", out.string()}}.dump());
  const std::string data = "data.path=" + ef::test::quote("\"" + (dir.path / "shapes.h5").string() + "\"");
  const auto started = ef::test::run_command("(" + ef::test::env_or_fail("EDGEFORGE_CLI") + " sweep " + ef::test::quote((dir.path / "s.json").string()) +
                                             " --set " + data + " --set train.steps=1000000 --set train.ckpt_every=0 --set train.tensorboard=false > " +
                                             ef::test::quote((dir.path / "sweep.log").string()) + " 2>&1 & echo $!)");
  const pid_t sweep = std::stoi(started.output);
  // wait until the point trains: its lock names it, and it has logged a step
  auto wait_for = [](const std::function<bool()>& done, int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done();
  };
  const bool training = wait_for([&] { return fs::exists(point / "metrics.jsonl") && fs::file_size(point / "metrics.jsonl") > 0; }, 120);
  ::kill(sweep, SIGKILL);
  INFO(ef::read_file(dir.path / "sweep.log"));
  REQUIRE(training);
  const pid_t child = std::stoi(ef::read_file(point / ".lock"));
  CHECK(child != sweep);
  const bool gone = wait_for([&] { return process_gone(child); }, 60);
  if (!gone) ::kill(child, SIGKILL);
  REQUIRE(gone);
  ef::CheckpointStore store(point / "ckpt", 0);
  REQUIRE(store.latest());  // checkpoints only at the end: this one is the SIGTERM's
  CHECK(ef::CheckpointStore::read_meta(*store.latest()).at("step").get<int64_t>() > 0);
}

// The brief's crash: SIGINT (the run re-saves the step it just checkpointed) and then SIGKILL at some
// instant of that save. Every next start must find a complete, intact checkpoint and carry on.
TEST_CASE("checkpoint: a run killed during its saves always restarts from a complete checkpoint", "[checkpoint][crash][e2e]") {
  ef::test::ScratchDir dir("killsave");
  const fs::path run = dir.path / "run";
  const std::string train = ef::test::env_or_fail("EDGEFORGE_CLI") + " train " + ef::test::quote(tiny_config().string()) + " --run-dir " +
                            ef::test::quote(run.string()) + " --quiet --set data.path=" +
                            ef::test::quote("\"" + (dir.path / "shapes.h5").string() + "\"") +
                            " --set train.steps=1000000 --set train.ckpt_every=1 --set train.keep_last=2 --set train.tensorboard=false";
  auto lines = [&] {
    std::ifstream in(run / "metrics.jsonl");
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  for (int delay_ms : {0, 1, 2, 4, 8, 16}) {
    INFO("SIGKILL " << delay_ms << " ms after SIGINT");
    const fs::path log = dir.path / ("train-" + std::to_string(delay_ms) + ".log");
    const auto before = lines();
    const pid_t pid = std::stoi(ef::test::run_command("(" + train + " > " + ef::test::quote(log.string()) + " 2>&1 & echo $!)").output);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (lines() < before + 3 && !process_gone(pid) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::kill(pid, SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    while (!process_gone(pid)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    INFO(ef::read_file(log));
    REQUIRE(lines() >= before + 3);  // it trained on from where the previous one stopped
    ef::CheckpointStore store(run / "ckpt", 0);
    const auto latest = store.latest();
    REQUIRE(latest);
    for (const auto& [name, crc] : ef::CheckpointStore::read_meta(*latest).at("files").items()) CHECK_NOTHROW(ef::CheckpointStore::verify_file(*latest / name));
  }
}

TEST_CASE("config: integer options that would crash or hang are refused, naming the key", "[config][classify]") {
  ef::test::ScratchDir dir("intopts");
  const fs::path run = dir.path / "run";
  for (const auto& [override_, key] : std::vector<std::pair<std::string, std::string>>{
           {"model.patch=0", "model.patch"}, {"model.heads=0", "model.heads"}, {"model.dim=0", "model.dim"},
           {"model.depth=-1", "model.depth"}, {"model.image_size=0", "model.image_size"}, {"data.workers=-1", "data.workers"},
           {"data.batch_size=0", "data.batch_size"}, {"threads=-2", "threads"}, {"optim.schedule.warmup=-1", "optim.schedule.warmup"},
           {"train.ckpt_every=-1", "train.ckpt_every"}, {"train.eval_every=-1", "train.eval_every"},
           {"train.sample_every=-1", "train.sample_every"}, {"train.keep_last=-1", "train.keep_last"},
           {"eval.batch_size=0", "eval.batch_size"}, {"eval.batches=-1", "eval.batches"}, {"eval.samples=-1", "eval.samples"}}) {
    INFO(override_);
    ef::LaunchOptions o = tiny_launch(run);
    o.overrides.push_back(override_);
    std::string e = "(no ConfigError)";
    try {
      ef::launch_training(tiny_config(), o);
    } catch (const ef::ConfigError& err) {
      e = err.what();
    }
    CHECK_THAT(e, Contains(key + ": "));
    CHECK_FALSE(fs::exists(run / "ckpt"));
  }
}

TEST_CASE("full disk: a checkpoint that does not fit fails with the reason, leaves no partial folder, and the run continues once there is room",
          "[disk][checkpoint]") {
  ef::test::ScratchDir dir("full-disk");
  // a 96 KiB file system: the run's config and log fit, its first checkpoint (~100 KiB) does not
  SmallTmpfs small(dir.path / "disk", "96k");
  if (!small.mounted) {
    WARN("the full-disk test needs to mount a small tmpfs (root, and a system that permits it): skipped");
    return;
  }
  const fs::path disk = small.at;
  ef::LaunchOptions o = tiny_launch(disk / "run");
  o.overrides.back() = "data.path=\"" + (dir.path / "shapes.h5").string() + "\"";  // the data outside the small disk
  std::string error = "(no error)";
  try {
    ef::launch_training(tiny_config(), o);
  } catch (const std::exception& e) {
    error = e.what();
  }
  CHECK_THAT(error, Contains("No space left on device") && Contains("trainer.pt"));
  for (const auto& e : fs::directory_iterator(disk / "run" / "ckpt")) CHECK(e.path().filename().string().find("partial") == std::string::npos);
  // room again: the same launch continues the run to its end
  REQUIRE(small.remount("size=8m"));
  CHECK(ef::launch_training(tiny_config(), o).outcome.step == 4);
}

TEST_CASE("read-only run folder: eval and export of a finished run write nothing into it", "[readonly][cli]") {
  ef::test::ScratchDir dir("read-only");
  // root writes through file permissions, so the folder is made read-only by its file system
  SmallTmpfs small(dir.path / "disk", "8m");
  if (!small.mounted) {
    WARN("the read-only test needs to mount a small tmpfs (root, and a system that permits it): skipped");
    return;
  }
  const fs::path disk = small.at;
  const std::string cli = ef::test::env_or_fail("EDGEFORGE_CLI"), run = ef::test::quote((disk / "run").string());
  // trained by another process, whose files are all closed when it exits
  auto r = ef::test::run_command(cli + " train " + ef::test::quote(tiny_config().string()) + " --run-dir " + run + " --quiet --set " +
                                 ef::test::quote("data.path=\"" + (dir.path / "shapes.h5").string() + "\""));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  REQUIRE(small.remount("ro"));
  r = ef::test::run_command(cli + " eval " + run);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("eval/acc"));
  r = ef::test::run_command(cli + " export " + run + " --out " + ef::test::quote((dir.path / "exported").string()));
  INFO(r.output);
  CHECK(r.exit_code == 0);
}
