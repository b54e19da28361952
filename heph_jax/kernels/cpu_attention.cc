// Fused attention for XLA:CPU behind jax.ffi (heph_jax/kernels/cpu_attention.py builds and loads it).
//
// Causal or full self-attention with segment ids and grouped-query heads, float32, in the model's
// own layout: q [B, S, H, D], k and v [B, S, KV, D], segment_ids [B, S]. The forward returns the
// output and each row's log-sum-exp [B, H, S]; the backward recomputes the probabilities from the
// log-sum-exp one query block at a time (the flash-attention recurrence, as the jnp path in
// heph_jax/model/attention.py does). Tasks are (batch row, kv head) pairs, split further when there
// are few (see Split), and run on XLA's intra-op thread pool. A task that owns a whole pair writes
// its dk/dv straight out; chunks of one pair accumulate privately and are summed in chunk order
// afterwards, so results are bitwise the same from run to run (exact resume needs that).
//
// Why a kernel at all: XLA:CPU runs attention as small batched matmuls with copies between them
// (benchmarks/README.md); here the scores of one 64-row block stay in cache from the matmul that
// makes them, through the softmax, to the matmul that consumes them.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <sched.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// 16 float lanes (one AVX-512 register; GCC splits it in two on AVX2 machines).
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
constexpr int kLanes = 16;
constexpr int kTileRows = 8;     // micro-kernel: 8 rows x 32 columns of accumulators
constexpr int kQueryBlock = 64;  // query rows whose scores are live at once

inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vi load(const int32_t* p) { vi v; std::memcpy(&v, p, sizeof v); return v; }
// vf{} + x would add +0.0 at run time (it is not an identity for x = -0.0).
inline vf splat(float x) { return vf{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// exp for x <= 0 (softmax arguments), 0 below -87.3 (masked entries are -inf): 2^n * p(r) with
// r in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial, ~1 ulp.
inline vf exp_nonpositive(vf x) {
  const vf lowest = splat(-87.3f);
  vi under = x < lowest;
  x = under ? lowest : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  vf t = x * 1.44269504088896341f + magic;
  vf n = t - magic;
  vf r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
  vf p = splat(1.0f / 720);
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  vi t_bits;
  std::memcpy(&t_bits, &t, sizeof t);
  vi scale_bits = (t_bits - 0x4B400000 + 127) << 23;
  vf scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  vf result = p * scale;
  return under ? vf{} : result;
}

// A matrix operand: element (i, j) at data[i * row_stride + j * col_stride].
struct View {
  const float* data;
  int64_t row_stride, col_stride;
};

// C[ROWS x 16*VECS] (+)= A[ROWS x depth] B[depth x 16*VECS]; B and C rows are contiguous.
template <int ROWS, int VECS>
void tile(View a, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t depth, bool accumulate) {
  vf sum[ROWS][VECS];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v) sum[r][v] = accumulate ? load(c + r * ldc + v * kLanes) : vf{};
  for (int64_t d = 0; d < depth; ++d) {
    vf bv[VECS];
    for (int v = 0; v < VECS; ++v) bv[v] = load(b + d * ldb + v * kLanes);
    const float* a_col = a.data + d * a.col_stride;
    for (int r = 0; r < ROWS; ++r) {
      vf ar = splat(a_col[r * a.row_stride]);
      for (int v = 0; v < VECS; ++v) sum[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v) store(c + r * ldc + v * kLanes, sum[r][v]);
}

template <int VECS>
void row_tile(int rows, View a, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t depth,
              bool accumulate) {
  switch (rows) {
    case 8: return tile<8, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 7: return tile<7, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 6: return tile<6, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 5: return tile<5, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 4: return tile<4, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 3: return tile<3, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    case 2: return tile<2, VECS>(a, b, ldb, c, ldc, depth, accumulate);
    default: return tile<1, VECS>(a, b, ldb, c, ldc, depth, accumulate);
  }
}

// C[m x n] (+)= A[m x depth] B[depth x n], any n (the last n % 16 columns run as scalars).
// Column panels outside, row tiles inside: one 32-column panel of B stays in L1 across all of A.
void gemm(int64_t m, int64_t n, int64_t depth, View a, const float* b, int64_t ldb, float* c,
          int64_t ldc, bool accumulate) {
  auto panel = [&](int64_t j, int vecs) {
    for (int64_t i = 0; i < m; i += kTileRows) {
      int rows = static_cast<int>(std::min<int64_t>(kTileRows, m - i));
      View a_rows{a.data + i * a.row_stride, a.row_stride, a.col_stride};
      if (vecs == 2) row_tile<2>(rows, a_rows, b + j, ldb, c + i * ldc + j, ldc, depth, accumulate);
      else row_tile<1>(rows, a_rows, b + j, ldb, c + i * ldc + j, ldc, depth, accumulate);
    }
  };
  int64_t j = 0;
  for (; j + 2 * kLanes <= n; j += 2 * kLanes) panel(j, 2);
  for (; j + kLanes <= n; j += kLanes) panel(j, 1);
  for (; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) {
      float sum = accumulate ? c[i * ldc + j] : 0.0f;
      for (int64_t d = 0; d < depth; ++d)
        sum += a.data[i * a.row_stride + d * a.col_stride] * b[d * ldb + j];
      c[i * ldc + j] = sum;
    }
  }
}

struct Shape {
  int64_t batch, seq, heads, kv_heads, head_dim;
  int64_t groups() const { return heads / kv_heads; }
  int64_t padded_seq() const { return round_up(seq, kLanes); }
  // Element offsets of (batch b, position 0, head h) in q-like and kv-like arrays, and row strides.
  int64_t q_offset(int64_t b, int64_t h) const { return (b * seq * heads + h) * head_dim; }
  int64_t kv_offset(int64_t b, int64_t h) const { return (b * seq * kv_heads + h) * head_dim; }
  int64_t q_stride() const { return heads * head_dim; }
  int64_t kv_stride() const { return kv_heads * head_dim; }
};

// Per-worker buffers, allocated once per kernel call and worker.
struct Scratch {
  std::vector<float> k_t, v_t;      // [D, padded S]: k and v transposed, zero-padded
  std::vector<float> probs, dprobs;  // [query block, padded S]
  std::vector<float> dk, dv;        // [S, D] float32 accumulators of one task
  std::vector<int32_t> segments;    // [padded S]
  std::vector<int32_t> first, last;  // [S]: first and last position of each row's segment id
  std::vector<float> delta;         // [query block]
  explicit Scratch(const Shape& s)
      : k_t(s.head_dim * s.padded_seq()), v_t(s.head_dim * s.padded_seq()),
        probs(kQueryBlock * s.padded_seq()), dprobs(kQueryBlock * s.padded_seq()),
        dk(s.seq * s.head_dim), dv(s.seq * s.head_dim), segments(s.padded_seq()),
        first(s.seq), last(s.seq), delta(kQueryBlock) {}
};

// dst[c * ld_dst + r] = src[r * stride + c] for r < rows, c < cols; zeros up to ld_dst. In 16x16
// tiles, so that both the reads and the writes stay within a few cache lines.
void transpose_into(const float* src, int64_t stride, int64_t rows, int64_t cols, float* dst,
                    int64_t ld_dst) {
  constexpr int64_t kTile = 16;
  for (int64_t c = 0; c < cols; ++c) std::fill(dst + c * ld_dst + rows, dst + (c + 1) * ld_dst, 0.0f);
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * stride + c];
    }
  }
}

// A task is one (batch row, kv head) pair, or one chunk of its (query block, group head) units
// when there are too few pairs to keep every thread busy (e.g. batch 1 with one kv head). Units go
// to chunks in a zigzag, so every chunk gets early (cheap under causal masking) and late blocks.
struct Split {
  int64_t chunks = 1;
  int64_t units(const Shape& sh) const { return sh.groups() * ((sh.seq + kQueryBlock - 1) / kQueryBlock); }
  int64_t owner(int64_t unit) const {
    const int64_t lap = unit / chunks, pos = unit % chunks;
    return lap % 2 ? chunks - 1 - pos : pos;
  }
};

Split split_for(const Shape& sh, int64_t threads) {
  Split split;
  const int64_t pairs = sh.batch * sh.kv_heads, wanted = 4 * std::max<int64_t>(threads, 1);
  split.chunks = std::clamp<int64_t>((wanted + pairs - 1) / std::max<int64_t>(pairs, 1), 1,
                                     std::max<int64_t>(split.units(sh), 1));
  return split;
}

