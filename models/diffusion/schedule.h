#pragma once
// Discrete variance-preserving noise schedules (T steps, t = 0..T-1) and the three network
// parameterisations. Notation as in the diffusion literature:
//   x_t = a_t x0 + s_t eps,   a_t = sqrt(abar_t),   s_t = sqrt(1 - abar_t),   a_t^2 + s_t^2 = 1
//   eps-prediction:  x0 = (x_t - s_t eps) / a_t
//   v-prediction:    v = a_t eps - s_t x0,  x0 = a_t x_t - s_t v,  eps = a_t v + s_t x_t
//   x0-prediction ("sample"): eps = (x_t - a_t x0) / s_t
// The schedule kinds (abar_t for t = 0..T-1) are registered by name in `noise_schedule_kinds()`,
// one file each under schedules/, as diffusers names them: linear (DDPM), scaled_linear (Stable
// Diffusion), cosine (Nichol & Dhariwal). `edgeforge list` prints them.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>

#include "core/config.h"
#include "core/registry.h"

namespace ef {

// One schedule kind, built from the `schedule` section (it reads its own keys, e.g. beta_start).
class NoiseScheduleKind {
 public:
  virtual ~NoiseScheduleKind() = default;
  // abar_t for t = 0..steps-1: [steps] float64 (CPU), decreasing, in (0, 1].
  virtual torch::Tensor alphas_cumprod(int64_t steps) const = 0;
};

using NoiseScheduleRegistry = Registry<NoiseScheduleKind, const Config&>;
NoiseScheduleRegistry& noise_schedule_kinds();

enum class Prediction { Epsilon, V, Sample };
Prediction parse_prediction(const std::string& name, const std::string& where);  // epsilon | v | sample
std::string prediction_name(Prediction p);

class NoiseSchedule {
 public:
  // kind: a name in noise_schedule_kinds() (linear | scaled_linear | cosine); beta_start/beta_end
  // are the beta kinds' options (cosine has none).
  NoiseSchedule(const std::string& kind, int64_t steps = 1000, double beta_start = 0.00085, double beta_end = 0.012,
                Prediction prediction = Prediction::Epsilon);
  // schedule.{kind, steps, prediction, ...the kind's own options}; defaults are Stable Diffusion's.
  static NoiseSchedule from(const Config& schedule);

  const std::string& kind() const { return kind_; }
  int64_t steps() const { return alphas_cumprod_.size(0); }
  Prediction prediction() const { return prediction_; }
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // [T] float64 (CPU)

  // Scalars for one timestep; t = -1 is the clean end point (abar = 1).
  double abar(int64_t t) const;
  double alpha(int64_t t) const;  // a_t
  double sigma(int64_t t) const;  // s_t

  // Per-sample coefficients for integer timesteps t [B], shaped [B, 1, ..., 1] like `like`, in its dtype/device.
  torch::Tensor alpha(const torch::Tensor& t, const torch::Tensor& like) const;
  torch::Tensor sigma(const torch::Tensor& t, const torch::Tensor& like) const;

  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& eps, const torch::Tensor& t) const;
  // What the network is trained to output at (x0, eps, t) for this schedule's parameterisation.
  torch::Tensor target(const torch::Tensor& x0, const torch::Tensor& eps, const torch::Tensor& t) const;
  // Network output -> (x0, eps). `a`, `s` are broadcastable coefficient tensors or scalars.
  std::pair<torch::Tensor, torch::Tensor> split(const torch::Tensor& output, const torch::Tensor& x_t, const torch::Tensor& a,
                                                const torch::Tensor& s) const;
  std::pair<torch::Tensor, torch::Tensor> split(const torch::Tensor& output, const torch::Tensor& x_t, double a, double s) const;
  // Signal-to-noise ratio a_t^2 / s_t^2 per sample [B] (float32 on t's device), for loss weights.
  torch::Tensor snr(const torch::Tensor& t) const;

 private:
  NoiseSchedule(const std::string& kind, int64_t steps, Prediction prediction, const Config& options);
  std::string kind_;
  Prediction prediction_;
  torch::Tensor alphas_cumprod_;
};

}  // namespace ef
