// Weight gradient of a stride-1 convolution on an already padded, channels-last input (AVX2 + FMA, float32).
//
// With the padded input x (P pixel rows of C channels) and the output gradient g zero-padded to the same
// pixel grid (P rows of O channels), tap t of the kernel sits at a constant row offset off[t], and
//
//     grad[t][o][c] = sum over p < L of  g[p][o] * x[p + off[t]][c].
//
// The pixel sum is cut into blocks of KB rows. Each block of x is copied once into 16-channel panels that
// serve every tap (a tap is only a start row inside the panel), and each block of g into 6-channel panels;
// a 6 x 16 register tile then accumulates one (tap, output block, input block) over the block's rows with
// 12 fused multiply-adds per row, reading both panels sequentially. Threads (OpenMP) take disjoint row
// ranges into their own sums, added in a fixed order at the end. pcnn/convgrad.py says why it exists.

#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include <vector>

namespace {

constexpr long KB = 256;  // pixel rows per block: both panels of a block stay in the core's L2 cache
constexpr long MR = 6;    // output channels per register tile
constexpr long NR = 16;   // input channels per register tile (two 8-float vectors)

// acc[r][0..16) += sum over k < rows of gp[k][r] * xp[k][0..16), for the first R rows of the tile.
template <int R>
void tile(long rows, const float *gp, const float *xp, float *acc, long acc_stride) {
    __m256 lo[R], hi[R];
    for (int r = 0; r < R; r++) lo[r] = hi[r] = _mm256_setzero_ps();
    for (long k = 0; k < rows; k++) {
        const __m256 x0 = _mm256_loadu_ps(xp + k * NR), x1 = _mm256_loadu_ps(xp + k * NR + 8);
        for (int r = 0; r < R; r++) {
            const __m256 b = _mm256_broadcast_ss(gp + k * MR + r);
            lo[r] = _mm256_fmadd_ps(b, x0, lo[r]);
            hi[r] = _mm256_fmadd_ps(b, x1, hi[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *out = acc + r * acc_stride;
        _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), lo[r]));
        _mm256_storeu_ps(out + 8, _mm256_add_ps(_mm256_loadu_ps(out + 8), hi[r]));
    }
}

void tile_rows(int r, long rows, const float *gp, const float *xp, float *acc, long acc_stride) {
    switch (r) {
        case 6: return tile<6>(rows, gp, xp, acc, acc_stride);
        case 5: return tile<5>(rows, gp, xp, acc, acc_stride);
        case 4: return tile<4>(rows, gp, xp, acc, acc_stride);
        case 3: return tile<3>(rows, gp, xp, acc, acc_stride);
        case 2: return tile<2>(rows, gp, xp, acc, acc_stride);
        default: return tile<1>(rows, gp, xp, acc, acc_stride);
    }
}

// Walks the next block's rows of x and g (two contiguous ranges) a few cache lines at a time, so that they
// are in cache when that block is copied into panels: the rows come from memory (the saved activations of
// the forward pass), and without it the copying stalled the core between blocks.
class Prefetcher {
  public:
    void reset(const float *x_begin, const float *x_end, const float *g_begin, const float *g_end, long calls) {
        x_ = reinterpret_cast<const char *>(x_begin), x_end_ = reinterpret_cast<const char *>(x_end);
        g_ = reinterpret_cast<const char *>(g_begin), g_end_ = reinterpret_cast<const char *>(g_end);
        const long lines = (x_end_ - x_ + g_end_ - g_) / kLine + 1;
        per_call_ = (lines + calls - 1) / calls;
    }
    void step() {
        for (long i = 0; i < per_call_; i++) {
            if (x_ < x_end_) {
                _mm_prefetch(x_, _MM_HINT_T1);
                x_ += kLine;
            } else if (g_ < g_end_) {
                _mm_prefetch(g_, _MM_HINT_T1);
                g_ += kLine;
            } else {
                return;
            }
        }
    }

  private:
    static constexpr long kLine = 64;
    const char *x_ = nullptr, *x_end_ = nullptr, *g_ = nullptr, *g_end_ = nullptr;
    long per_call_ = 0;
};

// acc[T][O][C] += the sums over rows [begin, end).
void accumulate(const float *x, const float *g, long C, long O, int T, const long *off, long begin, long end,
                float *acc) {
    const long max_off = *std::max_element(off, off + T);
    const long o_blocks = (O + MR - 1) / MR, c_blocks = C / NR, panel_rows = KB + max_off;
    std::vector<float> g_panels(o_blocks * KB * MR, 0.0f), x_panels(c_blocks * panel_rows * NR);
    Prefetcher prefetch;
    for (long start = begin; start < end; start += KB) {
        const long rows = std::min(KB, end - start);
        const long next = start + KB, next_rows = std::max(0L, std::min(KB, end - next));
        prefetch.reset(x + next * C, x + (next + next_rows + (next_rows ? max_off : 0)) * C, g + next * O,
                       g + (next + next_rows) * O, c_blocks * T * o_blocks);
        for (long ob = 0; ob < o_blocks; ob++) {
            const long width = std::min(MR, O - ob * MR);
            float *panel = g_panels.data() + ob * KB * MR;
            const float *src = g + start * O + ob * MR;
            if (width == MR) {  // a constant size: the copy is inlined (a call per row cost about 5%)
                for (long k = 0; k < rows; k++) std::memcpy(panel + k * MR, src + k * O, MR * sizeof(float));
            } else {
                for (long k = 0; k < rows; k++) std::memcpy(panel + k * MR, src + k * O, width * sizeof(float));
            }
        }
        for (long cb = 0; cb < c_blocks; cb++) {
            float *panel = x_panels.data() + cb * panel_rows * NR;
            const float *src = x + start * C + cb * NR;
            for (long k = 0; k < rows + max_off; k++)
                std::memcpy(panel + k * NR, src + k * C, NR * sizeof(float));
        }
        for (long cb = 0; cb < c_blocks; cb++)
            for (int t = 0; t < T; t++)
                for (long ob = 0; ob < o_blocks; ob++) {
                    const float *gp = g_panels.data() + ob * KB * MR;
                    const float *xp = x_panels.data() + (cb * panel_rows + off[t]) * NR;
                    prefetch.step();
                    tile_rows(static_cast<int>(std::min(MR, O - ob * MR)), rows, gp, xp,
                              acc + (t * O + ob * MR) * C + cb * NR, C);
                }
    }
}

}  // namespace

// out[T][O][C] = the weight gradient; C must be a multiple of 16 and x must hold L + max(off) rows.
extern "C" void pcnn_conv_weight_grad(const float *x, const float *g, long C, long O, long L, int T,
                                      const long *off, float *out, int threads) {
    const long size = T * O * C;
    std::memset(out, 0, size * sizeof(float));
    const long blocks = (L + KB - 1) / KB;
    threads = static_cast<int>(std::max(1L, std::min<long>(threads, blocks)));
    std::vector<std::vector<float>> partial(threads - 1, std::vector<float>(size, 0.0f));
    // The rows are split by the requested count, not by how many threads OpenMP grants, so that the sums
    // (and a resumed run's losses) do not depend on the machine's load.
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int part = 0; part < threads; part++) {
        const long begin = blocks * part / threads * KB;
        const long end = std::min(L, blocks * (part + 1) / threads * KB);
        accumulate(x, g, C, O, T, off, begin, end, part == 0 ? out : partial[part - 1].data());
    }
    for (const auto &sum : partial)
        for (long i = 0; i < size; i++) out[i] += sum[i];
}
