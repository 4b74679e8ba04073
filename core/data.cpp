#include "core/data.h"

#include <numeric>

namespace ef {

Batch collate(const std::vector<Sample>& samples) {
  TORCH_CHECK(!samples.empty(), "collate: empty batch");
  Batch out;
  for (const auto& [name, first] : samples.front()) {
    std::vector<torch::Tensor> parts;
    parts.reserve(samples.size());
    for (const auto& s : samples) {
      auto it = s.find(name);
      TORCH_CHECK(it != s.end(), "collate: a sample lacks '", name, "'");
      parts.push_back(it->second);
    }
    out[name] = torch::stack(parts);
  }
  return out;
}

Batch to_device(const Batch& batch, const torch::Device& device) {
  Batch out;
  for (const auto& [k, v] : batch) out[k] = v.to(device, /*non_blocking=*/true);
  return out;
}

LoaderOptions LoaderOptions::from(const Config& data, uint64_t seed, int64_t batch_size) {
  LoaderOptions o;
  o.batch_size = data.get<int64_t>("batch_size", batch_size);
  o.workers = data.get<int>("workers", o.workers);
  if (o.batch_size < 1) data.invalid("batch_size", "must be at least 1, got " + std::to_string(o.batch_size));
  if (o.workers < 0) data.invalid("workers", "must be >= 0 (0: load on the training thread), got " + std::to_string(o.workers));
  o.seed = seed;
  return o;
}

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), opt_(options) {
  TORCH_CHECK(opt_.batch_size > 0, "data.batch_size must be positive, got ", opt_.batch_size);
  if (dataset_->size() < (opt_.drop_last ? opt_.batch_size : 1))  // the data or data.batch_size is the user's to fix
    throw InputError("the training data has " + std::to_string(dataset_->size()) + " samples, fewer than one batch of " +
                     std::to_string(opt_.batch_size) + " (data.batch_size)");
  claim_ = pos_;
  // workers start with the first next(): a recipe built for eval, export or `train --check`
  // never loads a training batch
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::batches_per_epoch() const {
  int64_t n = dataset_->size();
  return opt_.drop_last ? n / opt_.batch_size : (n + opt_.batch_size - 1) / opt_.batch_size;
}

LoaderPosition Loader::after(LoaderPosition p) const {
  if (++p.batch >= batches_per_epoch()) p.batch = 0, ++p.epoch;
  return p;
}

std::vector<int64_t> Loader::indices_of(LoaderPosition p) const {
  const int64_t n = dataset_->size();
  std::vector<int64_t> order(n);
  if (opt_.shuffle) {
    // The permutation depends only on (seed, epoch): a generator of its own, never the global one.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(opt_.seed * 1000003ULL + static_cast<uint64_t>(p.epoch));
    torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    std::copy(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n, order.begin());
  } else {
    std::iota(order.begin(), order.end(), 0);
  }
  int64_t begin = p.batch * opt_.batch_size, end = std::min(n, begin + opt_.batch_size);
  return {order.begin() + begin, order.begin() + end};
}

Batch Loader::make(LoaderPosition p) const {
  std::vector<Sample> samples;
  for (int64_t i : indices_of(p)) samples.push_back(dataset_->get(i));
  return collate(samples);
}

void Loader::start_workers() {
  stopping_ = false;
  for (int i = 0; i < opt_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Loader::worker_loop() {
  for (;;) {
    LoaderPosition mine;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || claimed_ahead_ < opt_.prefetch; });
      if (stopping_) return;
      mine = claim_;
      claim_ = after(claim_);
      ++claimed_ahead_;
    }
    Batch b;
    std::exception_ptr err;
    try {
      b = make(mine);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      ready_[{mine.epoch, mine.batch}] = std::move(b);
    }
    cv_.notify_all();
  }
}

Batch Loader::next() {
  if (opt_.workers == 0) {
    Batch b = make(pos_);
    pos_ = after(pos_);
    return b;
  }
  if (threads_.empty()) start_workers();
  std::unique_lock<std::mutex> lock(mu_);
  auto key = std::make_pair(pos_.epoch, pos_.batch);
  cv_.wait(lock, [&] { return error_ || ready_.count(key) > 0; });
  if (error_) std::rethrow_exception(error_);
  Batch b = std::move(ready_[key]);
  ready_.erase(key);
  --claimed_ahead_;
  pos_ = after(pos_);
  lock.unlock();
  cv_.notify_all();
  return b;
}

void Loader::seek(LoaderPosition pos) {
  stop_workers();
  ready_.clear();
  claimed_ahead_ = 0;
  error_ = nullptr;
  pos_ = claim_ = pos;  // the workers restart with the next next()
}

void save_loader_position(torch::serialize::OutputArchive& archive, const Loader& loader, const std::string& prefix) {
  LoaderPosition p = loader.position();
  archive.write(prefix + "/epoch", torch::tensor(p.epoch));
  archive.write(prefix + "/batch", torch::tensor(p.batch));
}

void load_loader_position(torch::serialize::InputArchive& archive, Loader& loader, const std::string& prefix) {
  torch::Tensor epoch, batch;
  archive.read(prefix + "/epoch", epoch);
  archive.read(prefix + "/batch", batch);
  loader.seek({epoch.item<int64_t>(), batch.item<int64_t>()});
}

}  // namespace ef
