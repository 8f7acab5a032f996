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
//
// It reads the tensors as diffusers hands them to attention ([B, S, H, D] seen as [B, H, S,
// D]), one head's rows and transposes at a time into per-thread scratch, and writes the
// gradients in that same layout: done around the call with torch ops, those copies were a
// quarter of its time, and a contiguous [B, H, S, D] gradient cost its consumer one more.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <fbgemm/Utils.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
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

// A zero-filled scratch buffer aligned to a cache line, as torch's own tensors are: the
// micro-kernel's operands and accumulators misaligned by malloc's 16 bytes made long
// sequences ~8% slower.
template <typename T>
class Buffer {
 public:
  explicit Buffer(int64_t n) : bytes_((n * sizeof(T) + 63) / 64 * 64) {
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes_));
    TORCH_CHECK(data_ != nullptr, "attention_backward: out of memory");
    std::memset(data_, 0, bytes_);
  }
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* data() { return data_; }

 private:
  size_t bytes_;
  T* data_;
};

// [B, H, S, D] bf16 with the head dimension dense (any other strides: they are diffusers'
// [B, S, H, D] tensors permuted), one (b, h) slice of it.
struct Heads {
  const BFloat16* data;
  int64_t sb, sh, ss;
  Heads(const torch::Tensor& t)
      : data(t.data_ptr<BFloat16>()), sb(t.stride(0)), sh(t.stride(1)), ss(t.stride(2)) {}
  const BFloat16* at(int64_t b, int64_t h) const { return data + b * sb + h * sh; }
};

static void check_heads(const torch::Tensor& t, int64_t B, int64_t H, int64_t S, int64_t D,
                        const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.size(0) == B && t.size(1) == H && t.size(2) == S &&
                  t.size(3) == D,
              "attention_backward: ", name, " does not match the query's and the key's shapes");
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.stride(3) == 1 &&
                  (S == 1 || t.stride(2) >= D),
              "attention_backward: ", name, " must be bf16 with dense rows");
}

