"""Colours for the viewer: categorical palettes that stay distinct past 10 classes, continuous maps,
and the per-point colouring (:class:`Coloring`) the render paths upload.

Pure NumPy on the host (no GL). Palettes are designed in OKLab/OKLCh (Björn Ottosson's perceptual
space) so that equal steps look equal:

- up to ``SMALL_K`` classes: hues evenly spaced around the OKLCh circle with two alternating
  lightness levels, chroma reduced only as far as needed to stay inside sRGB;
- more classes with a coarse grouping (each fine class maps to one coarse class, as ImageNet's
  1,000 classes map to 67 coarse categories): hue by coarse group, lightness and a small hue offset
  by the fine class inside its group, so neighbours in the legend read as one family;
- more classes without a grouping: a golden-angle hue spiral whose lightness and chroma follow
  the R2 low-discrepancy sequence, so colours spread through the gamut and never cycle.

A :class:`Coloring` maps each point to a row of a small RGBA palette (``codes`` (N,) float32), so
the GPU needs one float per point plus a (K, 4) table; continuous attributes are quantised to a
256-entry colour map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMALL_K = 20
N_CONTINUOUS = 256
NONE_COLOR = (0.42, 0.66, 0.95, 1.0)
BACKGROUND = (0.065, 0.07, 0.085, 1.0)


# --- OKLab <-> sRGB -----------------------------------------------------------------------------

def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.clip(c, 0, None), 1 / 2.4) - 0.055)


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, np.power((c + 0.055) / 1.055, 2.4))


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """(k, 3) OKLab -> (k, 3) sRGB in [0, 1] (unclipped: values outside mean out of gamut)."""
    lab = np.atleast_2d(np.asarray(lab, dtype=np.float64))
    m1 = np.array([[1.0, 0.3963377774, 0.2158037573],
                   [1.0, -0.1055613458, -0.0638541728],
                   [1.0, -0.0894841775, -1.2914855480]])
    lms = (lab @ m1.T) ** 3
    m2 = np.array([[4.0767416621, -3.3077115913, 0.2309699292],
                   [-1.2684380046, 2.6097574011, -0.3413193965],
                   [-0.0041960863, -0.7034186147, 1.7076147010]])
    return _linear_to_srgb(lms @ m2.T)


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(k, 3) sRGB in [0, 1] -> (k, 3) OKLab."""
    lin = _srgb_to_linear(np.atleast_2d(np.asarray(rgb, dtype=np.float64)))
    m1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                   [0.2119034982, 0.6806995451, 0.1073969566],
                   [0.0883024619, 0.2817188376, 0.6299787005]])
    lms = np.cbrt(lin @ m1.T)
    m2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                   [1.9779984951, -2.4285922050, 0.4505937099],
                   [0.0259040371, 0.7827717662, -0.8086757660]])
    return lms @ m2.T


def oklch_to_srgb(L, C, h_deg) -> np.ndarray:
    """OKLCh (arrays broadcast) -> (k, 3) sRGB, chroma lowered per colour until it fits in gamut."""
    L, C, h = np.broadcast_arrays(np.asarray(L, float), np.asarray(C, float), np.radians(h_deg))
    L, C, h = L.ravel(), C.ravel().copy(), h.ravel()
    for _ in range(40):
        rgb = oklab_to_srgb(np.stack([L, C * np.cos(h), C * np.sin(h)], axis=1))
        out = np.any((rgb < -1e-4) | (rgb > 1 + 1e-4), axis=1)
        if not out.any():
            break
        C[out] *= 0.9
    return np.clip(rgb, 0.0, 1.0)


# --- palettes -----------------------------------------------------------------------------------

def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1).astype(np.float32)


