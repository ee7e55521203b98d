// One decode step of int4 Llama decoder layers for one row, as one call: the ATen operations of the
// Python lean step (lean_decode.py, int4_linear.py), in the same order, with this file's own attention
// (decode_attention) in place of torch's. What this saves is the Python between the operations. Also the
// int4 unpacking for prefill (dequantize_int4). Built and loaded by native_step.py; see there for when.
// The module also carries prefill_attention.cpp's kernel, bound at the end of this file.

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// Int4Group.run_joined for one row: torch's int4 matmul over the packed codes, plus the bias.
struct Int4Projection {
  Tensor packed;
  Tensor scales_and_zeros;
  std::optional<Tensor> bias;
  int64_t in_features;
  int64_t out_features;
  int64_t group_size;

  Tensor run(const Tensor& x) const {
    Tensor rows = x.reshape({-1, in_features});
    Tensor out = at::_weight_int4pack_mm_for_cpu(rows.contiguous(), packed, group_size, scales_and_zeros);
    if (bias.has_value()) {
      out.add_(*bias);
    }
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out_features;
    return out.view(shape);
  }
};

// exp(x) for x <= 0 (softmax after subtracting the maximum), in plain arithmetic the compiler vectorizes:
// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial to r^7 (relative error under 2e-7),
// and 2^n put into the exponent bits. Below -87 the result is 0, as expf's is to float precision.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = __builtin_roundf(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float bf16_to_float(uint16_t raw) {
  const uint32_t bits = static_cast<uint32_t>(raw) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// One-token attention for query heads folded into the rows of their key/value head: query
// (1, kv_heads, group, dim) bf16, keys and values (1, kv_heads, length, dim) bf16 with unit last stride.
// The keys are cut into blocks; each block yields, per query row, its score maximum, the sum of the
// exponentials and the exponential-weighted sum of values, and the blocks are merged at the end (the
// usual split-softmax). Every block is one task of torch's thread pool, so a long cache is read by
// all threads; torch's flash kernel splits only by head here (3 tasks for the embedded model).
// Computed in float; rounded differently from scaled_dot_product_attention, not less accurately.
Tensor decode_attention(const Tensor& query, const Tensor& keys, const Tensor& values, double scaling) {
  TORCH_CHECK(query.scalar_type() == at::kBFloat16 && keys.scalar_type() == at::kBFloat16 &&
                  values.scalar_type() == at::kBFloat16, "bf16 query, keys and values");
  TORCH_CHECK(keys.stride(3) == 1 && values.stride(3) == 1, "keys and values with unit last stride");
  const Tensor q = query.contiguous();
  const int64_t heads = keys.size(1), length = keys.size(2), dim = keys.size(3), group = q.size(2);
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (length + kBlock - 1) / kBlock;
  const int64_t row = dim + 2;  // per block and query row: maximum, sum, then dim weighted values
  Tensor partial = at::empty({heads, blocks, group, row}, q.options().dtype(at::kFloat));
  float* parts = partial.data_ptr<float>();
  const auto* q_data = reinterpret_cast<const uint16_t*>(q.data_ptr<at::BFloat16>());
  const auto* k_data = reinterpret_cast<const uint16_t*>(keys.data_ptr<at::BFloat16>());
  const auto* v_data = reinterpret_cast<const uint16_t*>(values.data_ptr<at::BFloat16>());
  const int64_t k_head = keys.stride(1), k_row = keys.stride(2);
  const int64_t v_head = values.stride(1), v_row = values.stride(2);
  const float scale = static_cast<float>(scaling);
  at::parallel_for(0, heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q_float(group * dim), scores(group * kBlock), converted(kBlock * dim);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t head = item / blocks, block = item % blocks;
      const int64_t first = block * kBlock, count = std::min(kBlock, length - first);
      for (int64_t i = 0; i < group * dim; ++i) {
        q_float[i] = bf16_to_float(q_data[head * group * dim + i]) * scale;
      }
      for (int64_t j = 0; j < count; ++j) {
        const uint16_t* key = k_data + head * k_head + (first + j) * k_row;
        float* out = converted.data() + j * dim;
        for (int64_t d = 0; d < dim; ++d) out[d] = bf16_to_float(key[d]);
      }
      for (int64_t g = 0; g < group; ++g) {
        const float* qg = q_float.data() + g * dim;
        float* sg = scores.data() + g * kBlock;
        for (int64_t j = 0; j < count; ++j) {
          const float* key = converted.data() + j * dim;
          float dot = 0.0f;
          for (int64_t d = 0; d < dim; ++d) dot += qg[d] * key[d];
          sg[j] = dot;
        }
        float maximum = sg[0];
        for (int64_t j = 1; j < count; ++j) maximum = std::max(maximum, sg[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < count; ++j) {
          sg[j] = exp_nonpositive(sg[j] - maximum);
          sum += sg[j];
        }
        float* slot = parts + ((head * blocks + block) * group + g) * row;
        slot[0] = maximum;
        slot[1] = sum;
        std::fill(slot + 2, slot + row, 0.0f);
      }
      for (int64_t j = 0; j < count; ++j) {
        const uint16_t* value = v_data + head * v_head + (first + j) * v_row;
        float* out = converted.data() + j * dim;
        for (int64_t d = 0; d < dim; ++d) out[d] = bf16_to_float(value[d]);
      }
      for (int64_t g = 0; g < group; ++g) {
        float* acc = parts + ((head * blocks + block) * group + g) * row + 2;
        const float* sg = scores.data() + g * kBlock;
        for (int64_t j = 0; j < count; ++j) {
          const float weight = sg[j];
          const float* value = converted.data() + j * dim;
          for (int64_t d = 0; d < dim; ++d) acc[d] += weight * value[d];
        }
      }
    }
  });
  Tensor output = at::empty({1, heads, group, dim}, q.options().dtype(at::kFloat));
  float* out = output.data_ptr<float>();
  for (int64_t head = 0; head < heads; ++head) {
    for (int64_t g = 0; g < group; ++g) {
      float maximum = -std::numeric_limits<float>::infinity();
      for (int64_t block = 0; block < blocks; ++block) {
        maximum = std::max(maximum, parts[((head * blocks + block) * group + g) * row]);
      }
      float* o = out + (head * group + g) * dim;
      std::fill(o, o + dim, 0.0f);
      float denominator = 0.0f;
      for (int64_t block = 0; block < blocks; ++block) {
        const float* slot = parts + ((head * blocks + block) * group + g) * row;
        const float factor = exp_nonpositive(slot[0] - maximum);
        denominator += factor * slot[1];
        for (int64_t d = 0; d < dim; ++d) o[d] += factor * slot[2 + d];
      }
      for (int64_t d = 0; d < dim; ++d) o[d] /= denominator;
    }
  }
  return output.to(at::kBFloat16);
}

