"""kernels: every kernel and its NumPy twin against independent float64 references.

The same test bodies run on NumPy (twins) and, under the ``gpu`` marker, on CuPy (CUDA kernels), via
the ``xp`` fixture. Data are fresh random numbers each run (``rng``), with odd N and p; output
buffers are poisoned first so that every element the kernel must write is checked, and every element
it must not write is checked untouched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import _loader, twins

EPS32 = np.finfo(np.float32).eps


def host(x) -> np.ndarray:
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


def points(xp, rng, n, p, dtype=np.float32):
    """(N, p) random points in xp (never zeros: offsets plus Gaussian noise)."""
    a = (rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p) + rng.uniform(-2, 2, p)).astype(dtype)
    return xp.asarray(a)


def orthonormal(rng, p, d):
    q, r = np.linalg.qr(rng.standard_normal((p, d)))
    return q * np.sign(np.diag(r))


def project_reference(a, b, s, frame):
    """float64 ((1-s)A + sB)F and a rigorous-enough float32 error bound per element."""
    a64, b64, f64 = (host(x).astype(np.float64) for x in (a, b, frame))
    ref = ((1 - s) * a64 + s * b64) @ f64
    p = a64.shape[1]
    bound = 4 * (p + 2) * EPS32 * ((abs(1 - s) * np.abs(a64) + abs(s) * np.abs(b64)) @ np.abs(f64))
    return ref, bound + 1e-30


def assert_close_bound(got, ref, bound):
    err = np.abs(host(got).astype(np.float64) - ref)
    worst = np.argmax(err / bound)
    assert np.all(np.isfinite(host(got))), "non-finite output"
    assert np.all(err <= bound), f"error {err.flat[worst]:.3g} > bound {bound.flat[worst]:.3g} at {worst}"


# ---------------------------------------------------------------------------------------- project


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("p", [1, 15, 33, 64])
def test_project_matches_float64(xp, rng, dtype, d, p):
    n = int(rng.integers(20_000, 30_000)) | 1  # odd, several twin chunks and GPU tiles
    a, b = points(xp, rng, n, p, dtype), points(xp, rng, n, p, dtype)
    frame = orthonormal(rng, p, d) if p >= d else rng.standard_normal((p, d))
    s = float(rng.uniform(-0.25, 1.25))
    got = kernels.project(a, b, s, frame)
    assert type(got) is type(a) and got.shape == (n, d) and got.dtype == np.float32
    ref, bound = project_reference(a, b, s, frame)
    assert_close_bound(got, ref, bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("d,stride,offset", [(2, 2, 0), (2, 5, 3), (3, 7, 1), (3, 3, 0)])
def test_project_writes_only_the_addressed_floats(xp, rng, dtype, d, stride, offset):
    n = int(rng.integers(300, 1000)) | 1
    p = int(rng.integers(2, 40)) | 1
    a, b = points(xp, rng, n, p, dtype), points(xp, rng, n, p, dtype)
    frame = xp.asarray(orthonormal(rng, p, d))
    extra = int(rng.integers(0, 9))  # a buffer longer than needed: the tail must stay untouched
    buf = xp.full((n - 1) * stride + offset + d + extra, np.nan, np.float32)
    s = float(rng.uniform(0, 1))
    assert kernels.project(a, b, s, frame, out=buf, stride=stride, offset=offset) is buf
    got = host(buf)
    idx = (np.arange(n)[:, None] * stride + offset + np.arange(d)).reshape(-1)
    ref, bound = project_reference(a, b, s, frame)
    assert_close_bound(got[idx].reshape(n, d), ref, bound)
    untouched = np.ones(got.size, bool)
    untouched[idx] = False
    assert np.isnan(got[untouched]).all(), "project wrote outside its (stride, offset) slots"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("p", [15, 16, 5])
def test_project_unaligned_views(xp, rng, dtype, p):
    """Rows starting off a 16-byte boundary (a view one row in) take the scalar path and still match."""
    n = int(rng.integers(1_000, 3_000)) | 1
    a_full, b_full = points(xp, rng, n + 1, p, dtype), points(xp, rng, n + 1, p, dtype)
    a, b = a_full[1:], b_full[:-1]
    assert a.flags.c_contiguous and b.flags.c_contiguous
    frame = orthonormal(rng, p, 3)
    got = kernels.project(a, b, 0.625, frame)
    assert_close_bound(got, *project_reference(a, b, 0.625, frame))


@pytest.mark.parametrize("n", [1, 2, 127, 128, 129, 255, 257])
def test_project_tile_edges(xp, rng, n):
    p, d = 15, 2
    a, b = points(xp, rng, n, p), points(xp, rng, n, p)
    frame = orthonormal(rng, p, d)
    buf = xp.full(n * d + 5, np.nan, np.float32)
    kernels.project(a, b, 0.5, frame, out=buf)
    ref, bound = project_reference(a, b, 0.5, frame)
    assert_close_bound(host(buf)[: n * d].reshape(n, d), ref, bound)
    assert np.isnan(host(buf)[n * d :]).all()


def test_project_empty(xp):
    a = xp.zeros((0, 15), np.float32)
    assert kernels.project(a, a, 0.3, np.eye(15, 2)).shape == (0, 2)


def geodesic_segment(rng, p, d):
    """Random (Ga, H, Va, tau): Ga, H orthonormal and mutually orthogonal columns, Va orthogonal."""
    q = orthonormal(rng, p, 2 * d)
    Ga, H = q[:, :d], q[:, d:]
    Va = orthonormal(rng, d, d)
    tau = np.sort(rng.uniform(0.01, np.pi / 2, d))[::-1].copy()
    return Ga, H, Va, tau


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("d", [2, 3])
def test_project_geodesic_matches_float64(xp, rng, dtype, d):
    p = int(rng.integers(2 * d, 64)) | 1
    n = int(rng.integers(2_000, 9_000)) | 1
    a, b = points(xp, rng, n, p, dtype), points(xp, rng, n, p, dtype)
    Ga, H, Va, tau = geodesic_segment(rng, p, d)
    params = [xp.asarray(x) for x in (Ga, H, Va, tau)]  # uploaded once per segment
    for f in (0.0, float(rng.uniform(0, 1)), 1.0):
        F = (Ga * np.cos(f * tau) + H * np.sin(f * tau)) @ Va.T
        assert np.allclose(F.T @ F, np.eye(d), atol=1e-12)  # the reference frame is a frame
        s = float(rng.uniform(0, 1))
        buf = xp.full(n * (d + 1), np.nan, np.float32)
        kernels.project_geodesic(a, b, s, *params, f, out=buf, stride=d + 1, offset=1)
        got = host(buf).reshape(n, d + 1)
        ref, bound = project_reference(a, b, s, F)
        assert_close_bound(got[:, 1:], ref, bound)
        assert np.isnan(got[:, 0]).all()
    F0 = Ga @ Va.T  # f = 0 is the segment's start frame
    got0 = kernels.project_geodesic(a, b, 0.25, *params, 0.0)
    assert_close_bound(got0, *project_reference(a, b, 0.25, F0))


# ------------------------------------------------------------------------------------------ brush


def vbo_view(xp, rng, n, width=4, col=1):
    """(N, 2) float32 view at columns [col, col+2) of an (N, width) buffer, plus the buffer."""
    buf = xp.asarray(rng.uniform(-1.5, 1.5, (n, width)).astype(np.float32))
    return buf[:, col : col + 2], buf


def poisoned_mask(xp, n):
    return xp.asarray(np.full(n, 7, np.uint8)).view(bool)


def assert_mask(got, ref):
    raw = host(got).view(np.uint8)
    assert set(np.unique(raw)) <= {0, 1}, "mask bytes not all written as 0/1"
    bad = np.flatnonzero(raw.astype(bool) != ref)
    assert bad.size == 0, f"{bad.size} points differ, first {bad[:5]}"


def test_brush_rect(xp, rng):
    n = int(rng.integers(50_000, 150_000)) | 1
    xy, _ = vbo_view(xp, rng, n)
    raw = host(xy).copy()
    raw[rng.integers(0, n, 50), rng.integers(0, 2, 50)] = np.nan
    xy[...] = xp.asarray(raw)
    x0, x1 = np.sort(rng.uniform(-1, 1, 2))
    y0, y1 = np.sort(rng.uniform(-1, 1, 2))
    out = poisoned_mask(xp, n)
    got = kernels.brush_rect(xy, (x1, y0, x0, y1), out=out)  # corners in any order
    assert got is out
    lo = np.float32([x0, y0]).astype(np.float64)
    hi = np.float32([x1, y1]).astype(np.float64)
    r64 = raw.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ref = np.all((r64 >= lo) & (r64 <= hi), axis=1)
    assert_mask(got, ref)
    assert 0 < ref.sum() < n
    assert host(kernels.brush_rect(xy, ((x0, y0), (x1, y1)))).dtype == bool


def crossing_reference(pts, poly):
    """Independent even-odd test in float64: intersection abscissa by division, ray towards +x."""
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    inside = np.zeros(len(pts), bool)
    v = poly.astype(np.float64)
    for (xa, ya), (xb, yb) in zip(v, np.roll(v, -1, axis=0)):
        if ya == yb:
            continue
        lo, hi = min(ya, yb), max(ya, yb)
        spans = (y >= lo) & (y < hi)
        xi = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= spans & (xi > x)
    return inside


def boundary_distance(pts, poly):
    p = pts.astype(np.float64)
    v = poly.astype(np.float64)
    best = np.full(len(p), np.inf)
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-300), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return best


def star(rng, k=9):
    """Concave star polygon with random radii and rotation."""
    ang = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False) + rng.uniform(0, np.pi)
    r = np.where(np.arange(2 * k) % 2 == 0, rng.uniform(0.8, 1.2, 2 * k), rng.uniform(0.2, 0.5, 2 * k))
    return np.c_[r * np.cos(ang), r * np.sin(ang)]


def pentagram(rng):
    """Self-intersecting five-pointed star: the central pentagon is outside under even-odd."""
    ang = np.pi / 2 + 4 * np.pi / 5 * np.arange(5) + rng.uniform(-0.05, 0.05)
    return np.c_[np.cos(ang), np.sin(ang)]


def two_squares(rng):
    """Self-touching loop: two squares sharing one corner, traced as one polygon."""
    c = rng.uniform(-0.2, 0.2, 2)
    sq = np.array([[-1, -1], [0, -1], [0, 0], [1, 0], [1, 1], [0, 1], [0, 0], [-1, 0]], float)
    return sq + c


@pytest.mark.parametrize("shape", ["star", "pentagram", "two_squares", "random"])
def test_brush_lasso_even_odd(xp, rng, shape):
    n = int(rng.integers(50_000, 120_000)) | 1
    poly = {"star": star, "pentagram": pentagram, "two_squares": two_squares,
            "random": lambda r: r.uniform(-1.2, 1.2, (int(r.integers(5, 40)), 2))}[shape](rng)
    xy, _ = vbo_view(xp, rng, n, width=3, col=0)
    out = poisoned_mask(xp, n)
    got = kernels.brush_lasso(xy, poly, out=out)
    assert got is out
    pts = host(xy)
    ref = crossing_reference(pts, poly.astype(np.float32))
    far = boundary_distance(pts, poly.astype(np.float32)) > 1e-5
    assert far.mean() > 0.99
    g = host(got).view(np.uint8)
    assert set(np.unique(g)) <= {0, 1}
    mismatch = np.flatnonzero((g.astype(bool) != ref) & far)
    assert mismatch.size == 0, f"{mismatch.size} points away from the boundary differ"
    assert 0 < ref.sum() < n
    if shape == "pentagram":  # even-odd: the inner pentagon (radius < cos(72°)/..) is outside
        r = np.hypot(pts[:, 0], pts[:, 1])
        core = r < 0.3
        assert core.any() and not host(got)[core].any()
    if shape == "two_squares":  # both squares are inside
        q = pts - poly[0] - 1
        inner = (np.abs(np.abs(q) - 0.5) < 0.45).all(axis=1) & (np.sign(q[:, 0]) == np.sign(q[:, 1]))
        assert inner.any() and host(got)[inner].all()


def test_brush_lasso_matches_matplotlib(xp, rng):
    path = pytest.importorskip("matplotlib.path", reason="matplotlib not installed")
    n = 40_001
    poly = star(rng, k=int(rng.integers(5, 12)))
    xy, _ = vbo_view(xp, rng, n, width=2, col=0)
    got = host(kernels.brush_lasso(xy, poly))
    pts = host(xy)
    ref = path.Path(poly.astype(np.float32).astype(np.float64)).contains_points(pts.astype(np.float64))
    far = boundary_distance(pts, poly.astype(np.float32)) > 1e-5
    assert np.array_equal(got[far], ref[far])


@pytest.mark.gpu
def test_brush_lasso_kernel_equals_twin_bit_for_bit(rng):
    import cupy as cp

    n = 200_001
    poly = rng.uniform(-1, 1, (33, 2))
    pts = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    # points exactly on vertices and edges' heights: the ties must be broken identically
    pts[:33] = poly.astype(np.float32)
    pts[33:66, 1] = poly[:, 1].astype(np.float32)
    got = kernels.brush_lasso(cp.asarray(pts), poly).get()
    p32 = poly.astype(np.float32)
    twin = twins.brush_lasso(pts[:, 0], pts[:, 1], p32[:, 0].copy(), p32[:, 1].copy(), np.empty(n, bool))
    assert np.array_equal(got, twin)


# --------------------------------------------------------------------------------------- centroid


def test_centroid_float64_quality(xp, rng):
    n, p = 1_000_003, int(rng.integers(3, 20)) | 1
    host_data = (1000.0 + rng.standard_normal((n, p)) * 3).astype(np.float32)  # float32 sums would drift
    data = xp.asarray(host_data)
    d64 = host_data.astype(np.float64)
    mask = rng.uniform(size=n) < 0.3
    got = kernels.centroid(data, mask=xp.asarray(mask))
    assert type(got) is type(data) and got.shape == (p,) and got.dtype == np.float64
    ref = d64[mask].mean(axis=0)
    assert np.allclose(host(got), ref, rtol=1e-11, atol=0)
    index = rng.integers(0, n, 200_001)
    index[:50] = index[0]  # repeats count again
    got_i = kernels.centroid(data, index=xp.asarray(index.astype(np.int32)))
    assert np.allclose(host(got_i), d64[index].mean(axis=0), rtol=1e-11, atol=0)
    got_all = kernels.centroid(data)
    assert np.allclose(host(got_all), d64.mean(axis=0), rtol=1e-11, atol=0)


def test_centroid_rejects_bad_selections(xp, rng):
    data = points(xp, rng, 101, 7)
    with pytest.raises(ValueError, match="index"):
        kernels.centroid(data, index=xp.asarray(np.array([0, 5, 101])))
    with pytest.raises(ValueError, match="index"):
        kernels.centroid(data, index=xp.asarray(np.array([-1, 3])))
    with pytest.raises(ValueError, match="empty"):
        kernels.centroid(data, mask=xp.zeros(101, bool))
    with pytest.raises(ValueError, match="empty"):
        kernels.centroid(data, index=xp.zeros(0, np.int64))
    with pytest.raises(ValueError, match="not both"):
        kernels.centroid(data, mask=xp.ones(101, bool), index=xp.arange(3))
    with pytest.raises(ValueError, match="mask"):
        kernels.centroid(data, mask=xp.ones(100, bool))
    with pytest.raises(ValueError, match="float32"):
        kernels.centroid(data.astype(np.float64))


# ------------------------------------------------------------------------------------- validation


def test_project_rejects_bad_arguments(xp, rng):
    a = points(xp, rng, 11, 5)
    F = orthonormal(rng, 5, 2)
    cases = [
        ((a.astype(np.float64), a.astype(np.float64), 0.5, F), {}, "a must be float32 or float16"),
        ((a, a[:10], 0.5, F), {}, "a and b must match"),
        ((a, a.astype(np.float16), 0.5, F), {}, "a and b must match"),
        ((a, a, 0.5, orthonormal(rng, 4, 2)), {}, "frame must be"),
        ((a, a, 0.5, np.ones((5, 4))), {}, "frame must be"),
        ((a, a, float("nan"), F), {}, "s must be finite"),
        ((a, a, 0.5, F), {"out": xp.empty(21, np.float32)}, "out holds 21 floats"),
        ((a, a, 0.5, F), {"out": xp.empty(22, np.float64)}, "out must be float32"),
        ((a, a, 0.5, F), {"out": xp.empty(40, np.float32), "stride": 1}, "stride must be"),
        ((a, a, 0.5, F), {"out": xp.empty(40, np.float32), "stride": 3, "offset": 2}, "offset must be"),
        ((a, a, 0.5, F), {"stride": 3}, "need an out buffer"),
        ((a[:, 0], a[:, 0], 0.5, F), {}, "a must be 2-D"),
    ]
    for args, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            kernels.project(*args, **kw)
    big = points(xp, rng, 3, 65)
    with pytest.raises(ValueError, match="p = 65"):
        kernels.project(big, big, 0.5, np.ones((65, 2)))
    with pytest.raises(ValueError, match="frame contains NaN"):
        kernels.project(a, a, 0.5, np.full((5, 2), np.nan))
    Ga, H, Va, tau = geodesic_segment(rng, 5, 2)
    with pytest.raises(ValueError, match="tau must have shape"):
        kernels.project_geodesic(a, a, 0.5, Ga, H, Va, tau[:1], 0.3)
    with pytest.raises(ValueError, match="Va must have shape"):
        kernels.project_geodesic(a, a, 0.5, Ga, H, np.eye(3), tau, 0.3)


def test_brush_rejects_bad_arguments(xp, rng):
    xy = xp.asarray(rng.uniform(size=(9, 2)).astype(np.float32))
    with pytest.raises(ValueError, match="xy must be float32"):
        kernels.brush_rect(xy.astype(np.float64), (0, 0, 1, 1))
    with pytest.raises(ValueError, match=r"xy must be \(N, 2\)"):
        kernels.brush_lasso(xp.ones((9, 3), np.float32), np.eye(3, 2))
    with pytest.raises(ValueError, match="rect must be 4 numbers"):
        kernels.brush_rect(xy, (0, 0, 1))
    with pytest.raises(ValueError, match="rect contains NaN"):
        kernels.brush_rect(xy, (0, 0, float("nan"), 1))
    with pytest.raises(ValueError, match="polygon must be"):
        kernels.brush_lasso(xy, np.ones((2, 2)))
    with pytest.raises(ValueError, match="polygon must be"):
        kernels.brush_lasso(xy, np.ones((kernels.MAX_POLYGON_VERTICES + 1, 2)))
    with pytest.raises(ValueError, match="out must be"):
        kernels.brush_rect(xy, (0, 0, 1, 1), out=xp.zeros(8, bool))


@pytest.mark.gpu
def test_mixed_host_and_device_arrays_are_rejected(rng):
    import cupy as cp

    a = points(np, rng, 11, 5)
    with pytest.raises(ValueError, match="all be NumPy or all CuPy"):
        kernels.project(a, cp.asarray(a), 0.5, np.eye(5, 2))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.project(cp.asarray(a).T.copy().T, cp.asarray(a), 0.5, np.eye(5, 2))
    with pytest.raises(ValueError, match="all be NumPy or all CuPy"):
        kernels.centroid(cp.asarray(a), mask=np.ones(11, bool))


@pytest.mark.gpu
@pytest.mark.slow
def test_project_int64_indexing_beyond_2_31_elements(rng):
    """N * p > 2^31: flat element and output indices must be 64-bit (fp16 keeps this at 9 GB)."""
    import cupy as cp

    p, d = 15, 2
    n = (2**31) // p + 1_000_001
    gen = cp.random.default_rng(int(rng.integers(2**31)))
    a = cp.empty((n, p), cp.float16)
    b = cp.empty((n, p), cp.float16)
    step = 1 << 24
    for lo in range(0, n, step):  # generated in slices: 32-bit sizes inside the generator stay safe
        hi = min(n, lo + step)
        a[lo:hi] = gen.standard_normal((hi - lo, p), dtype=cp.float32)
        b[lo:hi] = gen.standard_normal((hi - lo, p), dtype=cp.float32)
    out = cp.full(n * d, cp.nan, cp.float32)
    F = orthonormal(rng, p, d)
    kernels.project(a, b, 0.375, F, out=out)
    rows = np.r_[0, rng.integers(0, n, 2000), n - 2_000 + np.arange(2_000)]
    rows_d = cp.asarray(rows)
    ref, bound = project_reference(a[rows_d], b[rows_d], 0.375, F)
    assert_close_bound(out.reshape(n, d)[rows_d], ref, bound)
    assert not bool(cp.isnan(out).any())
    del a, b, out
    cp.get_default_memory_pool().free_all_blocks()


# ----------------------------------------------------------------------------------------- loader


def test_sources_are_package_data_with_header_and_tunables():
    for name, kernel_names in _loader.KERNELS.items():
        code = _loader.source(name)
        assert code.startswith("// " + name), f"{name} must open with a comment naming it"
        head = code.split("\n\n", 1)[0]
        for word in ("Launch shape", "Bytes moved per point"):
            assert word in head, f"{name}: header comment lacks {word!r}"
        for opt in _loader.OPTIONS[name]:
            if opt.startswith("-D"):
                macro = opt[2:].split("=")[0]
                assert f"#ifndef {macro}\n#define {macro}" in code, f"{name}: {macro} not a tunable"
        if name == "project.cu":  # names made by the LT_PROJECT_KERNELS macro (checked by nvcc test)
            for t, c in (("f32", "float"), ("f16", "unsigned short")):
                for d in (2, 3):
                    assert f"LT_PROJECT_KERNELS({t}, {c}, {d})" in code
        else:
            for k in kernel_names:
                assert f" {k}(" in code or f"\n    {k}(" in code, f"{name}: no kernel {k}"
    with pytest.raises(ValueError, match="unknown kernel source"):
        _loader.source("nope.cu")


def test_compile_all_without_cuda_raises_clearly():
    if kernels.available():
        pytest.skip("a CUDA device is present: the GPU test covers compile_all")
    with pytest.raises(RuntimeError, match="cannot compile the CUDA kernels"):
        kernels.compile_all()


@pytest.mark.gpu
def test_compile_all_and_memoised_modules():
    import cupy as cp

    assert kernels.available()
    assert kernels.compile_all() == _loader.KERNELS
    for name in _loader.KERNELS:
        assert _loader.module(name) is _loader.module(name)
    key_devices = {k[0] for k in _loader._modules}
    assert cp.cuda.Device().id in key_devices


def test_import_does_not_load_cupy_engine_or_viewer():
    mods = "('cupy', 'engine', 'viewer', 'torch')"
    code = (f"import sys, kernels; bad = [m for m in {mods} if m in sys.modules];"
            "print(','.join(bad))")
    repo = Path(_loader.__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert res.stdout.strip() == ""
