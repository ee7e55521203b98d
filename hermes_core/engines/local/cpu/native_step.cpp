// One decode step of int4 Llama decoder layers for one row, as one call: the ATen operations of the
// Python lean step (lean_decode.py, int4_linear.py, folded_attention.py), in the same order, so the
// results are the same bit for bit. What this saves is the Python between the operations.
// Built on first use by native_step.py; see there for when it is used.

#include <torch/extension.h>

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
      Tensor attended = at::scaled_dot_product_attention(folded, all_keys, all_values, std::nullopt, 0.0,
                                                         false, scaling_);
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  pybind11::class_<Int4LlamaLayers>(module, "Int4LlamaLayers")
      .def(pybind11::init<int64_t, int64_t, double>())
      .def("add_layer", &Int4LlamaLayers::add_layer)
      .def("forward", &Int4LlamaLayers::forward, pybind11::call_guard<pybind11::gil_scoped_release>())
      .def("__len__", &Int4LlamaLayers::size);
}