// The bf16 weight (rows, columns) that torch's packed int4 codes stand for, (code - 8) * scale + zero per
// group, in one pass (int4_linear.Int4Group.dense_weight does it in several tensor operations). The
// packing is the one int4_linear._unpack reads: block b of 64 output rows holds, per input column, 32
// bytes; row 64b + j is the low nibble of byte j, row 64b + 32 + j the high nibble.
Tensor dequantize_int4(const Tensor& packed, const Tensor& scales_and_zeros, int64_t rows, int64_t columns,
                       int64_t group_size) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && rows % 64 == 0 &&
                  packed.numel() == rows * columns / 2, "packed int4 codes in torch's CPU layout");
  TORCH_CHECK(scales_and_zeros.scalar_type() == at::kBFloat16 && scales_and_zeros.is_contiguous() &&
                  scales_and_zeros.size(0) == columns / group_size && scales_and_zeros.size(1) == rows,
              "bf16 scales and zeros (columns / group, rows, 2)");
  TORCH_CHECK(group_size == 32, "groups of 32 inputs");
  Tensor weight = at::empty({rows, columns}, scales_and_zeros.options());
  const uint8_t* codes = packed.data_ptr<uint8_t>();
  const auto* factors = reinterpret_cast<const uint16_t*>(scales_and_zeros.data_ptr<at::BFloat16>());
  auto* out = reinterpret_cast<uint16_t*>(weight.data_ptr<at::BFloat16>());
  const int64_t groups = columns / 32;
  // One task per block of 64 rows and group of 32 columns: a 64 x 32 tile whose rows share nothing but
  // their group's scale and zero; computed lane by lane (vectorized), then written row by row.
  at::parallel_for(0, (rows / 64) * groups, 1, [&](int64_t begin, int64_t end) {
    float scale[64], zero[64];
    uint16_t tile[32][64];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t block = item / groups, group = item % groups;
      const uint16_t* pairs = factors + (group * rows + block * 64) * 2;
      for (int lane = 0; lane < 64; ++lane) {
        scale[lane] = bf16_to_float(pairs[2 * lane]);
        zero[lane] = bf16_to_float(pairs[2 * lane + 1]);
      }
      for (int column = 0; column < 32; ++column) {
        const uint8_t* bytes = codes + (block * columns + group * 32 + column) * 32;
        for (int lane = 0; lane < 64; ++lane) {
          const int nibble = lane < 32 ? (bytes[lane] & 15) : (bytes[lane - 32] >> 4);
          const float value = static_cast<float>(nibble - 8) * scale[lane] + zero[lane];
          uint32_t bits;
          std::memcpy(&bits, &value, sizeof(bits));
          bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even, as float -> bf16 does
          tile[column][lane] = static_cast<uint16_t>(bits >> 16);
        }
      }
      for (int lane = 0; lane < 64; ++lane) {
        uint16_t* target = out + (block * 64 + lane) * columns + group * 32;
        for (int column = 0; column < 32; ++column) target[column] = tile[column][lane];
      }
    }
  });
  return weight;
}

