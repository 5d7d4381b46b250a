"""NumPy twins of the CUDA kernels: the CPU path, and the oracle the GPU tests compare against.

Each twin computes what its kernel computes, on host arrays, with the same argument meaning. Inputs
are assumed validated by the public functions of :mod:`kernels` (shapes, dtypes, ranges); call those.

Speed: every twin streams over the points in chunks that stay in a core's L2 cache, reuses its buffers
and creates no (N, p) temporary. ``project`` uses linearity, (1 - s)(A F) + s(B F), so each chunk
is two small matrix products; chunks are spread over a few threads (NumPy and BLAS release the GIL),
and the chunk is small enough that OpenBLAS runs each product on one thread (its threading threshold
is m·n·k > 262,144), so the two levels of threading do not fight over the cores.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# m·n·k of one chunk's product: OpenBLAS stays single-threaded at or below this (interface/gemm.c).
_GEMM_SINGLE_THREAD_MNK = 262_144
_POINT_CHUNK = 65_536  # points per chunk for the brush twins (8 B each: 512 KB of xy)
_ROW_CHUNK_BYTES = 1 << 20  # bytes of data per chunk for the centroid twin

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_workers(), thread_name_prefix="layertour-twin")
        return _pool


def _spans(n: int, chunk: int, parts: int) -> list[tuple[int, int]]:
    """Split [0, n) into at most ``parts`` contiguous spans whose bounds are multiples of ``chunk``."""
    nchunks = -(-n // chunk)
    per = -(-nchunks // parts)
    return [(i * chunk, min(n, (i + per) * chunk)) for i in range(0, nchunks, per)]


def out_view(out: np.ndarray, n: int, d: int, stride: int, offset: int) -> np.ndarray:
    """The (n, d) view of the flat float32 buffer ``out`` addressed as out[i*stride + offset + k]."""
    flat = out.reshape(-1)
    return np.lib.stride_tricks.as_strided(
        flat[offset:], shape=(n, d), strides=(stride * flat.itemsize, flat.itemsize), writeable=True
    )


def project(a, b, s, frame, out, stride, offset):
    """out[i*stride + offset + k] = (((1 - s) A + s B) F)[i, k] on the host.

    a, b : (N, p) float32 or float16, NumPy (host). s : float. frame : (p, d) float, host.
    out : flat float32 NumPy buffer of at least (N-1)*stride + offset + d elements; only the
    addressed elements are written. Returns ``out``. Arithmetic in float32.
    """
    n, p = a.shape
    d = frame.shape[1]
    if n == 0:
        return out
    f32 = np.ascontiguousarray(frame, dtype=np.float32)
    dest = out_view(out, n, d, stride, offset)
    w0, w1 = np.float32(1.0 - s), np.float32(s)
    chunk = max(64, _GEMM_SINGLE_THREAD_MNK // (p * d))
    half = a.dtype == np.float16

    def run(start: int, stop: int) -> None:
        ba = np.empty((chunk, d), np.float32)
        bb = np.empty((chunk, d), np.float32)
        if half:
            ca = np.empty((chunk, p), np.float32)
            cb = np.empty((chunk, p), np.float32)
        for lo in range(start, stop, chunk):
            hi = min(stop, lo + chunk)
            m = hi - lo
            xa, xb = a[lo:hi], b[lo:hi]
            if half:
                np.copyto(ca[:m], xa)
                np.copyto(cb[:m], xb)
                xa, xb = ca[:m], cb[:m]
            np.matmul(xa, f32, out=ba[:m])
            np.matmul(xb, f32, out=bb[:m])
            np.multiply(ba[:m], w0, out=ba[:m])
            np.multiply(bb[:m], w1, out=bb[:m])
            np.add(ba[:m], bb[:m], out=dest[lo:hi])

    spans = _spans(n, chunk, _workers())
    if len(spans) == 1:
        run(*spans[0])
    else:
        for fut in [_executor().submit(run, lo, hi) for lo, hi in spans]:
            fut.result()
    return out


def geodesic_frame(Ga, H, Va, tau, f) -> np.ndarray:
    """frame(f) = (Ga diag(cos(f tau)) + H diag(sin(f tau))) Va^T, (p, d) float64 on the host."""
    Ga, H, Va, tau = (np.asarray(x, dtype=np.float64) for x in (Ga, H, Va, tau))
    ang = float(f) * tau
    return (Ga * np.cos(ang) + H * np.sin(ang)) @ Va.T


def project_geodesic(a, b, s, Ga, H, Va, tau, f, out, stride, offset):
    """:func:`project` with the frame of fraction ``f`` of a geodesic segment (see geodesic_frame)."""
    return project(a, b, s, geodesic_frame(Ga, H, Va, tau, f), out, stride, offset)


def brush_rect(x, y, rect, out):
    """out[i] = x0 <= x[i] <= x1 and y0 <= y[i] <= y1, with float32 bounds (NaN: outside).

    x, y : (N,) float32 host views (any stride). rect : (x0, y0, x1, y1) np.float32, x0 <= x1,
    y0 <= y1. out : (N,) bool host array. Returns ``out``.
    """
    x0, y0, x1, y1 = rect
    n = x.shape[0]
    t = np.empty(min(n, _POINT_CHUNK), bool)
    for lo in range(0, n, _POINT_CHUNK):
        hi = min(n, lo + _POINT_CHUNK)
        o, tm = out[lo:hi], t[: hi - lo]
        np.greater_equal(x[lo:hi], x0, out=o)
        np.less_equal(x[lo:hi], x1, out=tm)
        o &= tm
        np.greater_equal(y[lo:hi], y0, out=tm)
        o &= tm
        np.less_equal(y[lo:hi], y1, out=tm)
        o &= tm
    return out


def brush_lasso(x, y, vx, vy, out):
    """Even-odd point-in-polygon for every point, bit-identical to the ``brush_lasso`` kernel.

    x, y : (N,) float32 host views. vx, vy : (M,) float32 polygon vertices (closed implicitly).
    out : (N,) bool host array. Returns ``out``. Per edge (a -> b) crossing the horizontal line at y
    (half-open: (ya > y) != (yb > y)), the point is left of the edge when the float32 cross product
    (xb - xa)(y - ya) - (x - xa)(yb - ya) is > 0 for an upward edge, < 0 for a downward one; each
    crossing toggles the result. The operations and their order match the kernel's.
    """
    n = x.shape[0]
    bx0, bx1 = vx.min(), vx.max()
    by0, by1 = vy.min(), vy.max()
    edges = [(vx[k - 1], vy[k - 1], vx[k], vy[k]) for k in range(vx.shape[0])]
    for lo in range(0, n, _POINT_CHUNK):
        hi = min(n, lo + _POINT_CHUNK)
        cx, cy = x[lo:hi], y[lo:hi]
        inbox = (cx >= bx0) & (cx <= bx1) & (cy >= by0) & (cy <= by1)
        idx = np.flatnonzero(inbox)
        px, py = cx[idx], cy[idx]
        inside = np.zeros(idx.shape[0], bool)
        for xa, ya, xb, yb in edges:
            hit = np.flatnonzero((ya > py) != (yb > py))
            if hit.size == 0:
                continue
            hx, hy = px[hit], py[hit]
            cross = (xb - xa) * (hy - ya) - (hx - xa) * (yb - ya)
            left = cross > 0 if yb > ya else cross < 0
            inside[hit[left]] ^= True
        o = out[lo:hi]
        o[:] = False
        o[idx] = inside
    return out


def centroid(data, mask=None, index=None):
    """Mean of the selected rows of ``data``, accumulated in float64: (p,) float64 on the host.

    data : (N, p) float32 host array. mask : (N,) bool or None. index : (K,) int64 with entries in
    [0, N) (repeats count again) or None. Neither: the mean of all rows. Returns (sum, count) as a
    ((p,) float64, int) pair; the caller divides (and rejects an empty selection).
    """
    n, p = data.shape
    rows = max(1, _ROW_CHUNK_BYTES // (4 * p))
    total = np.zeros(p, np.float64)
    count = 0
    if index is not None:
        for lo in range(0, index.shape[0], rows):
            sel = data[index[lo : lo + rows]]
            total += np.add.reduce(sel, axis=0, dtype=np.float64)
            count += sel.shape[0]
        return total, count
    for lo in range(0, n, rows):
        block = data[lo : lo + rows]
        if mask is not None:
            block = block[mask[lo : lo + rows]]
        total += np.add.reduce(block, axis=0, dtype=np.float64)
        count += block.shape[0]
    return total, count
