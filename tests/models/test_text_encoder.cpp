#include <catch2/catch.hpp>

#include "core/safetensors.h"
#include "models/text/text_encoder.h"

using namespace ef;

TEST_CASE("byte tokenizer encodes without a vocabulary and round-trips", "[text]") {
  ByteTokenizer tok(12);
  torch::Tensor ids = tok.encode("red dot");
  REQUIRE(ids.size(0) == 12);
  REQUIRE(ids[0].item<int64_t>() == ByteTokenizer::kBos);
  REQUIRE(ids[1].item<int64_t>() == 'r');
  REQUIRE(ids[8].item<int64_t>() == ByteTokenizer::kEos);
  REQUIRE(ids[9].item<int64_t>() == ByteTokenizer::kPad);
  REQUIRE(tok.decode(ids) == "red dot");
  REQUIRE(tok.decode(tok.encode("a much longer sentence")) == "a much lon");  // cut to max_length - 2 bytes
  REQUIRE(tok.decode(tok.encode("")).empty());
  // zero-padded byte arrays (how datasets store text) give the same ids
  torch::Tensor bytes = torch::zeros({1, 16}, torch::kUInt8);
  std::string s = "red dot";
  for (size_t i = 0; i < s.size(); ++i) bytes[0][static_cast<int64_t>(i)] = static_cast<uint8_t>(s[i]);
  REQUIRE(torch::equal(tok.encode_bytes(bytes)[0], ids));
}

TEST_CASE("text encoder has CLIP's names and is causal", "[text]") {
  torch::manual_seed(0);
  TextEncoderOptions o;
  o.max_length = 16;
  o.dim = 32;
  o.heads = 4;
  o.mlp_dim = 64;
  o.layers = 2;
  TextEncoder enc(o);
  TensorMap state = module_state(*enc);
  for (const char* key : {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
                          "text_model.encoder.layers.1.self_attn.q_proj.weight", "text_model.encoder.layers.0.self_attn.out_proj.bias",
                          "text_model.encoder.layers.0.mlp.fc1.weight", "text_model.encoder.layers.0.layer_norm2.weight",
                          "text_model.final_layer_norm.bias"})
    REQUIRE(state.count(key) == 1);
  REQUIRE(state.at("text_model.embeddings.token_embedding.weight").sizes() == torch::IntArrayRef({ByteTokenizer::kVocabSize, 32}));

  torch::NoGradGuard no_grad;
  torch::Tensor a = enc->encode({"blue square"}), b = enc->encode({"blue circle"});
  REQUIRE(a.sizes() == torch::IntArrayRef({1, 16, 32}));
  // tokens 0..5 ("<bos>blue ") are shared: causal attention keeps their outputs identical
  REQUIRE(torch::allclose(a.narrow(1, 0, 6), b.narrow(1, 0, 6), 1e-6, 1e-6));
  REQUIRE(!torch::allclose(a.narrow(1, 6, 1), b.narrow(1, 6, 1), 1e-4, 1e-4));
}