struct Problem {
  Shape shape;
  bool causal;
  float scale;
  Split split;
};

// The keys [lo, hi) that query rows [row0, row0 + rows) can see: up to the last row if causal, and
// only within the rows' segments (a segment's keys lie between its first and last position). In
// rows packed with several documents this skips every key block of the earlier documents. lo is
// a multiple of 16, so lo + width() stays within the padded sequence.
struct KeyRange {
  int64_t lo, hi;
  int64_t count() const { return hi - lo; }
  int64_t width() const { return round_up(hi - lo, kLanes); }
};

KeyRange visible_keys(const Problem& p, const Scratch& s, int64_t row0, int64_t rows) {
  int64_t lo = row0, hi = row0 + rows;
  for (int64_t row = row0; row < row0 + rows; ++row) {
    lo = std::min<int64_t>(lo, s.first[row]);
    hi = std::max<int64_t>(hi, s.last[row] + 1);
  }
  if (p.causal) hi = row0 + rows;
  return KeyRange{lo / kLanes * kLanes, hi};
}

// The scores of query rows [row0, row0 + rows) against keys [keys.lo, keys.lo + keys.width())
// into `scores` (row stride padded S), scaled, with masked entries at -inf.
void masked_scores(const Problem& p, const float* q_head, const Scratch& s, int64_t row0,
                   int64_t rows, KeyRange keys, float* scores) {
  const Shape& sh = p.shape;
  const int64_t ld = sh.padded_seq(), width = keys.width();
  gemm(rows, width, sh.head_dim, View{q_head + row0 * sh.q_stride(), sh.q_stride(), 1},
       s.k_t.data() + keys.lo, ld, scores, ld, false);
  vi lane;
  for (int i = 0; i < kLanes; ++i) lane[i] = i;
  const vf minus_inf = splat(-INFINITY);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = row0 + i;
    const int32_t last_key = static_cast<int32_t>(p.causal ? row : sh.seq - 1);
    const int32_t segment = s.segments[row];
    float* line = scores + i * ld;
    for (int64_t j = 0; j < width; j += kLanes) {
      vi key = lane + static_cast<int32_t>(keys.lo + j);
      vi visible = (key <= last_key) & (load(s.segments.data() + keys.lo + j) == segment);
      vf x = load(line + j) * p.scale;
      store(line + j, visible ? x : minus_inf);
    }
  }
}

void forward_task(const Problem& p, int64_t b, int64_t kv_head, int64_t chunk, const float* q,
                  const float* k, const float* v, float* out, float* lse, Scratch& s) {
  const Shape& sh = p.shape;
  const int64_t ld = sh.padded_seq(), d = sh.head_dim;
  transpose_into(k + sh.kv_offset(b, kv_head), sh.kv_stride(), sh.seq, d, s.k_t.data(), ld);
  const float* v_head = v + sh.kv_offset(b, kv_head);
  for (int64_t unit = 0; unit < p.split.units(sh); ++unit) {
    if (p.split.owner(unit) != chunk) continue;
    const int64_t h = kv_head * sh.groups() + unit % sh.groups();
    const int64_t row0 = unit / sh.groups() * kQueryBlock;
    const float* q_head = q + sh.q_offset(b, h);
    float* out_head = out + sh.q_offset(b, h);
    float* lse_head = lse + (b * sh.heads + h) * sh.seq;
    const int64_t rows = std::min<int64_t>(kQueryBlock, sh.seq - row0);
    const KeyRange keys = visible_keys(p, s, row0, rows);
    const int64_t width = keys.width();
    masked_scores(p, q_head, s, row0, rows, keys, s.probs.data());
    for (int64_t i = 0; i < rows; ++i) {
      float* line = s.probs.data() + i * ld;
      vf max_v = load(line);
      for (int64_t j = kLanes; j < width; j += kLanes) {
        vf x = load(line + j);
        max_v = x > max_v ? x : max_v;
      }
      float row_max = max_v[0];
      for (int l = 1; l < kLanes; ++l) row_max = std::max(row_max, max_v[l]);
      vf sum_v = vf{};
      for (int64_t j = 0; j < width; j += kLanes) {
        vf e = exp_nonpositive(load(line + j) - row_max);
        store(line + j, e);
        sum_v += e;
      }
      float row_sum = 0.0f;
      for (int l = 0; l < kLanes; ++l) row_sum += sum_v[l];
      lse_head[row0 + i] = row_max + std::log(row_sum);
      s.delta[i] = 1.0f / row_sum;  // reused as the row's normalizer
    }
    float* out_rows = out_head + row0 * sh.q_stride();
    gemm(rows, d, keys.count(), View{s.probs.data(), ld, 1}, v_head + keys.lo * sh.kv_stride(),
         sh.kv_stride(), out_rows, sh.q_stride(), false);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < d; ++c) out_rows[i * sh.q_stride() + c] *= s.delta[i];
  }
}

