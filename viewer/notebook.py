"""The viewer inside a Jupyter notebook: :func:`show` returns a :class:`TourWidget`.

The data and the drawing stay on the server: the widget owns the desktop's own window
(:class:`viewer.canvas.TourCanvas`, or :class:`viewer.compare.CompareCanvas` for ``compare=``),
created on an offscreen OpenGL context (:mod:`viewer.offscreen`: NVIDIA EGL on a GPU server, so
the CUDA–OpenGL interop render path applies; Mesa EGL, OSMesa or Xvfb elsewhere), and sends only
pixels to the browser through `jupyter_rfb <https://github.com/vispy/jupyter_rfb>`_'s remote frame
buffer (JPEG while the view moves, a lossless PNG once it rests). jupyter_rfb draws a new frame
only while fewer than ``max_buffered_frames`` sent frames wait for the browser's acknowledgement,
so a slow network drops frames instead of queueing stale ones; the tour itself runs on wall-clock
time. Browser events become VisPy events on that window (:mod:`viewer.remote_events`), so the
desktop's handlers and controllers do all interaction: tour, layers, legend, brushing, handles,
hover, search, saved views, compare.

Python side (``w = viewer.show("demo.lt")``): ``w.layer``, ``w.checkpoint`` (a training run's
position: a name, an index or a fraction between two), ``w.frame``, ``w.selection``
(indices), ``w.color``, ``w.playing`` (get and set), ``w.snapshot()`` (NumPy image),
``w.save_view(path)`` / ``w.load_view(path)``, ``w.on_selection(fn)`` (called with the indices
after each change, brush or code), ``w.stats`` (frames and bytes sent, delivered fps),
``w.close()`` (frees the window's GL context and everything in it).
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import sys
import threading
import time
from pathlib import Path

import ipywidgets
import numpy as np
from jupyter_rfb import RemoteFrameBuffer

from viewer import offscreen
from viewer.remote_events import emit, translate

log = logging.getLogger("layertour.viewer")

FRAME_INTERVAL = 1.0 / 60.0  # tick while something moves (the browser's acknowledgements pace the frames)
IDLE_INTERVAL = 0.25  # tick while nothing moves: only expiring HUD messages need a redraw
STATUS_INTERVAL = 1.0  # seconds between status-line refreshes


def show(bundle, model=None, layer=None, compare=None, size=(900, 640), *, gl: str | None = None,
         quality: int = 80, max_buffered_frames: int = 2, checkpoint=None, **view_options) -> TourWidget:
    """Open the interactive viewer on ``bundle`` (an ``engine.store.Bundle`` or a bundle path) in a
    notebook cell; returns the widget (display it, or make it the cell's last expression).

    model, layer : the model (default: the first) and its layer (id, name or index) to start on.
    checkpoint : for a training run, the checkpoint (name or index; compare: a pair) to start at
    (default the last); the widget shows the checkpoint slider, dragged in the browser as on the
    desktop.
    compare : another model's name to show beside ``model`` (or a pair ``(a, b)``): the compare
    window, one tour, B aligned to A, linked brushing, the similarity heat map.
    size : (width, height) in CSS pixels; the widget can be resized by its corner. Frames are
    drawn at one pixel per CSS pixel (also on HiDPI screens: frames stay small).
    gl : offscreen OpenGL back end, "egl" | "osmesa" | "glfw" (default ``$LAYERTOUR_OFFSCREEN``,
    else the first that works; see :mod:`viewer.offscreen`).
    quality : JPEG quality (1-99) of frames while the view moves; 100 sends lossless PNG only.
    max_buffered_frames : frames in flight before the server waits for the browser (>= 1).
    view_options : passed to the window: ``dims`` (2 | 3), ``color``, ``render_path`` (auto |
    cuda | copy | shader), ``device`` (auto | cuda | cpu), ``seed``, ``speed`` (rad/s),
    ``layer_cache_bytes``; and ``guided`` (an index of :mod:`viewer.guided`: lda, pda, holes,
    cmass, purity): start in the guided tour (the class indices take their classes from
    ``color``; u / n / w work in the widget as on the desktop). The keys that write files (s
    screenshot, e export, v view) write into the kernel's working directory, as the desktop writes
    into the shell's.

    Raises ``engine.store.BundleError`` for an unreadable bundle, KeyError for an unknown model,
    layer or colouring, ValueError for a bad size or option (``viewer.guided.GuidedError`` for a
    ``guided`` index that cannot guide), and
    :class:`viewer.offscreen.OffscreenUnavailable` when no offscreen OpenGL context can be made.
    """
    from engine import load_bundle

    size = _check_size(size)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    if int(max_buffered_frames) < 1:
        raise ValueError(f"max_buffered_frames must be >= 1, got {max_buffered_frames}")
    if not hasattr(bundle, "models"):
        bundle = load_bundle(bundle)
    offscreen.select_app(gl)
    window = _make_window(bundle, model, layer, compare, size, view_options, checkpoint)
    try:
        return TourWidget(window, quality=int(quality), max_buffered_frames=int(max_buffered_frames))
    except BaseException:
        offscreen.release(window)
        raise


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ValueError(f"size {size!r}: width and height must be between 16 and 8192 pixels")
    return w, h


@functools.cache
def _remote_class(base):
    """``base`` (a layertour window class) as a notebook widget drives it: ``update()`` also tells
    the widget that the window wants a new frame (desktop back ends redraw on that call, the widget
    schedules one), and ``close()`` from the window's own quit keys (q / Esc) only says how to close
    the view: in a notebook the view goes with ``w.close()``, not with a stray key."""

    def update(self, node=None):
        base.update(self, node)
        notify = self.__dict__.get("_remote_update")
        if notify is not None:
            notify()

    def close(self):
        if self.__dict__.get("_remote_update") is not None:  # still shown by a widget
            self.status_message("in a notebook the view closes with w.close() (q / Esc do not)")
            return
        base.close(self)

    doc = f"{base.__name__} drawn into a notebook widget."
    return type(f"Remote{base.__name__}", (base,),
                {"update": update, "close": close, "__module__": __name__, "__doc__": doc})


def _make_window(bundle, model, layer, compare, size, view_options, checkpoint=None):
    from viewer import guided as vguided

    options = dict(view_options)
    unknown = set(options) - {"dims", "color", "render_path", "device", "seed", "speed", "layer_cache_bytes",
                              "guided"}
    if unknown:
        raise TypeError(f"show() got unexpected options: {', '.join(sorted(unknown))}")
    index = options.pop("guided", None)
    if index is not None:
        vguided.check_index(index)  # before a window exists
    common = dict(size=size, show=False, animate=False, **options)
    if compare is None:
        from viewer import controllers
        from viewer.canvas import TourCanvas

        window = _remote_class(TourCanvas)(bundle, model=model, layer=layer, checkpoint=checkpoint, **common)
        controllers.install(window)
    else:
        from viewer.compare import CompareCanvas

        a, b = (compare if isinstance(compare, (tuple, list))
                else (model or next(iter(bundle.models)), compare))
        layer_a, layer_b = layer if isinstance(layer, (tuple, list)) else (layer, layer)
        ck_a, ck_b = checkpoint if isinstance(checkpoint, (tuple, list)) else (checkpoint, checkpoint)
        window = _remote_class(CompareCanvas)(bundle, a, b, layer_a=layer_a, layer_b=layer_b,
                                              checkpoint_a=ck_a, checkpoint_b=ck_b, **common)
    if index is not None:
        try:
            vguided.start(window, index)
        except vguided.GuidedError:
            offscreen.release(window)
            raise
    return window


class _FrameView(RemoteFrameBuffer):
    """The remote frame buffer: asks the widget for frames, hands it the browser's events, and
    counts the frames and bytes it sends per image type (``sent``: mimetype -> [frames, bytes];
    JPEG while the view moves, PNG for the lossless redraw once it rests)."""

    def __init__(self, owner, **kwargs):
        super().__init__(**kwargs)
        self._owner = owner
        self.sent: dict[str, list[int]] = {}

    def get_frame(self):
        return self._owner._frame()

    def handle_event(self, event):
        self._owner._browser_event(event)

    def send(self, content, buffers=None):
        if isinstance(content, dict) and content.get("type") == "framebufferdata":
            count = self.sent.setdefault(str(content.get("mimetype")), [0, 0])
            count[0] += 1
            count[1] += sum(memoryview(b).nbytes for b in buffers or ())
        super().send(content, buffers)


class TourWidget(ipywidgets.VBox):
    """The viewer's window, drawn offscreen on the server and shown in the notebook (see the module
    docstring). Built by :func:`show`; ``window`` is the desktop window class it drives."""

    def __init__(self, window, *, quality: int = 80, max_buffered_frames: int = 2):
        super().__init__()
        self._window = window
        self.compare = len(window.panes) > 1
        self.gl = offscreen.describe(window)
        self._app = self.gl.app
        self._context = offscreen.native_context(window)
        self._reader = offscreen.FrameReader(window)
        self._callbacks: list = []
        self._closed = False
        self._last_image: np.ndarray | None = None
        self._last_selection = window.selection
        self._draws = 0
        self._draw_seconds = 0.0
        self._status_at = 0.0
        self._last_tick = None
        self._tick_handle = None
        self._dirty = True
        self._status_shown = False
        # GL contexts are per thread, and ipykernel (7+) may deliver the widget's comm messages -
        # hence jupyter_rfb's get_frame and events - on a subshell thread: all GL and window work
        # runs on the thread and event loop that created the window
        self._thread = threading.get_ident()
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if hasattr(window, "show_fps"):
            window.show_fps = False  # the draw rate is not what the browser gets: the status line says that
        w, h = window.size
        self.view = _FrameView(self, css_width=f"{w}px", css_height=f"{h}px", resizable=True,
                               quality=quality, max_buffered_frames=max_buffered_frames)
        self.view.cursor = "crosshair"
        self.status = ipywidgets.HTML(layout=ipywidgets.Layout(margin="2px 0 0 0"))
        self.children = (self.view, self.status)
        window._remote_update = self._on_window_update
        self._refresh_status(force=True)
        self._schedule(0.0)

    # ------------------------------------------------------------------ Python handles
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def window(self):
        """The desktop window this widget shows (TourCanvas or CompareCanvas); released on close,
        so a closed widget kept in a notebook variable holds no layer data."""
        self._check_open()
        return self._window

    @property
    def layer(self):
        """Index of the shown layer (compare: the pair (A's, B's)); set it with an index, id or
        name (compare: a pair, or one key for both), the view blends there as on the desktop."""
        idx = tuple(int(p.layer_index) for p in self.window.panes)
        return idx if self.compare else idx[0]

    @layer.setter
    def layer(self, key) -> None:
        self._check_open()
        win = self.window
        keys = key if self.compare and isinstance(key, (tuple, list)) else (key,) * len(win.panes)
        if len(keys) != len(win.panes):
            raise ValueError(f"the compare widget takes a pair of layers, got {key!r}")
        idx = [None if k is None else int(p.model.layer(k).index) for p, k in zip(win.panes, keys)]
        for pane, i in zip(win.panes, idx):  # resolve every key before changing anything
            if i is not None:
                win.set_pane_layer(pane, i)
        self._changed()

    @property
    def checkpoint(self):
        """Where the training run stands: the shown checkpoint's name (the nearest one while
        between two; compare: a pair). Set a name, an index, or a fractional index to show the
        blend of two checkpoints (compare: a pair, or one value for both)."""
        names = tuple(p.view.checkpoints[p.view.checkpoint] for p in self.window.panes)
        return names if self.compare else names[0]

    @checkpoint.setter
    def checkpoint(self, value) -> None:
        self._check_open()
        win = self.window
        values = value if self.compare and isinstance(value, (tuple, list)) else (value,) * len(win.panes)
        if len(values) != len(win.panes):
            raise ValueError(f"the compare widget takes a pair of checkpoints, got {value!r}")
        pos = [float(p.view.checkpoint_index_of(v)) if isinstance(v, str) or isinstance(v, (int, np.integer))
               else float(v) for p, v in zip(win.panes, values)]  # resolve all before changing anything
        for pane, x in zip(win.panes, pos):
            win.set_pane_checkpoint(pane, x)
        self._changed()

    @property
    def frame(self) -> np.ndarray:
        """The tour's current (p, d) float64 frame (a copy); set one to show it (the tour goes on
        from there)."""
        return np.array(self.window.tour.frame, dtype=np.float64)

    @frame.setter
    def frame(self, F) -> None:
        from engine.tour import orthonormalize

        self._check_open()
        F = np.asarray(F, dtype=np.float64)
        shape = np.shape(self.window.tour.frame)
        if F.shape != shape:
            raise ValueError(f"frame must have shape {shape}, got {F.shape}")
        if not np.allclose(F.T @ F, np.eye(shape[1]), atol=1e-6):
            raise ValueError("frame must have orthonormal columns "
                             "(engine.tour.orthonormalize(F) makes them so)")
        self.window.tour.set_frame(orthonormalize(F))
        self._changed()

    @property
    def selection(self) -> np.ndarray:
        """Indices (int64, ascending) of the selected points; empty when nothing is selected. Set
        indices, an (N,) bool mask, or None to clear."""
        sel = self.window.selection
        return np.zeros(0, np.int64) if sel is None else np.flatnonzero(sel).astype(np.int64)

    @selection.setter
    def selection(self, value) -> None:
        self._check_open()
        n = int(self.window.bundle.n)
        mask = None
        if value is not None:
            v = np.asarray(value)
            if v.dtype == bool:
                if v.shape != (n,):
                    raise ValueError(f"a selection mask must have shape ({n},), got {v.shape}")
                mask = v
            else:
                idx = v.astype(np.int64).ravel()
                if idx.size and (idx.min() < 0 or idx.max() >= n):
                    raise IndexError(f"selection indices must be in [0, {n}), got {idx.min()}..{idx.max()}")
                mask = np.zeros(n, bool)
                mask[idx] = True
        self.window.set_selection(mask)
        self._changed()

    @property
    def color(self) -> str:
        """The colouring: an attribute name, "movement", "none" (compare: also "difference")."""
        win = self.window
        return win.coloring_of(win.panes[0]).name

    @color.setter
    def color(self, name: str) -> None:
        self._check_open()
        if name not in self.window.color_options:
            raise KeyError(f"cannot colour by {name!r} (choices: {', '.join(self.window.color_options)})")
        self.window.set_coloring(name)
        self._changed()

    @property
    def playing(self) -> bool:
        """Whether the tour moves; set False to hold the current projection."""
        return bool(self.window.tour.playing)

    @playing.setter
    def playing(self, on: bool) -> None:
        self._check_open()
        self.window.tour.play() if on else self.window.tour.pause()
        self._changed()

    def on_selection(self, callback, remove: bool = False) -> None:
        """Call ``callback(indices)`` (int64 array) after every change of the selection, from a
        brush in the view or from code; ``remove=True`` unregisters it."""
        if remove:
            self._callbacks = [c for c in self._callbacks if c != callback]
        elif callback not in self._callbacks:
            self._callbacks.append(callback)

    def snapshot(self) -> np.ndarray:
        """Render the view now: (H, W, 3) uint8 RGB, row 0 at the top, the size the browser shows."""
        self._check_open()
        return self._reader.read()

    def save_view(self, path) -> Path:
        """Save the view (frame, tour, layer, zoom/pan, colouring, handles, selection; compare: both
        panes' layers, checkpoints, zoom/pan, handles and brushes) as JSON at ``path``, written
        atomically; returns the path. The desktop's ``--state`` and ``o`` read it (a compare view:
        with ``--compare A B``)."""
        from viewer import viewstate

        self._check_open()
        return viewstate.save(Path(path), viewstate.capture(self.window))

    def load_view(self, path, animate: bool = False) -> None:
        """Apply a saved view (from :meth:`save_view` or the desktop's ``v``); with ``animate`` the
        projection glides there. Raises ``viewer.viewstate.ViewStateError`` naming the file and
        field when it is malformed, saved for another bundle or models, or for the other kind of
        view (a single-model view in a compare widget, or the reverse)."""
        from viewer import viewstate

        self._check_open()
        state = viewstate.load(path)
        viewstate.check_fits(self.window, state, source=str(path))
        from viewer.controllers import ViewStateController

        ctrl = next((c for c in self._controllers() if isinstance(c, ViewStateController)), None)
        if ctrl is not None:
            ctrl.go_to(self.window, state, animate=animate)
        else:
            viewstate.apply(self.window, state)
        self._changed()

    @property
    def stats(self) -> dict:
        """Since the widget opened: frames and bytes sent (all, and per image type in ``sent``:
        mimetype -> (frames, bytes)), mean bytes per frame, draws and their mean time on the server
        (draw + read-back), and jupyter_rfb's delivery statistics since its last ``reset_stats()``
        (``fps`` acknowledged by the browser, ``roundtrip_s``, JPEG/PNG ``encode_s``)."""
        v = self.view
        rfb = v.get_stats()
        frames = sum(c[0] for c in v.sent.values())
        nbytes = sum(c[1] for c in v.sent.values())
        return {"frames_sent": frames, "bytes_sent": nbytes,
                "bytes_per_frame": nbytes / frames if frames else 0.0,
                "sent": {k: tuple(c) for k, c in v.sent.items()}, "draws": self._draws,
                "draw_s": self._draw_seconds / self._draws if self._draws else 0.0,
                "fps": rfb["fps"], "roundtrip_s": rfb["roundtrip"], "encode_s": rfb["img_encoding"],
                "offscreen": self.gl.describe()}

    def close(self) -> None:
        """Stop drawing, free the window's GL context (buffers, textures, the context itself) and
        close the widget in every browser view."""
        if self._closed:
            return
        if self._elsewhere(self.close):
            return
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        win, self._window = self._window, None
        reader, self._reader = self._reader, None
        win._remote_update = None  # from here on the window's close() really closes
        try:
            reader.release()
            offscreen.release(win)
        except Exception:
            if not sys.is_finalizing():  # at interpreter exit the GL library may be gone already
                raise
        self.view.close()
        self.status.close()
        super().close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this viewer widget is closed (viewer.show(...) opens a new one)")

    def _controllers(self) -> list:
        return [c for p in self.window.panes for c in p.controllers]

    def _status_expired(self) -> bool:
        """The HUD showed a message in the last frame that has expired since (it disappears only
        when the window is drawn again)."""
        return self._status_shown and self.window.current_status() is None

    def _on_window_update(self) -> None:
        self._dirty = True
        if not self._closed:
            self.view.request_draw()

    def _changed(self) -> None:
        self._notify_selection()
        self._on_window_update()

    def _notify_selection(self) -> None:
        sel = self.window.selection
        if sel is self._last_selection:
            return
        self._last_selection = sel
        if self._callbacks:
            idx = self.selection
            for cb in list(self._callbacks):
                cb(idx)

    def _elsewhere(self, fn, *args) -> bool:
        """True (and ``fn(*args)`` scheduled on the window's event loop) when called from another
        thread than the window's."""
        if self._loop is None or threading.get_ident() == self._thread or self._loop.is_closed():
            return False
        self._loop.call_soon_threadsafe(fn, *args)
        return True

    def _browser_event(self, ev: dict) -> None:
        if self._closed or self._elsewhere(self._browser_event, ev):
            return
        event = translate(ev)
        if event is None:
            return
        if event.kind == "close":
            self.close()
            return
        if event.kind == "resize":
            size = event.kwargs["size"]
            if min(size) >= 16 and tuple(size) != tuple(self.window.size):
                self.window.size = size
                # VisPy's offscreen back ends do not report a resize themselves; the windows lay
                # out their panels, legend and heat map on this event
                self.window.events.resize(size=tuple(size), physical_size=tuple(self.window.physical_size))
            self._on_window_update()
            return
        emit(self.window, event)
        if not self._closed:
            self._changed()

    def _frame(self):
        """jupyter_rfb asks for a frame: draw, or None when the picture would not change."""
        if self._closed:
            return None
        if self._elsewhere(self.view.request_draw):
            return None  # drawn on the window's own thread instead
        t = time.perf_counter()
        self._status_shown = self._window.current_status() is not None
        img = self._reader.read()
        self._draws += 1
        self._draw_seconds += time.perf_counter() - t
        self._dirty = False
        if self._last_image is not None and img.shape == self._last_image.shape \
                and np.array_equal(img, self._last_image):
            return None
        self._last_image = img
        return img

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no running event loop (a plain script): the widget draws on events and calls only
        self._tick_handle = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Move the window's time on by the wall-clock time since the last tick (as the desktop
        timer does), ask for a frame when something moved, refresh the status line."""
        self._tick_handle = None
        if self._closed:
            return
        now = time.perf_counter()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.1)
        self._last_tick = now
        try:
            moving = self.window.animating()
            self.window.advance(dt)
            if moving or self._dirty or self._status_expired():
                self.view.request_draw()
            self._notify_selection()
            self._refresh_status()
        except Exception:
            log.exception("viewer widget: a tick failed; the widget stops animating")
            raise
        self._schedule(FRAME_INTERVAL if moving else IDLE_INTERVAL)

    def _refresh_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_INTERVAL:
            return
        self._status_at = now
        s = self.stats
        win = self.window
        name = Path(str(win.bundle.path)).name
        path = win.panes[0].points.describe()
        parts = [name, f"offscreen {self.gl.describe()}", f"path {path}"]
        if s["frames_sent"]:
            rate = f"{s['fps']:.0f} fps delivered" if win.animating() else "at rest"
            parts.append(f"{rate} · {s['bytes_per_frame'] / 1024:.0f} kB/frame · "
                         f"draw {1000 * s['draw_s']:.0f} ms")
        text = html.escape("  ·  ".join(parts))
        self.status.value = f"<span style='font: 11px monospace; color: #777'>{text}</span>"

