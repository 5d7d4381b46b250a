// project.cu — fused "blend two aligned layers, project with the tour frame, write the vertices".
//
// Computes, for every point i < n:
//     y[i*stride + offset + k] = sum_j ((1 - s) * A[i, j] + s * B[i, j]) * F[j, k],   k < D
// A, B: (n, p) row-major, float32 (project_f32_d*) or binary16 storage read as raw 16-bit words and
// converted with cvt.f32.f16 (project_f16_d*); arithmetic is float32 throughout. F: (p, D) float32.
// The geodesic variants (project_geo_*) build F themselves from one geodesic segment's parameters,
//     F = (Ga diag(cos(f tau)) + H diag(sin(f tau))) Va^T    (Ga, H: (p, D); Va: (D, D); tau: (D,), float64),
// so that per frame only the scalars f and s cross to the device.
// y is a flat float32 buffer (the OpenGL vertex buffer mapped through CUDA-GL interop): stride floats
// per vertex, the D coordinates written from `offset`; no other element of y is touched.
//
// Launch shape: 1-D grid of any size (grid-stride over tiles of PROJECT_TILE points),
// blockDim.x == PROJECT_TILE threads, dynamic shared memory = (PROJECT_TILE * pitch + p * D) floats
// with pitch = p | 1 (odd row pitch: no bank conflicts). Each block stages a tile of A and B with
// coalesced loads, blends it into shared memory, then one thread per point applies the frame.
// Bytes moved per point: 2 * p * sizeof(elem) read + D * 4 written (p = 15, D = 2: 128 B fp32, 68 B fp16).
// Indices are 64-bit (n up to 2e8 and beyond); p <= PROJECT_MAX_P; D in {2, 3}.

#ifndef PROJECT_TILE
#define PROJECT_TILE 128
#endif

#ifndef PROJECT_MAX_P
#define PROJECT_MAX_P 64
#endif

#ifndef PROJECT_UNROLL
#define PROJECT_UNROLL 4
#endif

constexpr int kProjectUnroll = PROJECT_UNROLL;

__device__ __forceinline__ float lt_load(const float* __restrict__ p, long long i) {
    return __ldg(p + i);
}

__device__ __forceinline__ float lt_load(const unsigned short* __restrict__ p, long long i) {
    unsigned short bits = __ldg(p + i);
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(bits));
    return v;
}

// 16-byte vector loads: 4 float32 or 8 binary16 values, converted to float32.
__device__ __forceinline__ void lt_load16(const float* __restrict__ p, long long q, float* v) {
    const float4 w = __ldg(reinterpret_cast<const float4*>(p) + q);
    v[0] = w.x;
    v[1] = w.y;
    v[2] = w.z;
    v[3] = w.w;
}

__device__ __forceinline__ float lt_half(unsigned int bits16) {
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"((unsigned short)bits16));
    return v;
}

__device__ __forceinline__ void lt_load16(const unsigned short* __restrict__ p, long long q, float* v) {
    const uint4 w = __ldg(reinterpret_cast<const uint4*>(p) + q);
    const unsigned int words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[2 * i] = lt_half(words[i] & 0xffffu);  // little-endian: element 2i is the low half
        v[2 * i + 1] = lt_half(words[i] >> 16);
    }
}

// Stage the blended tile rows [row0, row0 + rows) into sm (row pitch `pitch`), then project each row
// with the frame in sF and write it to y. Called by all threads of the block. With vec != 0 (a and b
// 16-byte aligned, checked by the host) the tile is read with 16-byte loads; a full tile holds
// PROJECT_TILE * p elements, a multiple of the vector width, so only the last tile has a scalar tail.
template <typename T, int D>
__device__ __forceinline__ void project_tiles(const T* __restrict__ a, const T* __restrict__ b, float s,
                                              long long n, int p, int pitch, int vec,
                                              const float* __restrict__ sF, float* sm, float* __restrict__ y,
                                              long long stride, long long offset) {
    constexpr int W = 16 / (int)sizeof(T);  // elements per 16-byte vector
    const int tid = threadIdx.x;
    const float w0 = 1.0f - s;
    // Incremental (row, column) walk over the flat tile: avoids an integer division per element.
    const int step_r = PROJECT_TILE / p;
    const int step_c = PROJECT_TILE - step_r * p;
    const long long ntiles = (n + PROJECT_TILE - 1) / PROJECT_TILE;
    for (long long tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const long long row0 = tile * PROJECT_TILE;
        const long long left = n - row0;
        const int rows = left < PROJECT_TILE ? (int)left : PROJECT_TILE;
        const int nel = rows * p;
        const long long base = row0 * (long long)p;
        int done = 0;
        if (vec) {
            const int nvec = nel / W;
            const T* ta = a + base;
            const T* tb = b + base;
#pragma unroll 2
            for (int q = tid; q < nvec; q += PROJECT_TILE) {
                float va[W];
                float vb[W];
                lt_load16(ta, q, va);
                lt_load16(tb, q, vb);
                const int e0 = q * W;
                int r = e0 / p;
                int c = e0 - r * p;
#pragma unroll
                for (int j = 0; j < W; ++j) {
                    sm[r * pitch + c] = w0 * va[j] + s * vb[j];
                    if (++c == p) {
                        c = 0;
                        ++r;
                    }
                }
            }
            done = nvec * W;
        }
        int r = (done + tid) / p;
        int c = (done + tid) - r * p;
#pragma unroll kProjectUnroll
        for (int e = done + tid; e < nel; e += PROJECT_TILE) {
            const float va = lt_load(a, base + e);
            const float vb = lt_load(b, base + e);
            sm[r * pitch + c] = w0 * va + s * vb;
            c += step_c;
            r += step_r;
            if (c >= p) {
                c -= p;
                r += 1;
            }
        }
        __syncthreads();
        if (tid < rows) {
            float acc[D];
#pragma unroll
            for (int k = 0; k < D; ++k) acc[k] = 0.0f;
            const float* row = sm + tid * pitch;
            for (int j = 0; j < p; ++j) {
                const float v = row[j];
#pragma unroll
                for (int k = 0; k < D; ++k) acc[k] = fmaf(v, sF[j * D + k], acc[k]);
            }
            float* dst = y + (row0 + tid) * stride + offset;
#pragma unroll
            for (int k = 0; k < D; ++k) dst[k] = acc[k];
        }
        __syncthreads();
    }
}