void backward_task(const Problem& p, int64_t b, int64_t kv_head, int64_t chunk, const float* q,
                   const float* k, const float* v, const float* out, const float* lse,
                   const float* d_out, float* dq, float* dk_acc, float* dv_acc, Scratch& s) {
  const Shape& sh = p.shape;
  const int64_t ld = sh.padded_seq(), d = sh.head_dim;
  const float* k_head = k + sh.kv_offset(b, kv_head);
  transpose_into(k_head, sh.kv_stride(), sh.seq, d, s.k_t.data(), ld);
  transpose_into(v + sh.kv_offset(b, kv_head), sh.kv_stride(), sh.seq, d, s.v_t.data(), ld);
  std::fill(dk_acc, dk_acc + sh.seq * d, 0.0f);
  std::fill(dv_acc, dv_acc + sh.seq * d, 0.0f);
  for (int64_t unit = 0; unit < p.split.units(sh); ++unit) {
    if (p.split.owner(unit) != chunk) continue;
    const int64_t h = kv_head * sh.groups() + unit % sh.groups();
    const int64_t row0 = unit / sh.groups() * kQueryBlock;
    const float* q_head = q + sh.q_offset(b, h);
    const float* lse_head = lse + (b * sh.heads + h) * sh.seq;
    const int64_t rows = std::min<int64_t>(kQueryBlock, sh.seq - row0);
    const KeyRange keys = visible_keys(p, s, row0, rows);
    const int64_t width = keys.width();
    const int64_t offset = sh.q_offset(b, h) + row0 * sh.q_stride();
    const float* d_out_rows = d_out + offset;
    float* probs = s.probs.data();
    float* dprobs = s.dprobs.data();
    masked_scores(p, q_head, s, row0, rows, keys, probs);
    for (int64_t i = 0; i < rows; ++i) {
      float* line = probs + i * ld;
      const float row_lse = lse_head[row0 + i];
      for (int64_t j = 0; j < width; j += kLanes) store(line + j, exp_nonpositive(load(line + j) - row_lse));
      float delta = 0.0f;  // rowsum(dO * O) = rowsum(dP * P)
      for (int64_t c = 0; c < d; ++c)
        delta += d_out_rows[i * sh.q_stride() + c] * out[offset + i * sh.q_stride() + c];
      s.delta[i] = delta;
    }
    // dV[keys] += P^T dO
    gemm(keys.count(), d, rows, View{probs, 1, ld}, d_out_rows, sh.q_stride(),
         dv_acc + keys.lo * d, d, true);
    // dP = dO V^T, then dS = P * (dP - delta) * scale in place
    gemm(rows, width, d, View{d_out_rows, sh.q_stride(), 1}, s.v_t.data() + keys.lo, ld, dprobs,
         ld, false);
    for (int64_t i = 0; i < rows; ++i) {
      const float* p_line = probs + i * ld;
      float* line = dprobs + i * ld;
      for (int64_t j = 0; j < width; j += kLanes)
        store(line + j, load(p_line + j) * (load(line + j) - s.delta[i]) * p.scale);
    }
    // dQ = dS K
    gemm(rows, d, keys.count(), View{dprobs, ld, 1}, k_head + keys.lo * sh.kv_stride(),
         sh.kv_stride(), dq + offset, sh.q_stride(), false);
    // dK[keys] += dS^T Q
    gemm(keys.count(), d, rows, View{dprobs, 1, ld}, q_head + row0 * sh.q_stride(), sh.q_stride(),
         dk_acc + keys.lo * d, d, true);
  }
}

