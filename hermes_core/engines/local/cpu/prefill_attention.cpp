// Causal attention of a prefill piece in bf16 on CPUs with AVX-512 BF16 (prefill_attention.py says when).
//
// torch's CPU flash kernel multiplies bf16 blocks through a generic path on CPUs without AMX: it ran
// at about 140 GFLOP/s on two cores here, while the projections around it ran near 900, so attention was
// 58% of the embedded model's prefill of the tools prompt. This kernel does the same online-softmax
// attention with the two products on the CPU's bf16 dot-product instruction (vdpbf16ps):
// scores in float from bf16 query and key, the softmax in float, its weights rounded to bf16 for the
// product with the values (as torch's kernel rounds them), the output accumulated in float.
//
// Work is cut into tasks of (batch row, key/value head, block of query positions); a task holds the
// query heads of its key/value head as rows (grouped-query attention reads each key once per group)
// and walks the visible keys in fixed chunks. The blocking depends only on the shapes, never on the
// thread count, so a row's result is the same on any number of threads and in any piece order.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#include <immintrin.h>
#define HERMES_PREFILL_BF16 1
#endif

namespace hermes_prefill {

using at::Tensor;

// Whether every row of the boolean mask (batch or 1, 1, queries, keys) lets query i see exactly the keys
// j <= keys - queries + i: causal attention of a piece after the cached keys, no padding.
bool is_causal_after_cache(const Tensor& mask) {
  if (mask.scalar_type() != at::kBool || mask.dim() != 4 || mask.size(1) != 1) return false;
  const Tensor rows = mask.contiguous();
  const int64_t batch = rows.size(0), queries = rows.size(2), keys = rows.size(3);
  if (keys < queries) return false;
  const auto* data = reinterpret_cast<const uint8_t*>(rows.data_ptr<bool>());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < queries; ++i) {
      const uint8_t* row = data + (b * queries + i) * keys;
      const int64_t visible = keys - queries + i + 1;
      uint8_t seen = 1, hidden = 0;
      for (int64_t j = 0; j < visible; ++j) seen &= row[j];
      for (int64_t j = visible; j < keys; ++j) hidden |= row[j];
      if (!seen || hidden) return false;
    }
  }
  return true;
}

#ifdef HERMES_PREFILL_BF16

constexpr int64_t kPositions = 32;  // query positions per task
constexpr int64_t kChunk = 256;     // keys per online-softmax step (a multiple of 16)

// e^x for x <= 0 (and -inf), 16 lanes: 2^n * p(r), p a degree-7 polynomial on |r| <= ln2/2.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.98412698e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.38888889e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.33333333e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.16666667e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66666667e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);  // 2^-150 and below flush to zero
}

inline __m512bh as_bh(__m512i x) { return (__m512bh)(x); }

inline __m512i broadcast_pair(const uint16_t* pair) {
  int32_t bits;
  std::memcpy(&bits, pair, sizeof(bits));
  return _mm512_set1_epi32(bits);
}

// Scores of ROWS query rows against VECTORS x 16 keys: packed keys hold, per 16 keys and pair of
// dimensions, the 16 keys' two values side by side (what vdpbf16ps multiplies a broadcast pair by).
template <int ROWS, int VECTORS>
inline void score_block(const uint16_t* query, int64_t dim, const uint16_t* packed_keys, float scale,
                        float* scores, int64_t score_stride) {
  __m512 acc[ROWS][VECTORS];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t pairs = dim / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i keys[VECTORS];
    for (int v = 0; v < VECTORS; ++v) keys[v] = _mm512_loadu_si512(packed_keys + (v * pairs + p) * 32);
    for (int r = 0; r < ROWS; ++r) {
      const __m512i q = broadcast_pair(query + r * dim + 2 * p);
      for (int v = 0; v < VECTORS; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], as_bh(q), as_bh(keys[v]));
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECTORS; ++v)
      _mm512_storeu_ps(scores + r * score_stride + v * 16, _mm512_mul_ps(acc[r][v], s));
}

