"""Helpers shared by the viewer-interaction tests: a small real bundle and an affine pixel map.

``make_bundle`` writes a genuine bundle with :class:`engine.store.BundleWriter` (random layers,
a categorical and a continuous attribute, optional thumbnails), so the tests exercise the same
objects the viewer opens. ``PixelMap`` is an independent zoom/pan map written here in float64 (the
test's reference for pixel <-> data), origin top-left with y pointing down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ["golden retriever", "Labrador retriever", "tabby cat", "Persian cat", "goldfish",
               "school bus", "Egyptian cat"]


def make_bundle(path, rng, n=300, p=6, layers=3, images=True):
    from engine.store import BundleWriter, load_bundle

    w = BundleWriter(path, n=n, dim=p)
    w.add_model("net")
    for k in range(layers):
        w.write_layer("net", f"{k}-Layer", rng.normal(size=(n, p)).astype(np.float32) * (1 + k))
    w.set_attribute("label", rng.integers(0, len(CLASS_NAMES), n), "categorical", categories=CLASS_NAMES)
    w.set_attribute("confidence", rng.uniform(0, 1, n), "continuous")
    if images:
        w.set_images(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    w.commit()
    return load_bundle(path)


@dataclass(frozen=True)
class PixelMap:
    """data -> pixels: px = (cx + zoom * (x - pan_x), cy - zoom * (y - pan_y))."""

    zoom: float
    pan: tuple[float, float]
    center: tuple[float, float]

    def data_to_pixels(self, xy):
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([self.center[0] + self.zoom * (xy[:, 0] - self.pan[0]),
                         self.center[1] - self.zoom * (xy[:, 1] - self.pan[1])], axis=1)

    def pixels_to_data(self, px):
        px = np.asarray(px, dtype=np.float64)
        return np.stack([(px[:, 0] - self.center[0]) / self.zoom + self.pan[0],
                         (self.center[1] - px[:, 1]) / self.zoom + self.pan[1]], axis=1)


def random_map(rng) -> PixelMap:
    return PixelMap(float(rng.uniform(40, 120)), (float(rng.normal()), float(rng.normal())),
                    (float(rng.uniform(200, 400)), float(rng.uniform(200, 400))))


def random_frame(rng, p, d=2):
    q, _ = np.linalg.qr(rng.normal(size=(p, d)))
    return q


def even_odd(px, poly):
    """Independent float64 point-in-polygon (crossing number of a +x ray) in pixel space."""
    px, poly = np.asarray(px, dtype=np.float64), np.asarray(poly, dtype=np.float64)
    inside = np.zeros(len(px), dtype=bool)
    x, y = px[:, 0], px[:, 1]
    for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (ya > y) != (yb > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x < xc)
    return inside


def edge_distance(px, poly):
    """Pixel distance of each point to the polygon's boundary (to skip float-ambiguous points)."""
    px, poly = np.asarray(px, dtype=np.float64), np.asarray(poly, dtype=np.float64)
    d = np.full(len(px), np.inf)
    for a, b in zip(poly, np.roll(poly, -1, axis=0)):
        ab = b - a
        t = np.clip(((px - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        d = np.minimum(d, np.linalg.norm(px - (a + t[:, None] * ab), axis=1))
    return d


def record_compare_windows(monkeypatch) -> list:
    """Make ``layertour view --compare`` open its windows hidden and without an event loop; returns
    the list each new CompareCanvas is appended to (for the test to inspect and close)."""
    import os

    import vispy.app

    import viewer.compare

    opened = []

    class Recorded(viewer.compare.CompareCanvas):
        def __init__(self, *args, **kwargs):
            kwargs["show"] = False
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(viewer.compare, "CompareCanvas", Recorded)
    monkeypatch.setattr(vispy.app, "run", lambda: None)
    monkeypatch.setenv("DISPLAY", os.environ.get("DISPLAY", ":0"))
    return opened
