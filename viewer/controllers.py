"""Interaction controllers: brushing, handles, hover/search and saved views.

Each is a :class:`viewer.window.Controller` (the protocol whose hooks do nothing by default):
it receives the :class:`viewer.pane.Pane` an event is for (mouse positions in that pane's plot
pixels) and holds only interaction state; the logic lives in the GL-free modules
:mod:`viewer.selection`, :mod:`viewer.handles`, :mod:`viewer.picking` and :mod:`viewer.viewstate`.
Links between panes go through methods (:meth:`HoverController.follow`,
:meth:`HandleController.copy_labels`, :meth:`BrushController.disarm`), never by setting another
controller's fields. :func:`install` builds the single window's set in the right order.

Keys: b rectangle brush, l lasso, x clear selection, e export selection, d handle from the
selection, Delete remove last handle, a axis handles, Enter (over a handle) rename it,
/ search, v save view, o load view, g go to the saved view (animated); the guided tour's keys
(u, n, w) are :mod:`viewer.guided`'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.device import array_module, to_host
from viewer import viewstate
from viewer.guided import GuidedController
from viewer.handles import HandleError, HandleSet, drag_frame
from viewer.picking import affine_of, describe, nearest, nearest_within, search
from viewer.selection import Selection, SelectionError, brush_lasso, brush_rect, mode_from_modifiers
from viewer.text import text_width
from viewer.window import Controller, TextEntry, key_name

__all__ = ["BrushController", "Controller", "HandleController", "HoverController", "TextEntry",
           "ViewStateController", "install", "key_name"]

WHITE = (1.0, 1.0, 1.0, 1.0)
PANEL = (0.05, 0.05, 0.08, 0.85)


def _pos(event) -> np.ndarray:
    return np.asarray(event.pos, dtype=np.float64)[:2]


def _is_left(event) -> bool:
    return getattr(event, "button", None) in (1, None)


def _positions(canvas):
    """Projected (N, d) positions exactly as drawn, in the layer data's array module."""
    xp = array_module(canvas.layer_data(canvas.current_key))
    return canvas.project_current(xp=xp)


class BrushController(Controller):
    """Rectangle (b) and lasso (l) brushing; x clears, e exports. Shift adds, Control subtracts."""

    help = (("b", "rectangle brush (drag; shift adds, ctrl subtracts)"), ("l", "lasso brush"),
            ("x", "clear the selection"), ("e", "export the selection (CSV)"))

    def __init__(self, n: int, export_dir=None):
        self.selection = Selection(n)
        self.armed: str | None = None
        self.path: list[np.ndarray] = []
        self.mode = "replace"
        self.export_dir = Path(export_dir) if export_dir is not None else None

    def on_key_press(self, canvas, event) -> bool:
        k = key_name(event)
        if k in ("b", "l"):
            self.armed = "rect" if k == "b" else "lasso"
            self.path = []
            what = "rectangle" if k == "b" else "lasso"
            canvas.status_message(f"{what} brush: drag to select (shift adds, ctrl subtracts, Esc cancels)")
            return True
        if k == "escape" and (self.armed or self.path):
            self.armed, self.path = None, []
            canvas.status_message("brush cancelled")
            return True
        if k == "x":
            self.selection.clear()
            canvas.set_selection(None)
            canvas.status_message("selection cleared")
            return True
        if k == "e":
            self._export(canvas)
            return True
        return False

    def disarm(self) -> None:
        """Forget an armed brush and a gesture in progress (the other pane's gesture spent it)."""
        self.armed, self.path = None, []

    def _export(self, canvas) -> None:
        self.selection.set_mask(canvas.selection)
        if not self.selection.active:
            canvas.status_message("nothing selected to export (b or l to brush)")
            return
        directory = self.export_dir or Path.cwd()
        stem = f"{Path(str(canvas.bundle.path)).name}-selection-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            path = self.selection.export(directory / f"{stem}.csv", canvas.bundle)
        except (OSError, ValueError) as exc:  # unwritable directory, full disk: say so in the window
            canvas.status_message(f"export failed: {exc}")
            return
        canvas.status_message(f"exported {self.selection.count} points to {path}")

    def on_mouse_press(self, canvas, event) -> bool:
        if not self.armed or not _is_left(event):
            return False
        self.path = [_pos(event)]
        self.mode = mode_from_modifiers(getattr(event, "modifiers", ()))
        return True

    def on_mouse_move(self, canvas, event) -> bool:
        if not self.path:
            return False
        p = _pos(event)
        if self.armed == "rect":
            self.path = [self.path[0], p]
        elif np.hypot(*(p - self.path[-1])) >= 1.0:
            self.path.append(p)
        canvas.update()
        return True

    def on_mouse_release(self, canvas, event) -> bool:
        if not self.path:
            return False
        self.on_mouse_move(canvas, event)
        kind, path = self.armed, self.path
        self.armed, self.path = None, []
        try:
            xy = _positions(canvas)
            if kind == "rect":
                if len(path) < 2:
                    canvas.status_message("brush: drag a rectangle")
                    return True
                mask = brush_rect(xy, path[0], path[-1], canvas.pixels_to_data)
            else:
                mask = brush_lasso(xy, np.array(path), canvas.pixels_to_data)
        except SelectionError as exc:
            canvas.status_message(f"brush: {exc}")
            return True
        self.selection.set_mask(canvas.selection)
        new = self.selection.combine(mask, self.mode)
        canvas.set_selection(new)
        canvas.status_message(f"{int(new.sum())} of {self.selection.n} points selected ({self.mode})")
        canvas.update()
        return True

    def draw(self, canvas, overlay) -> None:
        if len(self.path) < 2:
            return
        color = (1.0, 0.85, 0.2, 1.0)
        if self.armed == "rect":
            (x0, y0), (x1, y1) = self.path[0], self.path[-1]
            overlay.lines(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), color, closed=True)
        else:
            overlay.lines(np.array(self.path), color, closed=True)