// lean_decode._rms_norm: LlamaRMSNorm.forward, operation for operation.
Tensor rms_norm(const Tensor& hidden, const Tensor& weight, double eps) {
  const auto dtype = hidden.scalar_type();
  Tensor states = hidden.to(at::kFloat);
  Tensor variance = states.pow(2).mean({-1}, /*keepdim=*/true);
  states = states * variance.add_(eps).rsqrt_();
  return weight * states.to(dtype);
}

struct Layer {
  Tensor input_norm;
  double input_eps;
  Tensor post_norm;
  double post_eps;
  Int4Projection qkv;
  Int4Projection o;
  Int4Projection gate_up;
  Int4Projection down;
  int64_t q_heads;
  int64_t k_heads;
  int64_t gate_size;
};

Int4Projection projection(const Tensor& packed, const Tensor& scales_and_zeros, std::optional<Tensor> bias,
                          int64_t in_features, int64_t out_features, int64_t group_size) {
  return Int4Projection{packed, scales_and_zeros, std::move(bias), in_features, out_features, group_size};
}

class Int4LlamaLayers {
 public:
  Int4LlamaLayers(int64_t head_dim, int64_t kv_heads, double scaling)
      : head_dim_(head_dim), kv_heads_(kv_heads), scaling_(scaling) {}

  // One layer's weights, as the Python groups hold them (packed codes, bf16 scales and zeros, bias).
  void add_layer(const Tensor& input_norm, double input_eps, const Tensor& post_norm, double post_eps,
                 const Tensor& qkv_packed, const Tensor& qkv_scales, std::optional<Tensor> qkv_bias,
                 int64_t q_size, int64_t k_size, int64_t v_size, const Tensor& o_packed,
                 const Tensor& o_scales, std::optional<Tensor> o_bias, int64_t o_in, const Tensor& gate_up_packed,
                 const Tensor& gate_up_scales, int64_t gate_size, int64_t up_size, const Tensor& down_packed,
                 const Tensor& down_scales, int64_t down_in, int64_t hidden_size, int64_t group_size) {
    Layer layer{
        input_norm,
        input_eps,
        post_norm,
        post_eps,
        projection(qkv_packed, qkv_scales, std::move(qkv_bias), hidden_size, q_size + k_size + v_size, group_size),
        projection(o_packed, o_scales, std::move(o_bias), o_in, hidden_size, group_size),
        projection(gate_up_packed, gate_up_scales, std::nullopt, hidden_size, gate_size + up_size, group_size),
        projection(down_packed, down_scales, std::nullopt, down_in, hidden_size, group_size),
        q_size / head_dim_,
        k_size / head_dim_,
        gate_size,
    };
    layers_.push_back(std::move(layer));
  }

