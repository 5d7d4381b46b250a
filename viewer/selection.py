"""Brushing: which of the N points the user has selected, from rectangle and lasso gestures.

GL-free. A gesture is drawn in pixels (origin top-left, as vispy mouse events report them); it is
mapped to data space with the canvas's ``pixels_to_data`` (an affine map of zoom and pan, so a
rectangle stays a rectangle and a polygon's inside stays its inside) and tested against the
projected positions with ``kernels.brush_rect`` / ``kernels.brush_lasso`` (CUDA kernels when the
positions are CuPy arrays, their NumPy twins otherwise).

The selection is a set of point indices, stored as a host (N,) bool mask: it is defined once and
persists while the tour moves and across layers, because it names points, not positions.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.device import to_host

MODES = ("replace", "add", "subtract")

PixelMap = Callable[[np.ndarray], np.ndarray]


class SelectionError(ValueError):
    """A bad gesture, mask, index list or export path; the message names the argument or file."""


def mode_from_modifiers(modifiers: Sequence) -> str:
    """Selection mode of a gesture: Shift adds, Control subtracts, otherwise it replaces.

    ``modifiers`` is a vispy event's tuple of ``Key`` objects (or their names).
    """
    names = {str(getattr(m, "name", m)).lower() for m in modifiers or ()}
    if "shift" in names:
        return "add"
    if "control" in names or "ctrl" in names:
        return "subtract"
    return "replace"


def rect_in_data(px0, px1, pixels_to_data: PixelMap) -> tuple[float, float, float, float]:
    """Data-space rectangle (x0, y0, x1, y1), x0 <= x1 and y0 <= y1, of a pixel-space drag.

    px0, px1 : two opposite corners in pixels (any order; screen y points down, data y up).
    """
    corners = pixels_to_data(np.array([px0, px1], dtype=np.float64).reshape(2, 2))
    corners = np.asarray(corners, dtype=np.float64)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def brush_rect(xy, px0, px1, pixels_to_data: PixelMap) -> np.ndarray:
    """Mask of the points whose projected position lies in a pixel-space rectangle.

    xy : (N, d) float32 data-space positions (d >= 2; only x and y are tested), NumPy or CuPy.
    Returns (N,) bool on the host (one device -> host copy of N bytes on CUDA).
    """
    import kernels

    rect = rect_in_data(px0, px1, pixels_to_data)
    return to_host(kernels.brush_rect(_xy2(xy), rect)).astype(bool, copy=False)


def brush_lasso(xy, path_px, pixels_to_data: PixelMap) -> np.ndarray:
    """Mask of the points inside a pixel-space lasso (closed polygon, even-odd rule).

    path_px : (k, 2) pixel vertices, k >= 3 (the closing edge is implied).
    Returns (N,) bool on the host; concave and self-crossing paths follow the even-odd rule.
    """
    import kernels

    path = np.asarray(path_px, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2 or len(path) < 3:
        raise SelectionError(f"lasso path must be (k, 2) with k >= 3 vertices, got shape {path.shape}")
    poly = np.asarray(pixels_to_data(path), dtype=np.float64)
    return to_host(kernels.brush_lasso(_xy2(xy), poly)).astype(bool, copy=False)


def _xy2(xy):
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise SelectionError(f"projected positions must be (N, d>=2), got shape {xy.shape}")
    return xy[:, :2] if xy.shape[1] > 2 else xy


class Selection:
    """The current brush selection over N points (state: a host (N,) bool mask, or nothing).

    ``mask`` is None when nothing is selected (nothing fades); after a gesture that selects no
    point it is an all-False mask (everything fades), which is what the user asked for.
    """

    def __init__(self, n: int):
        if int(n) < 1:
            raise SelectionError(f"n must be a positive number of points, got {n}")
        self.n = int(n)
        self._mask: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """(N,) bool host array, or None when nothing is selected."""
        return self._mask

    @property
    def active(self) -> bool:
        return self._mask is not None

    @property
    def indices(self) -> np.ndarray:
        """Selected point indices, ascending, int64 (empty when nothing is selected)."""
        if self._mask is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._mask).astype(np.int64)

    @property
    def count(self) -> int:
        return 0 if self._mask is None else int(self._mask.sum())

    def clear(self) -> None:
        self._mask = None

    def set_mask(self, mask) -> None:
        """Adopt ``mask`` ((N,) bool, NumPy or CuPy; None = nothing selected) as the selection,
        e.g. to follow the canvas after a saved view was applied."""
        if mask is None:
            self._mask = None
            return
        m = np.asarray(to_host(mask))
        if m.shape != (self.n,) or m.dtype != np.bool_:
            raise SelectionError(f"mask must be ({self.n},) bool, got {m.shape} {m.dtype}")
        self._mask = m.copy()

    def combine(self, mask, mode: str = "replace") -> np.ndarray:
        """Merge a gesture's (N,) bool mask into the selection; returns the new mask.

        mode : "replace", "add" (union) or "subtract" (set difference).
        """
        if mode not in MODES:
            raise SelectionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        m = np.asarray(to_host(mask))
        if m.shape != (self.n,) or m.dtype != np.bool_:
            raise SelectionError(f"mask must be ({self.n},) bool, got {m.shape} {m.dtype}")
        current = self._mask if self._mask is not None else np.zeros(self.n, dtype=bool)
        if mode == "replace":
            new = m.copy()
        elif mode == "add":
            new = current | m
        else:
            new = current & ~m
        self._mask = new
        return new

    def set_indices(self, indices) -> None:
        """Select exactly ``indices`` (ints in [0, N)); an empty list clears the selection."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            self._mask = None
            return
        bad = idx[(idx < 0) | (idx >= self.n)]
        if bad.size:
            raise SelectionError(f"selection indices out of range [0, {self.n}): {bad[:5].tolist()}")
        mask = np.zeros(self.n, dtype=bool)
        mask[idx] = True
        self._mask = mask

    def export(self, path, bundle=None) -> Path:
        """Write the selected indices and their labels to ``path`` (.csv or .json), atomically.

        CSV: a header ``index,<attribute>...`` then one row per selected point, categorical
        attributes as their label text and continuous ones as numbers. JSON: ``{"n", "count",
        "indices", "attributes": {name: [values]}}``. The file is written to a temporary name in
        the same directory and renamed into place, so a reader never sees a partial file.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise SelectionError(f"export path {path} must end in .csv or .json")
        idx = self.indices
        columns = attribute_columns(bundle, idx)
        if suffix == ".json":
            doc = {"n": self.n, "count": int(idx.size), "indices": idx.tolist(),
                   "attributes": {name: vals for name, vals in columns.items()}}
            text = json.dumps(doc, indent=1)
        else:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["index", *columns])
            for row, i in enumerate(idx.tolist()):
                w.writerow([i, *(vals[row] for vals in columns.values())])
            text = buf.getvalue()
        write_atomic(path, text)
        return path


def attribute_columns(bundle, idx: np.ndarray) -> dict[str, list]:
    """Per attribute of ``bundle`` (in order), the values of points ``idx``: categorical codes
    become their label text, continuous values stay floats. Empty without a bundle/attributes."""
    cols: dict[str, list] = {}
    if bundle is None:
        return cols
    for name, attr in bundle.attributes.items():
        vals = np.asarray(attr.values)[idx]
        if attr.kind == "categorical":
            cats = list(attr.categories or [])
            cols[name] = [cats[int(v)] if 0 <= int(v) < len(cats) else str(int(v)) for v in vals]
        else:
            cols[name] = [float(v) for v in vals]
    return cols


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`engine.store.write_atomic`)."""
    from engine.store import write_atomic as _atomic

    _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