class HandleController(Controller):
    """Custom handles from the selection (d), axis handles (a), drag to steer, Delete removes the
    last, Enter over a handle renames it. The tour pauses during a drag and resumes from there."""

    help = (("d", "handle at the selection's centroid"), ("Delete", "remove the last handle"),
            ("a", "show/hide axis handles"), ("drag handle", "steer the projection"),
            ("Enter", "rename the handle under the cursor"))
    RADIUS_PX = 9.0

    def __init__(self, p: int, entry: TextEntry | None = None):
        self.handles = HandleSet(p)
        self.entry = entry
        self.dragging = None
        self.hover = None
        self._resume = False
        self._model = None

    def handle_set(self) -> HandleSet:
        return self.handles

    def copy_labels(self, other: HandleController) -> None:
        """Give this set's handles the labels of ``other``'s (created in lockstep, in order)."""
        for h, g in zip(other.handles.handles, list(self.handles.handles)):
            if g.label != h.label:
                self.handles.rename(g.uid, h.label)

    def on_layer_changed(self, canvas) -> None:
        """Centroids are cached per layer index: drop them when the canvas shows another model."""
        if canvas.model.name != self._model:
            self._model = canvas.model.name
            self.handles.invalidate()

    # ---- geometry through the canvas -----------------------------------------------------------
    def points(self, canvas) -> np.ndarray:
        return self.handles.points(canvas.layer_data, canvas.current_key, canvas.drawn)

    def pixel_positions(self, canvas) -> np.ndarray:
        """(k, 2) float64 pixel positions of the handles as drawn now."""
        pts = self.points(canvas)
        if len(pts) == 0:
            return np.zeros((0, 2))
        xy = pts @ np.asarray(canvas.frame, dtype=np.float64)
        return np.asarray(canvas.data_to_pixels(xy[:, :2]), dtype=np.float64)

    def _at(self, canvas, px):
        k = nearest_within(self.pixel_positions(canvas), px, self.RADIUS_PX + 3)
        return None if k is None else self.handles.handles[k]

    # ---- events -------------------------------------------------------------------------------
    def on_key_press(self, canvas, event) -> bool:
        k = key_name(event)
        if k == "d":
            sel = canvas.selection
            if sel is None or not np.any(to_host(sel)):
                canvas.status_message("select points first (b or l), then d makes a handle")
                return True
            try:
                h = self.handles.add_centroid(np.flatnonzero(to_host(sel)))
            except HandleError as exc:
                canvas.status_message(f"handle: {exc}")
                return True
            canvas.status_message(f"handle {h.label!r} on {h.members.size} points (Enter over it renames)")
            canvas.update()
            return True
        if k == "delete":
            h = self.handles.remove_last()
            canvas.status_message("no handle to remove" if h is None else f"removed handle {h.label!r}")
            self.hover = None if h is not None and self.hover == h.uid else self.hover
            canvas.update()
            return True
        if k == "a":
            shown = self.handles.toggle_axes()
            canvas.status_message(f"axis handles {'shown' if shown else 'hidden'}")
            canvas.update()
            return True
        if k in ("enter", "return") and self.hover is not None and self.entry is not None:
            uid = self.hover
            current = next((h.label for h in self.handles.handles if h.uid == uid), "")
            self.entry.start("handle label: ", lambda text: self._rename(canvas, uid, text), current)
            canvas.update()
            return True
        return False

    def _rename(self, canvas, uid, text) -> None:
        try:
            self.handles.rename(uid, text)
        except HandleError as exc:
            canvas.status_message(str(exc))
        canvas.update()

    def on_mouse_press(self, canvas, event) -> bool:
        if not _is_left(event) or not self.handles.handles:
            return False
        h = self._at(canvas, _pos(event))
        if h is None:
            return False
        self.dragging = h.uid
        self._resume = bool(getattr(canvas.tour, "playing", False))
        canvas.pause_tour()
        return True

    def on_mouse_move(self, canvas, event) -> bool:
        px = _pos(event)
        if self.dragging is None:
            h = self._at(canvas, px) if self.handles.handles else None
            uid = None if h is None else h.uid
            if uid != self.hover:
                self.hover = uid
                canvas.update()
            return False
        self.drag_to(canvas, px)
        return True

    def drag_to(self, canvas, px) -> np.ndarray:
        """Move the dragged handle under pixel ``px``: sets and returns the new (p, d) frame."""
        h = next((h for h in self.handles.handles if h.uid == self.dragging), None)
        if h is None:  # deleted while dragged
            self.dragging = None
            return canvas.frame
        args = (canvas.layer_data, canvas.current_key, canvas.drawn)
        point = self.handles.point(h, *args)
        target = np.asarray(canvas.pixels_to_data(np.asarray(px, dtype=np.float64).reshape(1, 2)))[0]
        try:
            frame = drag_frame(h, point, canvas.frame, target, self.handles.current_radius(*args))
        except ValueError as exc:  # e.g. a handle exactly at the origin cannot steer
            canvas.status_message(f"handle {h.label!r}: {exc}")
            return canvas.frame
        canvas.set_frame(frame)
        canvas.update()
        return frame

    def on_mouse_release(self, canvas, event) -> bool:
        if self.dragging is None:
            return False
        self.drag_to(canvas, _pos(event))
        self.dragging = None
        if self._resume:
            canvas.resume_tour()
        return True

    def draw(self, canvas, overlay) -> None:
        if not self.handles.handles:
            return
        px = self.pixel_positions(canvas)
        origin = np.asarray(canvas.data_to_pixels(np.zeros((1, 2))), dtype=np.float64)[0]
        active = self.dragging if self.dragging is not None else self.hover
        for h, q in zip(self.handles.handles, px):
            r = self.RADIUS_PX if h.kind == "centroid" else self.RADIUS_PX * 0.7
            if h.uid == active:
                overlay.lines(np.array([origin, q]), h.color)
            fill = (*h.color[:3], 0.35 if h.kind == "centroid" else 0.15)
            overlay.circles(q.reshape(1, 2), r, h.color, fill=fill)
            overlay.text(h.label, (q[0] + r + 3, q[1]), h.color, 12, "left")


