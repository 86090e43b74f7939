#include "gmsa/io/llama2c.h"

#include <cstring>
#include <fstream>

#include "gmsa/util/error.h"
#include "gmsa/util/io.h"

namespace gmsa {
namespace {

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

int64_t expected_floats(const Header& h) {
  const int64_t dim = h.dim, hid = h.hidden_dim, L = h.n_layers, V = std::abs(h.vocab_size);
  const int64_t head = dim / h.n_heads, kv = h.n_kv_heads * head;
  int64_t n = V * dim + L * dim                        // embeddings, rms_att
              + L * dim * dim + 2 * L * kv * dim       // wq, wk, wv
              + L * dim * dim + L * dim                // wo, rms_ffn
              + 3 * L * hid * dim + dim                // w1, w2, w3, rms_final
              + 2 * static_cast<int64_t>(h.seq_len) * head / 2;  // freq_cis real/imag
  if (h.vocab_size < 0) n += V * dim;  // untied classifier
  return n;
}

bool header_sane(const Header& h) {
  return h.dim > 0 && h.hidden_dim > 0 && h.n_layers > 0 && h.n_heads > 0 && h.n_kv_heads > 0 &&
         h.vocab_size != 0 && h.seq_len > 0 && h.dim % h.n_heads == 0 &&
         h.n_heads % h.n_kv_heads == 0 && (h.dim / h.n_heads) % 2 == 0;
}

// llama2.c stores each head's q/k rows as interleaved (re, im) pairs; transformers rotates
// halves. Same permutation as HF's convert_llama_weights_to_hf.
torch::Tensor permute_rope_rows(const torch::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

bool looks_like_llama2c(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return false;
  const int64_t size = f.tellg();
  Header h{};
  if (size < static_cast<int64_t>(sizeof h)) return false;
  f.seekg(0);
  f.read(reinterpret_cast<char*>(&h), sizeof h);
  return header_sane(h) && size == static_cast<int64_t>(sizeof h) + 4 * expected_floats(h);
}

Llama2cCheckpoint read_llama2c(const std::string& path) {
  std::string bytes = read_file(path);
  Header h{};
  if (bytes.size() < sizeof h) fail("{}: too short for a llama2.c header ({} bytes)", path, bytes.size());
  std::memcpy(&h, bytes.data(), sizeof h);
  if (!header_sane(h))
    fail("{}: not a llama2.c v0 checkpoint (header dim={} hidden={} layers={} heads={} kv_heads={} vocab={} seq={})",
         path, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
  const int64_t want = static_cast<int64_t>(sizeof h) + 4 * expected_floats(h);
  if (static_cast<int64_t>(bytes.size()) != want)
    fail("{}: size {} bytes does not match its header (expected {} bytes)", path, bytes.size(), want);

  Llama2cCheckpoint ck;
  auto& c = ck.config;
  c.model_type = "llama";
  c.vocab_size = std::abs(h.vocab_size);
  c.hidden_size = h.dim;
  c.intermediate_size = h.hidden_dim;
  c.num_hidden_layers = h.n_layers;
  c.num_attention_heads = h.n_heads;
  c.num_key_value_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.max_position_embeddings = h.seq_len;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = h.vocab_size > 0;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.validate(path);

  const float* p = reinterpret_cast<const float*>(bytes.data() + sizeof h);
  auto take = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    auto t = torch::from_blob(const_cast<float*>(p), shape, torch::kFloat).clone();
    p += n;
    return t;
  };
  const int64_t L = h.n_layers, D = h.dim, F = h.hidden_dim, KV = c.kv_dim();
  auto emb = take({c.vocab_size, D});
  auto rms_att = take({L, D});
  auto wq = take({L, D, D}), wk = take({L, KV, D}), wv = take({L, KV, D}), wo = take({L, D, D});
  auto rms_ffn = take({L, D});
  auto w1 = take({L, F, D}), w2 = take({L, D, F}), w3 = take({L, F, D});
  auto rms_final = take({D});
  p += static_cast<int64_t>(h.seq_len) * c.head_dim;  // freq_cis tables: derived, skipped
  auto& t = ck.tensors;
  t.emplace_back("model.embed_tokens.weight", emb);
  for (int64_t i = 0; i < L; ++i) {
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    t.emplace_back(pre + "input_layernorm.weight", rms_att[i]);
    t.emplace_back(pre + "self_attn.q_proj.weight", permute_rope_rows(wq[i], h.n_heads));
    t.emplace_back(pre + "self_attn.k_proj.weight", permute_rope_rows(wk[i], h.n_kv_heads));
    t.emplace_back(pre + "self_attn.v_proj.weight", wv[i]);
    t.emplace_back(pre + "self_attn.o_proj.weight", wo[i]);
    t.emplace_back(pre + "post_attention_layernorm.weight", rms_ffn[i]);
    t.emplace_back(pre + "mlp.gate_proj.weight", w1[i]);
    t.emplace_back(pre + "mlp.down_proj.weight", w2[i]);
    t.emplace_back(pre + "mlp.up_proj.weight", w3[i]);
  }
  t.emplace_back("model.norm.weight", rms_final);
  if (h.vocab_size < 0) t.emplace_back("lm_head.weight", take({c.vocab_size, D}));
  return ck;
}

}  // namespace gmsa