// Frame given directly: frame is (p, D) float32 in device memory, copied to shared memory per block.
template <typename T, int D>
__device__ __forceinline__ void project_frame(const T* __restrict__ a, const T* __restrict__ b, float s,
                                              const float* __restrict__ frame, long long n, int p, int vec,
                                              float* __restrict__ y, long long stride, long long offset) {
    extern __shared__ __align__(16) float lt_smem[];
    const int pitch = p | 1;
    float* sF = lt_smem + PROJECT_TILE * pitch;
    for (int e = threadIdx.x; e < p * D; e += blockDim.x) sF[e] = frame[e];
    __syncthreads();
    project_tiles<T, D>(a, b, s, n, p, pitch, vec, sF, lt_smem, y, stride, offset);
}

// Frame built per block from the geodesic segment (float64 parameters, evaluated in float64).
template <typename T, int D>
__device__ __forceinline__ void project_geodesic(const T* __restrict__ a, const T* __restrict__ b, float s,
                                                 const double* __restrict__ ga, const double* __restrict__ h,
                                                 const double* __restrict__ va,
                                                 const double* __restrict__ tau, double f, long long n,
                                                 int p, int vec, float* __restrict__ y, long long stride,
                                                 long long offset) {
    extern __shared__ __align__(16) float lt_smem[];
    const int pitch = p | 1;
    float* sF = lt_smem + PROJECT_TILE * pitch;
    double cs[D];
    double sn[D];
#pragma unroll
    for (int m = 0; m < D; ++m) sincos(f * tau[m], &sn[m], &cs[m]);
    for (int e = threadIdx.x; e < p * D; e += blockDim.x) {
        const int j = e / D;
        const int k = e - j * D;
        double acc = 0.0;
#pragma unroll
        for (int m = 0; m < D; ++m) acc += (ga[j * D + m] * cs[m] + h[j * D + m] * sn[m]) * va[k * D + m];
        sF[e] = (float)acc;
    }
    __syncthreads();
    project_tiles<T, D>(a, b, s, n, p, pitch, vec, sF, lt_smem, y, stride, offset);
}

#define LT_PROJECT_KERNELS(NAME, T, D)                                                                    \
    extern "C" __global__ void __launch_bounds__(PROJECT_TILE)                                           \
        project_##NAME##_d##D(const T* __restrict__ a, const T* __restrict__ b, float s,                 \
                              const float* __restrict__ frame, long long n, int p, int vec,              \
                              float* __restrict__ y, long long stride, long long offset) {               \
        project_frame<T, D>(a, b, s, frame, n, p, vec, y, stride, offset);                               \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(PROJECT_TILE) project_geo_##NAME##_d##D(                \
        const T* __restrict__ a, const T* __restrict__ b, float s, const double* __restrict__ ga,         \
        const double* __restrict__ h, const double* __restrict__ va, const double* __restrict__ tau,      \
        double f, long long n, int p, int vec, float* __restrict__ y, long long stride, long long offset) { \
        project_geodesic<T, D>(a, b, s, ga, h, va, tau, f, n, p, vec, y, stride, offset);                \
    }

LT_PROJECT_KERNELS(f32, float, 2)
LT_PROJECT_KERNELS(f32, float, 3)
LT_PROJECT_KERNELS(f16, unsigned short, 2)
LT_PROJECT_KERNELS(f16, unsigned short, 3)
