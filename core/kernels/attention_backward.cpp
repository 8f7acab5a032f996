// The backward pass of CPU attention in bf16, for lorabooth's training on CPUs with bf16 dot
// products (AMX, AVX512-BF16).
//
// ATen's flash-attention backward on a CPU runs five small cpublas::gemm calls per 256 x 512
// block and accumulates the gradients in bf16: on a 2-core Sapphire Rapids it takes 4-5x its
// forward, a third of a whole training step of the mid-size bench model. This one uses
// oneDNN's batch-reduce GEMM micro-kernel (at::native::cpublas::brgemm, the one ATen's own
// fp16 forward and int8 attention use, AMX where the CPU has it) in an order that gives every
// GEMM a long M: per block of 64 queries and all keys,
//   S^T = K Q^T, dP^T = V dO^T                 (M = keys)
//   P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - rowsum(dO * O)) scale   (float32, once)
//   dV += P^T dO, dK += dS^T Q                 (M = keys, float32 accumulators)
//   dQ^T = K^T dS^T                            (K = keys)
// B operands go through oneDNN's VNNI packing, at most 64 columns a pack, which is why the
// query block is 64. Gradients accumulate in float32 and are rounded once.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <cmath>
#include <vector>

using at::BFloat16;
namespace cpublas = at::native::cpublas;
using Vec = at::vec::Vectorized<float>;
using BVec = at::vec::Vectorized<BFloat16>;

constexpr int64_t QB = 64;  // queries a block: oneDNN packs B at most 64 columns wide

// oneDNN packs B at most 64 columns at a time, into rows 16, 32, 48 or 64 wide.
static int64_t packed_ld(int64_t columns) { return (columns + 15) / 16 * 16; }

// B (K x N, row stride ld) packed for brgemm, QB columns a pack, one after another (a pack of
// QB columns starts K * QB elements after the one before).
static void pack_columns(int64_t K, int64_t N, int64_t ld, const BFloat16* src, BFloat16* dst) {
  for (int64_t n0 = 0; n0 < N; n0 += QB) {
    const int64_t nb = std::min(QB, N - n0);
    cpublas::pack(K, nb, ld, packed_ld(nb), at::kBFloat16, at::kBFloat16, src + n0,
                  dst + K * n0);
  }
}

// Elements pack_columns writes for K x N.
static int64_t packed_size(int64_t K, int64_t N) {
  return K * (N / QB * QB + (N % QB ? packed_ld(N % QB) : 0));
}

// C (M x N, row stride ldc) (+)= A (M x K, row stride lda) times rows row0 .. row0 + K of a B
// of `rows` rows packed by pack_columns (row0 even).
static void gemm_packed(int64_t M, int64_t N, int64_t K, const BFloat16* A, int64_t lda,
                        const BFloat16* packed, int64_t rows, int64_t row0, float* C,
                        int64_t ldc, bool add) {
  for (int64_t n0 = 0; n0 < N; n0 += QB) {
    const int64_t nb = std::min(QB, N - n0), ld = packed_ld(nb);
    cpublas::brgemm(M, nb, K, lda, ld, ldc, add, A, packed + rows * n0 + row0 * ld, C + n0);
  }
}

// P^T and dS^T of one block, in bf16, rows QB wide with zeros past the block's queries.
static void softmax_grad_block(const float* st, const float* dpt, const float* lse,
                               const float* delta, int64_t keys, int64_t queries, float scale,
                               BFloat16* pt, BFloat16* dst) {
  const Vec vscale(scale);
  for (int64_t c = 0; c < keys; ++c) {
    const float* s = st + c * QB;
    const float* dp = dpt + c * QB;
    BFloat16* p_out = pt + c * QB;
    BFloat16* ds_out = dst + c * QB;
    int64_t r = 0;
    for (; r + BVec::size() <= queries; r += BVec::size()) {
      constexpr int64_t W = Vec::size();
      const Vec p0 = (Vec::loadu(s + r) * vscale - Vec::loadu(lse + r)).exp_u20();
      const Vec p1 = (Vec::loadu(s + r + W) * vscale - Vec::loadu(lse + r + W)).exp_u20();
      const Vec d0 = p0 * (Vec::loadu(dp + r) - Vec::loadu(delta + r)) * vscale;
      const Vec d1 = p1 * (Vec::loadu(dp + r + W) - Vec::loadu(delta + r + W)) * vscale;
      at::vec::convert_from_float<BFloat16>(p0, p1).store(p_out + r);
      at::vec::convert_from_float<BFloat16>(d0, d1).store(ds_out + r);
    }
    for (; r < queries; ++r) {
      const float p = std::exp(s[r] * scale - lse[r]);
      p_out[r] = BFloat16(p);
      ds_out[r] = BFloat16(p * (dp[r] - delta[r]) * scale);
    }
    for (; r < QB; ++r) {
      p_out[r] = BFloat16(0.f);
      ds_out[r] = BFloat16(0.f);
    }
  }
}

