#pragma once
// FouRA: Fourier low-rank adaptation (Borse, Kadambi et al., NeurIPS 2024, arXiv 2406.08798;
// brief ../shared/papers/foura.md). The down-projection, an adaptive-rank gate and the
// up-projection act in the frequency domain of the layer's input:
//
//   z_lr  = A · F(z_in)                                  code, r channels
//   z_out = W0 z_in + F⁻¹( B · c · G(z_lr) ⊙ z_lr )      c = α · s, s = lora_alpha / r (or / √r)
//
// Paper symbol -> member:
//   F, F⁻¹   transform_in_, transform_out_  (SpectralTransform: orthonormal DCT-II or ortho rDFT)
//   A        lora_A: Linear(bins_in -> r) | Conv2d(bins_in -> r, the base's kernel/stride/padding)
//   B        lora_B: Linear(r -> bins_out) | Conv2d(r -> bins_out, 1x1)
//   𝒢        gate_fc1 (u = z W_g), or gate_fc1 -> GELU -> gate_fc2 with gate_hidden > 0
//   b_j      gate_shift [r]; κ = options().gate_slope
//   G        the hard mask g ∈ {0,1}^r per sample (gate = adaptive), or gate_mask [r] (frozen)
//   α        options().alpha · strength() (inference strength; kept apart from the training scale s;
//            with alpha_before_gate the gate sees the code scaled by it)
// bins = N for the DCT, N/2+1 for the DFT (real and imaginary parts share A and B, see transform.h).
//
// Shapes (Linear; Conv2d has the channel axis at dim 1 and tokens = H'·W'):
//   x [B, ..., d_in] -> F -> [P·B, ..., bins_in] -> A -> z [P·B, ..., r] -> gate, c
//     -> B -> [P·B, ..., bins_out] -> F⁻¹ -> [B, ..., d_out]          (P = 1 DCT, 2 DFT)
//
// The gate (brief §2.2, our realisation of a reconstructed detail; see lora/README.md):
//   u = 𝒢(|z|) [B, T, r]; p = softmax over the T tokens of one sample, per rank channel j;
//   Ĥ_j = −Σ_n p_nj log p_nj / log T;  s_j = σ(κ (Ĥ_j − b_j));  g = s + stopgrad(round(s) − s).
// The brief leaves the entropy axis open: gate_entropy = rank takes its alternative, a per-token
// gate with the entropy over the rank axis, Ĥ_n = −Σ_j p_nj log p_nj / log r, g_nj = σ(κ(Ĥ_n − b_j)).
// |z| is the code itself for the DCT and the bin magnitude for the DFT. Variants (Table 5):
//   gate = none:     (a) the frequency transform only, g = 1;
//   gate = adaptive: (c) the input-adaptive mask above, also at inference;
//   gate = frozen:   (b) a fixed mask gate_mask [r]: train with adaptive, then freeze_gate() sets
//                    the mask from the gates seen since reset_gate_stats(); merges like LoRA.
#include <map>

#include "lora/adapter.h"
#include "lora/transform.h"

namespace ef::lora {

struct FouraOptions {
  int64_t rank = 8;                // r
  double alpha = 1.0;              // α, strength on the gated code
  double lora_alpha = 0.0;         // training scale s = lora_alpha / r; default: r (s = 1)
  bool rslora = false;             // s = lora_alpha / √r
  std::string transform = "dct";   // dct | dft
  std::string axis = "feature";    // feature (channels) | token (Linear on [B, N, C] only)
  std::string gate = "adaptive";   // none | adaptive | frozen
  bool alpha_before_gate = false;  // gate sees c·z (z' = c z; out = B(G(z') ⊙ z')) instead of z
  bool gate_hard = true;           // straight-through hard mask; false: the soft sigmoid (ablation)
  double gate_slope = 10.0;        // κ
  double gate_shift = -1.0;        // initial b_j: Ĥ ∈ [0, 1], so −1 starts every gate open
  int64_t gate_hidden = 0;         // 0: u = z W_g + b; > 0: a two-layer MLP of this width
  std::string gate_entropy = "tokens";  // tokens: one gate per sample and rank channel (softmax over
                                        // the tokens); rank: one per token and rank channel (softmax
                                        // over the rank axis, g_nj = σ(κ(Ĥ_n − b_j)))
  static FouraOptions from(const Config& c);
  double scale() const;            // c = α · s
};

class FouraImpl : public AdapterImpl {
 public:
  FouraImpl(const LayerShape& shape, const FouraOptions& options);
  torch::Tensor forward(const torch::Tensor& x) override;
  bool weight_equivalent() const override { return opt_.gate != "adaptive"; }
  bool trains_as_weight() const override { return opt_.gate != "adaptive"; }
  // Feature axis: ΔW = Σ_p F⁻¹_p B diag(c·m) A F_p (m the frozen mask or 1). Token axis: the
  // transform cancels (see the pitfall in forward), ΔW = c B diag(m) A.
  torch::Tensor delta_weight() override;
  std::string kind() const override { return "foura"; }
  nlohmann::json options_json() const override;
  const FouraOptions& options() const { return opt_; }

  // The gate of the last forward pass: the mask [B, r] (gate_entropy tokens) or [B, T, r] (rank);
  // undefined before one, or with gate none/frozen. r_eff = Σ_j g_j averaged over samples (and
  // tokens) (brief: log per layer and timestep).
  const torch::Tensor& last_gate() const { return last_gate_; }
  double effective_rank() const { return last_rank_; }
  // Variant (b): gate_mask := (mean gate since reset_gate_stats() >= 0.5), gate becomes frozen.
  // Throws std::logic_error unless gate = adaptive and at least one forward pass was seen.
  void freeze_gate();
  // Variant (b) after a resume: the gate_mask buffer came back with the checkpoint; gate becomes
  // frozen and uses it. Throws std::logic_error unless gate is adaptive or already frozen.
  void use_gate_mask();
  void reset_gate_stats();

  torch::nn::Linear lora_A_linear{nullptr}, lora_B_linear{nullptr};
  torch::nn::Conv2d lora_A_conv{nullptr}, lora_B_conv{nullptr};
  torch::nn::Linear gate_fc1{nullptr}, gate_fc2{nullptr};
  torch::Tensor gate_shift, gate_mask;
  torch::Tensor& A();  // [r, bins_in] or [r, bins_in, kh, kw]
  torch::Tensor& B();  // [bins_out, r] or [bins_out, r, 1, 1]

 private:
  SpectralTransform& token_transform(int64_t n);
  torch::Tensor gate(const torch::Tensor& z, int64_t parts);  // z [P·B, ..., r] -> mask broadcastable to z
  torch::Tensor rank_axis_view(const torch::Tensor& m, int64_t batch, int64_t ndim) const;

  FouraOptions opt_;
  TransformKind kind_;
  std::unique_ptr<SpectralTransform> transform_in_, transform_out_;  // feature axis
  std::map<int64_t, SpectralTransform> token_transforms_;            // token axis, by N
  torch::Tensor last_gate_, gate_sum_;
  int64_t gate_count_ = 0;
  double last_rank_ = 0.0;
};

}  // namespace ef::lora