// out[ROWS x 16*DV] += weights[ROWS x 2*pairs] (bf16) times packed values: per pair of keys and
// dimension, the two keys' values side by side.
// Scores of ROWS query rows against a chunk's first vectors x 16 keys, into rows kChunk floats apart.
template <int ROWS>
inline void score_rows(const uint16_t* query, int64_t dim, const uint16_t* keys, int64_t vectors, float scale,
                       float* scores) {
  int64_t v = 0;
  for (; v + 4 <= vectors; v += 4) score_block<ROWS, 4>(query, dim, keys + v * 16 * dim, scale, scores + v * 16, kChunk);
  for (; v < vectors; ++v) score_block<ROWS, 1>(query, dim, keys + v * 16 * dim, scale, scores + v * 16, kChunk);
}

template <int ROWS, int DV>
inline void value_block(const uint16_t* weights, int64_t weight_stride, const uint16_t* packed_values,
                        int64_t pairs, float* out) {
  constexpr int64_t dim = DV * 16;
  __m512 acc[ROWS][DV];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < DV; ++v) acc[r][v] = _mm512_loadu_ps(out + r * dim + v * 16);
  for (int64_t t = 0; t < pairs; ++t) {
    __m512i values[DV];
    for (int v = 0; v < DV; ++v) values[v] = _mm512_loadu_si512(packed_values + (t * dim + v * 16) * 2);
    for (int r = 0; r < ROWS; ++r) {
      const __m512i w = broadcast_pair(weights + r * weight_stride + 2 * t);
      for (int v = 0; v < DV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], as_bh(w), as_bh(values[v]));
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < DV; ++v) _mm512_storeu_ps(out + r * dim + v * 16, acc[r][v]);
}

template <int DV>
constexpr int value_rows() {
  return DV <= 4 ? 6 : 2;  // accumulators + value vectors within the 32 vector registers
}

// One task: query rows (position-major: row = position * group + head) against the visible keys: the
// first position sees first_visible keys, each next one `growth` more (1: causal, 0: all see the same).
template <int DV>
void attend_task(const uint16_t* queries, int64_t rows, int64_t group, int64_t first_visible, int64_t growth,
                 const uint16_t* packed_keys, const uint16_t* packed_values, float scale, float* scores,
                 uint16_t* weights, float* out, float* maxima, float* sums) {
  constexpr int64_t dim = DV * 16;
  std::fill(out, out + rows * dim, 0.0f);
  std::fill(maxima, maxima + rows, -std::numeric_limits<float>::infinity());
  std::fill(sums, sums + rows, 0.0f);
  const int64_t last_visible = first_visible + growth * ((rows - 1) / group);  // keys seen by the last row
  for (int64_t start = 0; start < last_visible; start += kChunk) {
    const int64_t width = std::min(kChunk, last_visible - start);
    const int64_t vectors = (width + 15) / 16;
    const uint16_t* chunk_keys = packed_keys + start * dim;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) score_rows<4>(queries + r * dim, dim, chunk_keys, vectors, scale, scores + r * kChunk);
    for (; r < rows; ++r) score_rows<1>(queries + r * dim, dim, chunk_keys, vectors, scale, scores + r * kChunk);
    const int64_t padded = vectors * 16;
    for (r = 0; r < rows; ++r) {
      float* row_scores = scores + r * kChunk;
      uint16_t* row_weights = weights + r * kChunk;
      const int64_t seen = std::min(width, first_visible + growth * (r / group) - start);  // row r's keys here
      if (seen <= 0) {
        std::memset(row_weights, 0, padded * sizeof(uint16_t));
        continue;
      }
      __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
      for (int64_t j = 0; j < seen; j += 16) {
        const __mmask16 lanes = seen - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (seen - j)) - 1);
        top = _mm512_mask_max_ps(top, lanes, top, _mm512_maskz_loadu_ps(lanes, row_scores + j));
      }
      const float previous = maxima[r];
      const float maximum = std::max(previous, _mm512_reduce_max_ps(top));
      const float rescale = previous == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(previous - maximum);
      const __m512 shift = _mm512_set1_ps(maximum);
      __m512 total = _mm512_setzero_ps();
      for (int64_t j = 0; j < padded; j += 16) {
        const int64_t left = seen - j;
        const __mmask16 lanes = left >= 16 ? 0xFFFF : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
        const __m512 shifted = _mm512_sub_ps(_mm512_loadu_ps(row_scores + j), shift);
        const __m512 e = _mm512_maskz_mov_ps(lanes, exp_nonpositive(shifted));
        total = _mm512_add_ps(total, e);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row_weights + j), (__m256i)(_mm512_cvtneps_pbh(e)));
      }
      maxima[r] = maximum;
      sums[r] = sums[r] * rescale + _mm512_reduce_add_ps(total);
      if (rescale != 1.0f) {
        const __m512 factor = _mm512_set1_ps(rescale);
        for (int64_t d = 0; d < dim; d += 16)
          _mm512_storeu_ps(out + r * dim + d, _mm512_mul_ps(_mm512_loadu_ps(out + r * dim + d), factor));
      }
    }
    const uint16_t* chunk_values = packed_values + start * dim;
    const int64_t value_pairs = padded / 2;
    constexpr int block = value_rows<DV>();
    r = 0;
    for (; r + block <= rows; r += block)
      value_block<block, DV>(weights + r * kChunk, kChunk, chunk_values, value_pairs, out + r * dim);
    for (; r < rows; ++r) value_block<1, DV>(weights + r * kChunk, kChunk, chunk_values, value_pairs, out + r * dim);
  }
}

