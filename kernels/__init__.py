"""Per-frame work over N points: CUDA kernels (CuPy ``RawModule``) with NumPy twins.

NumPy inputs run the twin (:mod:`kernels.twins`) on the host; CuPy inputs run the CUDA kernel
(``kernels/*.cu``) on the arrays' device, on CuPy's current stream. Results come back in the
caller's array type. This package imports only NumPy at import time (CuPy lazily, on the first
CuPy input) and never imports ``engine`` or ``viewer``.

Public functions:
- ``project(a, b, s, frame, out=None, *, stride=None, offset=0)``: ((1 - s) A + s B) F.
- ``project_geodesic(a, b, s, Ga, H, Va, tau, f, out=None, *, stride=None, offset=0)``: the same with
  frame(f) = (Ga diag(cos f tau) + H diag(sin f tau)) Va^T built on the device (upload Ga, H, Va,
  tau once per geodesic segment as CuPy arrays; per frame only f and s cross).
- ``brush_rect(xy, rect, out=None)``, ``brush_lasso(xy, polygon, out=None)``: selection masks.
- ``centroid(data, mask=None, index=None)``: the mean of a selection, float64.
- ``available()``, ``compile_all()``: is the CUDA path usable; compile everything now.
"""

from __future__ import annotations

import math
import sys
from functools import cache

import numpy as np

from . import _loader, twins

__all__ = [
    "available",
    "cuda_status",
    "brush_lasso",
    "brush_rect",
    "centroid",
    "compile_all",
    "project",
    "project_geodesic",
]

MAX_P = 64
MAX_POLYGON_VERTICES = _loader.BRUSH_MAX_VERTICES


@cache
def available() -> bool:
    """True when CuPy imports and sees a CUDA device (so CuPy inputs can run the kernels)."""
    return _loader.cuda_status()[0]


def cuda_status() -> tuple[bool, str]:
    """``(True, device name)`` or ``(False, reason)``: the one CUDA probe (see ``_loader``)."""
    return _loader.cuda_status()


def compile_all() -> dict[str, tuple[str, ...]]:
    """Compile every kernel source for the current device now; {source: kernel names}.

    Raises RuntimeError without CuPy or a device, and CuPy's CompileException on a compile error.
    """
    return _loader.compile_all()


# --------------------------------------------------------------------------------------- checks


def _is_cupy(a) -> bool:
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(a, cp.ndarray)