// The gradients of softmax(query key^T scale) value, given its output `out`, the forward's
// log-sum-exp `lse` [B, H, S] (float32) and `grad_out`. Inputs are [B, H, S(k), D]; the
// gradients come back in the layout diffusers' attention uses ([B, S, H, D] memory, viewed as
// [B, H, S, D]), so nothing around the call needs a copy.
std::vector<torch::Tensor> attention_backward(const torch::Tensor& grad_out,
                                              const torch::Tensor& query,
                                              const torch::Tensor& key,
                                              const torch::Tensor& value,
                                              const torch::Tensor& out, const torch::Tensor& lse,
                                              double scale_) {
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4, "attention_backward: [B, H, S, D] tensors");
  const int64_t B = query.size(0), H = query.size(1), S = query.size(2), D = query.size(3),
                Sk = key.size(2);
  TORCH_CHECK(D % 2 == 0 && S > 0 && Sk > 0, "attention_backward: an even head size");
  // The pointers below are walked by these sizes: any other shape would read past an end.
  check_heads(grad_out, B, H, S, D, "grad_out");
  check_heads(query, B, H, S, D, "query");
  check_heads(out, B, H, S, D, "out");
  check_heads(key, B, H, Sk, D, "key");
  check_heads(value, B, H, Sk, D, "value");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == S &&
                  lse.scalar_type() == at::kFloat,
              "attention_backward: lse must be float32 [B, H, S]");
  const auto heads_like = [&](int64_t length) {
    return at::empty({B, length, H, D}, query.options()).transpose(1, 2);
  };
  torch::Tensor grad_query = heads_like(S), grad_key = heads_like(Sk),
                grad_value = heads_like(Sk);
  const Heads g(grad_out), q(query), k(key), v(value), o(out);
  const Heads dq(grad_query), dk(grad_key), dv(grad_value);
  BFloat16 *dq_data = grad_query.data_ptr<BFloat16>(), *dk_data = grad_key.data_ptr<BFloat16>(),
           *dv_data = grad_value.data_ptr<BFloat16>();
  const float* lse_data = lse.data_ptr<float>();
  const int64_t lse_b = lse.stride(0), lse_h = lse.stride(1), lse_s = lse.stride(2);
  const float scale = static_cast<float>(scale_);
  // The packed products pair up rows: the lengths they reduce over are rounded up to even,
  // with a zero row (a zero query or key adds nothing, and its own gradient is never written).
  const int64_t Sp = (S + 1) / 2 * 2, Skp = (Sk + 1) / 2 * 2;
  const auto rows_of = [](const BFloat16* src, int64_t stride, int64_t n, int64_t D,
                          BFloat16* dst) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * D, src + i * stride, D * 2);
  };
  const auto transpose = [](int64_t M, int64_t N, const BFloat16* src, int64_t ld_src,
                            BFloat16* dst, int64_t ld_dst) {
    fbgemm::transpose_simd<uint16_t>(M, N, reinterpret_cast<const uint16_t*>(src), ld_src,
                                     reinterpret_cast<uint16_t*>(dst), ld_dst);
  };
  const auto store_rows = [](const float* src, int64_t n, int64_t D, BFloat16* dst,
                             int64_t stride) {
    for (int64_t i = 0; i < n; ++i) at::vec::convert(src + i * D, dst + i * stride, D);
  };

  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    // Zero-filled once: the padding rows and columns are never written.
    Buffer<BFloat16> q_rows(Sp * D), g_rows(Sp * D), k_rows(Sk * D), v_rows(Sk * D),
        qt(D * Sp), gt(D * Sp), kt(D * Skp), qt_packed(packed_size(D, Sp)),
        gt_packed(packed_size(D, Sp)), q_packed(packed_size(Sp, D)),
        g_packed(packed_size(Sp, D)), pt(Skp * QB), dst(Skp * QB),
        dst_packed(packed_size(Skp, QB));
    Buffer<float> st(Sk * QB), dpt(Sk * QB), lse_bh(Sp), delta(Sp), dK(Sk * D), dV(Sk * D),
        dQt(D * Sp), dQ(Sp * D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      // Rows copied dense first: the products walk every key's row once per block of
      // queries, and at FLUX.1's 24 heads of 128 rows 6 KiB apart cost a TLB miss each.
      const BFloat16 *K = k_rows.data(), *V = v_rows.data(), *O = o.at(b, h);
      rows_of(q.at(b, h), q.ss, S, D, q_rows.data());
      rows_of(g.at(b, h), g.ss, S, D, g_rows.data());
      rows_of(k.at(b, h), k.ss, Sk, D, k_rows.data());
      rows_of(v.at(b, h), v.ss, Sk, D, v_rows.data());
      transpose(S, D, q_rows.data(), D, qt.data(), Sp);
      transpose(S, D, g_rows.data(), D, gt.data(), Sp);
      transpose(Sk, D, K, D, kt.data(), Skp);
      for (int64_t i = 0; i < S; ++i) {
        lse_bh.data()[i] = lse_data[b * lse_b + h * lse_h + i * lse_s];
        const BFloat16 *gi = g_rows.data() + i * D, *oi = O + i * o.ss;
        float sum = 0.f;
        for (int64_t d = 0; d < D; ++d) sum += float(gi[d]) * float(oi[d]);
        delta.data()[i] = sum;  // rowsum(grad_out * out)
      }
      pack_columns(D, Sp, Sp, qt.data(), qt_packed.data());
      pack_columns(D, Sp, Sp, gt.data(), gt_packed.data());
      pack_columns(Sp, D, D, q_rows.data(), q_packed.data());
      pack_columns(Sp, D, D, g_rows.data(), g_packed.data());
      for (int64_t m = 0; m < S; m += QB) {
        const int64_t qb = std::min(QB, S - m), qb_even = (qb + 1) / 2 * 2;
        gemm_packed(Sk, qb, D, K, D, qt_packed.data() + D * m, D, 0, st.data(), QB, false);
        gemm_packed(Sk, qb, D, V, D, gt_packed.data() + D * m, D, 0, dpt.data(), QB, false);
        softmax_grad_block(st.data(), dpt.data(), lse_bh.data() + m, delta.data() + m, Sk, qb,
                           scale, pt.data(), dst.data());
        gemm_packed(Sk, D, qb_even, pt.data(), QB, g_packed.data(), Sp, m, dV.data(), D, m > 0);
        gemm_packed(Sk, D, qb_even, dst.data(), QB, q_packed.data(), Sp, m, dK.data(), D,
                    m > 0);
        pack_columns(Skp, qb, QB, dst.data(), dst_packed.data());
        gemm_packed(D, qb, Skp, kt.data(), Skp, dst_packed.data(), Skp, 0, dQt.data() + m, Sp,
                    false);
      }
      fbgemm::transpose_simd<float>(D, S, dQt.data(), Sp, dQ.data(), D);
      store_rows(dQ.data(), S, D, dq_data + b * dq.sb + h * dq.sh, dq.ss);
      store_rows(dK.data(), Sk, D, dk_data + b * dk.sb + h * dk.sh, dk.ss);
      store_rows(dV.data(), Sk, D, dv_data + b * dv.sb + h * dv.sh, dv.ss);
    }
    cpublas::brgemm_release();
  });
  return {grad_query, grad_key, grad_value};
}

// Whether oneDNN has a bf16 micro-kernel for this CPU (without one brgemm falls back to a
// slow reference GEMM).
bool has_bf16_ukernel() { return cpublas::could_pack(at::kBFloat16); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_backward", &attention_backward);
  m.def("has_bf16_ukernel", &has_bf16_ukernel);
}