// Keys (length, dim) with row stride -> per 16 keys and pair of dimensions, the 16 keys' pair side by
// side; values -> per pair of keys and dimension, the two keys' values side by side. Zero past the end.
void pack_keys(const uint16_t* keys, int64_t stride, int64_t length, int64_t padded, int64_t dim, uint16_t* out) {
  const int64_t pairs = dim / 2;
  for (int64_t block = 0; block < padded / 16; ++block) {
    for (int64_t p = 0; p < pairs; ++p) {
      uint16_t* slot = out + (block * pairs + p) * 32;
      for (int64_t k = 0; k < 16; ++k) {
        const int64_t key = block * 16 + k;
        slot[2 * k] = key < length ? keys[key * stride + 2 * p] : 0;
        slot[2 * k + 1] = key < length ? keys[key * stride + 2 * p + 1] : 0;
      }
    }
  }
}

void pack_values(const uint16_t* values, int64_t stride, int64_t length, int64_t padded, int64_t dim, uint16_t* out) {
  for (int64_t t = 0; t < padded / 2; ++t) {
    const int64_t even = 2 * t, odd = 2 * t + 1;
    uint16_t* slot = out + t * dim * 2;
    for (int64_t d = 0; d < dim; ++d) {
      slot[2 * d] = even < length ? values[even * stride + d] : 0;
      slot[2 * d + 1] = odd < length ? values[odd * stride + d] : 0;
    }
  }
}