def _on_device(func: str, **arrays) -> bool:
    """True when the per-point arrays are CuPy, False when NumPy; ValueError when they are mixed."""
    kinds = {name: _is_cupy(a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        where = ", ".join(f"{n}: {'CuPy' if c else 'NumPy'}" for n, c in kinds.items())
        raise ValueError(f"{func}: the point arrays must all be NumPy or all CuPy ({where})")
    for name, a in arrays.items():
        if a is not None and not _is_cupy(a) and not isinstance(a, np.ndarray):
            raise ValueError(f"{func}: {name} must be a NumPy or CuPy array, got {type(a).__name__}")
    return any(kinds.values())


def _host(x, name: str, func: str, dtype=np.float64) -> np.ndarray:
    """A small parameter (frame, rectangle, polygon) as a finite host array."""
    arr = x.get() if _is_cupy(x) else np.asarray(x)
    try:
        arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{func}: {name} must be numeric ({exc})") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{func}: {name} contains NaN or infinity")
    return arr


def _scalar(x, name: str, func: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{func}: {name} must be a real number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{func}: {name} must be finite, got {v}")
    return v


def _contiguous(a, name: str, func: str, gpu: bool) -> None:
    if gpu and not a.flags.c_contiguous:
        raise ValueError(
            f"{func}: {name} must be C-contiguous on the GPU (the kernels ignore strides); "
            f"pass cupy.ascontiguousarray({name})"
        )


def _check_points(a, b, func: str, gpu: bool) -> tuple[int, int]:
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2:
            raise ValueError(f"{func}: {name} must be 2-D (N, p), got shape {x.shape}")
        if x.dtype not in (np.float32, np.float16):
            raise ValueError(f"{func}: {name} must be float32 or float16, got {x.dtype}")
        _contiguous(x, name, func, gpu)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"{func}: a and b must match: a {a.shape} {a.dtype}, b {b.shape} {b.dtype}")
    n, p = a.shape
    if not 1 <= p <= MAX_P:
        raise ValueError(f"{func}: a has p = {p} columns; the kernels support 1 <= p <= {MAX_P}")
    return n, p


def _check_out(out, n: int, d: int, stride, offset, func: str, xp):
    """Allocate (N, d) float32 or validate a flat float32 buffer; returns (out, stride, offset)."""
    if out is None:
        if stride is not None or offset != 0:
            raise ValueError(f"{func}: stride and offset need an out buffer")
        return xp.empty((n, d), np.float32), d, 0
    if out.dtype != np.float32:
        raise ValueError(f"{func}: out must be float32, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{func}: out must be a C-contiguous buffer (it is addressed as a flat array)")
    stride = d if stride is None else stride
    if int(stride) != stride or stride < d:
        raise ValueError(f"{func}: stride must be an integer >= d = {d}, got {stride}")
    if int(offset) != offset or not 0 <= offset <= stride - d:
        raise ValueError(f"{func}: offset must be an integer in [0, stride - d] = [0, {stride - d}], "
                         f"got {offset}")
    stride, offset = int(stride), int(offset)
    need = (n - 1) * stride + offset + d if n else 0
    if out.size < need:
        raise ValueError(f"{func}: out holds {out.size} floats; N = {n} points at stride {stride} "
                         f"from offset {offset} need {need}")
    return out, stride, offset


def _check_frame_shape(shape, p: int, name: str, func: str) -> int:
    if len(shape) != 2 or shape[0] != p or shape[1] not in (2, 3):
        raise ValueError(f"{func}: {name} must be (p, d) = ({p}, 2 or 3) for p = {p}, "
                         f"got shape {tuple(shape)}")
    return shape[1]


# -------------------------------------------------------------------------------------- project


def project(a, b, s, frame, out=None, *, stride=None, offset=0):
    """Blend two aligned layers and project them: y = ((1 - s) A + s B) F, float32.

    a, b : (N, p) float32 or float16, both NumPy (host, twin) or both CuPy (device, kernel;
        C-contiguous). float16 halves the bytes read; arithmetic is float32 either way. p <= 64.
    s : float, the blend fraction (0 gives A, 1 gives B).
    frame : (p, d) float, d in {2, 3}; NumPy or CuPy (copied to the device as float32 per call when
        the points are on the device: use project_geodesic to avoid even that).
    out : None, or a C-contiguous float32 buffer in the points' array type (e.g. an OpenGL vertex
        buffer mapped through CUDA-GL interop), written as out.flat[i*stride + offset + k];
        no other element is touched.
    stride : floats per vertex in out (default d); offset : first float of the position (default 0).
    Returns out, or a new (N, d) float32 array in the points' array type.
    """
    func = "project"
    gpu = _on_device(func, a=a, b=b, out=out)
    n, p = _check_points(a, b, func, gpu)
    d = _check_frame_shape(getattr(frame, "shape", np.shape(frame)), p, "frame", func)
    s = _scalar(s, "s", func)
    xp = sys.modules["cupy"] if gpu else np
    out, stride, offset = _check_out(out, n, d, stride, offset, func, xp)
    if not gpu:
        return twins.project(a, b, s, _host(frame, "frame", func), out, stride, offset)
    cp = xp
    if _is_cupy(frame):  # already on the device: not checked for NaN (that would synchronise)
        fr = cp.ascontiguousarray(frame, dtype=cp.float32)
    else:
        fr = cp.asarray(_host(frame, "frame", func, np.float32))
    _launch_project(a, b, s, n, p, d, out, stride, offset, f"project_{_tname(a)}_d{d}", (fr,))
    return out


def project_geodesic(a, b, s, Ga, H, Va, tau, f, out=None, *, stride=None, offset=0):
    """:func:`project` with the frame of a geodesic segment at fraction f, built where the points are.

    frame(f) = (Ga diag(cos(f tau)) + H diag(sin(f tau))) Va^T, evaluated in float64.
    Ga, H : (p, d); Va : (d, d); tau : (d,) — one segment's parameters (engine.tour.geodesic), NumPy or
        CuPy. For device points pass them as CuPy float64 arrays, uploaded once per segment: then
        per frame only the scalars f and s reach the device. Other arguments as in :func:`project`.
    """
    func = "project_geodesic"
    gpu = _on_device(func, a=a, b=b, out=out)
    n, p = _check_points(a, b, func, gpu)
    d = _check_frame_shape(getattr(Ga, "shape", np.shape(Ga)), p, "Ga", func)
    shapes = {"H": (p, d), "Va": (d, d), "tau": (d,)}
    for name, x in (("H", H), ("Va", Va), ("tau", tau)):
        if tuple(getattr(x, "shape", np.shape(x))) != shapes[name]:
            raise ValueError(f"{func}: {name} must have shape {shapes[name]} for Ga of shape ({p}, {d}), "
                             f"got {tuple(getattr(x, 'shape', np.shape(x)))}")
    s = _scalar(s, "s", func)
    f = _scalar(f, "f", func)
    xp = sys.modules["cupy"] if gpu else np
    out, stride, offset = _check_out(out, n, d, stride, offset, func, xp)
    if not gpu:
        params = [_host(x, name, func) for name, x in (("Ga", Ga), ("H", H), ("Va", Va), ("tau", tau))]
        return twins.project_geodesic(a, b, s, *params, f, out, stride, offset)
    cp = xp
    params = tuple(cp.ascontiguousarray(cp.asarray(x, dtype=cp.float64)) for x in (Ga, H, Va, tau))
    kernel = f"project_geo_{_tname(a)}_d{d}"
    _launch_project(a, b, s, n, p, d, out, stride, offset, kernel, params + (np.float64(f),))
    return out


def _tname(a) -> str:
    return "f16" if a.dtype == np.float16 else "f32"


def _launch_project(a, b, s, n, p, d, out, stride, offset, kernel, frame_args) -> None:
    if n == 0:
        return
    cp = sys.modules["cupy"]
    if a.dtype == np.float16:  # the kernel reads raw binary16 words
        a, b = a.view(cp.uint16), b.view(cp.uint16)
    tile = _loader.PROJECT_TILE
    shared = (tile * (p | 1) + p * d) * 4
    grid = _loader.grid_for(-(-n // tile), per_sm=_loader.PROJECT_BLOCKS_PER_SM)
    vec = np.int32(a.data.ptr % 16 == 0 and b.data.ptr % 16 == 0)  # 16-byte loads need aligned rows
    args = (a, b, np.float32(s), *frame_args, np.int64(n), np.int32(p), vec, out, np.int64(stride),
            np.int64(offset))
    _loader.launch("project.cu", kernel, grid, tile, args, shared)


# ---------------------------------------------------------------------------------------- brush


def _check_xy(xy, func: str, gpu: bool) -> tuple[int, int]:
    """(N, row stride in floats) for (N, 2) float32 points whose columns are adjacent floats."""
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{func}: xy must be (N, 2), got shape {xy.shape}")
    if xy.dtype != np.float32:
        raise ValueError(f"{func}: xy must be float32, got {xy.dtype}")
    item = xy.itemsize
    row = xy.strides[0]
    if gpu and (xy.strides[1] != item or row % item or row < 2 * item):
        raise ValueError(f"{func}: xy on the GPU must have adjacent (x, y) floats and a row stride that "
                         f"is a positive multiple of 4 bytes (a view of a vertex buffer is fine), "
                         f"got strides {xy.strides}")
    return xy.shape[0], row // item


def _mask_out(out, n: int, func: str, xp):
    if out is None:
        return xp.empty(n, dtype=bool)
    if out.dtype != np.bool_ or out.shape != (n,) or not out.flags.c_contiguous:
        raise ValueError(f"{func}: out must be a C-contiguous ({n},) bool array, got {out.shape} {out.dtype}")
    return out


def brush_rect(xy, rect, out=None):
    """Mask of the points inside an axis-aligned rectangle (closed; NaN points are outside).

    xy : (N, 2) float32, NumPy (host) or CuPy (device; any row stride, so a view of an interleaved
        vertex buffer works). rect : (x0, y0, x1, y1), corners in any order, rounded to float32.
    out : optional (N,) bool array of xy's type, written in full. Returns the (N,) bool mask.
    """
    func = "brush_rect"
    gpu = _on_device(func, xy=xy, out=out)
    n, row = _check_xy(xy, func, gpu)
    r = _host(rect, "rect", func).reshape(-1)
    if r.shape != (4,):
        raise ValueError(f"{func}: rect must be 4 numbers (x0, y0, x1, y1), got {r.shape[0]}")
    lo = np.minimum(r[:2], r[2:]).astype(np.float32)
    hi = np.maximum(r[:2], r[2:]).astype(np.float32)
    out = _mask_out(out, n, func, sys.modules["cupy"] if gpu else np)
    if not gpu:
        return twins.brush_rect(xy[:, 0], xy[:, 1], (lo[0], lo[1], hi[0], hi[1]), out)
    if n:
        args = (xy, np.int64(n), np.int64(row), lo[0], lo[1], hi[0], hi[1], out.view(np.uint8))
        block = _loader.BRUSH_BLOCK
        _loader.launch("brush.cu", "brush_rect", _loader.grid_for(-(-n // block)), block, args)
    return out


def brush_lasso(xy, polygon, out=None):
    """Mask of the points inside a lasso polygon by the even-odd rule (self-touching loops allowed).

    xy : (N, 2) float32, NumPy or CuPy (as in :func:`brush_rect`). polygon : (M, 2) vertices,
    3 <= M <= 4096, implicitly closed, NumPy or CuPy (rounded to float32 on the host, then uploaded).
    The twin and the kernel perform the same float32 operations: their masks agree bit for bit.
    out : optional (N,) bool array of xy's type, written in full. Returns the (N,) bool mask.
    """
    func = "brush_lasso"
    gpu = _on_device(func, xy=xy, out=out)
    n, row = _check_xy(xy, func, gpu)
    poly = _host(polygon, "polygon", func)
    if poly.ndim != 2 or poly.shape[1] != 2 or not 3 <= poly.shape[0] <= MAX_POLYGON_VERTICES:
        raise ValueError(f"{func}: polygon must be (M, 2) with 3 <= M <= {MAX_POLYGON_VERTICES}, "
                         f"got shape {poly.shape}")
    vx = np.ascontiguousarray(poly[:, 0], dtype=np.float32)
    vy = np.ascontiguousarray(poly[:, 1], dtype=np.float32)
    out = _mask_out(out, n, func, sys.modules["cupy"] if gpu else np)
    if not gpu:
        return twins.brush_lasso(xy[:, 0], xy[:, 1], vx, vy, out)
    if n:
        cp = sys.modules["cupy"]
        m = vx.shape[0]
        dev_poly = cp.asarray(np.concatenate([vx, vy]))
        args = (xy, np.int64(n), np.int64(row), dev_poly, np.int32(m),
                vx.min(), vy.min(), vx.max(), vy.max(), out.view(np.uint8))
        block = _loader.BRUSH_BLOCK
        grid = _loader.grid_for(-(-n // block))
        _loader.launch("brush.cu", "brush_lasso", grid, block, args, 2 * m * 4)
    return out


# ------------------------------------------------------------------------------------- centroid


def centroid(data, mask=None, index=None):
    """Mean of the selected rows of data, accumulated in float64.

    data : (N, p) float32, NumPy or CuPy (C-contiguous on the GPU), p <= 64.
    mask : (N,) bool selecting rows, or index : (K,) integer row numbers in [0, N) (repeats count
        again), or neither (all rows). Same array type as data.
    Returns (p,) float64 in data's array type. Raises ValueError for an empty selection or an index
    outside [0, N). On the GPU this synchronises (the selection count is checked on the host).
    """
    func = "centroid"
    gpu = _on_device(func, data=data, mask=mask, index=index)
    if data.ndim != 2 or data.dtype != np.float32:
        raise ValueError(f"{func}: data must be (N, p) float32, got shape {data.shape} {data.dtype}")
    _contiguous(data, "data", func, gpu)
    n, p = data.shape
    if not 1 <= p <= MAX_P:
        raise ValueError(f"{func}: data has p = {p} columns; supported 1 <= p <= {MAX_P}")
    if mask is not None and index is not None:
        raise ValueError(f"{func}: give mask or index, not both")
    if mask is not None and (mask.dtype != np.bool_ or mask.shape != (n,)):
        raise ValueError(f"{func}: mask must be ({n},) bool, got {mask.shape} {mask.dtype}")
    if index is not None:
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(f"{func}: index must be a 1-D integer array, got {index.shape} {index.dtype}")
    if gpu:
        total, count, bad = _centroid_gpu(data, mask, index, n, p)
    else:
        bad = 0
        if index is not None and index.size:
            bad = int(np.count_nonzero((index < 0) | (index >= n)))
        total, count = (None, 0) if bad else twins.centroid(data, mask, index)
    if bad:
        raise ValueError(f"{func}: index has {bad} entries outside [0, {n})")
    if count == 0:
        what = "mask selects no row" if mask is not None else "index is empty" if index is not None else "N=0"
        raise ValueError(f"{func}: the selection is empty ({what})")
    mean = np.asarray(total, np.float64) / count
    return sys.modules["cupy"].asarray(mean) if gpu else mean


def _centroid_gpu(data, mask, index, n, p):
    cp = sys.modules["cupy"]
    if mask is None and index is None:
        if n == 0:
            return np.zeros(p), 0, 0
        return data.sum(axis=0, dtype=cp.float64).get(), n, 0
    acc = cp.zeros(p + 2, cp.float64)
    block = _loader.CENTROID_BLOCK
    rows = block // p
    shared = block * 8
    if mask is not None:
        m = n
        args = (data, cp.ascontiguousarray(mask).view(cp.uint8), np.int64(n), np.int32(p), acc)
        kernel = "centroid_mask"
    else:
        m = index.size
        idx = cp.ascontiguousarray(index, dtype=cp.int64)
        args = (data, idx, np.int64(m), np.int64(n), np.int32(p), acc)
        kernel = "centroid_index"
    if m:
        _loader.launch("centroid.cu", kernel, _loader.grid_for(-(-m // rows)), block, args, shared)
    host = acc.get()
    return host[:p], int(host[p]), int(host[p + 1])
