"""Colours for the viewer: categorical palettes that stay distinct past 10 classes, continuous maps,
and the per-point colouring (:class:`Coloring`) the render paths upload.

Pure NumPy on the host (no GL). Palettes come from colorcet where it has one:

- up to ``len(glasbey())`` classes: colorcet's Glasbey set for dark backgrounds (``glasbey_light``),
  keeping the colours with OKLab lightness >= 0.55 so every class reads on the dark background
  (217 colours). Measured against the OKLCh hue wheel this module used before: the smallest
  OKLab distance between any two of the first 7 / 10 / 20 colours is 0.166 / 0.129 / 0.102 for
  Glasbey against 0.119 / 0.142 / 0.069 (the wheel wins only at exactly 10 classes), and from
  20 classes on the wheel's colours crowd while Glasbey's stay apart;
- more classes with a coarse grouping (each fine class maps to one coarse class, as ImageNet's
  1,000 classes map to 67 coarse categories): each group takes one Glasbey colour's hue, and its
  classes spread in lightness around it, so neighbours in the legend read as one family;
- more classes without a grouping: a golden-angle hue spiral whose lightness and chroma follow
  the R2 low-discrepancy sequence (colours spread through the gamut and never cycle);
- continuous attributes: colorcet's perceptually uniform ``gouldian`` (CET_L20, a viridis-like
  map whose darkest end, OKLab L 0.31, still stands out from the background's 0.18).

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


CONTINUOUS = "gouldian"
GLASBEY_MIN_L = 0.55


def _hex_rgb(colors) -> np.ndarray:
    return np.array([[int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5)] for h in colors], dtype=np.float64)


_GLASBEY: np.ndarray | None = None


def glasbey() -> np.ndarray:
    """(217, 3) float64 sRGB: colorcet's ``glasbey_light`` with OKLab L >= 0.55, in its order."""
    global _GLASBEY
    if _GLASBEY is None:
        import colorcet

        rgb = _hex_rgb(colorcet.glasbey_light)
        _GLASBEY = rgb[srgb_to_oklab(rgb)[:, 0] >= GLASBEY_MIN_L]
    return _GLASBEY