// Attention of query (batch, heads, queries, dim) over keys/values (batch, kv_heads, length, dim), written
// into output viewed as (batch, queries, heads, dim) and, if defined, the log-sum-exp of each row's scores
// into lse viewed as (batch, queries, heads). Causal: query i sees keys j <= length - queries + i; else all.
template <int DV>
void attend(const Tensor& query, const Tensor& keys, const Tensor& values, double scaling, bool causal,
            const Tensor& output, const Tensor& lse) {
  constexpr int64_t dim = DV * 16;
  const int64_t batch = query.size(0), heads = query.size(1), queries = query.size(2);
  const int64_t kv_heads = keys.size(1), length = keys.size(2);
  const int64_t group = heads / kv_heads;
  const int64_t padded = (length + 15) / 16 * 16;
  // Packed keys and values of every (batch row, key/value head), packed in parallel.
  Tensor packed = at::empty({batch * kv_heads, 2, padded * dim}, keys.options());
  auto* packed_data = reinterpret_cast<uint16_t*>(packed.data_ptr<at::BFloat16>());
  const auto* key_data = reinterpret_cast<const uint16_t*>(keys.data_ptr<at::BFloat16>());
  const auto* value_data = reinterpret_cast<const uint16_t*>(values.data_ptr<at::BFloat16>());
  at::parallel_for(0, batch * kv_heads * 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (2 * kv_heads), h = (item / 2) % kv_heads;
      uint16_t* target = packed_data + item * padded * dim;
      if (item % 2 == 0) {
        pack_keys(key_data + b * keys.stride(0) + h * keys.stride(1), keys.stride(2), length, padded, dim, target);
      } else {
        pack_values(value_data + b * values.stride(0) + h * values.stride(1), values.stride(2), length, padded, dim,
                    target);
      }
    }
  });
  auto* out_data = reinterpret_cast<uint16_t*>(output.data_ptr<at::BFloat16>());
  float* lse_data = lse.defined() ? lse.data_ptr<float>() : nullptr;
  const auto* q_data = reinterpret_cast<const uint16_t*>(query.data_ptr<at::BFloat16>());
  const int64_t blocks = (queries + kPositions - 1) / kPositions;
  const int64_t tasks = blocks * batch * kv_heads;  // block-major: neighbouring tasks cost about the same
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), tasks);
  const float scale = static_cast<float>(scaling);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    const int64_t rows_most = kPositions * group;
    std::vector<uint16_t> rows_in(rows_most * dim), weights(rows_most * kChunk);
    std::vector<float> scores(rows_most * kChunk), out(rows_most * dim), maxima(rows_most), sums(rows_most);
    for (int64_t lane = begin; lane < end; ++lane) {
      for (int64_t task = lane; task < tasks; task += threads) {  // interleaved: causal cost grows by block
        const int64_t block = task / (batch * kv_heads), b = (task / kv_heads) % batch, h = task % kv_heads;
        const int64_t first = block * kPositions, count = std::min(kPositions, queries - first);
        const int64_t rows = count * group;
        for (int64_t i = 0; i < count; ++i) {
          for (int64_t g = 0; g < group; ++g) {
            const uint16_t* source = q_data + b * query.stride(0) + (h * group + g) * query.stride(1) +
                                     (first + i) * query.stride(2);
            std::memcpy(rows_in.data() + (i * group + g) * dim, source, dim * sizeof(uint16_t));
          }
        }
        const uint16_t* packed_keys = packed_data + (b * kv_heads + h) * 2 * padded * dim;
        attend_task<DV>(rows_in.data(), rows, group, causal ? length - queries + first + 1 : length,
                        causal ? 1 : 0, packed_keys, packed_keys + padded * dim, scale, scores.data(),
                        weights.data(), out.data(), maxima.data(), sums.data());
        for (int64_t i = 0; i < count; ++i) {
          for (int64_t g = 0; g < group; ++g) {
            const int64_t row = i * group + g;
            const __m512 inverse = _mm512_set1_ps(1.0f / sums[row]);
            const int64_t head = h * group + g;
            uint16_t* target = out_data + b * output.stride(0) + (first + i) * output.stride(1) + head * output.stride(2);
            if (lse_data != nullptr) {
              lse_data[b * lse.stride(0) + (first + i) * lse.stride(1) + head * lse.stride(2)] =
                  maxima[row] + std::log(sums[row]);
            }
            for (int64_t d = 0; d < dim; d += 16) {
              const __m512 value = _mm512_mul_ps(_mm512_loadu_ps(out.data() + row * dim + d), inverse);
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(target + d), (__m256i)(_mm512_cvtneps_pbh(value)));
            }
          }
        }
      }
    }
  });
}

