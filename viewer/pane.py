"""One model's pane inside a window: its GL-free :class:`viewer.view.ModelView`, its
:class:`viewer.points.PointsLayer`, the plot rectangle it is drawn in, and its controllers.

A :class:`Pane` is what every interaction controller receives (:class:`viewer.window.Controller`):
its coordinates are the plot area's own logical pixels (origin top-left), its frame is the one the
window draws it with (the tour's, or ``Q F`` for the compare window's second model), and changes
that concern the whole window (frame, selection, highlight, status line, layer changes that
re-align) go to the window through a small, explicit set of calls. Nothing here is borrowed from
another class: the view maths are the ModelView's, the GL is the PointsLayer's.
"""

from __future__ import annotations

import numpy as np

from viewer.layout import Rect
from viewer.view import ZOOM_RANGE


class Pane:
    """``window`` : the owning :class:`viewer.window.TourWindow`; ``view`` : ModelView;
    ``points`` : PointsLayer; ``side`` : "a" (first / only model) or "b"."""

    def __init__(self, window, view, points, side: str = "a"):
        self.window = window
        self.view = view
        self.points = points
        self.side = side
        self.rect = Rect(0.0, 0.0, float(view.size[0]), float(view.size[1]))
        self.controllers: list = []
        self.hover_layer: int | None = None
        self.strip_scroll: int | None = None
        self.brushed: np.ndarray | None = None
        self.pan_from = None

    # ---- what the controllers read ----------------------------------------------------------
    @property
    def bundle(self):
        return self.view.bundle

    @property
    def model(self):
        return self.view.model

    @property
    def p(self) -> int:
        return self.view.p

    @property
    def layer_index(self) -> int:
        return self.view.layer_index

    @property
    def transition(self):
        return self.view.transition

    @property
    def current_key(self) -> tuple[int, int]:
        """(checkpoint, layer) drawn now (the nearest checkpoint during a blend of two)."""
        return self.view.current_key

    @property
    def drawn(self):
        """None when one embedding is drawn, else the blend (key_a, key_b, s) of two (a layer
        transition, or a fractional checkpoint position): what handles and hover interpolate."""
        return self.view.drawn()

    @property
    def size(self) -> tuple[int, int]:
        """The plot area's (w, h) in logical pixels."""
        return int(round(self.rect.w)), int(round(self.rect.h))

    @property
    def tour(self):
        return self.window.tour

    @property
    def frame(self) -> np.ndarray:
        """The (p, d) float64 frame this pane is drawn with."""
        return self.window.frame_for(self)

    @property
    def selection(self) -> np.ndarray | None:
        return self.window.selection

    @property
    def coloring(self):
        return self.window.coloring_of(self)

    @property
    def zoom(self) -> float:
        return self.view.zoom

    @zoom.setter
    def zoom(self, value: float) -> None:
        self.view.zoom = float(value)

    @property
    def center(self) -> np.ndarray:
        return self.view.center

    @center.setter
    def center(self, value) -> None:
        self.view.center = np.asarray(value, dtype=np.float64).reshape(2)

    def layer_data(self, i: int):
        return self.view.layer_data(i)

    def project_current(self, xp=np):
        return self.view.project_current(self.frame, xp)

    def pixels_per_unit(self) -> float:
        return self.view.pixels_per_unit()

    def data_to_pixels(self, xy) -> np.ndarray:
        return self.view.data_to_pixels(xy)

    def pixels_to_data(self, px) -> np.ndarray:
        return self.view.pixels_to_data(px)

    def point_size(self) -> float:
        return self.view.point_size(self.window.pixel_scale)

    # ---- what the controllers ask the window for --------------------------------------------
    def set_frame(self, F) -> None:
        self.window.set_frame_for(self, F)

    def set_selection(self, mask) -> None:
        self.window.set_brushed(self, mask)

    def highlight(self, indices) -> None:
        self.window.highlight(indices)

    def pause_tour(self) -> None:
        self.window.tour.pause()

    def resume_tour(self) -> None:
        self.window.tour.play()

    def status_message(self, text: str, seconds: float = 4.0) -> None:
        self.window.status_message(self.window.pane_prefix(self) + str(text), seconds)

    def update(self) -> None:
        self.window.update()

    def set_layer(self, i: int, animate: bool = True) -> None:
        self.window.set_pane_layer(self, i, animate)

    def zoom_at(self, px, factor: float) -> None:
        self.view.zoom_at(px, factor)
        self.window.update()

    def reset_view(self) -> None:
        self.view.reset(self.frame)
        self.window.update()

    def handle_set(self):
        """The HandleSet of the first controller that has one, or None."""
        for c in self.controllers:
            hs = c.handle_set()
            if hs is not None:
                return hs
        return None

    # ---- saved views ----------------------------------------------------------------------------
    def view_params(self) -> dict:
        """This pane's part of a saved view (JSON-ready): zoom, pan (``center``), the framing
        (``fit``: centre x, y and radius), the shown layer's id and, for a training run, the
        checkpoint's name and the exact position on the run."""
        v = self.view
        out = {"zoom": float(v.zoom), "center": [float(c) for c in v.center], "fit": v.fit.to_list(),
               "layer_id": self.model.layers[self.layer_index].id}
        if v.trained:
            out.update(checkpoint=v.checkpoints[v.checkpoint], checkpoint_position=float(v.clock.position))
        return out

    def set_view_params(self, d: dict) -> None:
        """Apply a dict from :meth:`view_params` (missing keys kept; the layer is the window's,
        :meth:`set_layer`). Raises ValueError for a malformed centre or framing, KeyError (naming
        the checkpoints) for an unknown checkpoint."""
        v = self.view
        if "zoom" in d:
            v.zoom = float(np.clip(float(d["zoom"]), *ZOOM_RANGE))
        if "center" in d:
            c = np.asarray(d["center"], dtype=np.float64)
            if c.shape != (2,):
                raise ValueError(f"view params: 'center' must have 2 numbers, got {d['center']!r}")
            v.center = c
        if "fit" in d:
            f = np.asarray(d["fit"], dtype=np.float64)
            if f.shape != (3,) or not np.all(np.isfinite(f)) or f[2] <= 0:
                raise ValueError(f"view params: 'fit' must be [x, y, radius > 0], got {d['fit']!r}")
            v.fit.snap(f[:2], float(f[2]))
            v.fitted = True
        if "checkpoint" in d and v.trained:
            k = v.checkpoint_index_of(d["checkpoint"])  # KeyError naming the checkpoints
            pos = float(d.get("checkpoint_position", k))
            self.window.set_pane_checkpoint(self, pos if abs(pos - k) < 1.0 else k)

    # ---- window bookkeeping -----------------------------------------------------------------
    def place(self, rect: Rect) -> None:
        self.rect = rect
        self.view.size = (max(float(rect.w), 1.0), max(float(rect.h), 1.0))

    def local(self, x: float, y: float) -> np.ndarray:
        return np.array([x - self.rect.x, y - self.rect.y], dtype=np.float64)

    def layer_changed(self) -> None:
        for c in self.controllers:
            c.on_layer_changed(self)