// Per (batch x head), contiguous, sequence lengths rounded up to even with zero rows:
// grad_out, query [S, D]; grad_out_t, query_t [D, S] (their transposes); key, value [Sk, D];
// key_t [D, Sk]; lse, delta [S] float (delta = rowsum(grad_out * out)).
// Writes float32 grad_query_t [D, S], grad_key, grad_value [Sk, D].
void attention_backward(const torch::Tensor& grad_out, const torch::Tensor& query,
                        const torch::Tensor& grad_out_t, const torch::Tensor& query_t,
                        const torch::Tensor& key, const torch::Tensor& key_t,
                        const torch::Tensor& value, const torch::Tensor& lse,
                        const torch::Tensor& delta, double scale_, int64_t queries,
                        torch::Tensor& grad_query_t, torch::Tensor& grad_key,
                        torch::Tensor& grad_value) {
  const int64_t BH = query.size(0), Sp = query.size(1), D = query.size(2), Sk = key.size(1);
  TORCH_CHECK(Sp % 2 == 0 && Sk % 2 == 0 && D % 2 == 0 && queries <= Sp,
              "attention_backward: lengths and head size must be even");
  // The pointers below are walked by these sizes: any other shape would read or write past
  // a tensor's end.
  const std::vector<int64_t> by_query{BH, Sp, D}, by_query_t{BH, D, Sp}, by_key{BH, Sk, D},
      by_key_t{BH, D, Sk}, per_query{BH, Sp};
  TORCH_CHECK(grad_out.sizes() == by_query && grad_out_t.sizes() == by_query_t &&
                  query_t.sizes() == by_query_t && key.sizes() == by_key &&
                  value.sizes() == by_key && key_t.sizes() == by_key_t &&
                  lse.sizes() == per_query && delta.sizes() == per_query &&
                  grad_query_t.sizes() == by_query_t && grad_key.sizes() == by_key &&
                  grad_value.sizes() == by_key,
              "attention_backward: shapes that do not match the query's and the key's");
  for (const torch::Tensor* t : {&grad_out, &query, &grad_out_t, &query_t, &key, &key_t, &value})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kBFloat16,
                "attention_backward: bf16 contiguous inputs");
  for (const torch::Tensor* t :
       std::initializer_list<const torch::Tensor*>{&lse, &delta, &grad_query_t, &grad_key,
                                                   &grad_value})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kFloat,
                "attention_backward: float32 contiguous statistics and outputs");
  const float scale = static_cast<float>(scale_);
  const BFloat16 *g = grad_out.data_ptr<BFloat16>(), *q = query.data_ptr<BFloat16>(),
                 *gt = grad_out_t.data_ptr<BFloat16>(), *qt = query_t.data_ptr<BFloat16>(),
                 *k = key.data_ptr<BFloat16>(), *kt = key_t.data_ptr<BFloat16>(),
                 *v = value.data_ptr<BFloat16>();
  const float *lse_all = lse.data_ptr<float>(), *delta_all = delta.data_ptr<float>();
  float *dqt_all = grad_query_t.data_ptr<float>(), *dk_all = grad_key.data_ptr<float>(),
        *dv_all = grad_value.data_ptr<float>();

  at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
    std::vector<BFloat16> qt_packed(packed_size(D, Sp)), gt_packed(packed_size(D, Sp)),
        q_packed(packed_size(Sp, D)), g_packed(packed_size(Sp, D)), pt(Sk * QB), dst(Sk * QB),
        dst_packed(packed_size(Sk, QB));
    std::vector<float> st(Sk * QB), dpt(Sk * QB);
    for (int64_t bh = begin; bh < end; ++bh) {
      const BFloat16 *K = k + bh * Sk * D, *V = v + bh * Sk * D, *Kt = kt + bh * D * Sk;
      const float *L = lse_all + bh * Sp, *E = delta_all + bh * Sp;
      float *dQt = dqt_all + bh * D * Sp, *dK = dk_all + bh * Sk * D,
            *dV = dv_all + bh * Sk * D;
      pack_columns(D, Sp, Sp, qt + bh * D * Sp, qt_packed.data());
      pack_columns(D, Sp, Sp, gt + bh * D * Sp, gt_packed.data());
      pack_columns(Sp, D, D, q + bh * Sp * D, q_packed.data());
      pack_columns(Sp, D, D, g + bh * Sp * D, g_packed.data());
      for (int64_t m = 0; m < queries; m += QB) {
        const int64_t qb = std::min(QB, queries - m), qb_even = (qb + 1) / 2 * 2;
        gemm_packed(Sk, qb, D, K, D, qt_packed.data() + D * m, D, 0, st.data(), QB, false);
        gemm_packed(Sk, qb, D, V, D, gt_packed.data() + D * m, D, 0, dpt.data(), QB, false);
        softmax_grad_block(st.data(), dpt.data(), L + m, E + m, Sk, qb, scale, pt.data(),
                           dst.data());
        gemm_packed(Sk, D, qb_even, pt.data(), QB, g_packed.data(), Sp, m, dV, D, m > 0);
        gemm_packed(Sk, D, qb_even, dst.data(), QB, q_packed.data(), Sp, m, dK, D, m > 0);
        pack_columns(Sk, qb, QB, dst.data(), dst_packed.data());
        gemm_packed(D, qb, Sk, Kt, Sk, dst_packed.data(), Sk, 0, dQt + m, Sp, false);
      }
    }
    cpublas::brgemm_release();
  });
}

// Whether oneDNN has a bf16 micro-kernel for this CPU (without one brgemm falls back to a
// slow reference GEMM).
bool has_bf16_ukernel() { return cpublas::could_pack(at::kBFloat16); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_backward", &attention_backward);
  m.def("has_bf16_ukernel", &has_bf16_ukernel);
}