#endif  // HERMES_PREFILL_BF16

// Whether to use the kernel: this build has it (the CPU it was built for has AVX-512 BF16) and the CPU
// has no AMX, where torch's kernel multiplies its blocks on AMX tiles (its fast path; could_pack is what
// torch's flash attention asks).
bool available() {
#ifdef HERMES_PREFILL_BF16
  return !at::native::cpublas::could_pack(at::kBFloat16);
#else
  return false;
#endif
}

namespace {

void check_inputs(const Tensor& query, const Tensor& keys, const Tensor& values) {
  TORCH_CHECK(available(), "the compiled attention needs a CPU with AVX-512 BF16");
  TORCH_CHECK(query.scalar_type() == at::kBFloat16 && keys.scalar_type() == at::kBFloat16 &&
                  values.scalar_type() == at::kBFloat16, "bf16 query, keys and values");
  TORCH_CHECK(query.dim() == 4 && keys.dim() == 4 && values.dim() == 4, "4-d query, keys and values");
  TORCH_CHECK(query.stride(3) == 1 && keys.stride(3) == 1 && values.stride(3) == 1, "unit last strides");
  TORCH_CHECK(keys.sizes() == values.sizes() && keys.size(0) == query.size(0) && keys.size(3) == query.size(3),
              "keys and values matching the query");
  TORCH_CHECK(query.size(1) % keys.size(1) == 0, "query heads a multiple of key/value heads");
  TORCH_CHECK(keys.size(2) >= 1, "at least one key");
  TORCH_CHECK(query.size(3) == 64 || query.size(3) == 128, "head dimensions 64 and 128 only");
}

void run(const Tensor& query, const Tensor& keys, const Tensor& values, double scaling, bool causal,
         const Tensor& output, const Tensor& lse) {
#ifdef HERMES_PREFILL_BF16
  if (query.size(3) == 64) {
    attend<4>(query, keys, values, scaling, causal, output, lse);
  } else {
    attend<8>(query, keys, values, scaling, causal, output, lse);
  }
#endif
}

}  // namespace

// Causal attention of query (batch, heads, queries, dim) over keys and values (batch, kv_heads, length,
// dim), bf16, unit last stride, head size 64 or 128; query i sits at position length - queries + i.
// Returns (batch, queries, heads, dim) bf16, the layout transformers' attention functions return.
Tensor prefill_attention(const Tensor& query, const Tensor& keys, const Tensor& values, double scaling) {
  check_inputs(query, keys, values);
  TORCH_CHECK(keys.size(2) >= query.size(2), "at least as many keys as queries");
  Tensor output = at::empty({query.size(0), query.size(2), query.size(1), query.size(3)}, query.options());
  run(query, keys, values, scaling, true, output, Tensor());
  return output;
}

// Attention as prefill_attention takes it, causal or of every query over all the keys, returning the
// output (batch, heads, queries, dim) bf16 and each row's log-sum-exp of its scaled scores (batch, heads,
// queries) in float: what the shared-prefix attention merges partial results by (shared_prefix.py).
std::tuple<Tensor, Tensor> attention_with_lse(const Tensor& query, const Tensor& keys, const Tensor& values,
                                              double scaling, bool causal) {
  check_inputs(query, keys, values);
  TORCH_CHECK(!causal || keys.size(2) >= query.size(2), "at least as many keys as queries");
  Tensor output = at::empty(query.sizes(), query.options());
  Tensor lse = at::empty({query.size(0), query.size(1), query.size(2)}, query.options().dtype(at::kFloat));
  run(query, keys, values, scaling, causal, output.transpose(1, 2), lse.transpose(1, 2));
  return {output, lse};
}

}  // namespace hermes_prefill