// dst rows r (stride `stride`) = the sum over `parts` of src[part][r] ([S, D] blocks, in order).
void sum_rows_into(const float* src, int64_t parts, const Shape& sh, float* dst, int64_t stride) {
  const int64_t d = sh.head_dim, block = sh.seq * d;
  for (int64_t r = 0; r < sh.seq; ++r) {
    float* row = dst + r * stride;
    std::copy(src + r * d, src + (r + 1) * d, row);
    for (int64_t part = 1; part < parts; ++part)
      for (int64_t c = 0; c < d; ++c) row[c] += src[part * block + r * d + c];
  }
}

// The threads one kernel call uses: XLA's intra-op pool size, at most the cores this process may
// run on (with 8 simulated devices on 2 cores the pool has 8 threads).
int64_t usable_threads(ffi::ThreadPool& pool) {
  int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) threads = std::min<int64_t>(threads, CPU_COUNT(&allowed));
  return std::max<int64_t>(threads, 1);
}

// Runs task(i, scratch) for i in [0, n) on the calling thread and threads - 1 pool helpers. The
// caller works too, so this finishes even if no pool thread is free; a helper that starts after the
// last task was claimed touches only the shared counters.
template <typename Task>
void parallel_for(ffi::ThreadPool& pool, int64_t threads, const Shape& shape, int64_t n, Task task) {
  struct Counters {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable all_done;
  };
  auto counters = std::make_shared<Counters>();
  auto work = [counters, n, &task, &shape]() {
    std::unique_ptr<Scratch> scratch;
    int64_t finished = 0;
    for (int64_t i; (i = counters->next.fetch_add(1)) < n; ++finished) {
      if (!scratch) scratch = std::make_unique<Scratch>(shape);
      task(i, *scratch);
    }
    if (finished == 0) return;
    std::lock_guard<std::mutex> lock(counters->mu);
    counters->done += finished;
    if (counters->done == n) counters->all_done.notify_all();
  };
  const int64_t helpers = std::min<int64_t>(threads - 1, n - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(counters->mu);
  counters->all_done.wait(lock, [&] { return counters->done == n; });
}

// The problem the arguments describe (threads from the pool), or an error for shapes that the
// Python side (cpu_attention.py) would already have refused.
ffi::Error make_problem(ffi::ThreadPool& pool, ffi::Span<const int64_t> q_dims,
                        ffi::Span<const int64_t> k_dims, ffi::Span<const int64_t> seg_dims,
                        float scale, bool causal, Problem* problem, int64_t* threads) {
  if (q_dims.size() != 4 || k_dims.size() != 4 || k_dims[0] != q_dims[0] || k_dims[1] != q_dims[1] ||
      k_dims[3] != q_dims[3])
    return ffi::Error::InvalidArgument("cpu_attention: need q [B, S, H, D] and k/v [B, S, KV, D]");
  const Shape shape{q_dims[0], q_dims[1], q_dims[2], k_dims[2], q_dims[3]};
  if (shape.kv_heads == 0 || shape.heads % shape.kv_heads)
    return ffi::Error::InvalidArgument("cpu_attention: kv heads must divide query heads");
  if (seg_dims.size() != 2 || seg_dims[0] != shape.batch || seg_dims[1] != shape.seq)
    return ffi::Error::InvalidArgument("cpu_attention: segment_ids must be [B, S]");
  *threads = usable_threads(pool);
  *problem = Problem{shape, causal, scale, split_for(shape, *threads)};
  return ffi::Error::Success();
}

void load_segments(const int32_t* segment_ids, const Shape& sh, int64_t b, Scratch& s) {
  const int32_t* row = segment_ids + b * sh.seq;
  std::copy(row, row + sh.seq, s.segments.begin());
  std::fill(s.segments.begin() + sh.seq, s.segments.end(), 0);
  std::unordered_map<int32_t, std::pair<int32_t, int32_t>> extent;  // id -> (first, last)
  for (int32_t i = 0; i < sh.seq; ++i) {
    auto [it, added] = extent.try_emplace(row[i], i, i);
    it->second.second = i;
  }
  for (int32_t i = 0; i < sh.seq; ++i) std::tie(s.first[i], s.last[i]) = extent[row[i]];
}

ffi::Error forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> segment_ids,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse, float scale,
                   bool causal) {
  Problem p;
  int64_t threads;
  if (auto error = make_problem(pool, q.dimensions(), k.dimensions(), segment_ids.dimensions(), scale,
                                causal, &p, &threads);
      error.failure())
    return error;
  const Shape& shape = p.shape;
  const int64_t chunks = p.split.chunks, kv_heads = shape.kv_heads;
  parallel_for(pool, threads, shape, shape.batch * kv_heads * chunks, [&](int64_t task, Scratch& s) {
    const int64_t pair = task / chunks, b = pair / kv_heads;
    load_segments(segment_ids.typed_data(), shape, b, s);
    forward_task(p, b, pair % kv_heads, task % chunks, q.typed_data(), k.typed_data(),
                 v.typed_data(), out->typed_data(), lse->typed_data(), s);
  });
  return ffi::Error::Success();
}

