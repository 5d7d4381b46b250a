"""Framing: which part of the projected cloud the plot area shows, GL-free.

The study framed each layer by its largest 15-D row norm. A 2-D projection of a 15-D cloud is much
smaller than that radius and a few outliers set it, so layers showed as a smear in the middle of an
empty window. Here a layer is framed by what is actually drawn: the projected positions of a fixed
sample of points (:data:`SAMPLE`, the same rows every frame, so the target does not flicker), their
robust centre (the midpoint of the 1 % and 99 % quantiles per axis) and half-extents (the
:data:`QUANTILE` quantile of the distance from that centre along x and along y), fitted to the
plot's aspect ratio with a :data:`MARGIN`: the *radius* is the half-width of the plot's shorter
side in data units (divided by the margin), chosen so that both half-extents fit. At most about
1 % of the points (half a percent per axis) fall outside the plot; measured on the study's 46
layers at 800x600: at most 0.4 %.

:class:`Fit` follows that target smoothly: the radius in log space and the centre linearly, with
the exponential time constant :data:`TAU`, so a turning tour or a layer transition changes the
framing gently (no jitter, no pumping). It only moves when :meth:`Fit.follow` is called (the
viewer does so while the tour plays or a transition runs), and :meth:`Fit.snap` jumps to the target
(first frame, ``r``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE = 4096
QUANTILE = 0.995
MARGIN = 1.03
TAU = 0.45  # seconds


def sample_rows(n: int, k: int = SAMPLE) -> np.ndarray:
    """(min(n, k),) int64 ascending row indices spread evenly over [0, n) (deterministic).

    Evenly strided rather than random so every class of a class-sorted bundle (the study's images
    are in class order) is represented.
    """
    n = int(n)
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def target(xy: np.ndarray, aspect: tuple[float, float] = (1.0, 1.0),
           quantile: float = QUANTILE) -> tuple[np.ndarray, float]:
    """Robust (centre (2,) float64, radius float) of projected positions ``xy`` (k, >=2), host,
    for a plot of ``aspect`` (w, h) (any units).

    Centre: per axis, the midpoint of the 1 % and 99 % quantiles. Half-extents hx, hy: the
    ``quantile`` quantile of |x - cx| and |y - cy|. Radius: the smallest r such that a plot whose
    shorter side spans 2 r holds both, r = max(hx * s / w, hy * s / h) with s = min(w, h)
    (1.0 for an empty or degenerate cloud).
    """
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    finite = xy[np.all(np.isfinite(xy), axis=1)]
    if len(finite) == 0:
        return np.zeros(2), 1.0
    lo, hi = np.quantile(finite, [0.01, 0.99], axis=0)
    c = 0.5 * (lo + hi)
    hx, hy = np.quantile(np.abs(finite - c), quantile, axis=0)
    w, h = (max(float(a), 1e-9) for a in aspect)
    s = min(w, h)
    r = float(max(hx * s / w, hy * s / h))
    if not np.isfinite(r) or r <= 0:
        r = float(np.abs(finite).max()) or 1.0
    return c, r


@dataclass
class Fit:
    """The framing shown now: ``center`` (2,) float64 data units and ``radius`` (> 0), host."""

    center: np.ndarray
    radius: float
    tau: float = TAU

    @classmethod
    def at(cls, center, radius: float) -> Fit:
        return cls(np.asarray(center, dtype=np.float64).reshape(2).copy(), float(radius))

    def snap(self, center, radius: float) -> None:
        """Jump to the target."""
        self.center = np.asarray(center, dtype=np.float64).reshape(2).copy()
        self.radius = float(radius)

    def follow(self, center, radius: float, dt: float) -> None:
        """Move toward the target for ``dt`` seconds: a fraction 1 - exp(-dt / tau) of the way
        (the radius in log space, so growing and shrinking feel alike)."""
        if dt <= 0:
            return
        a = 1.0 - np.exp(-float(dt) / self.tau)
        self.center = self.center + a * (np.asarray(center, dtype=np.float64).reshape(2) - self.center)
        self.radius = float(np.exp(np.log(self.radius) + a * (np.log(float(radius)) - np.log(self.radius))))

    def to_list(self) -> list[float]:
        return [float(self.center[0]), float(self.center[1]), float(self.radius)]
