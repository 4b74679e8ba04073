#pragma once
// Weight-space analyses of trained adapters (brief foura.md §2.4 and §5.5): how the update ΔW of one
// adapted layer spreads over its singular directions, how strongly it amplifies directions the base
// weight W0 barely uses, and how much two adapters on the same layer share a subspace.
//
// Every function works on 2-D matrices. A Linear weight is [out, in] as it is; a Conv2d weight
// [out, in, kh, kw] is read as the matrix [out, in·kh·kw] (each output channel's filter flattened
// in PyTorch's row-major order), the map from an unfolded input patch to the output channels, which
// is the layout in which a LoRA update B·A of rank r has matrix rank r. Computations run in float64
// on the CPU whatever the inputs' dtype and device.
//
// Pure functions, no state: a recipe's eval calls `analyse(adapters)` and prints `format_table`
// or writes `to_json`.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lora/inject.h"

namespace ef::lora {

// weight [out, in] or [out, in, kh, kw] -> [out, in·kh·kw], float64 on the CPU (a copy).
torch::Tensor as_matrix(const torch::Tensor& weight);

// --- spectrum of ΔW ------------------------------------------------------------------------------
// The paper's claim (Fig. 4): FouRA's ΔW has a more compact singular-value spread than LoRA's, so
// truncating it to a lower rank loses less. By Eckart–Young the best rank-k approximation error is
// ‖ΔW − ΔW_k‖_F² = Σ_{i>k} σ_i², i.e. (1 − energy_fraction(σ, k))·‖ΔW‖_F²: a spectrum whose
// normalised values σ_i/σ_1 fall faster, whose top-k energy is higher and whose effective rank is
// lower is the "more compact" one.

// Singular values of `weight` (any layout as_matrix takes), descending: [min(out, in·kh·kw)] float64.
torch::Tensor singular_values(const torch::Tensor& weight);

// σ_i / σ_1: [k] in [0, 1], starting at 1 (all zeros for a zero matrix). The curve Fig. 4 plots.
torch::Tensor normalised_spectrum(const torch::Tensor& sigma);

// Σ_{i<k} σ_i² / Σ_i σ_i²: the share of ‖ΔW‖_F² the top-k directions carry (k clamped to the
// number of values; 1 for a zero matrix, which a rank-0 truncation already represents exactly).
double energy_fraction(const torch::Tensor& sigma, int64_t k);

// Roy & Vetterli's effective rank exp(H(p)), p_i = σ_i / Σσ, H = −Σ p_i ln p_i (0·ln 0 = 0):
// a continuous count of the directions in use, 1 for a rank-1 matrix, n for n equal singular
// values, between them otherwise; 0 for a zero matrix.
double effective_rank(const torch::Tensor& sigma);

// --- relation to the base weight -----------------------------------------------------------------
// Amplification factor (LoRA paper §7.3, the brief's formula for Fig. B.1):
//   ‖ΔW‖_F / ‖Uᵀ W0 V‖_F,   U [out, r], V [in, r] the top-r left/right singular vectors of ΔW.
// Uᵀ W0 V is W0 seen in ΔW's own r directions. ΔW that reinforces what W0 already does strongly
// gives a small factor (ΔW = c·(W0's top-r part) gives exactly c); ΔW along directions W0 barely
// uses gives a large one. The paper reads a higher factor (FouRA's) as an update more decorrelated
// from the base weights, hence less forgetting. r is clamped to min(out, in); the top-r subspace is
// only well defined when σ_r > σ_{r+1}. +inf when ‖Uᵀ W0 V‖_F ≤ 1e-12·‖W0‖_F (ΔW in W0's null
// space, where float64 leaves only rounding noise); NaN for ΔW = 0 (no singular directions).
// w0, delta_w: the same shape, either layout.
double amplification_factor(const torch::Tensor& w0, const torch::Tensor& delta_w, int64_t r);

// --- subspace similarity between two adapters on the same layer ----------------------------------
// Top-r left singular vectors of `weight`: [out, r] float64, orthonormal columns (r clamped).
torch::Tensor top_left_singular_vectors(const torch::Tensor& weight, int64_t r);

// φ = ‖U_aᵀ U_b‖_F² / r with U_a, U_b the top-r left singular vectors of ΔW_a, ΔW_b: 1 when the
// two r-dimensional column spaces coincide, 0 when they are orthogonal, the mean squared cosine
// of their principal angles in between; invariant to any rotation within either subspace (so to
// the arbitrary basis an SVD returns for equal singular values). delta_a, delta_b: the same shape.
double subspace_similarity(const torch::Tensor& delta_a, const torch::Tensor& delta_b, int64_t r);

// The LoRA paper's grid (its Eq. 4): entry [i−1, j−1] = ‖U_a[:, :i]ᵀ U_b[:, :j]‖_F² / min(i, j)
// for i ≤ r_a, j ≤ r_b: [r_a, r_b] float64 in [0, 1] (ranks clamped). Its [r−1, r−1] entry is
// subspace_similarity(·, ·, r). One SVD per matrix and two cumulative sums.
torch::Tensor subspace_similarity_grid(const torch::Tensor& delta_a, const torch::Tensor& delta_b, int64_t r_a,
                                       int64_t r_b);

// --- per-network report ---------------------------------------------------------------------------
struct LayerWeights {
  std::string path;         // "blocks.0.mlp.fc1"
  std::string describe;     // "Linear(64 -> 32)"; free text, may be empty
  torch::Tensor w0;         // the frozen base weight, either layout
  torch::Tensor delta_w;    // the adapter's update, same shape as w0
  int64_t rank = 0;         // the adapter's rank r (the top-r used by amplification and φ)
};

struct LayerAnalysis {
  std::string path, describe;
  int64_t rank = 0;
  std::vector<double> singular_values;  // of ΔW, descending, all of them
  double delta_norm = 0;                // ‖ΔW‖_F
  double base_norm = 0;                 // ‖W0‖_F
  double energy_top_r = 0;              // energy_fraction(σ, rank)
  double effective_rank = 0;            // of ΔW
  double amplification = 0;             // amplification_factor(W0, ΔW, rank)
  std::optional<double> similarity;     // φ against the reference's ΔW on the same path, when given
};

// The weights of every adapted layer of `adapters` (no_grad, detached): W0 is the layer's own base
// weight (the saved copy while merged) and ΔW the adapter's delta_weight(); rank from the adapter's
// options ("rank"). Throws std::logic_error naming the path for an adapter that is not a fixed
// linear map in its current mode (LoRA dropout in training mode: call eval(); FouRA's adaptive
// gate: freeze it or use gate "none", i.e. the paper's "without masking").
std::vector<LayerWeights> layer_weights(AdaptersImpl& adapters);

// One row per layer, in order. With `reference`, rows whose path the reference also has get φ
// over the top min(rank, reference rank) directions (std::invalid_argument for a shape mismatch
// on a shared path).
std::vector<LayerAnalysis> analyse(const std::vector<LayerWeights>& layers,
                                   const std::vector<LayerWeights>* reference = nullptr);
std::vector<LayerAnalysis> analyse(AdaptersImpl& adapters, AdaptersImpl* reference = nullptr);

// A fixed-width text table, one line per layer (path, shape, r, ‖W0‖, ‖ΔW‖, σ1, σ_r/σ1, top-r energy,
// effective rank, amplification, φ when present), for a recipe's eval log.
std::string format_table(const std::vector<LayerAnalysis>& rows);
// {"layers": [{"path", "describe", "rank", "singular_values", "delta_norm", "base_norm", "energy_top_r",
//  "effective_rank", "amplification", "similarity"?}, ...]}; non-finite numbers are written as null.
nlohmann::json to_json(const std::vector<LayerAnalysis>& rows);

}  // namespace ef::lora
