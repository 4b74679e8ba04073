#pragma once
// A byte-level tokenizer that needs no vocabulary file: token = UTF-8 byte value (1..255), plus
// BOS = 256 and EOS = 257; PAD = 0 (a byte that never occurs in text). Sequences are
// [BOS, bytes..., EOS, PAD...] of a fixed length, as CLIP's are (77 there); text longer than
// max_length - 2 bytes is cut, as CLIP cuts. Generated datasets store texts as zero-padded byte
// arrays, which encode_bytes turns into the same ids without a round trip through strings.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace ef {

class ByteTokenizer {
 public:
  static constexpr int64_t kPad = 0, kBos = 256, kEos = 257, kVocabSize = 258;

  explicit ByteTokenizer(int64_t max_length = 66);
  int64_t max_length() const { return max_length_; }

  torch::Tensor encode(const std::string& text) const;                  // [max_length] int64
  torch::Tensor encode(const std::vector<std::string>& texts) const;    // [B, max_length] int64
  torch::Tensor encode_bytes(const torch::Tensor& bytes) const;         // uint8 [B, N], zero-padded -> [B, max_length]
  std::string decode(const torch::Tensor& ids) const;                   // [max_length]: the bytes between BOS and EOS

 private:
  int64_t max_length_;
};

}  // namespace ef
