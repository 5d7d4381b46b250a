// centroid.cu — per-column sums of a selection of rows, for the data-centroid handles of the tour.
//
// centroid_mask:  acc[j] += sum over rows i < n with mask[i] != 0 of data[i, j];  acc[p] += that row count.
// centroid_index: acc[j] += sum over k < m of data[index[k], j] (repeats count again); acc[p] += the count
//                 of valid indices; acc[p + 1] += the count of indices outside [0, n) (skipped, so that
//                 the host can raise without any out-of-bounds read having happened).
// data: (n, p) row-major float32; acc: p + 2 float64, zeroed by the caller. The host divides by the count.
// Accumulation is in float64 (per-thread, then a shared-memory tree per column, then one float64
// atomicAdd per column and block), so a mean over 1e6 float32 rows keeps float64 quality.
//
// Launch shape: 1-D grid (grid-stride over row groups), CENTROID_BLOCK threads per block; thread t owns
// column t % p of rows t / p + g * (CENTROID_BLOCK / p), so a warp reads consecutive floats (coalesced).
// Dynamic shared memory: CENTROID_BLOCK doubles.
// Bytes moved per point: mask 1 + 4 p (rows not selected are still read: simple and coalesced),
// index 8 + 4 p per listed row (gathered rows, 4 p contiguous bytes each).

#ifndef CENTROID_BLOCK
#define CENTROID_BLOCK 256
#endif

// Sum the per-thread partial sums of each column across the block and add them to acc.
__device__ __forceinline__ void centroid_flush(double part, int p, int rows_per_step, double* __restrict__ acc) {
    extern __shared__ double lt_part[];
    const int tid = threadIdx.x;
    lt_part[tid] = part;
    __syncthreads();
    if (tid < p) {
        double sum = 0.0;
        for (int r = 0; r < rows_per_step; ++r) sum += lt_part[r * p + tid];
        atomicAdd(acc + tid, sum);
    }
}

extern "C" __global__ void __launch_bounds__(CENTROID_BLOCK)
    centroid_mask(const float* __restrict__ data, const unsigned char* __restrict__ mask, long long n, int p,
                  double* __restrict__ acc) {
    const int rows_per_step = CENTROID_BLOCK / p;
    const int tid = threadIdx.x;
    const int col = tid % p;
    const int sub = tid / p;
    const bool active = sub < rows_per_step;
    double part = 0.0;
    double count = 0.0;
    const long long step = (long long)rows_per_step * gridDim.x;
    if (active) {
        for (long long i = (long long)blockIdx.x * rows_per_step + sub; i < n; i += step) {
            if (__ldg(mask + i)) {
                part += (double)__ldg(data + i * p + col);
                count += 1.0;
            }
        }
    }
    if (active && col == 0 && count > 0.0) atomicAdd(acc + p, count);
    centroid_flush(active ? part : 0.0, p, rows_per_step, acc);
}

extern "C" __global__ void __launch_bounds__(CENTROID_BLOCK)
    centroid_index(const float* __restrict__ data, const long long* __restrict__ index, long long m,
                   long long n, int p, double* __restrict__ acc) {
    const int rows_per_step = CENTROID_BLOCK / p;
    const int tid = threadIdx.x;
    const int col = tid % p;
    const int sub = tid / p;
    const bool active = sub < rows_per_step;
    double part = 0.0;
    double count = 0.0;
    double bad = 0.0;
    const long long step = (long long)rows_per_step * gridDim.x;
    if (active) {
        for (long long k = (long long)blockIdx.x * rows_per_step + sub; k < m; k += step) {
            const long long i = __ldg(index + k);
            if (i >= 0 && i < n) {
                part += (double)__ldg(data + i * p + col);
                count += 1.0;
            } else {
                bad += 1.0;
            }
        }
    }
    if (active && col == 0) {
        if (count > 0.0) atomicAdd(acc + p, count);
        if (bad > 0.0) atomicAdd(acc + p + 1, bad);
    }
    centroid_flush(active ? part : 0.0, p, rows_per_step, acc);
}
