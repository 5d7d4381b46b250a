"""The window base every layertour window is built on, and the controller protocol.

:class:`TourWindow` is a ``vispy.app.Canvas`` that owns what all windows share: the GL probe and
render-path choice, one ``engine.tour.GrandTour``, the wall-clock timer, the status line, the
linked selection and highlight, the legend (one per window) and its filter, the text entry, the
screenshot, the keys every window has (:data:`COMMON_HELP`), and the routing of VisPy's canvas
events to the panes (:class:`viewer.pane.Pane`) and their controllers. It needs no visible native
window: with ``show=False`` on VisPy's EGL back end (or a hidden glfw window) it draws into
``render()``'s framebuffer, and events can be injected with ``canvas.events.<name>(...)`` — which
is how the tests, the headless renderer and the notebook widget drive it.

Subclasses compose panes and say what differs: :class:`viewer.canvas.TourCanvas` (one model) and
:class:`viewer.compare.CompareCanvas` (two, one tour). They implement :meth:`frame_for`,
:meth:`set_frame_for`, :meth:`set_pane_layer`, :meth:`coloring_of`, the window's part of a saved
view (:attr:`view_kind`, :meth:`view_params`, :meth:`set_view_params`; each pane adds its own,
:meth:`viewer.pane.Pane.view_params`) and may add keys
(:meth:`window_key`), panels (:meth:`layout_extras`, :meth:`draw_extras`, :meth:`press_extras`),
per-frame work (:meth:`advance`) and what follows a pane's move along its training run
(:meth:`checkpoint_changed`).

A pane that shows a training run gets a checkpoint slider docked under its plot (the layout's
``sliders``): click or drag it to scrub (a position between two checkpoints shows their blend),
its button or ``p`` plays through training, ``[`` / ``]`` step to the previous / next checkpoint
(of the focused pane). These are handled here, for every window, from VisPy's canvas events: the
desktop, the headless renderer and the notebook widget (browser events re-emitted) drive them alike.

Controllers (:class:`Controller`) are plain objects with optional hooks, called in order for the
pane under the cursor (keys: for the panes :meth:`key_panes` names); a hook that consumes an event
returns True. A new interaction mode (e.g. a guided tour's keys) is one more subclass added with
``pane.controllers.append`` (:class:`viewer.guided.GuidedController` is one).
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from vispy import app, gloo

from engine.errors import UserError
from engine.tour import MAX_SPEED
from viewer import colors as vcolors
from viewer import hud
from viewer import layout as vlayout
from viewer import legend as vlegend
from viewer import overlay as vov
from viewer.render_paths import choose_path
from viewer.timeline import SliderGeometry

log = logging.getLogger("layertour.viewer")

SCRUB_SECONDS = 1.0
DEFAULT_SPEED = 0.8  # radians per second: a 4-second clip turns the view clearly (see docs/benchmarks.md)
COMMON_HELP = [
    ("space", "play / pause the tour"), ("+ / -", "tour speed up / down"),
    ("⌫ / ←", "scrub back along the recent path"), ("drag / wheel", "pan / zoom"),
    ("r", "re-fit: reset zoom and pan, frame what is shown"),
    ("c", "cycle colouring"), ("legend", "click: only that class; shift-click: add; wheel: scroll"),
    ("[ / ]", "previous / next checkpoint (training runs)"), ("p", "play / pause through training"),
    ("slider", "click or drag: scrub through training"),
    ("f", "filter the legend by name"), ("s", "screenshot (PNG)"), ("h", "hide / show the HUD"),
    ("?", "this help"), ("q / esc", "quit"),
]


def checkpoint_summary(model) -> str:
    """"step-40 · accuracy 75.1% · loss 0.82" for a :class:`engine.store.Model` at a checkpoint
    (only what its meta holds)."""
    meta = model.checkpoint_meta or {}
    parts = [str(model.checkpoint)]
    if isinstance(meta.get("accuracy"), (int, float)):
        parts.append(f"accuracy {100 * meta['accuracy']:.1f}%")
    if isinstance(meta.get("loss"), (int, float)):
        parts.append(f"loss {meta['loss']:.3g}")
    return "  ·  ".join(parts)


class Controller:
    """The controller protocol: every hook does nothing; subclasses override what they need.

    Event hooks get the :class:`viewer.pane.Pane` the event is for and the VisPy event (mouse
    positions in the pane's plot pixels) and return True when they consumed it.
    """

    help: tuple = ()
    state_key: str | None = None  # the key of this controller's entry in a saved view's "controllers"

    def on_key_press(self, pane, event) -> bool:
        return False

    def on_mouse_press(self, pane, event) -> bool:
        return False

    def on_mouse_move(self, pane, event) -> bool:
        return False

    def on_mouse_release(self, pane, event) -> bool:
        return False

    def on_mouse_wheel(self, pane, event) -> bool:
        return False

    def on_layer_changed(self, pane) -> None:
        """The pane shows another layer or model (or another checkpoint of a training run)."""

    def on_frame(self, pane, dt: float) -> None:
        """Time moved on by ``dt`` seconds."""

    def draw(self, pane, overlay) -> None:
        """Draw over the points, in the pane's plot pixels."""

    def handle_set(self):
        """The :class:`viewer.handles.HandleSet` this controller edits (saved views keep it), or None."""
        return None

    def save_state(self, pane) -> dict | None:
        """This controller's part of a saved view (JSON-able), stored under ``state_key``; None: nothing."""
        return None

    def restore_tour(self, pane, tour_state: dict, saved) -> bool:
        """A saved view's tour is being restored (``viewer.viewstate.restore_tour``); ``saved`` is this
        controller's entry of the view (or None). True when this controller installed the tour."""
        return False


def key_name(event) -> str:
    """Lower-case name of a key event's key ('b', 'delete', 'enter', 'escape', '/')."""
    key = getattr(event, "key", None)
    name = getattr(key, "name", key)
    name = "" if name is None else str(name)
    if name.lower() in ("slash", "question") or name == "/":
        return "/" if getattr(event, "text", "") != "?" else "?"
    return name.lower()


class TextEntry:
    """A one-line text field typed into the message bar (search, handle labels, legend filter).

    ``on_change`` (optional) sees the text after every key, ``on_done`` after Enter.
    """

    def __init__(self):
        self.active = False
        self.prompt = ""
        self.text = ""
        self._done: Callable[[str], None] | None = None
        self._change: Callable[[str], None] | None = None

    def start(self, prompt: str, on_done: Callable[[str], None], text: str = "",
              on_change: Callable[[str], None] | None = None) -> None:
        self.active, self.prompt, self.text = True, prompt, text
        self._done, self._change = on_done, on_change

    def key(self, event) -> bool:
        """Feed a key press; returns True (consumed) while the entry is active."""
        if not self.active:
            return False
        name = key_name(event)
        if name in ("enter", "return"):
            self.active = False
            if self._done is not None:
                self._done(self.text)
            return True
        if name == "escape":
            self.active = False
            if self._change is not None:
                self._change(self.text)
            return True
        if name == "backspace":
            self.text = self.text[:-1]
        else:
            ch = getattr(event, "text", "") or ""
            if ch.isprintable():
                self.text += ch
        if self._change is not None:
            self._change(self.text)
        return True


class LocalEvent(SimpleNamespace):
    """A mouse event moved into a pane's plot pixels (what controllers read)."""


class TourWindow(app.Canvas, metaclass=ABCMeta):
    """Base of the layertour windows (see the module docstring).

    bundle : engine.store.Bundle; p : the tour's dimension; dims : 2 or 3; render_path : auto |
    cuda | copy | shader; device : engine back end for the data (auto | cuda | cpu); seed : tour
    seed; speed : tour speed in rad/s (default :data:`DEFAULT_SPEED`); animate : run the
    wall-clock timer (False for headless rendering and tests).
    """

    view_kind: str | None = None  # the kind of saved view this window writes and reads (viewer.viewstate)

    def __init__(self, bundle, p: int, *, dims: int = 2, render_path: str = "auto", seed: int = 0,
                 speed: float | None = None, size=(1100, 820), show: bool = True, animate: bool = True,
                 device: str = "auto", title: str = "layertour"):
        from engine.device import resolve
        from engine.tour import GrandTour

        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.bundle = bundle
        self.p = int(p)
        self.dims = dims
        self.backend = resolve(device)
        choose_path(render_path, self.backend.is_cuda)  # fail early on a bad choice, before a window
        super().__init__(title=title, size=size, show=False, keys=None)
        self.set_current()
        from vispy.gloo import gl

        self.max_texture_size = int(gl.glGetParameter(gl.GL_MAX_TEXTURE_SIZE))
        self.gl_renderer = str(gl.glGetParameter(gl.GL_RENDERER))
        vendor = str(gl.glGetParameter(gl.GL_VENDOR))
        self.render_path_name = choose_path(render_path, self.backend.is_cuda, vendor)
        self.data_xp = self.backend.xp if self.render_path_name in ("cuda", "copy") else np
        self.tour = GrandTour(self.p, dims, seed=seed, speed=DEFAULT_SPEED if speed is None else float(speed))
        self.panes: list = []
        self.selection: np.ndarray | None = None
        self._highlight: np.ndarray | None = None
        self._legend_filter: set | None = None
        self.legend: vlegend.Legend | None = None
        self.entry = TextEntry()
        self.show_hud = True
        self.show_help = False
        self.show_fps = True
        self.help_entries: list[tuple[str, str]] = list(COMMON_HELP)
        self.hover_legend = None
        self._status: tuple[str, float] | None = None
        self._fps = 0.0
        self._last_draw = None
        self._capture = None  # the pane a press started in: it gets the moves and the release
        self._slider_drag = None  # the pane whose checkpoint slider is being dragged
        self.hover_checkpoint: tuple | None = None  # (pane, checkpoint index) under the cursor
        self.focus = None
        self._screenshot_dir = Path.cwd()
        self.overlay = vov.Overlay(self)
        self._timer = None
        self._last_tick = None
        self._animate = animate
        self._show = show

    def _start(self) -> None:
        """Called by subclasses at the end of their __init__: GL state, framing, timer, show."""
        gloo.set_state(clear_color=vcolors.BACKGROUND, blend=True, depth_test=False,
                       blend_func=("src_alpha", "one_minus_src_alpha"))
        self.layout()
        for pane in self.panes:
            pane.view.refit(pane.frame)
        if self._animate:
            self._timer = app.Timer("auto", connect=self._on_timer, start=True)
        if self._show:
            self.show()

    # ------------------------------------------------------------------ the tour's frame
    @property
    def frame(self) -> np.ndarray:
        """The tour's current (p, d) float64 frame (host): the first pane's (model A's in compare)."""
        return np.asarray(self.tour.frame, dtype=np.float64)

    def set_frame(self, F) -> None:
        """Show the tour's frame F (p, d) now (the first pane's); the tour continues from it."""
        self.set_frame_for(self.panes[0], F)

    # ------------------------------------------------------------------ what subclasses provide
    def frame_for(self, pane) -> np.ndarray:
        return np.asarray(self.tour.frame, dtype=np.float64)

    def set_frame_for(self, pane, F) -> None:
        self.tour.set_frame(np.asarray(F, dtype=np.float64))
        self.update()

    @abstractmethod
    def set_pane_layer(self, pane, i: int, animate: bool = True) -> None:
        """Show layer ``i`` in ``pane`` (with ``animate``: through the aligned blend)."""

    @abstractmethod
    def coloring_of(self, pane):
        """The :class:`viewer.colors.Coloring` ``pane`` draws with now."""

    @abstractmethod
    def view_params(self) -> dict:
        """The window-owned part of a saved view (JSON-ready; see :mod:`viewer.viewstate`)."""

    @abstractmethod
    def set_view_params(self, d: dict, animate: bool = False) -> None:
        """Apply a dict from :meth:`view_params` (unknown keys ignored, missing keys kept)."""

    def pane_prefix(self, pane) -> str:
        """Prefix of a pane's status messages (the compare window names the model)."""
        return ""

    def window_key(self, text: str, key: str) -> bool:
        """Keys of one kind of window; True when handled."""
        return False

    def key_panes(self, key: str) -> list:
        """The panes whose controllers get a key (default: the focused one)."""
        return [self.focus or self.panes[0]]

    def layout_extras(self) -> dict:
        """Extra arguments for :func:`viewer.layout.compute` (e.g. the heat map's size)."""
        return {}

    def draw_extras(self, lay) -> None:
        """Draw window-specific panels (the overlay is in window pixels)."""

    def press_extras(self, x: float, y: float, event) -> bool:
        """A press on a window-specific panel; True when handled."""
        return False

    def hover_extras(self, x: float, y: float) -> bool:
        """Hover over window-specific panels; True when something changed."""
        return False

    def checkpoint_changed(self, pane) -> None:
        """``pane`` now shows another checkpoint of its training run (its nearest one changed):
        colourings that depend on the checkpoint follow (subclasses)."""

    @abstractmethod
    def title_lines(self, lay) -> list:
        """The title bar's lines: ``(text, rgba, size)`` each, for layout ``lay``."""

    def screenshot_stem(self) -> str:
        return Path(str(self.bundle.path)).name

    # ------------------------------------------------------------------ layout
    def layout(self) -> vlayout.Layout:
        """The window's :class:`viewer.layout.Layout` now; places every pane in its plot area."""
        hud_on = self.show_hud
        legend_w = 0.0
        c = self.coloring_of(self.panes[0]) if self.panes else None
        if hud_on and c is not None:
            if c.kind == "categorical":
                legend_w = self._legend_for(c).preferred_width()
            elif c.kind == "continuous":
                legend_w = hud.colorbar_width(c.name)
        specs = [vlayout.PaneSpec(hud.strip_width([ly.name for ly in p.model.layers]), slider=p.view.trained)
                 for p in self.panes]
        lay = vlayout.compute(self.size, specs, hud=hud_on, legend_width=legend_w,
                              help_width=(hud.help_width(self.help_entries)
                                          if hud_on and self.show_help else 0.0),
                              **(self.layout_extras() if hud_on else {}))
        for pane, rect in zip(self.panes, lay.plots):
            pane.place(rect)
        return lay

    def _legend_for(self, coloring) -> vlegend.Legend:
        if self.legend is None or self.legend.coloring is not coloring:
            self.legend = vlegend.Legend(coloring)
        return self.legend

    def pane_at(self, x: float, y: float):
        """The pane whose plot area holds (x, y), else the nearest one."""
        for pane in self.panes:
            if pane.rect.contains(x, y):
                return pane
        return min(self.panes, key=lambda p: abs(x - (p.rect.x + p.rect.w / 2)))

    @property
    def plot_rect(self) -> vlayout.Rect:
        """The first pane's plot area (logical window pixels)."""
        self.layout()
        return self.panes[0].rect

    # ------------------------------------------------------------------ colour, filter, selection
    @property
    def legend_filter(self) -> set | None:
        """Class codes shown in full (others fade), or None (no filter)."""
        return self._legend_filter

    @legend_filter.setter
    def legend_filter(self, codes) -> None:
        c = self.coloring_of(self.panes[0])
        if codes is not None:
            codes = {int(k) for k in codes}
            k = len(c.palette)
            if not codes or codes >= set(range(k)):
                codes = None
        self._legend_filter = codes
        self.upload_coloring()
        self.update()

    def legend_enabled(self, coloring=None):
        """(K,) bool of the classes shown in full, or None when nothing is filtered."""
        c = coloring if coloring is not None else self.coloring_of(self.panes[0])
        if self._legend_filter is None or c.kind != "categorical":
            return None
        e = np.zeros(len(c.palette), bool)
        e[[k for k in self._legend_filter if 0 <= k < len(e)]] = True
        return e

    def toggle_legend_class(self, k: int) -> None:
        self.legend_filter = set(self._legend_filter or ()) ^ {int(k)} or None

    def upload_coloring(self) -> None:
        for pane in self.panes:
            c = self.coloring_of(pane)
            pane.points.set_coloring(c, self.legend_enabled(c))

    def set_brushed(self, pane, mask) -> None:
        """Record ``pane``'s brush ((N,) bool or None); every pane shows the intersection of the
        panes' brushes (a pane without one does not restrict); None clears all of them."""
        from engine.device import to_host

        if mask is not None:
            mask = np.asarray(to_host(mask)).astype(bool).ravel()
            if mask.shape != (self.bundle.n,):
                raise ValueError(f"selection must have shape ({self.bundle.n},), got {mask.shape}")
        pane.brushed = mask
        if mask is None:
            for p in self.panes:
                p.brushed = None
        masks = [p.brushed for p in self.panes if p.brushed is not None]
        self.selection = None if not masks else np.logical_and.reduce(masks)
        self.refresh_states()
        self.update()

    def set_selection(self, mask) -> None:
        """(N,) bool selection (host or device) or None, for every pane; unselected points fade."""
        for p in self.panes:
            p.brushed = None
        self.set_brushed(self.panes[0], mask)

    def highlight(self, indices) -> None:
        """Emphasise points ``indices`` (search results); None clears."""
        if indices is not None:
            from engine.device import to_host

            indices = np.asarray(to_host(indices), dtype=np.int64).ravel()
            if indices.size and (indices.min() < 0 or indices.max() >= self.bundle.n):
                raise IndexError(f"highlight: indices must be in [0, {self.bundle.n})")
        self._highlight = indices
        self.refresh_states()
        self.update()

    def refresh_states(self) -> None:
        st = np.ones(self.bundle.n, np.float32)
        if self.selection is not None:
            st[~self.selection] = 0.0
        if self._highlight is not None and self._highlight.size:
            st[self._highlight] = 2.0
        for pane in self.panes:
            pane.points.set_states(st)

    # ------------------------------------------------------------------ time
    def pause_tour(self) -> None:
        self.tour.pause()

    def resume_tour(self) -> None:
        self.tour.play()

    def advance(self, dt: float) -> None:
        """Move time on by ``dt`` seconds: the tour (slower when zoomed in), each pane's layer
        transition, training-run position and framing (which follows while anything moves), then
        the controllers' ``on_frame``."""
        dt = max(float(dt), 0.0)
        if self.tour.playing:
            self.tour.step(dt / max(p.view.zoom for p in self.panes) ** 0.7)
        for pane in self.panes:
            moving = self.tour.playing or pane.view.moving or self._slider_drag is pane
            if pane.view.advance(dt, pane.frame, follow=moving):
                self._checkpoint_moved(pane)
        for pane in self.panes:
            for c in pane.controllers:
                c.on_frame(pane, dt)

    def animating(self) -> bool:
        """Whether the picture changes by itself now (the tour plays, a layer blends): a window
        drawn on demand rather than by the timer (the notebook widget) keeps drawing while this
        holds. Controllers that animate (a saved view's glide) call ``update()`` each step."""
        return bool(self.tour.playing) or any(p.view.moving for p in self.panes)

    def _on_timer(self, event) -> None:
        now = time.perf_counter()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.1)
        self._last_tick = now
        self.advance(dt)
        self.update()

    def reset_view(self) -> None:
        """Zoom 1, no pan and a fresh framing in every pane (``r``), for the layout shown now."""
        self.layout()
        for pane in self.panes:
            pane.view.reset(pane.frame)
        self.update()

    # ------------------------------------------------------------------ status
    def status_message(self, text: str, seconds: float = 4.0) -> None:
        """Show ``text`` in the message bar for a few seconds (and log it)."""
        log.info("%s", text)
        self._status = (str(text), time.monotonic() + seconds)
        self.update()

    def current_status(self) -> str | None:
        if self._status is not None and time.monotonic() >= self._status[1]:
            self._status = None
        return None if self._status is None else self._status[0]

    def screenshot(self, path=None) -> Path:
        """Render the current view to a PNG (default: ./<stem>-<time>.png); returns its path."""
        import imageio.v3 as iio

        if path is None:
            path = self._screenshot_dir / f"{self.screenshot_stem()}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        iio.imwrite(path, self.render()[..., :3])
        return path

    # ------------------------------------------------------------------ drawing
    def on_resize(self, event) -> None:
        if getattr(self, "panes", None):  # the back end may report a size before the panes exist
            self.layout()
        self.update()

    def on_draw(self, event) -> None:
        W, H = self.physical_size
        if W <= 0 or H <= 0 or not self.panes:
            return
        now = time.perf_counter()
        if self._last_draw is not None and now > self._last_draw:
            dt = now - self._last_draw
            self._fps = 1.0 / dt if self._fps == 0 else 0.8 * self._fps + 0.2 / dt
        self._last_draw = now
        lay = self.layout()
        gloo.set_viewport(0, 0, W, H)
        gloo.clear(color=vcolors.BACKGROUND)
        self.overlay.drawn = []
        ps = self.pixel_scale
        for pane in self.panes:
            r = pane.rect
            vp = (int(round(r.x * ps)), int(round(H - r.y1 * ps)), max(int(round(r.w * ps)), 1),
                  max(int(round(r.h * ps)), 1))
            gloo.set_viewport(*vp)
            gloo.set_state(scissor_test=True)
            gloo.set_scissor(*vp)
            msg = pane.points.draw(pane.view, pane.frame, self.context, ps)
            if msg:
                self.status_message(msg, 10.0)
            gloo.set_viewport(0, 0, W, H)
            self.overlay.origin = (r.x, r.y)
            for c in pane.controllers:
                c.draw(pane, self.overlay)
            self.overlay.origin = (0.0, 0.0)
            gloo.set_state(scissor_test=False)
        if self.show_hud:
            self.draw_hud(lay)

    def draw_hud(self, lay) -> None:
        ov, s = self.overlay, lay.scale
        hud.draw_bar(ov, lay.top, self.title_lines(lay), s)
        msg = self.current_status()
        if self.entry.active:
            line = (f"{self.entry.prompt}{self.entry.text}_", (1.0, 1.0, 1.0, 1.0), 13)
        elif msg is not None:
            line = (msg, hud.ACCENT, 12)
        else:
            line = self.hover_hint() or ("", hud.DIM, 12)
        hud.draw_bar(ov, lay.bottom, [line], s)
        hud.draw_corner_text(ov, lay.bottom, "? help", hud.DIM, 11 * s)
        c = self.coloring_of(self.panes[0])
        if lay.legend is not None:
            if c.kind == "categorical":
                typing = self.entry.active and self.entry.prompt.startswith("legend")
                hud.draw_legend(ov, lay.legend, s, self._legend_for(c), self.legend_enabled(c),
                                self.hover_legend, typing)
            elif c.kind == "continuous":
                hud.draw_colorbar(ov, lay.legend, s, c)
        for pane, rect, compact in zip(self.panes, lay.strips, lay.compact):
            names = [ly.name for ly in pane.model.layers]
            rows = vlayout.strip_rows(len(names), rect, s, pane.layer_index, pane.strip_scroll)
            target = pane.transition[1] if pane.transition is not None else None
            hud.draw_strip(ov, rect, rows, names, pane.layer_index, pane.hover_layer, target, compact, s)
        for i, pane in enumerate(self.panes):
            geom = self.slider_geometry(lay, i)
            if geom is not None:
                v = pane.view
                acc = [v.model_at(k).checkpoint_meta.get("accuracy") for k in range(len(v.checkpoints))]
                hc = self.hover_checkpoint
                hover = hc[1] if hc is not None and hc[0] is pane else None
                hud.draw_slider(ov, geom, v.checkpoints, v.clock.position, v.clock.playing, acc, hover)
        self.draw_extras(lay)
        if self.show_help:
            hud.draw_help(ov, lay.help, self.help_entries, s)

    def hover_hint(self):
        """A line for the message bar while hovering a layer dot, a checkpoint or a legend row
        (or None)."""
        if self.hover_checkpoint is not None:
            pane, k = self.hover_checkpoint
            return (f"{pane.model.name}: checkpoint {k + 1}/{len(pane.view.checkpoints)} "
                    f"{checkpoint_summary(pane.view.model_at(k))} (click to show)", hud.TEXT, 12)
        for pane in self.panes:
            if pane.hover_layer is not None:
                layer = pane.model.layers[pane.hover_layer]
                return (f"{pane.model.name}: layer {pane.hover_layer + 1} {layer.name} (click to show)",
                        hud.TEXT, 12)
        return None

    # ------------------------------------------------------------------ events
    def _local(self, pane, event) -> LocalEvent:
        pos = np.asarray(event.pos, dtype=np.float64)[:2]
        return LocalEvent(pos=pane.local(*pos), button=getattr(event, "button", None),
                          buttons=getattr(event, "buttons", None), modifiers=getattr(event, "modifiers", ()),
                          delta=getattr(event, "delta", (0, 0)), text=getattr(event, "text", ""),
                          key=getattr(event, "key", None))

    @staticmethod
    def dispatch(pane, name: str, event) -> bool:
        """Offer ``event`` to ``pane``'s controllers in order; True when one consumed it."""
        for c in list(pane.controllers):
            if getattr(c, name)(pane, event):
                return True
        return False

    # ---- the training run: slider, keys
    def slider_geometry(self, lay, i: int) -> SliderGeometry | None:
        """Pane ``i``'s checkpoint slider in layout ``lay`` (window pixels), or None."""
        rect = lay.slider(i) if self.show_hud else None
        if rect is None:
            return None
        return SliderGeometry(rect, len(self.panes[i].view.checkpoints), lay.scale)

    def _slider_hit(self, lay, x, y):
        for i, pane in enumerate(self.panes):
            geom = self.slider_geometry(lay, i)
            hit = geom.hit(x, y) if geom is not None else None
            if hit is not None:
                return pane, geom, hit
        return None, None, None

    def set_pane_checkpoint(self, pane, position: float, animate: bool = False) -> None:
        """Show ``pane``'s training run at ``position`` (an index, or a fraction between two
        checkpoints); gliding there when ``animate``."""
        before = pane.view.checkpoint
        pane.view.set_checkpoint(position, animate)
        if pane.view.checkpoint != before:
            self._checkpoint_moved(pane)
        self.update()

    def _checkpoint_moved(self, pane) -> None:
        """The nearest checkpoint of ``pane`` changed: the window's colourings follow, then the
        controllers hear of it as of a layer change (a guided tour re-targets on the data shown)."""
        self.checkpoint_changed(pane)
        pane.layer_changed()

    def training_key(self, text: str, key: str) -> bool:
        """``[`` / ``]`` step the focused pane's training run, ``p`` plays or pauses it."""
        if text not in ("[", "]", "p"):
            return False
        pane = self.focus or self.panes[0]
        if not pane.view.trained:
            self.status_message(f"{pane.model.name} has no training run (one state; prepare --checkpoints "
                                "records one)")
            return True
        if text == "p":
            pane.view.clock.toggle()
            self.status_message(f"{pane.model.name}: training "
                                + ("playing" if pane.view.clock.playing else "paused"), 2.0)
        else:
            self.set_pane_checkpoint(pane, pane.view.checkpoint + (1 if text == "]" else -1), animate=True)
        return True

    def _strip_hit(self, lay, x, y):
        for pane, rect in zip(self.panes, lay.strips):
            if rect is not None and rect.contains(x, y):
                rows = vlayout.strip_rows(len(pane.model.layers), rect, lay.scale, pane.layer_index,
                                          pane.strip_scroll)
                return pane, rows.hit(x, y)
        return None, None

    def on_mouse_press(self, event) -> None:
        with self.user_errors_shown():
            self._mouse_press(event)

    def _mouse_press(self, event) -> None:
        x, y = (float(v) for v in event.pos[:2])
        lay = self.layout()
        if self.show_hud and getattr(event, "button", 1) in (1, None):
            sp, _geom, hit = self._slider_hit(lay, x, y)
            if sp is not None:  # before the controllers: a handle near the plot's edge must not take it
                self.focus = sp
                if hit[0] == "play":
                    sp.view.clock.toggle()
                else:
                    sp.view.clock.pause()
                    self.set_pane_checkpoint(sp, hit[1])
                    self._slider_drag = sp
                self.update()
                return
        pane = self.pane_at(x, y)
        self.focus = pane
        if self.dispatch(pane, "on_mouse_press", self._local(pane, event)):
            self._capture = pane
            return
        if self.show_hud:
            if self.press_extras(x, y, event):
                return
            strip_pane, hit = self._strip_hit(lay, x, y)
            if strip_pane is not None:
                if hit is not None:
                    strip_pane.set_layer(hit)
                return
            if lay.legend is not None and lay.legend.contains(x, y):
                self._legend_press(lay, x, y, event)
                return
            if any(r.contains(x, y) for _, r in lay.panel_rects()):
                return
        if getattr(event, "button", None) == 1 and pane.rect.contains(x, y):
            pane.pan_from = (np.array([x, y], np.float64), pane.view.center.copy())
            self._capture = pane

    def _legend_press(self, lay, x, y, event) -> None:
        c = self.coloring_of(self.panes[0])
        if c.kind != "categorical":
            return
        leg = self._legend_for(c)
        hit = leg.hit(lay.legend, lay.scale, x, y)
        if hit is None:
            return
        if hit[0] == "title":
            self.legend_filter = None
        elif hit[0] == "filter":
            self.start_legend_filter()
        elif hit[0] == "toggle":
            leg.toggle_group(hit[1])
            self.update()
        else:
            from viewer.selection import mode_from_modifiers

            codes = hit[1] if hit[0] == "group" else (hit[1],)
            additive = mode_from_modifiers(getattr(event, "modifiers", ())) == "add"
            self.legend_filter = vlegend.apply_click(self._legend_filter, codes, leg.k, additive)

    def start_legend_filter(self) -> None:
        c = self.coloring_of(self.panes[0])
        if c.kind != "categorical":
            self.status_message("the legend filter needs a categorical colouring (c cycles)")
            return
        leg = self._legend_for(c)

        def change(text):
            leg.query = text
            leg.scroll = 0
            self.update()

        self.entry.start("legend filter: ", change, leg.query, on_change=change)
        self.update()

    def on_mouse_move(self, event) -> None:
        x, y = (float(v) for v in event.pos[:2])
        if self._slider_drag is not None:
            lay = self.layout()
            geom = self.slider_geometry(lay, self.panes.index(self._slider_drag))
            if geom is not None:
                self.set_pane_checkpoint(self._slider_drag, geom.position_at(x))
            return
        pane = self._capture or self.pane_at(x, y)
        if self._capture is None:
            self.focus = pane
        consumed = self.dispatch(pane, "on_mouse_move", self._local(pane, event))
        self.after_move(pane)
        if consumed:
            return
        if pane.pan_from is not None:
            start, c0 = pane.pan_from
            pane.view.pan_by(c0, np.array([x, y]) - start)
            self.update()
            return
        if not self.show_hud:
            return
        lay = self.layout()
        changed = self.hover_extras(x, y)
        sp, geom, shit = self._slider_hit(lay, x, y)
        hc = None if sp is None or shit[0] != "track" else (sp, geom.nearest_tick(x))
        if hc != self.hover_checkpoint:
            self.hover_checkpoint, changed = hc, True
        strip_pane, hit = self._strip_hit(lay, x, y)
        for p in self.panes:
            new = hit if p is strip_pane else None
            if new != p.hover_layer:
                p.hover_layer, changed = new, True
        legend_hover = None
        c = self.coloring_of(self.panes[0])
        if lay.legend is not None and c.kind == "categorical" and lay.legend.contains(x, y):
            legend_hover = self._legend_for(c).hit(lay.legend, lay.scale, x, y)
        if legend_hover != self.hover_legend:
            self.hover_legend, changed = legend_hover, True
        if changed:
            self.update()

    def after_move(self, pane) -> None:
        """After a move was offered to ``pane``'s controllers (compare links the hover)."""

    def on_mouse_release(self, event) -> None:
        x, y = (float(v) for v in event.pos[:2])
        if self._slider_drag is not None:
            self._slider_drag = None
            self.update()
            return
        pane = self._capture or self.pane_at(x, y)
        self._capture = None
        pane.pan_from = None
        self.dispatch(pane, "on_mouse_release", self._local(pane, event))
        self.after_release(pane)

    def after_release(self, pane) -> None:
        """After a release was offered to ``pane``'s controllers."""

    def on_mouse_wheel(self, event) -> None:
        x, y = (float(v) for v in event.pos[:2])
        steps = float(event.delta[1])
        if self.show_hud:
            lay = self.layout()
            if lay.legend is not None and lay.legend.contains(x, y) and self.legend is not None:
                self.legend.scroll_by(-int(np.sign(steps) * max(1, round(abs(steps)))) * 3)
                self.update()
                return
            strip_pane, _ = self._strip_hit(lay, x, y)
            if strip_pane is not None:
                rect = lay.strips[self.panes.index(strip_pane)]
                rows = vlayout.strip_rows(len(strip_pane.model.layers), rect, lay.scale,
                                          strip_pane.layer_index, strip_pane.strip_scroll)
                strip_pane.strip_scroll = rows.first - int(np.sign(steps))
                self.update()
                return
        pane = self.pane_at(x, y)
        local = self._local(pane, event)
        if not self.dispatch(pane, "on_mouse_wheel", local):
            pane.zoom_at(local.pos, 1.15 ** steps)

    @contextlib.contextmanager
    def user_errors_shown(self):
        """A mistake in the user's data met while handling an event (a layer of the bundle that
        turns out to be corrupt when first shown, say) goes to the status line, not to a traceback
        in the terminal; the window keeps what it showed."""
        try:
            yield
        except UserError as exc:
            log.warning("%s", exc)
            self.status_message(f"error: {exc}", 8.0)
            self.update()

    def on_key_press(self, event) -> None:
        with self.user_errors_shown():
            self._key_press(event)

    def _key_press(self, event) -> None:
        if self.entry.key(event):
            self.after_entry()
            self.update()
            return
        k = key_name(event)
        text = event.text or ""
        for pane in self.key_panes(k):
            if self.dispatch(pane, "on_key_press", event):
                self.update()
                return
        if self.window_key(text, k) or self.training_key(text, k):
            self.update()
            return
        if self.common_key(text, k) is None:
            return  # the window closed
        self.update()

    def after_entry(self) -> None:
        """After the text entry took a key (compare copies a renamed handle's label)."""

    def common_key(self, text: str, key: str) -> bool | None:
        """The keys every window shares (:data:`COMMON_HELP`). True when handled, False when not
        one of them, None when the window was closed."""
        tour = self.tour
        if text == " " or key == "space":
            tour.pause() if tour.playing else tour.play()
        elif text in ("+", "=", "-", "_"):
            faster = text in ("+", "=")
            tour.speed = min(tour.speed * 1.25, MAX_SPEED) if faster else tour.speed / 1.25
            top = " (the fastest)" if faster and tour.speed >= MAX_SPEED else ""
            self.status_message(f"tour speed {tour.speed:.3g} rad/s{top}")
        elif key in ("backspace", "left"):
            tour.pause()
            tour.rewind(SCRUB_SECONDS)
            self.status_message("scrubbed back (space resumes)")
        elif text == "r":
            self.reset_view()
        elif text == "c":
            self.cycle_coloring()
        elif text == "f":
            self.start_legend_filter()
        elif text == "s":
            try:
                self.status_message(f"screenshot: {self.screenshot()}")
            except (OSError, ValueError) as exc:  # unwritable directory: say so in the window
                self.status_message(f"screenshot failed: {exc}")
        elif text == "h":
            self.show_hud = not self.show_hud
        elif text == "?":
            self.show_help = not self.show_help
        elif text == "q" or key == "escape":
            self.close()
            return None
        else:
            return False
        return True

    @abstractmethod
    def cycle_coloring(self) -> None:
        """Switch to the next attribute to colour by (the ``c`` key)."""

    def on_close(self, event) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        for pane in self.panes:
            pane.points.release()