class HoverController(Controller):
    """Tooltip for the point under the cursor (index, attributes, thumbnail); / searches labels or
    an index and highlights the matches."""

    help = (("hover", "tooltip: index, attributes, image"),
            ("/", "search a label or #index (Enter; empty clears)"))
    RADIUS_PX = 6.0

    def __init__(self, entry: TextEntry | None = None):
        self.entry = entry
        self.index: int | None = None
        self.cursor: np.ndarray | None = None
        self.result = None

    def on_key_press(self, canvas, event) -> bool:
        if key_name(event) == "/" and self.entry is not None:
            self.entry.start("search (label or #index): ", lambda text: self.run_search(canvas, text))
            canvas.update()
            return True
        return False

    def run_search(self, canvas, text: str):
        """Search ``text`` and highlight the matches (an empty query clears the highlight)."""
        if not text.strip():
            self.result = None
            canvas.highlight(None)
            canvas.status_message("highlight cleared")
            return None
        self.result = search(canvas.bundle, text)
        canvas.highlight(self.result.indices if self.result.indices.size else None)
        canvas.status_message(self.result.message)
        canvas.update()
        return self.result

    def pick(self, canvas, px) -> int | None:
        """Index of the point drawn under pixel ``px`` (within RADIUS_PX), or None."""
        return nearest(_positions(canvas), px, affine_of(canvas.data_to_pixels), self.RADIUS_PX)

    def on_mouse_move(self, canvas, event) -> bool:
        if getattr(event, "buttons", None):
            self.index = None
            return False
        self.cursor = _pos(event)
        index = self.pick(canvas, self.cursor)
        if index != self.index:
            self.index = index
            canvas.update()
        return False

    def on_layer_changed(self, canvas) -> None:
        self.index = None

    def follow(self, other: HoverController) -> bool:
        """Mark the point ``other`` hovers (the linked pane's); True when that changed anything."""
        if other.index == self.index:
            return False
        self.index = other.index
        return True

    def _point_px(self, canvas, i: int) -> np.ndarray:
        def row(layer):
            return np.asarray(to_host(canvas.layer_data(layer)[i]), dtype=np.float64)

        tr = canvas.drawn
        y = row(canvas.current_key) if tr is None else (1 - tr[2]) * row(tr[0]) + tr[2] * row(tr[1])
        xy = y @ np.asarray(canvas.frame, dtype=np.float64)
        return np.asarray(canvas.data_to_pixels(xy[:2].reshape(1, 2)), dtype=np.float64)[0]

    def draw(self, canvas, overlay) -> None:
        if self.index is None:
            return
        tip = describe(canvas.bundle, self.index)
        q = self._point_px(canvas, self.index)
        overlay.circles(q.reshape(1, 2), self.RADIUS_PX, WHITE)
        w, h = canvas.size[0], canvas.size[1]
        lines = [f"{name}: {text}" for name, text in tip.rows]
        thumb = 64 if tip.thumbnail is not None else 0
        text_w = max(text_width(s, 11) for s in lines)
        box_w = 12 + max(text_w, thumb)
        box_h = 10 + 16 * len(lines) + (thumb + 6 if thumb else 0)
        x0 = q[0] + 12 if q[0] + 12 + box_w < w else q[0] - 12 - box_w
        y0 = min(max(q[1] - box_h / 2, 4), max(h - box_h - 4, 4))
        overlay.rect(x0, y0, x0 + box_w, y0 + box_h, None, fill=PANEL)
        y = y0 + 6
        if thumb:
            overlay.image(tip.thumbnail, (x0 + 6, y), scale=thumb / tip.thumbnail.shape[1])
            y += thumb + 6
        for s in lines:
            overlay.text(s, (x0 + 6, y + 8), WHITE, 11, "left")
            y += 16


