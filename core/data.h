#pragma once
// Datasets and the batching loader.
//
// A sample is a map of named tensors ("image", "label", ...); a batch stacks each name along a new
// first dimension. The loader's order depends only on (seed, epoch), and batch k of an epoch is
// always made of the same indices, whatever the number of worker threads: so a run's data stream
// is reproducible and a resumed run continues it exactly from (epoch, batch).
#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"

namespace ef {

using Sample = std::map<std::string, torch::Tensor>;
using Batch = std::map<std::string, torch::Tensor>;

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Must be safe to call from several threads at once.
  virtual Sample get(int64_t index) const = 0;
};

Batch collate(const std::vector<Sample>& samples);
Batch to_device(const Batch& batch, const torch::Device& device);

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = true;
  bool drop_last = true;
  int workers = 2;       // prefetching threads; 0 loads on the caller's thread
  int prefetch = 4;      // batches kept ready ahead
  uint64_t seed = 0;
  // data.batch_size (default `batch_size`) and data.workers (2); the seed is the run's.
  static LoaderOptions from(const Config& data, uint64_t seed, int64_t batch_size);
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // next batch within the epoch
};

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Next batch; wraps around into the next epoch forever.
  Batch next();
  int64_t batches_per_epoch() const;
  LoaderPosition position() const { return pos_; }
  void seek(LoaderPosition pos);  // drops prefetched batches and continues from pos
  const Dataset& dataset() const { return *dataset_; }

 private:
  std::vector<int64_t> indices_of(LoaderPosition p) const;
  Batch make(LoaderPosition p) const;
  LoaderPosition after(LoaderPosition p) const;
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  LoaderPosition pos_;  // what next() returns next

  // prefetching: workers claim positions in order and publish finished batches keyed by position
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  LoaderPosition claim_;      // next position a worker will make
  int64_t claimed_ahead_ = 0;  // batches claimed but not yet consumed
  std::map<std::pair<int64_t, int64_t>, Batch> ready_;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

// A loader's position in a recipe's resume state ("<prefix>/epoch", "<prefix>/batch"), so that a
// resumed run continues the same data stream.
void save_loader_position(torch::serialize::OutputArchive& archive, const Loader& loader, const std::string& prefix = "loader");
void load_loader_position(torch::serialize::InputArchive& archive, Loader& loader, const std::string& prefix = "loader");

}  // namespace ef
