"""Handles: steer the tour by dragging a group's centroid or a data axis (direct manipulation).

GL-free. A *centroid* handle names a set of points (its members); its p-D position in a layer is
the members' mean in that layer's aligned data (``kernels.centroid``), recomputed per layer from
the same members and blended with the layer transition's weight s, exactly as the points are, so
it sits on the group while layers animate. An *axis* handle i stands for the data axis e_i,
drawn at ``radius * frame[i]`` (the projection of radius * e_i), where ``radius`` is a robust
spread of the current data so the p axes fan out over the point cloud.

Dragging maps the cursor to data space (``canvas.pixels_to_data``) and asks ``engine.tour`` for
the frame that puts the handle there: ``drag_handle(frame, point, target)`` for a centroid,
``drag_axis(frame, i, target / radius)`` for an axis. All math is float64 NumPy on the host; the
layer data may be NumPy or CuPy (only a p-vector per handle crosses to the host).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from engine.device import array_module, to_host

KINDS = ("centroid", "axis")

# Distinct, colour-blind-friendly hues for handles (Okabe-Ito, without black), RGBA in [0, 1].
HANDLE_COLORS = (
    (0.90, 0.62, 0.00, 1.0), (0.34, 0.71, 0.91, 1.0), (0.00, 0.62, 0.45, 1.0),
    (0.94, 0.89, 0.26, 1.0), (0.00, 0.45, 0.70, 1.0), (0.84, 0.37, 0.00, 1.0),
    (0.80, 0.47, 0.65, 1.0),
)
AXIS_COLOR = (0.75, 0.75, 0.75, 1.0)

LayerData = Callable[[int], object]


class HandleError(ValueError):
    """Bad handle arguments (empty member set, unknown handle, axis out of range)."""


@dataclass(frozen=True, eq=False)
class Handle:
    """One handle. Edit it with :meth:`HandleSet.rename` (which replaces it).

    uid : stable id within a HandleSet. label : shown beside the circle.
    kind : "centroid" (members: (k,) int64 host array of point indices) or "axis" (axis: int).
    color : RGBA floats in [0, 1].
    """

    uid: int
    label: str
    kind: str
    color: tuple[float, float, float, float]
    members: np.ndarray | None = field(default=None, repr=False)
    axis: int | None = None

    def to_dict(self) -> dict:
        d = {"label": self.label, "kind": self.kind, "color": list(self.color)}
        if self.kind == "centroid":
            d["members"] = self.members.tolist()
        else:
            d["axis"] = int(self.axis)
        return d


def axis_radius(data) -> float:
    """Where axis handles sit: the 90th percentile of the points' distances from the origin.

    data : (N, p) aligned layer data (NumPy or CuPy; centred by the bundle's alignment).
    """
    xp = array_module(data)
    norms = xp.sqrt((xp.asarray(data, dtype=xp.float64) ** 2).sum(axis=1))
    r = float(to_host(xp.percentile(norms, 90.0)))
    return r if r > 0 else 1.0


class HandleSet:
    """The handles of one view, with per-layer caches of centroids and the axis radius.

    p : the data dimension (number of possible axis handles).
    """

    def __init__(self, p: int):
        self.p = int(p)
        self.handles: list[Handle] = []
        self._uids = itertools.count(1)
        self._centroids: dict[tuple[int, int], np.ndarray] = {}
        self._radius: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.handles)

    # ---- editing -------------------------------------------------------------------------------
    def add_centroid(self, members, label: str | None = None, color=None) -> Handle:
        """A handle at the centroid of ``members`` (point indices, host ints)."""
        m = np.unique(np.asarray(to_host(members), dtype=np.int64).reshape(-1))
        if m.size == 0:
            raise HandleError("a handle needs at least one member point (select some points first)")
        if m[0] < 0:
            raise HandleError(f"handle member indices must be >= 0, got {m[0]}")
        n_custom = sum(h.kind == "centroid" for h in self.handles)
        uid = next(self._uids)
        h = Handle(uid, label if label is not None else str(n_custom + 1), "centroid",
                   tuple(color) if color is not None else HANDLE_COLORS[n_custom % len(HANDLE_COLORS)],
                   members=m)
        self.handles.append(h)
        return h

    def add_axis(self, i: int, label: str | None = None) -> Handle:
        if not 0 <= int(i) < self.p:
            raise HandleError(f"axis {i} out of range [0, {self.p})")
        h = Handle(next(self._uids), label if label is not None else f"e{int(i)}", "axis",
                   AXIS_COLOR, axis=int(i))
        self.handles.append(h)
        return h

    @property
    def has_axes(self) -> bool:
        return any(h.kind == "axis" for h in self.handles)

    def toggle_axes(self) -> bool:
        """Show all p axis handles, or remove them if shown; returns whether they are now shown."""
        if self.has_axes:
            self.handles = [h for h in self.handles if h.kind != "axis"]
            return False
        for i in range(self.p):
            self.add_axis(i)
        return True

    def remove_last(self) -> Handle | None:
        """Delete the most recently added handle (None when there is none)."""
        return self.handles.pop() if self.handles else None

    def remove(self, uid: int) -> None:
        self.handles = [h for h in self.handles if h.uid != uid]

    def rename(self, uid: int, label: str) -> Handle:
        for k, h in enumerate(self.handles):
            if h.uid == uid:
                self.handles[k] = replace(h, label=str(label))
                return self.handles[k]
        raise HandleError(f"no handle with id {uid}")

    def clear(self) -> None:
        self.handles = []

    def invalidate(self) -> None:
        """Forget cached centroids and radii (the layers changed meaning, e.g. another model)."""
        self._centroids.clear()
        self._radius.clear()

    # ---- geometry ------------------------------------------------------------------------------
    def radius(self, layer_data: LayerData, layer: int) -> float:
        if layer not in self._radius:
            self._radius[layer] = axis_radius(layer_data(layer))
        return self._radius[layer]

    def _centroid(self, h: Handle, layer_data: LayerData, layer: int) -> np.ndarray:
        key = (h.uid, layer)
        if key not in self._centroids:
            import kernels

            data = layer_data(layer)
            if h.members[-1] >= data.shape[0]:
                raise HandleError(f"handle {h.label!r} has member {h.members[-1]} >= N = {data.shape[0]}")
            idx = array_module(data).asarray(h.members)
            self._centroids[key] = np.asarray(to_host(kernels.centroid(data, index=idx)), dtype=np.float64)
        return self._centroids[key]

    def point_at_layer(self, h: Handle, layer_data: LayerData, layer: int) -> np.ndarray:
        """(p,) float64 host: the handle's data-space point in one layer."""
        if h.kind == "axis":
            e = np.zeros(self.p)
            e[h.axis] = self.radius(layer_data, layer)
            return e
        return self._centroid(h, layer_data, layer)

    def point(self, h: Handle, layer_data: LayerData, layer: int, transition=None) -> np.ndarray:
        """(p,) float64 host: the handle's point as drawn now; during a transition
        ``(i_from, i_to, s)`` the blend (1 - s) * point(i_from) + s * point(i_to)."""
        if transition is None:
            return self.point_at_layer(h, layer_data, layer)
        a, b, s = transition
        return (1.0 - s) * self.point_at_layer(h, layer_data, a) + s * self.point_at_layer(h, layer_data, b)

    def points(self, layer_data: LayerData, layer: int, transition=None) -> np.ndarray:
        """(k, p) float64 host: every handle's current point (k = len(self))."""
        if not self.handles:
            return np.zeros((0, self.p))
        return np.stack([self.point(h, layer_data, layer, transition) for h in self.handles])

    def current_radius(self, layer_data: LayerData, layer: int, transition=None) -> float:
        if transition is None:
            return self.radius(layer_data, layer)
        a, b, s = transition
        return (1.0 - s) * self.radius(layer_data, a) + s * self.radius(layer_data, b)


def drag_frame(h: Handle, point: np.ndarray, frame: np.ndarray, target_xy, radius: float) -> np.ndarray:
    """The tour frame that puts handle ``h`` at data-space ``target_xy`` (the cursor).

    point : (p,) the handle's current point (:meth:`HandleSet.point`). frame : (p, d) float64.
    target_xy : (2,) data-space x, y; for d > 2 the handle's other coordinates are kept.
    radius : the axis-handle radius (ignored for centroid handles).
    Returns the new (p, d) float64 orthonormal frame from ``engine.tour``.
    """
    from engine import tour

    frame = np.asarray(frame, dtype=np.float64)
    point = np.asarray(point, dtype=np.float64)
    target = point @ frame
    target[:2] = np.asarray(target_xy, dtype=np.float64).reshape(2)
    if h.kind == "axis":
        return np.asarray(tour.drag_axis(frame, h.axis, target / radius), dtype=np.float64)
    return np.asarray(tour.drag_handle(frame, point, target), dtype=np.float64)