def categorical_palette(k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(k, 4) float32 RGBA in [0, 1], distinct colours for k classes on a dark background.

    groups : optional (k,) int, the coarse group of each class (e.g. from :func:`coarse_groups`);
    used when k > SMALL_K to give each group one hue family.
    """
    if k < 1:
        raise ValueError(f"categorical_palette: k must be >= 1, got {k}")
    if k <= SMALL_K:
        hues = 25.0 + 360.0 * np.arange(k) / k
        L = np.where(np.arange(k) % 2 == 0, 0.76, 0.64) if k > 8 else np.full(k, 0.72)
        return _rgba(oklch_to_srgb(L, 0.16, hues))
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (k,):
            raise ValueError(f"categorical_palette: groups must have shape ({k},), got {groups.shape}")
        uniq, g = np.unique(groups, return_inverse=True)
        G = len(uniq)
        # order groups by hue with a stride so that consecutive groups are far apart on the circle
        stride = _coprime_stride(G)
        group_hue = 360.0 * ((np.arange(G) * stride) % G) / G
        L = np.empty(k)
        h = np.empty(k)
        C = np.empty(k)
        span = min(40.0, 0.45 * 360.0 / max(G, 1))
        for j in range(G):
            members = np.flatnonzero(g == j)
            m = len(members)
            t = (np.arange(m) + 0.5) / m if m > 1 else np.array([0.5])
            L[members] = 0.52 + 0.38 * t
            h[members] = group_hue[j] + span * (t - 0.5)
            C[members] = np.where(np.arange(m) % 2 == 0, 0.15, 0.10)
        return _rgba(oklch_to_srgb(L, C, h))
    # low-discrepancy spiral: golden-angle hue, lightness and chroma from the R2 sequence
    i = np.arange(k)
    hues = (i * 137.50776405) % 360.0
    L = 0.52 + 0.30 * ((0.5 + i * 0.7548776662) % 1.0)
    C = 0.09 + 0.08 * ((0.5 + i * 0.5698402910) % 1.0)
    return _rgba(oklch_to_srgb(L, C, hues))


def _coprime_stride(n: int) -> int:
    if n <= 2:
        return 1
    s = max(1, int(round(n * 0.382)))
    while np.gcd(s, n) != 1:
        s += 1
    return s


def continuous_colormap(n: int = N_CONTINUOUS, name: str = "viridis") -> np.ndarray:
    """(n, 4) float32 RGBA samples of a perceptual colour map (VisPy's viridis by default)."""
    from vispy.color import get_colormap

    return np.asarray(get_colormap(name).map(np.linspace(0.0, 1.0, n)), dtype=np.float32)


def coarse_groups(fine: np.ndarray, coarse: np.ndarray, k_fine: int, purity: float = 0.9):
    """(k_fine,) int: the modal coarse code of each fine class, or None when the coarse attribute
    does not nest the fine one (fewer than ``purity`` of the points agree with their class's mode).

    fine, coarse : (N,) integer codes (host arrays).
    """
    fine = np.asarray(fine, dtype=np.int64)
    coarse = np.asarray(coarse, dtype=np.int64)
    if fine.shape != coarse.shape or fine.size == 0 or coarse.min() < 0 or fine.min() < 0:
        return None
    kc = int(coarse.max()) + 1
    table = np.zeros((k_fine, kc), dtype=np.int64)
    np.add.at(table, (fine, coarse), 1)
    if table.max(axis=1).sum() < purity * fine.size:
        return None
    return table.argmax(axis=1)


# --- per-point colouring ------------------------------------------------------------------------

@dataclass(frozen=True)
class Coloring:
    """How every point is coloured.

    name : attribute name, ``"movement"`` or ``"none"``
    kind : "categorical", "continuous" or "none"
    codes : (N,) float32, host: the palette row of each point
    palette : (K, 4) float32 RGBA in [0, 1], host
    categories : class names (categorical) or None
    counts : (K,) int64 points per class (categorical) or None
    extent : (lo, hi) value range mapped onto the colour map (continuous) or None
    """

    name: str
    kind: str
    codes: np.ndarray
    palette: np.ndarray
    categories: tuple[str, ...] | None = None
    counts: np.ndarray | None = None
    extent: tuple[float, float] | None = None


def uniform_coloring(n: int) -> Coloring:
    """Every point in one colour (bundles without attributes)."""
    return Coloring("none", "none", np.zeros(n, np.float32), np.asarray([NONE_COLOR], np.float32))


def categorical_coloring(name: str, values: np.ndarray, categories=None, groups=None) -> Coloring:
    """Colour (N,) integer codes 0..K-1 with :func:`categorical_palette`.

    Raises ValueError naming the attribute when codes are negative or not integers.
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"attribute {name!r}: expected (N,) codes, got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.integer):
        if not np.all(np.isfinite(v)) or np.any(v != np.round(v)):
            raise ValueError(f"attribute {name!r}: categorical codes must be integers")
    v = v.astype(np.int64)
    if v.size and v.min() < 0:
        raise ValueError(f"attribute {name!r}: negative category code {int(v.min())}")
    k = max(int(v.max()) + 1 if v.size else 1, len(categories or ()))
    if categories is None:
        categories = [str(i) for i in range(k)]
    cats = tuple(str(c) for c in categories) + tuple(str(i) for i in range(len(categories), k))
    return Coloring(name, "categorical", v.astype(np.float32), categorical_palette(k, groups), cats,
                    np.bincount(v, minlength=k), None)


def continuous_coloring(name: str, values: np.ndarray, extent=None, cmap: str = "viridis") -> Coloring:
    """Colour (N,) real values through a 256-step colour map over ``extent`` (default: data range;
    NaN values take the lowest colour)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"attribute {name!r}: expected (N,) values, got shape {v.shape}")
    finite = v[np.isfinite(v)]
    if extent is None:
        extent = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo, hi = float(extent[0]), float(extent[1])
    span = hi - lo if hi > lo else 1.0
    t = np.clip(np.nan_to_num((v - lo) / span, nan=0.0), 0.0, 1.0)
    codes = np.round(t * (N_CONTINUOUS - 1)).astype(np.float32)
    return Coloring(name, "continuous", codes, continuous_colormap(N_CONTINUOUS, cmap), None, None, (lo, hi))


def attribute_coloring(bundle, name: str) -> Coloring:
    """The :class:`Coloring` of attribute ``name`` of an ``engine.store.Bundle``.

    Categorical attributes with more than SMALL_K classes are grouped by the coarsest other
    categorical attribute that nests them (fine -> coarse), when there is one.
    """
    attrs = bundle.attributes
    if name not in attrs:
        raise KeyError(f"bundle {bundle.path}: no attribute {name!r} (has: {', '.join(attrs) or 'none'})")
    a = attrs[name]
    values = np.asarray(a.values)
    if a.kind == "continuous":
        return continuous_coloring(name, values, a.extent)
    k = max(len(a.categories or ()), int(values.max()) + 1 if values.size else 1)
    groups = None
    if k > SMALL_K:
        others = sorted((o for o in attrs.values() if o is not a and o.kind == "categorical"),
                        key=lambda o: len(o.categories or ()))
        for o in others:
            kc = len(o.categories or ()) or int(np.asarray(o.values).max()) + 1
            if 1 < kc < k:
                groups = coarse_groups(values, np.asarray(o.values), k)
                if groups is not None:
                    break
    return categorical_coloring(name, values, a.categories, groups)


def movement_coloring(prev: np.ndarray, cur: np.ndarray) -> Coloring:
    """Per-point movement between two aligned layers (``engine.align.movement``), colour-mapped.

    prev, cur : (N, p) float32 NumPy or CuPy; the distances come back to the host for colouring.
    """
    from engine.align import movement
    from engine.device import to_host

    d = to_host(movement(prev, cur)).astype(np.float64)
    hi = float(np.quantile(d, 0.99)) if d.size else 1.0
    return continuous_coloring("movement", d, (0.0, hi if hi > 0 else 1.0))