  // Every layer for ``hidden`` (batch 1, one token) after ``length`` cached tokens. Each layer's new key
  // and value are written at position ``length`` of its buffers (with room for them: GrowingLayer.reserve)
  // and attention reads the buffers' first ``length + 1`` positions, as GrowingLayer.update hands them
  // out. Returns the hidden state and those views of the buffers.
  std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> forward(
      Tensor hidden, const Tensor& cos, const Tensor& signed_sin, const std::vector<Tensor>& key_buffers,
      const std::vector<Tensor>& value_buffers, int64_t length) const {
    TORCH_CHECK(key_buffers.size() == layers_.size() && value_buffers.size() == layers_.size(),
                "one key and one value buffer per layer");
    const int64_t end = length + 1;
    std::vector<Tensor> new_keys;
    std::vector<Tensor> new_values;
    new_keys.reserve(layers_.size());
    new_values.reserve(layers_.size());
    for (size_t index = 0; index < layers_.size(); ++index) {
      const Layer& layer = layers_[index];
      // Attention half (LeanDecodeLayer.forward, _rotated_qkv, folded_attention).
      Tensor residual = hidden;
      Tensor states = rms_norm(hidden, layer.input_norm, layer.input_eps);
      std::vector<int64_t> heads_shape = states.sizes().vec();
      heads_shape.back() = -1;
      heads_shape.push_back(head_dim_);
      Tensor heads = layer.qkv.run(states).view(heads_shape).transpose(1, 2);
      const int64_t rotated_heads = layer.q_heads + layer.k_heads;
      Tensor to_rotate = heads.slice(1, 0, rotated_heads);
      Tensor rotated = (to_rotate * cos) + (to_rotate.roll({head_dim_ / 2}, {-1}) * signed_sin);
      Tensor query = rotated.slice(1, 0, layer.q_heads);
      Tensor key = rotated.slice(1, layer.q_heads);
      Tensor value = heads.slice(1, rotated_heads);
      TORCH_CHECK(key_buffers[index].size(-2) >= end && value_buffers[index].size(-2) >= end,
                  "a KV buffer has no room for the new token");
      key_buffers[index].slice(-2, length, end).copy_(key);
      value_buffers[index].slice(-2, length, end).copy_(value);
      Tensor all_keys = key_buffers[index].slice(-2, 0, end);
      Tensor all_values = value_buffers[index].slice(-2, 0, end);
      const int64_t batch = query.size(0);
      const int64_t query_heads = query.size(1);
      Tensor folded = query.reshape({batch, kv_heads_, query_heads / kv_heads_, head_dim_});
      Tensor attended = decode_attention(folded, all_keys, all_values, scaling_);
      attended = attended.reshape({batch, 1, query_heads, all_values.size(-1)});
      std::vector<int64_t> flat_shape = residual.sizes().vec();
      flat_shape.back() = -1;
      attended = attended.reshape(flat_shape).contiguous();
      hidden = residual + layer.o.run(attended);
      // MLP half.
      residual = hidden;
      states = rms_norm(hidden, layer.post_norm, layer.post_eps);
      Tensor joined = layer.gate_up.run(states);
      std::vector<Tensor> parts =
          joined.split_with_sizes({layer.gate_size, joined.size(-1) - layer.gate_size}, -1);
      hidden = residual + layer.down.run(at::silu(parts[0]) * parts[1]);
      new_keys.push_back(std::move(all_keys));
      new_values.push_back(std::move(all_values));
    }
    return {hidden, new_keys, new_values};
  }

  size_t size() const { return layers_.size(); }

 private:
  int64_t head_dim_;
  int64_t kv_heads_;
  double scaling_;
  std::vector<Layer> layers_;
};

}  // namespace

namespace hermes_prefill {  // prefill_attention.cpp
bool available();
bool is_causal_after_cache(const at::Tensor& mask);
at::Tensor prefill_attention(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                             double scaling);
std::tuple<at::Tensor, at::Tensor> attention_with_lse(const at::Tensor& query, const at::Tensor& keys,
                                                      const at::Tensor& values, double scaling, bool causal);
}  // namespace hermes_prefill

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  pybind11::class_<Int4LlamaLayers>(module, "Int4LlamaLayers")
      .def(pybind11::init<int64_t, int64_t, double>())
      .def("add_layer", &Int4LlamaLayers::add_layer)
      .def("forward", &Int4LlamaLayers::forward, pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("__len__", &Int4LlamaLayers::size);
  module.def("decode_attention", &decode_attention, pybind11::call_guard<pybind11::gil_scoped_release>());
  module.def("dequantize_int4", &dequantize_int4, pybind11::call_guard<pybind11::gil_scoped_release>());
  module.def("prefill_attention_available", &hermes_prefill::available);
  module.def("is_causal_after_cache", &hermes_prefill::is_causal_after_cache,
             pybind11::call_guard<pybind11::gil_scoped_release>());
  module.def("prefill_attention", &hermes_prefill::prefill_attention,
             pybind11::call_guard<pybind11::gil_scoped_release>());
  module.def("attention_with_lse", &hermes_prefill::attention_with_lse,
             pybind11::call_guard<pybind11::gil_scoped_release>());
}