def categorical_palette(k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(k, 4) float32 RGBA in [0, 1], distinct colours for k classes on a dark background.

    groups : optional (k,) int, the coarse group of each class (e.g. from :func:`coarse_groups`);
    used when k exceeds the Glasbey set to give each group one hue family.
    """
    if k < 1:
        raise ValueError(f"categorical_palette: k must be >= 1, got {k}")
    base = glasbey()
    if k <= len(base) and (groups is None or k <= SMALL_K):
        return _rgba(base[:k])
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (k,):
            raise ValueError(f"categorical_palette: groups must have shape ({k},), got {groups.shape}")
        uniq, g = np.unique(groups, return_inverse=True)
        G = len(uniq)
        if G <= len(base):
            lab = srgb_to_oklab(base[:G])
            group_hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1]))
            group_c = np.clip(np.hypot(lab[:, 1], lab[:, 2]), 0.08, 0.2)
        else:
            group_hue = 360.0 * ((np.arange(G) * _coprime_stride(G)) % G) / G
            group_c = np.full(G, 0.14)
        L, h, C = np.empty(k), np.empty(k), np.empty(k)
        span = min(24.0, 0.3 * 360.0 / max(G, 1))
        for j in range(G):
            members = np.flatnonzero(g == j)
            m = len(members)
            t = (np.arange(m) + 0.5) / m if m > 1 else np.array([0.5])
            L[members] = 0.55 + 0.37 * t
            h[members] = group_hue[j] + span * (t - 0.5)
            C[members] = group_c[j] * np.where(np.arange(m) % 2 == 0, 1.0, 0.7)
        return _rgba(_distinct_rgb(L, C, h))
    # low-discrepancy spiral: golden-angle hue, lightness and chroma from the R2 sequence
    i = np.arange(k)
    hues = (i * 137.50776405) % 360.0
    L = 0.55 + 0.30 * ((0.5 + i * 0.7548776662) % 1.0)
    C = 0.09 + 0.08 * ((0.5 + i * 0.5698402910) % 1.0)
    return _rgba(oklch_to_srgb(L, C, hues))


def _distinct_rgb(L: np.ndarray, C: np.ndarray, h: np.ndarray, tries: int = 40) -> np.ndarray:
    """sRGB (k, 3) of the OKLCH colours, none equal to another in 8 bits: gamut clipping can map
    two light colours of one hue family to the same sRGB; each later duplicate is darkened in
    steps of 0.008 in L until it is unique (a 300-class grouped palette had one such pair)."""
    L = np.array(L, dtype=np.float64)
    for _ in range(tries):
        rgb = oklch_to_srgb(L, C, h)
        _, first, inverse = np.unique(np.round(np.asarray(rgb) * 255).astype(int), axis=0,
                                      return_index=True, return_inverse=True)
        dup = first[inverse.ravel()] != np.arange(len(L))
        if not dup.any():
            return rgb
        L[dup] -= 0.008
    return oklch_to_srgb(L, C, h)


def _coprime_stride(n: int) -> int:
    if n <= 2:
        return 1
    s = max(1, int(round(n * 0.382)))
    while np.gcd(s, n) != 1:
        s += 1
    return s


def continuous_colormap(n: int = N_CONTINUOUS, name: str = CONTINUOUS) -> np.ndarray:
    """(n, 4) float32 RGBA samples of colorcet's perceptually uniform map ``name`` (gouldian)."""
    import colorcet

    if name not in colorcet.palette:
        raise ValueError(f"unknown colour map {name!r} (colorcet has e.g. gouldian, bmy, fire)")
    rgb = _hex_rgb(colorcet.palette[name])
    x = np.linspace(0.0, 1.0, len(rgb))
    t = np.linspace(0.0, 1.0, n)
    return _rgba(np.stack([np.interp(t, x, rgb[:, c]) for c in range(3)], axis=1))


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
    groups : (K,) int64 coarse group of each class, or None; group_names : their names
    """

    name: str
    kind: str
    codes: np.ndarray
    palette: np.ndarray
    categories: tuple[str, ...] | None = None
    counts: np.ndarray | None = None
    extent: tuple[float, float] | None = None
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None


def uniform_coloring(n: int) -> Coloring:
    """Every point in one colour (bundles without attributes)."""
    return Coloring("none", "none", np.zeros(n, np.float32), np.asarray([NONE_COLOR], np.float32))


def categorical_coloring(name: str, values: np.ndarray, categories=None, groups=None,
                         group_names=None) -> Coloring:
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
    if groups is not None and len(groups) != k:
        groups = None
    return Coloring(name, "categorical", v.astype(np.float32), categorical_palette(k, groups), cats,
                    np.bincount(v, minlength=k), None,
                    None if groups is None else np.asarray(groups, dtype=np.int64),
                    None if groups is None or group_names is None else tuple(str(x) for x in group_names))


def continuous_coloring(name: str, values: np.ndarray, extent=None, cmap: str = CONTINUOUS) -> Coloring:
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


def attribute_coloring(bundle, name: str, attributes: dict | None = None) -> Coloring:
    """The :class:`Coloring` of attribute ``name`` of an ``engine.store.Bundle``.

    attributes : the attributes to look ``name`` up in instead of ``bundle.attributes`` (a view at
    one checkpoint of a training run passes the bundle's with that checkpoint's own over them).
    Categorical attributes with more than SMALL_K classes are grouped by the coarsest other
    categorical attribute that nests them (fine -> coarse), when there is one.
    """
    attrs = bundle.attributes if attributes is None else attributes
    if name not in attrs:
        raise KeyError(f"bundle {bundle.path}: no attribute {name!r} (has: {', '.join(attrs) or 'none'})")
    a = attrs[name]
    values = np.asarray(a.values)
    if a.kind == "continuous":
        return continuous_coloring(name, values, a.extent)
    k = max(len(a.categories or ()), int(values.max()) + 1 if values.size else 1)
    groups = names = None
    if k > SMALL_K:
        others = sorted((o for o in attrs.values() if o is not a and o.kind == "categorical"),
                        key=lambda o: len(o.categories or ()))
        for o in others:
            kc = len(o.categories or ()) or int(np.asarray(o.values).max()) + 1
            if 1 < kc < k:
                groups = coarse_groups(values, np.asarray(o.values), k)
                if groups is not None:
                    names = list(o.categories or ()) + [str(i) for i in range(len(o.categories or ()), kc)]
                    break
    return categorical_coloring(name, values, a.categories, groups, names)


def movement_coloring(prev: np.ndarray, cur: np.ndarray) -> Coloring:
    """Per-point movement between two aligned layers (``engine.align.movement``), colour-mapped.

    prev, cur : (N, p) float32 NumPy or CuPy; the distances come back to the host for colouring.
    """
    from engine.align import movement
    from engine.device import to_host

    d = to_host(movement(prev, cur)).astype(np.float64)
    hi = float(np.quantile(d, 0.99)) if d.size else 1.0
    return continuous_coloring("movement", d, (0.0, hi if hi > 0 else 1.0))
