#pragma once
// The frequency transforms of FouRA (brief §2.1), along one axis of a real tensor, both normalised
// ("ortho"), so that the transform is an isometry and the adapter's effective strength does not
// scale with the axis length (brief §6).
//
//   dct: orthonormal DCT-II, C[k, n] = s_k cos(π(2n+1)k / (2N)), s_0 = √(1/N), s_k = √(2/N);
//        F(x) = x Cᵀ, F⁻¹(u) = u C (C is orthogonal). LibTorch has no DCT; a matmul with the N×N
//        matrix, computed once per size, device and dtype for the whole process and shared by the
//        layers (1280² floats ≈ 6.5 MB), is simplest and fast at adapter widths.
//   dft: rfft(x, norm="ortho") -> N/2+1 complex bins; F⁻¹ = irfft(n=N, norm="ortho"). Never a full
//        complex FFT followed by "take the real part": that is not invertible with real A and B.
//
// A spectrum is held as a *real* tensor so that real layers (Linear, Conv2d) act on it directly:
// for the DFT, the real and imaginary parts are concatenated along dim 0 (the batch), so a real
// linear map applied to it acts on both parts alike, i.e. is the complex-linear map with a real
// matrix. from_spectrum undoes that layout.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace ef::lora {

enum class TransformKind { dct, dft };
TransformKind parse_transform(const std::string& name);  // std::invalid_argument for others
std::string to_string(TransformKind kind);

// Orthonormal DCT-II matrix [n, n] in float64.
torch::Tensor dct_matrix(int64_t n);

class SpectralTransform {
 public:
  SpectralTransform(TransformKind kind, int64_t n);
  TransformKind kind() const { return kind_; }
  int64_t size() const { return n_; }        // N, along the transformed axis
  int64_t bins() const;                      // N (dct) or N/2+1 (dft)
  int64_t parts() const { return kind_ == TransformKind::dft ? 2 : 1; }

  // x [..., N at dim, ...] -> spectrum [parts*B, ..., bins at dim, ...] (real).
  torch::Tensor forward(const torch::Tensor& x, int64_t dim);
  // spectrum [parts*B, ..., bins at dim, ...] -> x [B, ..., N at dim, ...]. For the DFT the
  // imaginary parts of the DC (and, N even, Nyquist) bins are ignored, as irfft does.
  torch::Tensor inverse(const torch::Tensor& u, int64_t dim);

  // The real-linear maps as matrices, one per part, on `like`'s device and dtype, for merging:
  //   forward part p: [bins, N]  (spectrum part p = M_p x)
  //   inverse part p: [N, bins]  (x = Σ_p M'_p u_p)
  // Computed in float64 once per process for each size, device and dtype (shared by every layer).
  std::vector<torch::Tensor> forward_matrices(const torch::TensorOptions& like = torch::kFloat64) const;
  std::vector<torch::Tensor> inverse_matrices(const torch::TensorOptions& like = torch::kFloat64) const;

 private:
  static std::vector<torch::Tensor> make_forward_matrices(TransformKind kind, int64_t n);
  static std::vector<torch::Tensor> make_inverse_matrices(TransformKind kind, int64_t n);
  const torch::Tensor& matrix_like(const torch::Tensor& x) const;  // the DCT matrix on x's device and dtype
  TransformKind kind_;
  int64_t n_;
};

}  // namespace ef::lora
