// The conditional UNet in EdgeForge against the same network in diffusers (PyTorch eager, the venv's
// Python, bench/diffusion_reference.py), interleaved round by round in one run on the same machine and
// thread count: a training step (forward + MSE + backward + AdamW step) and one inference forward,
// median ms and the ratio diffusers/EdgeForge side by side. Then the editing latency per frame
// (InstructPix2Pix-style: an 8-channel UNet run on a batch of 3 per step, i.e. 3 UNet passes, x N
// steps, plus TAESD encode and decode of the frame), composed from the medians of its parts.
//
// Default: a small SD-like UNet (block_out_channels 64,128,256, cross-attention on the last two
// levels, 2 resnets per level, 8 heads, 77x768 text context) at a 32x32 latent (256x256 image), batch 4.
//
//   build/bench/bench_diffusion [--device cpu|cuda] [--size 32] [--batch 4] [--channels 64,128,256]
//                               [--cross 0,1,1] [--rounds 3] [--edit-steps 20] [--threads 2] [--budget 2]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "bench/timing.h"
#include "core/atomic_file.h"
#include "models/autoencoder/taesd.h"
#include "models/diffusion/unet.h"

namespace {

using ef::bench::time_ms;

// A Python process that answers one JSON line per request line (stdin/stdout pipes).
class PythonWorker {
 public:
  explicit PythonWorker(const std::vector<std::string>& argv) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::close(to_child[1]);
      ::close(from_child[0]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::fprintf(stderr, "cannot run %s\n", args[0]);
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    to_ = ::fdopen(to_child[1], "w");
    from_ = ::fdopen(from_child[0], "r");
  }
  ~PythonWorker() {
    if (to_) std::fclose(to_);  // end of input: the worker leaves its loop
    if (from_) std::fclose(from_);
    int status = 0;
    if (pid_ > 0) ::waitpid(pid_, &status, 0);
  }
  nlohmann::json read() {
    std::string line;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, from_)) {
      line += buf;
      if (!line.empty() && line.back() == '\n') {
        if (line[0] == '{') return nlohmann::json::parse(line);
        line.clear();  // not ours (a library's message on stdout)
      }
    }
    throw std::runtime_error("the Python reference exited (see its messages above)");
  }
  nlohmann::json request(const std::string& what) {
    std::fprintf(to_, "%s\n", what.c_str());
    std::fflush(to_);
    nlohmann::json r = read();
    if (r.contains("error")) throw std::runtime_error("Python reference: " + r["error"].get<std::string>());
    return r;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"conditional UNet: EdgeForge vs diffusers eager (training step, inference, editing latency)"};
  std::string device = "cpu";
  int64_t size = 32, batch = 4, layers = 2, heads = 8, groups = 32, tokens = 77, context_dim = 768, edit_steps = 20, taesd_width = 64;
  std::vector<int64_t> channels{64, 128, 256}, cross{0, 1, 1};
  int rounds = 3, threads = 2, min_reps = 3, max_reps = 30;
  double budget = 2.0;
  std::string python = std::getenv("EDGEFORGE_PYTHON") ? std::getenv("EDGEFORGE_PYTHON") : std::string(EDGEFORGE_DEFAULT_PYTHON);
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--size", size, "latent H = W (image: 8x)")->capture_default_str();
  app.add_option("--batch", batch, "training / inference batch")->capture_default_str();
  app.add_option("--channels", channels, "block_out_channels")->delimiter(',')->capture_default_str();
  app.add_option("--cross", cross, "cross-attention per level (0/1)")->delimiter(',')->capture_default_str();
  app.add_option("--layers", layers, "layers_per_block")->capture_default_str();
  app.add_option("--heads", heads, "attention heads")->capture_default_str();
  app.add_option("--groups", groups, "norm_num_groups")->capture_default_str();
  app.add_option("--tokens", tokens, "context tokens")->capture_default_str();
  app.add_option("--context-dim", context_dim, "cross_attention_dim")->capture_default_str();
  app.add_option("--edit-steps", edit_steps, "denoising steps per edited frame")->capture_default_str();
  app.add_option("--taesd-width", taesd_width, "TAESD channels")->capture_default_str();
  app.add_option("--rounds", rounds)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--min-reps", min_reps)->capture_default_str();
  app.add_option("--max-reps", max_reps)->capture_default_str();
  app.add_option("--budget", budget, "seconds per measurement (at least min-reps runs)")->capture_default_str();
  app.add_option("--python", python, "Python with torch and diffusers")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);

  try {
    at::set_num_threads(threads);
    torch::Device dev(device);
    ef::UNetOptions o;
    o.block_out_channels = channels;
    o.cross_attention.assign(cross.begin(), cross.end());
    o.layers_per_block = layers;
    o.attention_heads = heads;
    o.norm_num_groups = groups;
    o.cross_attention_dim = context_dim;
    o.validate();
    ef::UNetOptions edit_o = o;
    edit_o.in_channels = 8;
    ef::TinyAutoencoderOptions ao;
    ao.encoder_block_out_channels.assign(4, taesd_width);
    ao.decoder_block_out_channels.assign(4, taesd_width);
    const int64_t edit_batch = 3;

    // the diffusers side, started first: it imports and builds while nothing is timed
    const std::filesystem::path spec_path = std::filesystem::temp_directory_path() / ("bench_diffusion_" + std::to_string(::getpid()) + ".json");
    nlohmann::json spec = {{"unet", o.diffusers_config()}, {"edit_unet", edit_o.diffusers_config()}, {"taesd", ao.diffusers_config()},
                           {"batch", batch}, {"size", size}, {"tokens", tokens}, {"edit_batch", edit_batch}, {"device", device},
                           {"threads", threads}, {"budget", budget}, {"min_reps", min_reps}, {"max_reps", max_reps}};
    ef::write_file_atomically(spec_path, spec.dump());
    struct RemoveAtEnd {
      std::filesystem::path path;
      ~RemoveAtEnd() { std::error_code ec; std::filesystem::remove(path, ec); }
    } remove_spec{spec_path};
    PythonWorker py({python, std::string(EDGEFORGE_SOURCE_DIR) + "/bench/diffusion_reference.py", spec_path.string()});

    torch::manual_seed(0);
    ef::UNet2DCondition unet(o);
    unet->to(dev);
    ef::UNet2DCondition edit_unet(edit_o);
    edit_unet->to(dev);
    edit_unet->eval();
    ef::TinyAutoencoder taesd(ao);
    taesd->to(dev);
    taesd->eval();
    auto opts = torch::TensorOptions().device(dev);
    torch::Tensor x = torch::randn({batch, o.in_channels, size, size}, opts), t = torch::randint(0, 1000, {batch}, opts.dtype(torch::kLong));
    torch::Tensor ctx = torch::randn({batch, tokens, context_dim}, opts), target = torch::randn({batch, o.out_channels, size, size}, opts);
    torch::optim::AdamW opt(unet->parameters(), torch::optim::AdamWOptions(1e-4).weight_decay(1e-2));
    torch::Tensor ex = torch::randn({edit_batch, 8, size, size}, opts), et = torch::full({edit_batch}, 500, opts.dtype(torch::kLong));
    torch::Tensor ectx = torch::randn({edit_batch, tokens, context_dim}, opts);
    torch::Tensor image = torch::rand({1, 3, size * 8, size * 8}, opts) * 2 - 1, latent = torch::randn({1, 4, size, size}, opts);

    auto train = [&] {
      unet->train();
      opt.zero_grad();
      torch::mse_loss(unet->forward(x, t, ctx), target).backward();
      opt.step();
    };
    auto infer = [&] {
      torch::NoGradGuard ng;
      unet->eval();
      unet->forward(x, t, ctx);
    };
    nlohmann::json ready = py.read();
    const int64_t ours_params = count_parameters(*unet), py_params = ready.value("parameters", int64_t{-1});
    std::printf("UNet block_out_channels %s, cross-attention %s, %lld resnets/level, %lld heads, context %lldx%lld; latent %lldx%lld, batch %lld\n",
                nlohmann::json(channels).dump().c_str(), nlohmann::json(cross).dump().c_str(), (long long)layers, (long long)heads,
                (long long)tokens, (long long)context_dim, (long long)size, (long long)size, (long long)batch);
    std::printf("parameters: EdgeForge %lld, diffusers %lld%s; device %s, %d threads\n", (long long)ours_params, (long long)py_params,
                ours_params == py_params ? "" : "  (MISMATCH)", device.c_str(), threads);
    std::printf("%-6s %-22s %14s %14s %10s\n", "round", "", "edgeforge ms", "diffusers ms", "df/ef");
    std::fflush(stdout);
    std::vector<double> ef_train, py_train, ef_infer, py_infer;
    for (int r = 0; r < rounds; ++r) {
      ef_train.push_back(time_ms(train, dev, min_reps, budget, max_reps));
      py_train.push_back(py.request("train")["ms"].get<double>());
      std::printf("%-6d %-22s %14.1f %14.1f %10.3f\n", r, "train step", ef_train.back(), py_train.back(), py_train.back() / ef_train.back());
      ef_infer.push_back(time_ms(infer, dev, min_reps, budget, max_reps));
      py_infer.push_back(py.request("infer")["ms"].get<double>());
      std::printf("%-6d %-22s %14.1f %14.1f %10.3f\n", r, "inference forward", ef_infer.back(), py_infer.back(), py_infer.back() / ef_infer.back());
      std::fflush(stdout);
    }
    std::printf("%-6s %-22s %14.1f %14.1f %10.3f\n", "median", "train step", median(ef_train), median(py_train), median(py_train) / median(ef_train));
    std::printf("%-6s %-22s %14.1f %14.1f %10.3f\n", "median", "inference forward", median(ef_infer), median(py_infer), median(py_infer) / median(ef_infer));

    // editing latency per frame: parts measured alternately, then composed
    torch::NoGradGuard ng;
    double ef_edit = time_ms([&] { edit_unet->forward(ex, et, ectx); }, dev, min_reps, budget, max_reps);
    double py_edit = py.request("edit_unet")["ms"].get<double>();
    double ef_enc = time_ms([&] { taesd->encode(image); }, dev, min_reps, budget, max_reps);
    double py_enc = py.request("taesd_encode")["ms"].get<double>();
    double ef_dec = time_ms([&] { taesd->decode(latent); }, dev, min_reps, budget, max_reps);
    double py_dec = py.request("taesd_decode")["ms"].get<double>();
    std::printf("\nediting, per %lldx%lld frame (latent %lldx%lld): 8-channel UNet on a batch of %lld per step (3 passes), TAESD width %lld\n",
                (long long)(size * 8), (long long)(size * 8), (long long)size, (long long)size, (long long)edit_batch, (long long)taesd_width);
    std::printf("%-34s %14s %14s %10s\n", "", "edgeforge ms", "diffusers ms", "df/ef");
    std::printf("%-34s %14.1f %14.1f %10.3f\n", "UNet step (3 passes)", ef_edit, py_edit, py_edit / ef_edit);
    std::printf("%-34s %14.1f %14.1f %10.3f\n", "TAESD encode", ef_enc, py_enc, py_enc / ef_enc);
    std::printf("%-34s %14.1f %14.1f %10.3f\n", "TAESD decode", ef_dec, py_dec, py_dec / ef_dec);
    const double ef_frame = ef_enc + static_cast<double>(edit_steps) * ef_edit + ef_dec, py_frame = py_enc + static_cast<double>(edit_steps) * py_edit + py_dec;
    char label[64];
    std::snprintf(label, sizeof label, "frame (%lld steps x 3 passes + TAESD)", (long long)edit_steps);
    std::printf("%-34s %14.1f %14.1f %10.3f\n", label, ef_frame, py_frame, py_frame / ef_frame);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