ffi::Error backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::S32> segment_ids,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> d_out,
                    ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                    ffi::ResultBuffer<ffi::F32> dv, float scale, bool causal) {
  Problem p;
  int64_t threads;
  if (auto error = make_problem(pool, q.dimensions(), k.dimensions(), segment_ids.dimensions(), scale,
                                causal, &p, &threads);
      error.failure())
    return error;
  const Shape& shape = p.shape;
  const int64_t chunks = p.split.chunks, kv_heads = shape.kv_heads, pairs = shape.batch * kv_heads;
  const int64_t block = shape.seq * shape.head_dim;
  std::vector<float> partial_dk(chunks > 1 ? pairs * chunks * block : 0);
  std::vector<float> partial_dv(partial_dk.size());
  parallel_for(pool, threads, shape, pairs * chunks, [&](int64_t task, Scratch& s) {
    const int64_t pair = task / chunks, b = pair / kv_heads, kv_head = pair % kv_heads;
    float* dk_acc = chunks > 1 ? partial_dk.data() + task * block : s.dk.data();
    float* dv_acc = chunks > 1 ? partial_dv.data() + task * block : s.dv.data();
    load_segments(segment_ids.typed_data(), shape, b, s);
    backward_task(p, b, kv_head, task % chunks, q.typed_data(), k.typed_data(), v.typed_data(),
                  out.typed_data(), lse.typed_data(), d_out.typed_data(), dq->typed_data(),
                  dk_acc, dv_acc, s);
    if (chunks == 1) {
      sum_rows_into(dk_acc, 1, shape, dk->typed_data() + shape.kv_offset(b, kv_head), shape.kv_stride());
      sum_rows_into(dv_acc, 1, shape, dv->typed_data() + shape.kv_offset(b, kv_head), shape.kv_stride());
    }
  });
  for (int64_t pair = 0; chunks > 1 && pair < pairs; ++pair) {
    const int64_t offset = shape.kv_offset(pair / kv_heads, pair % kv_heads);
    sum_rows_into(partial_dk.data() + pair * chunks * block, chunks, shape, dk->typed_data() + offset,
                  shape.kv_stride());
    sum_rows_into(partial_dv.data() + pair * chunks * block, chunks, shape, dv->typed_data() + offset,
                  shape.kv_stride());
  }
  return ffi::Error::Success();
}

}  // namespace

// Both kernels take the thread pool and q, k, v, segment_ids first, their attributes last.
inline auto bind_inputs() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()    // q
      .Arg<ffi::Buffer<ffi::F32>>()    // k
      .Arg<ffi::Buffer<ffi::F32>>()    // v
      .Arg<ffi::Buffer<ffi::S32>>();   // segment_ids
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(HephCpuAttentionForward, forward,
                              bind_inputs()
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out
                                  .Ret<ffi::Buffer<ffi::F32>>()   // lse
                                  .Attr<float>("scale")
                                  .Attr<bool>("causal"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HephCpuAttentionBackward, backward,
                              bind_inputs()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // out
                                  .Arg<ffi::Buffer<ffi::F32>>()   // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()   // d_out
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dv
                                  .Attr<float>("scale")
                                  .Attr<bool>("causal"));
