#include "models/attention/attention.h"

namespace ef {

AttentionRegistry& attention_kinds() {
  static AttentionRegistry registry("attention kind");
  return registry;
}

std::shared_ptr<TokenMixerImpl> make_attention(const AttentionShape& shape, const Config& section) {
  std::string kind = section.get<std::string>("kind", "softmax");
  return std::shared_ptr<TokenMixerImpl>(attention_kinds().create(kind, shape, section).release());
}

}  // namespace ef
