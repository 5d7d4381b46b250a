"""Details on demand: the point under the cursor, its tooltip, and search by label or index.

GL-free. Picking works on the projected positions exactly as drawn (``canvas.project_current``)
in whatever array module they live in: the canvas's data -> pixel map is affine (zoom and pan),
so it is captured once as a 2x2 matrix and offset (:func:`affine_of`); the cursor's pixel disc
becomes a data-space box, one vectorised pass over the x and y columns keeps the points in it,
and exact pixel distances are computed for those few only. Only the winning index crosses to
the host (timings: ``benchmarks/bench_interaction.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.device import array_module, to_host


@dataclass(frozen=True)
class Affine2:
    """A 2-D affine map ``out = x @ A.T + b``; A (2, 2) float64, b (2,) float64, host."""

    A: np.ndarray
    b: np.ndarray

    def __call__(self, x):
        """x : (k, 2) NumPy or CuPy -> (k, 2) in the same array module (float64)."""
        xp = array_module(x)
        return xp.asarray(x, dtype=xp.float64) @ xp.asarray(self.A.T) + xp.asarray(self.b)

    def inverse(self) -> Affine2:
        Ai = np.linalg.inv(self.A)
        return Affine2(Ai, -Ai @ self.b)


def affine_of(fn: Callable[[np.ndarray], np.ndarray]) -> Affine2:
    """The affine map that ``fn`` ((k, 2) -> (k, 2), e.g. ``canvas.data_to_pixels``) implements.

    Raises ValueError if ``fn`` is degenerate (zero-size window) or not affine.
    """
    probe = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.37, -1.9]])
    out = np.asarray(fn(probe), dtype=np.float64)
    b = out[0]
    A = np.stack([out[1] - b, out[2] - b], axis=1)
    if abs(np.linalg.det(A)) < 1e-300:
        raise ValueError("the data <-> pixel map is degenerate (is the window of zero size?)")
    if not np.allclose(probe[3] @ A.T + b, out[3], rtol=1e-9, atol=1e-9 * (1 + np.abs(out).max())):
        raise ValueError("the data <-> pixel map is not affine; picking and brushing assume zoom/pan only")
    return Affine2(A, b)


def nearest(xy, cursor_px, to_pixels: Affine2, radius_px: float = 8.0) -> int | None:
    """Index of the point drawn nearest to ``cursor_px``, or None if none lies within ``radius_px``.

    xy : (N, d) data-space positions (d >= 2; x and y used), NumPy or CuPy.
    cursor_px : (x, y) in pixels, origin top-left. to_pixels : the data -> pixel :class:`Affine2`.
    Ties go to the lowest index. Cost: a box test on the float32 x and y columns (the pixel disc's
    bounding box mapped to data space), then exact float64 pixel distances for the few candidates;
    only the winner's index crosses to the host.
    """
    xp = array_module(xy)
    if xy.shape[0] == 0:
        return None
    cursor = np.asarray(cursor_px, dtype=np.float64).reshape(2)
    inv = np.linalg.inv(to_pixels.A)
    c = inv @ (cursor - to_pixels.b)
    half = float(radius_px) * np.linalg.norm(inv, axis=1) * (1 + 1e-6) + 1e-6 * (1 + np.abs(c))
    x, y = xy[:, 0], xy[:, 1]
    box = xp.abs(x - np.float32(c[0])) <= np.float32(half[0])
    box &= xp.abs(y - np.float32(c[1])) <= np.float32(half[1])
    cand = xp.flatnonzero(box)
    if int(cand.shape[0]) == 0:
        return None
    px = to_pixels(xy[cand, :2])
    d2 = ((px - xp.asarray(cursor.reshape(1, 2))) ** 2).sum(axis=1)
    k = int(to_host(xp.argmin(d2)))
    return int(to_host(cand[k])) if float(to_host(d2[k])) <= float(radius_px) ** 2 else None


def nearest_within(px: np.ndarray, cursor_px, radius_px: float) -> int | None:
    """Among a few pixel positions (k, 2) host array (handles), the nearest within the radius."""
    px = np.asarray(px, dtype=np.float64).reshape(-1, 2)
    if len(px) == 0:
        return None
    d2 = ((px - np.asarray(cursor_px, dtype=np.float64)) ** 2).sum(axis=1)
    i = int(np.argmin(d2))
    return i if d2[i] <= float(radius_px) ** 2 else None


@dataclass(frozen=True)
class Tooltip:
    """What the hover tooltip shows for one point.

    rows : ((name, text), ...) starting with ("index", "123"), then every attribute in the
    bundle's order (categorical as "label (code)", continuous as a number).
    thumbnail : (32, 32, 3) uint8 host array or None when the bundle has no images.
    """

    index: int
    rows: tuple[tuple[str, str], ...]
    thumbnail: np.ndarray | None


def describe(bundle, index: int) -> Tooltip:
    """The tooltip of point ``index`` of ``bundle`` (attributes and the thumbnail, if any)."""
    n = int(bundle.n)
    if not 0 <= int(index) < n:
        raise IndexError(f"point index {index} out of range [0, {n})")
    i = int(index)
    rows = [("index", str(i))]
    for name, attr in bundle.attributes.items():
        v = np.asarray(attr.values[i]).item()
        if attr.kind == "categorical":
            cats = attr.categories or []
            code = int(v)
            text = f"{cats[code]} ({code})" if 0 <= code < len(cats) else str(code)
        else:
            text = f"{float(v):.4g}"
        rows.append((name, text))
    thumb = None if bundle.images is None else np.array(bundle.images[i], dtype=np.uint8)
    return Tooltip(i, tuple(rows), thumb)


@dataclass(frozen=True)
class SearchResult:
    """Points matching a search: ``indices`` (ascending int64 host array), ``matches`` (the
    labels or index that matched, as "attribute: label" strings) and a one-line ``message``."""

    query: str
    indices: np.ndarray
    matches: tuple[str, ...]
    message: str


def search(bundle, query: str, max_listed: int = 5) -> SearchResult:
    """Find points by index ("123" or "#123") or by label text (case-insensitive substring over
    every categorical attribute's category names, e.g. "retriever" matches all retriever classes).

    An empty query, an out-of-range index, or a label found nowhere give an empty result whose
    message says why (the viewer shows it in the HUD).
    """
    q = (query or "").strip()
    n = int(bundle.n)
    empty = np.zeros(0, dtype=np.int64)
    if not q:
        return SearchResult(q, empty, (), "empty search")
    digits = q[1:] if q.startswith("#") else q
    if digits.isdigit():
        i = int(digits)
        if i >= n:
            return SearchResult(q, empty, (), f"index {i} is out of range (N = {n})")
        return SearchResult(q, np.array([i], dtype=np.int64), (f"index {i}",), f"point {i}")
    needle = q.lower()
    mask = np.zeros(n, dtype=bool)
    matches: list[str] = []
    for name, attr in bundle.attributes.items():
        if attr.kind != "categorical" or not attr.categories:
            continue
        codes = [k for k, label in enumerate(attr.categories) if needle in str(label).lower()]
        if not codes:
            continue
        matches.extend(f"{name}: {attr.categories[k]}" for k in codes)
        mask |= np.isin(np.asarray(attr.values), np.asarray(codes, dtype=np.int64))
    idx = np.flatnonzero(mask).astype(np.int64)
    if not matches:
        return SearchResult(q, empty, (), f"no label contains {q!r}")
    listed = ", ".join(matches[:max_listed]) + (f" (+{len(matches) - max_listed} more)"
                                                 if len(matches) > max_listed else "")
    return SearchResult(q, idx, tuple(matches), f"{idx.size} points match {listed}")