class ViewStateController(Controller):
    """v saves the view (``<bundle>-view-<time>.json``), o loads the last saved (or --state) view,
    g glides to it along the geodesic between frames. It saves and loads the whole window it is in
    (:func:`viewer.viewstate.capture` of the window's ``view_kind``): one instance serves a
    compare window, in both panes' lists, and steps its glide for the first pane only."""

    help = (("v", "save the view to JSON"), ("o", "load the saved view"),
            ("g", "go to the saved view (animated)"))

    def __init__(self, directory=None, state_path=None):
        self.directory = Path(directory) if directory is not None else None
        self.state_path = Path(state_path) if state_path is not None else None
        self.goto: viewstate.GoTo | None = None
        self._goto_state: dict | None = None

    def _saved(self, canvas):
        path = self.state_path or viewstate.latest_path(canvas.bundle, self.directory)
        canvas = canvas.window
        if path is None:
            canvas.status_message("no saved view yet (v saves one)")
            return None, None
        try:
            return path, viewstate.load(path)
        except viewstate.ViewStateError as exc:
            canvas.status_message(str(exc))
            return None, None

    def on_key_press(self, canvas, event) -> bool:
        k = key_name(event)
        if k == "v":
            try:
                path = viewstate.save(viewstate.default_path(canvas.bundle, self.directory),
                                      viewstate.capture(canvas.window))
            except (OSError, ValueError) as exc:
                canvas.status_message(f"saving the view failed: {exc}")
                return True
            self.state_path = path
            canvas.status_message(f"view saved to {path}")
            return True
        if k in ("o", "g"):
            path, state = self._saved(canvas)
            if state is not None and self.go_to(canvas.window, state, animate=(k == "g"), source=str(path)):
                canvas.status_message(f"{'going to' if k == 'g' else 'loaded'} view {path}")
            return True
        return False

    def go_to(self, canvas, state: dict, animate: bool = True, duration: float = 0.6,
              source: str = "view state") -> bool:
        """Apply ``state`` to the window ``canvas``; with ``animate`` the frame glides there over
        ``duration`` seconds. False (and why, naming ``source``, on the status line) when the view
        does not fit the window (``viewer.viewstate.check_fits``): nothing changes then."""
        try:
            viewstate.check_fits(canvas, state, source=source)
        except viewstate.ViewStateError as exc:
            canvas.status_message(str(exc), 8.0)
            return False
        start = np.asarray(canvas.frame, dtype=np.float64).copy()
        animate = animate and start.shape == np.shape(state["frame"])  # no glide between 2-D and 3-D
        viewstate.apply(canvas, state, animate=animate)
        if animate:  # glide with the tour paused; on arrival it plays (or not) as saved
            canvas.pause_tour()
            self.goto = viewstate.GoTo(start, np.asarray(state["frame"], dtype=np.float64), duration)
            self._goto_state = state
            canvas.set_frame(start)
        return True

    def on_frame(self, pane, dt: float) -> None:
        canvas = pane.window
        if self.goto is None or pane is not canvas.panes[0]:
            return
        frame, done = self.goto.step(dt)
        if not done:
            canvas.set_frame(frame)
        else:  # arrive on the saved tour itself, so it continues exactly as saved
            self.goto = None
            viewstate.restore_tour(canvas, self._goto_state["tour"], self._goto_state)
            if not np.allclose(canvas.frame, frame, rtol=0, atol=1e-12):
                canvas.set_frame(frame)
        canvas.update()


def install(canvas, state_path=None, directory=None) -> list:
    """Create the interaction controllers for the single-model window ``canvas``, add them in
    event order with their help entries, and return them: BrushController (an armed brush takes a
    press before a handle under it), HandleController, HoverController, ViewStateController,
    GuidedController (:mod:`viewer.guided`: u, n, w). Keys
    typed into the window's text entry (search, labels) reach the entry first.

    state_path : the --state file that ``o`` and ``g`` use (default: the newest saved view).
    directory : where ``v`` and ``e`` write (default: the current directory).
    """
    entry = canvas.entry
    p = int(canvas.p)
    ctrls = [BrushController(int(canvas.bundle.n), export_dir=directory),
             HandleController(p, entry), HoverController(entry), ViewStateController(directory, state_path),
             GuidedController()]
    for c in ctrls:
        canvas.help_entries.extend(c.help)
        canvas.add_controller(c)
    return ctrls
