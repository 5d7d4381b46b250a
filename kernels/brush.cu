// brush.cu — selection masks over projected points: axis-aligned rectangle and lasso polygon.
//
// brush_rect: mask[i] = x0 <= x_i <= x1 && y0 <= y_i <= y1 (closed; NaN coordinates are outside).
// brush_lasso: mask[i] = point i inside the polygon (vx, vy)[0..m) by the even-odd rule. Crossing
//   number along +x with the half-open rule (vy_a > y) != (vy_b > y) for each edge, and the side test
//   written as a sign of a cross product, evaluated with explicitly rounded float32 operations
//   (__fsub_rn / __fmul_rn: no FMA contraction), so that the NumPy twin, which performs the same IEEE
//   float32 operations in the same order, returns the identical mask bit for bit.
// xy: float32 points, point i at xy[i*row_stride] (x) and xy[i*row_stride + 1] (y); any row stride >= 2,
//   so a vertex buffer of interleaved attributes can be read in place. mask: one byte per point (0/1).
//
// Launch shape: 1-D grid (grid-stride over points), BRUSH_BLOCK threads per block. The lasso copies the
// polygon into dynamic shared memory (2 * m floats, m <= BRUSH_MAX_VERTICES) and skips points outside
// its bounding box before walking the edges.
// Bytes moved per point: 8 read + 1 written (9 B); the lasso adds O(m) shared-memory work per point
// inside the bounding box. Indices are 64-bit.

#ifndef BRUSH_BLOCK
#define BRUSH_BLOCK 256
#endif

#ifndef BRUSH_MAX_VERTICES
#define BRUSH_MAX_VERTICES 4096
#endif

extern "C" __global__ void __launch_bounds__(BRUSH_BLOCK)
    brush_rect(const float* __restrict__ xy, long long n, long long row_stride, float x0, float y0, float x1,
               float y1, unsigned char* __restrict__ mask) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const float x = __ldg(xy + i * row_stride);
        const float y = __ldg(xy + i * row_stride + 1);
        mask[i] = (x >= x0 && x <= x1 && y >= y0 && y <= y1) ? 1 : 0;
    }
}

extern "C" __global__ void __launch_bounds__(BRUSH_BLOCK)
    brush_lasso(const float* __restrict__ xy, long long n, long long row_stride,
                const float* __restrict__ poly, int m, float bx0, float by0, float bx1, float by1,
                unsigned char* __restrict__ mask) {
    extern __shared__ float lt_poly[];  // vx[0..m), vy[0..m)
    for (int e = threadIdx.x; e < 2 * m; e += blockDim.x) lt_poly[e] = poly[e];
    __syncthreads();
    const float* vx = lt_poly;
    const float* vy = lt_poly + m;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const float x = __ldg(xy + i * row_stride);
        const float y = __ldg(xy + i * row_stride + 1);
        unsigned char inside = 0;
        if (x >= bx0 && x <= bx1 && y >= by0 && y <= by1) {
            float xa = vx[m - 1];
            float ya = vy[m - 1];
            for (int k = 0; k < m; ++k) {
                const float xb = vx[k];
                const float yb = vy[k];
                if ((ya > y) != (yb > y)) {
                    const float cross = __fsub_rn(__fmul_rn(__fsub_rn(xb, xa), __fsub_rn(y, ya)),
                                                  __fmul_rn(__fsub_rn(x, xa), __fsub_rn(yb, ya)));
                    // Upward edge: the point is left of it when cross > 0; downward: when cross < 0.
                    if (yb > ya ? cross > 0.0f : cross < 0.0f) inside ^= 1;
                }
                xa = xb;
                ya = yb;
            }
        }
        mask[i] = inside;
    }
}
