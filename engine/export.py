"""Files for other tools, written from a bundle: the layer-similarity matrix as CSV or PNG.

Sits above :mod:`engine.align` (the maths) and :mod:`engine.store` (the bundle): neither of those
does file I/O for exports. Files are written with :func:`engine.files.write_atomic`. The study's
own layout is exported by :mod:`engine.studyformat`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.align import similarity_matrix
from engine.device import resolve, to_host
from engine.files import write_atomic
from engine.store import BundleError, load_bundle

__all__ = ["export_similarity", "viridis"]


# A perceptually ordered dark-blue -> teal -> yellow ramp (viridis-like), as (t, r, g, b) anchors.
_RAMP = np.array(
    [
        (0.00, 68, 1, 84),
        (0.13, 71, 44, 122),
        (0.25, 59, 82, 139),
        (0.38, 44, 114, 142),
        (0.50, 33, 145, 140),
        (0.63, 40, 174, 128),
        (0.75, 94, 201, 98),
        (0.88, 170, 220, 50),
        (1.00, 253, 231, 37),
    ],
    dtype=np.float64,
)


def viridis(t) -> np.ndarray:
    """Map values ``t`` in [0, 1] (clipped; NaN -> 0) to uint8 RGB, shape ``t.shape + (3,)``, host."""
    t = np.nan_to_num(np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0))
    rgb = np.stack([np.interp(t, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def _write_csv(path: Path, S: np.ndarray, rows: list[str], cols: list[str], corner: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([corner, *cols])
        for rid, vals in zip(rows, S):
            w.writerow([rid, *(repr(float(v)) for v in vals)])


def _write_png(path: Path, S: np.ndarray, cell: int) -> None:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            f"writing {path.name} needs pillow (pip install pillow, or the 'viewer' extra); "
            "write a .csv instead"
        ) from exc
    rgb = viridis(S)
    img = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    Image.fromarray(np.ascontiguousarray(img), mode="RGB").save(path, format="PNG")


def export_similarity(bundle_path, a: str, b: str, out, device: str = "auto", *, cell_px: int = 16) -> Path:
    """Write the layer-similarity matrix of models ``a`` (rows) and ``b`` (columns) of a bundle.

    bundle_path : a bundle directory (:func:`engine.store.load_bundle`).
    out : ``*.csv`` (header row = B's layer ids, first column = A's layer ids, full float64
        precision) or ``*.png`` (heat map, ``cell_px`` >= 8 pixels per cell, viridis-like colours
        over [0, 1]; needs pillow). Written to a temporary file beside ``out``, then renamed.
    device : "auto", "cuda" or "cpu" (:func:`engine.device.resolve`), used only when the bundle
        stores no matrix for this pair.
    Returns ``out`` as a Path. Unknown model names raise ``BundleError`` listing the bundle's models.
    """
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".csv", ".png"):
        raise ValueError(f"out={str(out)!r}: unsupported format {out.suffix!r}; use .csv or .png")
    if cell_px < 8:
        raise ValueError(f"cell_px={cell_px} is too small; cells must be at least 8 pixels")
    bundle = load_bundle(bundle_path)
    for name in (a, b):
        if name not in bundle.models:
            raise BundleError(
                f"model {name!r} is not in bundle {bundle_path}; its models are: {', '.join(bundle.models)}"
            )
    ma, mb = bundle.models[a], bundle.models[b]
    S = bundle.similarity(a, b)  # the store transposes a matrix kept as (b, a)
    if S is None:
        backend = resolve(device)
        S = to_host(
            similarity_matrix([lay.embedding for lay in ma.layers], [lay.embedding for lay in mb.layers],
                              xp=backend.xp)
        )
    S = np.asarray(S, dtype=np.float64)
    if S.shape != (len(ma.layers), len(mb.layers)):
        raise BundleError(
            f"similarity matrix for {a!r} x {b!r} in {bundle_path} has shape {S.shape}, "
            f"expected {(len(ma.layers), len(mb.layers))}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".csv":
        rows, cols = [lay.id for lay in ma.layers], [lay.id for lay in mb.layers]
        write_atomic(out, lambda p: _write_csv(p, S, rows, cols, f"{a}\\{b}"))
    else:
        write_atomic(out, lambda p: _write_png(p, S, cell_px))
    return out
