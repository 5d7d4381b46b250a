"""The Grand Tour window: :class:`TourCanvas`, a ``vispy.app.Canvas`` drawing one model's layers.

Thin by design: the tour math is ``engine.tour``, the per-frame projection is ``kernels.project``
(or the vertex shader), colours come from :mod:`viewer.colors`, thumbnails from
:mod:`viewer.atlas`, 2-D drawing from :mod:`viewer.overlay`; interaction models (brushing, handles,
picking, saved views) plug in as controllers (``add_controller``). The canvas keeps the view
(zoom/pan, layer, blend, colouring, selection) and turns it into GL draws.

Coordinates: *data* positions are the projected (N, d) points, ((1-s) A + s B) F; *pixels* are
logical window pixels with the origin top-left (as VisPy mouse events report them). The window
shows the disc of radius 1.1·extent (extent = max row norm of the shown layer, blended during a
transition) scaled by ``zoom`` and centred on ``center``.

Time: :meth:`advance` moves the tour, the layer transition and the controllers by ``dt`` seconds.
An interactive canvas calls it from a timer with wall-clock dt; headless rendering and tests call
it with exact steps, and ``on_draw`` itself never moves anything (drawing is repeatable).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from vispy import app, gloo

from engine.tour import smoothstep
from viewer import colors as vcolors
from viewer import overlay as vov
from viewer.render_paths import choose_path, make_path

log = logging.getLogger("layertour.viewer")

TRANSITION_SECONDS = 0.7
MARGIN = 1.1
ZOOM_RANGE = (0.1, 150.0)
FADE_ALPHA = 0.06
POINT_ALPHA = 0.85
IMAGE_SCALE = 5.0
SCRUB_SECONDS = 1.0

V1_HELP = [
    ("space", "play / pause the tour"), ("+ / -", "tour speed up / down"),
    ("⌫ / ←", "scrub back along the recent path"), ("j / k", "next / previous layer (or click a name)"),
    ("m", "next model"), ("drag / wheel", "pan / zoom"), ("r", "reset zoom and pan"),
    ("c", "cycle colouring (legend: click filters, hover names)"), ("i", "image mode (thumbnails)"),
    ("3", "toggle 2-D / 3-D projection"), ("s", "screenshot (PNG)"), ("h", "hide / show the HUD"),
    ("?", "this help"), ("q / esc", "quit"),
]


def common_key(win, text: str, key: str) -> bool | None:
    """The keys every tour window shares (single view and compare view): play/pause, speed,
    scrub back, reset, colouring, screenshot, HUD, help, quit. ``win`` needs ``tour``,
    ``status_message``, ``reset_view``, ``cycle_coloring``, ``screenshot``, ``show_hud``,
    ``show_help`` and ``close``. Returns True when the key was handled, False when it is not one of
    these, None when the window was closed."""
    key = key.lower()
    tour = win.tour
    if text == " " or key == "space":
        tour.pause() if tour.playing else tour.play()
    elif text in ("+", "=", "-", "_"):
        tour.speed = tour.speed * 1.25 if text in ("+", "=") else tour.speed / 1.25
        win.status_message(f"tour speed ×{tour.speed:.3g}")
    elif key in ("backspace", "left"):
        tour.pause()
        tour.rewind(SCRUB_SECONDS)
        win.status_message("scrubbed back (space resumes)")
    elif text == "r":
        win.reset_view()
    elif text == "c":
        win.cycle_coloring()
    elif text == "s":
        try:
            win.status_message(f"screenshot: {win.screenshot()}")
        except (OSError, ValueError) as exc:  # unwritable directory: say so in the window
            win.status_message(f"screenshot failed: {exc}")
    elif text == "h":
        win.show_hud = not win.show_hud
    elif text == "?":
        win.show_help = not win.show_help
    elif text == "q" or key == "escape":
        win.close()
        return None
    else:
        return False
    return True


class TourCanvas(app.Canvas):
    """Interactive Grand Tour of one model of a bundle (see module docstring).

    bundle : engine.store.Bundle; model : name (default first); layer : id, name or index;
    dims : 2 or 3; color : attribute name, "movement" or "none" (default: the bundle's default
    attribute); render_path : auto | cuda | copy | shader; device : engine back end for the data
    (auto | cuda | cpu); animate : run the wall-clock timer (False for headless/tests).
    """

    def __init__(self, bundle, *, model=None, layer=None, dims: int = 2, color=None,
                 render_path: str = "auto", seed: int = 0, size=(1100, 820), show: bool = True,
                 animate: bool = True, device: str = "auto", title: str | None = None,
                 layer_cache_bytes: int = 4 << 30):
        from engine.device import resolve

        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.bundle = bundle
        if not bundle.models:
            raise ValueError(f"bundle {bundle.path} has no models")
        if model is None:
            model = next(iter(bundle.models))
        if model not in bundle.models:
            raise KeyError(f"bundle {bundle.path}: no model {model!r} (has: {', '.join(bundle.models)})")
        self.model = bundle.models[model]
        if not self.model.layers:
            raise ValueError(f"bundle {bundle.path}: model {model!r} has no layers")
        self.layer_index = 0 if layer is None else int(self.model.layer(layer).index)
        self.backend = resolve(device)
        choose_path(render_path, self.backend.is_cuda)  # fail early on a bad choice, before a window
        self.dims = dims
        self._seed = seed
        self._layer_cache: OrderedDict = OrderedDict()
        self._extents: dict = {}
        self._layer_cache_bytes = layer_cache_bytes

        super().__init__(title=title or f"layertour — {Path(str(bundle.path)).name}", size=size,
                         show=False, keys=None)
        self.set_current()
        from vispy.gloo import gl

        self.max_texture_size = int(gl.glGetParameter(gl.GL_MAX_TEXTURE_SIZE))
        self.gl_renderer = str(gl.glGetParameter(gl.GL_RENDERER))
        vendor = str(gl.glGetParameter(gl.GL_VENDOR))
        self.render_path_name = choose_path(render_path, self.backend.is_cuda, vendor)
        self._data_xp = self.backend.xp if self.render_path_name in ("cuda", "copy") else np

        from engine.tour import GrandTour

        self.p = int(self.model.layers[self.layer_index].embedding.shape[1])
        self.tour = GrandTour(self.p, dims, seed=seed)
        self.transition: tuple[int, int, float] | None = None
        self._transition_t = 0.0
        self.zoom = 1.0
        self.center = np.zeros(2, np.float64)
        self.selection: np.ndarray | None = None
        self._highlight: np.ndarray | None = None
        self._legend_filter: set | None = None
        self.controllers: list = []
        self.help_entries: list[tuple[str, str]] = list(V1_HELP)
        self.show_help = False
        self.show_hud = True
        self.show_fps = True
        self.image_mode = False
        self._atlases: list = []
        self._atlas_plan = None
        self._index_buffers: list = []
        self._status: tuple[str, float] | None = None
        self._fps = 0.0
        self._last_draw = None
        self._pan_from = None
        self._hover_layer = None
        self._hover_legend = None
        self._screenshot_dir = Path.cwd()

        self._path = None
        self.coloring = None
        self._rest_buffer = None
        self._make_path()
        self.overlay = vov.Overlay(self)
        self.color_options = self._color_options()
        self.set_coloring(self._initial_color(color))
        self._refresh_states()
        gloo.set_state(clear_color=vcolors.BACKGROUND, blend=True, depth_test=False,
                       blend_func=("src_alpha", "one_minus_src_alpha"))

        self._timer = None
        self._last_tick = None
        if animate:
            self._timer = app.Timer("auto", connect=self._on_timer, start=True)
        if show:
            self.show()

    # ------------------------------------------------------------------ data
    def layer_data(self, i: int):
        """(N, p) float32 aligned data of layer i: NumPy, or CuPy on the cuda/copy(CuPy) paths.

        ``Layer.aligned`` of the bundle, centred on its mean when the layer has no stored centre.

        Cached (LRU within ``layer_cache_bytes``); the first call reads the memory map and, on the
        CUDA paths, copies host -> device once.
        """
        i = int(i)
        if i in self._layer_cache:
            self._layer_cache.move_to_end(i)
            return self._layer_cache[i]
        if not 0 <= i < len(self.model.layers):
            raise IndexError(f"model {self.model.name!r} has {len(self.model.layers)} layers, not {i}")
        layer = self.model.layers[i]
        data = layer.aligned(xp=self._data_xp)
        if layer.center is None:
            # no stored alignment (e.g. imported raw UMAP output): centre it, as the study's viewer
            # does on load, so the tour rotates the cloud about its own mean
            xp = self._data_xp
            data = (data - data.mean(axis=0, dtype=xp.float64)).astype(xp.float32)
        if data.shape != (self.bundle.n, self.p):
            raise ValueError(f"layer {self.model.layers[i].id!r} of {self.model.name!r} has shape "
                             f"{data.shape}, expected ({self.bundle.n}, {self.p})")
        self._layer_cache[i] = data
        per = max(1, data.nbytes)
        while len(self._layer_cache) > max(3, self._layer_cache_bytes // per):
            self._layer_cache.popitem(last=False)
        return data

    def layer_extent(self, i: int) -> float:
        """Max row norm of layer i's aligned data (the view's radius before the margin)."""
        if i not in self._extents:
            d = self.layer_data(i)
            xp = self._data_xp
            e = float(xp.sqrt((d.astype(xp.float32) ** 2).sum(axis=1)).max()) if len(d) else 1.0
            self._extents[i] = e if e > 0 else 1.0
        return self._extents[i]

    @property
    def frame(self) -> np.ndarray:
        """The tour's current (p, d) float64 frame (host)."""
        return np.asarray(self.tour.frame, dtype=np.float64)

    def _blend(self):
        """(i_a, i_b, s) to draw now."""
        if self.transition is None:
            return self.layer_index, self.layer_index, 0.0
        return self.transition

    def extent(self) -> float:
        ia, ib, s = self._blend()
        return (1.0 - s) * self.layer_extent(ia) + s * self.layer_extent(ib)

    def project_current(self, xp=np):
        """(N, d) float32 data-space positions exactly as drawn now, in array module ``xp``.

        Memoised on what determines them (model, layers, blend, frame, array module): hover,
        brushing and handles ask for them on every mouse event, and while the tour is paused
        nothing changes between events. Treat the result as read-only.
        """
        import kernels
        from engine.device import to_host

        ia, ib, s = self._blend()
        key = (self.model.name, ia, ib, float(s), np.asarray(self.frame).tobytes(), xp.__name__)
        cached = getattr(self, "_projection_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        a, b = self.layer_data(ia), self.layer_data(ib)
        if xp is np:
            a, b = to_host(a), to_host(b)
        else:
            a, b = xp.asarray(a), xp.asarray(b)
        out = kernels.project(a, b, float(s), xp.asarray(self.frame))
        self._projection_cache = (key, out)
        return out

    # ------------------------------------------------------------------ view mapping
    def pixels_per_unit(self) -> float:
        w, h = self.size
        return self.zoom * min(w, h) / (2.0 * MARGIN * self.extent())

    def data_to_pixels(self, xy):
        """(k, 2) data positions -> (k, 2) float64 logical pixels (origin top-left)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        k = self.pixels_per_unit()
        w, h = self.size
        return np.stack([w / 2 + (xy[:, 0] - self.center[0]) * k, h / 2 - (xy[:, 1] - self.center[1]) * k], 1)

    def pixels_to_data(self, px):
        """(k, 2) logical pixels -> (k, 2) float64 data positions (inverse of data_to_pixels)."""
        px = np.asarray(px, dtype=np.float64).reshape(-1, 2)
        k = self.pixels_per_unit()
        w, h = self.size
        return np.stack([(px[:, 0] - w / 2) / k + self.center[0], (h / 2 - px[:, 1]) / k + self.center[1]], 1)

    def point_size(self) -> float:
        """Point diameter in framebuffer pixels: grows with window size and √zoom, larger for few points."""
        w, h = self.size
        few = float(np.clip((20000.0 / max(self.bundle.n, 1)) ** 0.2, 1.0, 2.2))
        base = 2.6 * np.sqrt(min(w, h) / 800.0) * few
        return float(np.clip(base * np.sqrt(self.zoom), 1.5, 40.0) * self.pixel_scale)

    def reset_view(self) -> None:
        self.zoom = 1.0
        self.center = np.zeros(2)
        self.update()

    def zoom_at(self, px, factor: float) -> None:
        """Zoom by ``factor`` keeping the data point under pixel ``px`` fixed."""
        before = self.pixels_to_data(px)[0]
        self.zoom = float(np.clip(self.zoom * factor, *ZOOM_RANGE))
        after = self.pixels_to_data(px)[0]
        self.center = self.center + (before - after)
        self.update()

    # ------------------------------------------------------------------ render path
    def _make_path(self) -> None:
        old = self._path
        if old is not None:
            old.release()
        self._path = make_path(self.render_path_name, self.bundle.n, self.p, self.dims, self.max_texture_size)
        log.info("render path: %s (%s)", self.render_path_name, self.gl_renderer)
        if self.coloring is not None:
            self._upload_coloring()
            self._refresh_states()

    @property
    def render_path(self) -> str:
        """What draws now, e.g. "shader", "cuda", or "copy (CUDA interop failed: ...)"."""
        return self._path.describe()

    def set_dims(self, dims: int) -> None:
        """Switch between 2-D and 3-D projections, keeping the current view plane."""
        from engine.tour import GrandTour, orthonormalize

        if dims == self.dims:
            return
        F = self.frame
        if dims == 3:
            rng = np.random.default_rng(self._seed + 1)
            F = orthonormalize(np.concatenate([F, rng.standard_normal((self.p, 1))], axis=1))
        else:
            F = F[:, :2].copy()
        playing = bool(self.tour.playing)
        speed = self.tour.speed
        self.tour = GrandTour(self.p, dims, seed=self._seed)
        self.tour.speed = speed
        self.tour.set_frame(F)
        if not playing:
            self.tour.pause()
        self.dims = dims
        self._make_path()
        self.update()

    # ------------------------------------------------------------------ colour
    def _color_options(self) -> list[str]:
        opts = list(self.bundle.attributes)
        if len(self.model.layers) > 1:
            opts.append("movement")
        opts.append("none")
        return opts

    def _initial_color(self, color) -> str:
        if color is not None:
            if color not in self.color_options:
                raise KeyError(f"bundle {self.bundle.path}: cannot colour by {color!r} "
                               f"(choices: {', '.join(self.color_options)})")
            return color
        default = getattr(self.bundle, "default_attribute", None)
        if default in self.bundle.attributes:
            return default
        return next(iter(self.bundle.attributes), "none")

    def set_coloring(self, name: str) -> None:
        """Colour by attribute ``name``, "movement" (from the previous layer) or "none"."""
        if name == "none":
            self.coloring = vcolors.uniform_coloring(self.bundle.n)
        elif name == "movement":
            i = self.layer_index
            prev = max(i - 1, 0)
            self.coloring = vcolors.movement_coloring(self.layer_data(prev), self.layer_data(i))
            if i == 0:
                self.status_message("movement: the first layer has no previous layer (all zero)")
        else:
            self.coloring = vcolors.attribute_coloring(self.bundle, name)
        self._legend_filter = None
        self._upload_coloring()
        self.update()

    def cycle_coloring(self) -> None:
        i = self.color_options.index(self.coloring.name) if self.coloring.name in self.color_options else -1
        name = self.color_options[(i + 1) % len(self.color_options)]
        self.set_coloring(name)
        self.status_message(f"colour: {name}")

    def _upload_coloring(self) -> None:
        c = self.coloring
        self._path.set_codes(c.codes)
        enabled = None
        if self._legend_filter is not None and c.kind == "categorical":
            enabled = np.zeros(len(c.palette), bool)
            enabled[[k for k in self._legend_filter if 0 <= k < len(c.palette)]] = True
        self._path.set_palette(c.palette, enabled)

    @property
    def legend_filter(self) -> set | None:
        """Set of category codes shown in full (others fade), or None (no filter)."""
        return self._legend_filter

    @legend_filter.setter
    def legend_filter(self, codes) -> None:
        if codes is not None:
            codes = {int(k) for k in codes}
            k = len(self.coloring.palette)
            if not codes or len(codes) >= k and codes >= set(range(k)):
                codes = None
        self._legend_filter = codes
        self._upload_coloring()
        self.update()

    def toggle_legend_class(self, k: int) -> None:
        cur = set(self._legend_filter or ())
        cur ^= {int(k)}
        self.legend_filter = cur or None

    # ------------------------------------------------------------------ selection
    def set_selection(self, mask) -> None:
        """(N,) bool selection (host or device array) or None; unselected points fade."""
        if mask is not None:
            from engine.device import to_host

            mask = np.asarray(to_host(mask)).astype(bool).ravel()
            if mask.shape != (self.bundle.n,):
                raise ValueError(f"selection must have shape ({self.bundle.n},), got {mask.shape}")
        self.selection = mask
        self._refresh_states()
        self.update()

    def highlight(self, indices) -> None:
        """Emphasise points ``indices`` (search results); None clears."""
        if indices is not None:
            from engine.device import to_host

            indices = np.asarray(to_host(indices), dtype=np.int64).ravel()
            if indices.size and (indices.min() < 0 or indices.max() >= self.bundle.n):
                raise IndexError(f"highlight: indices must be in [0, {self.bundle.n})")
        self._highlight = indices
        self._refresh_states()
        self.update()

    def _refresh_states(self) -> None:
        st = np.ones(self.bundle.n, np.float32)
        if self.selection is not None:
            st[~self.selection] = 0.0
        if self._highlight is not None and self._highlight.size:
            st[self._highlight] = 2.0
        self._path.set_states(st)

    # ------------------------------------------------------------------ tour and layers
    def pause_tour(self) -> None:
        self.tour.pause()

    def resume_tour(self) -> None:
        self.tour.play()

    def set_frame(self, F) -> None:
        """Show frame F (p, d) now; the tour continues from it."""
        self.tour.set_frame(np.asarray(F, dtype=np.float64))
        self.update()

    def set_layer(self, i: int, animate: bool = True) -> None:
        """Show layer i; with ``animate`` blend from what is drawn now over 0.7 s (smoothstep)."""
        n = len(self.model.layers)
        i = int(i)
        if not 0 <= i < n:
            raise IndexError(f"model {self.model.name!r} has {n} layers, not {i}")
        if i == self.layer_index and self.transition is None:
            return
        ia, ib, s = self._blend()
        start = ib if s >= 0.5 else ia
        if animate and start != i:
            self.transition = (start, i, 0.0)
            self._transition_t = 0.0
        else:
            self.transition = None
        self.layer_index = i
        self._layers_changed()

    def _layers_changed(self) -> None:
        """After the shown layer or model changed: movement colouring is relative to the previous
        layer, so recompute it; tell the controllers (handles recompute their centroids); redraw."""
        if self.coloring is not None and self.coloring.name == "movement":
            self.set_coloring("movement")
        for c in self.controllers:
            fn = getattr(c, "on_layer_changed", None)
            if fn is not None:
                fn(self)
        self.update()

    def set_model(self, name: str) -> None:
        """Show another model of the bundle (same canonical frame, so the tour carries over)."""
        if name not in self.bundle.models:
            raise KeyError(f"bundle {self.bundle.path}: no model {name!r} "
                           f"(has: {', '.join(self.bundle.models)})")
        if name == self.model.name:
            return
        m = self.bundle.models[name]
        p = int(m.layers[0].embedding.shape[1])
        if p != self.p:
            raise ValueError(f"model {name!r} has p={p} but the tour runs in p={self.p}")
        self.model = m
        self._layer_cache.clear()
        self._extents.clear()
        self.transition = None
        self.layer_index = min(self.layer_index, len(m.layers) - 1)
        self._path.release()
        self.color_options = self._color_options()
        self._layers_changed()

    def advance(self, dt: float) -> None:
        """Move time on by ``dt`` seconds: the tour (slower when zoomed in), the layer transition,
        then each controller's ``on_frame``."""
        dt = max(float(dt), 0.0)
        if self.transition is not None:
            self._transition_t += dt
            u = self._transition_t / TRANSITION_SECONDS
            if u >= 1.0:
                self.transition = None
            else:
                self.transition = (self.transition[0], self.transition[1], smoothstep(u))
        if self.tour.playing:
            self.tour.step(dt / self.zoom ** 0.7)
        for c in self.controllers:
            fn = getattr(c, "on_frame", None)
            if fn is not None:
                fn(self, dt)

    def _on_timer(self, event) -> None:
        now = time.perf_counter()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.1)
        self._last_tick = now
        self.advance(dt)
        self.update()

    # ------------------------------------------------------------------ image mode
    def set_image_mode(self, on: bool) -> None:
        if not on:
            self.image_mode = False
            self.update()
            return
        if self.bundle.images is None:
            self.status_message("image mode: this bundle has no images")
            return
        if not self._atlases:
            from viewer.atlas import HEADROOM, free_gpu_memory_bytes, plan_atlases, upload_atlases

            imgs = self.bundle.images
            free = free_gpu_memory_bytes()
            budget = None if free is None else int(free * HEADROOM)
            plan = plan_atlases(len(imgs), int(imgs.shape[1]), self.max_texture_size, budget)
            self.set_current()
            self._atlases, plan = upload_atlases(imgs, plan, flush=self.context.flush_commands)
            self._atlas_plan = plan
            self._index_buffers = []
            for k in range(plan.n_atlases):
                lo = k * plan.per_atlas
                hi = min(plan.n_loaded, lo + plan.per_atlas)
                self._index_buffers.append(gloo.IndexBuffer(np.arange(lo, hi, dtype=np.uint32)))
            self._rest_buffer = (gloo.IndexBuffer(np.arange(plan.n_loaded, self.bundle.n, dtype=np.uint32))
                                 if plan.n_loaded < self.bundle.n else None)
            if not plan.complete:
                self.status_message(f"image mode: {plan.n_loaded:,} of {plan.n_total:,} thumbnails fit in "
                                    f"GPU memory; the rest are drawn as dots", 8.0)
        self.image_mode = True
        self.update()

    # ------------------------------------------------------------------ HUD
    def status_message(self, text: str, seconds: float = 4.0) -> None:
        """Show ``text`` in the HUD for a few seconds (and log it)."""
        log.info("%s", text)
        self._status = (str(text), time.monotonic() + seconds)
        self.update()

    def view_params(self) -> dict:
        """The canvas-owned part of a saved view (JSON-ready)."""
        return {
            "zoom": float(self.zoom), "center": [float(c) for c in self.center],
            "model": self.model.name, "layer": int(self.layer_index),
            "layer_id": self.model.layers[self.layer_index].id,
            "color": self.coloring.name,
            "legend_filter": None if self._legend_filter is None else sorted(self._legend_filter),
            "dims": int(self.dims), "render_path": self.render_path_name,
            "image_mode": bool(self.image_mode), "speed": float(self.tour.speed),
        }

    def set_view_params(self, d: dict, animate: bool = False) -> None:
        """Apply a dict from :meth:`view_params` (unknown keys are ignored, missing keys kept)."""
        if "model" in d and d["model"] != self.model.name:
            self.set_model(d["model"])
        if "dims" in d and int(d["dims"]) != self.dims:
            self.set_dims(int(d["dims"]))
        if "zoom" in d:
            self.zoom = float(np.clip(float(d["zoom"]), *ZOOM_RANGE))
        if "center" in d:
            c = np.asarray(d["center"], dtype=np.float64)
            if c.shape != (2,):
                raise ValueError(f"view params: 'center' must have 2 numbers, got {d['center']!r}")
            self.center = c
        if "color" in d and d["color"] != self.coloring.name:
            if d["color"] not in self.color_options:
                raise KeyError(f"view params: cannot colour by {d['color']!r} "
                               f"(choices: {', '.join(self.color_options)})")
            self.set_coloring(d["color"])
        if "legend_filter" in d:
            self.legend_filter = None if d["legend_filter"] is None else set(d["legend_filter"])
        if "layer" in d and int(d["layer"]) != self.layer_index:
            self.set_layer(int(d["layer"]), animate=animate)
        if "image_mode" in d and bool(d["image_mode"]) != self.image_mode:
            self.set_image_mode(bool(d["image_mode"]))
        if "speed" in d:
            self.tour.speed = float(d["speed"])
        self.update()

    # ------------------------------------------------------------------ controllers
    def add_controller(self, c) -> None:
        """Append an interaction controller (called in order; see the module docstring)."""
        self.controllers.append(c)

    def _dispatch(self, name: str, event) -> bool:
        for c in list(self.controllers):
            fn = getattr(c, name, None)
            if fn is not None and fn(self, event):
                return True
        return False

    # ------------------------------------------------------------------ drawing
    def on_resize(self, event) -> None:
        gloo.set_viewport(0, 0, *self.physical_size)
        self.update()

    def on_draw(self, event) -> None:
        w, h = self.physical_size
        if w <= 0 or h <= 0:
            return
        gloo.set_viewport(0, 0, w, h)
        gloo.clear(color=vcolors.BACKGROUND)
        now = time.perf_counter()
        if self._last_draw is not None:
            dt = now - self._last_draw
            if dt > 0:
                self._fps = 1.0 / dt if self._fps == 0 else 0.8 * self._fps + 0.2 / dt
        self._last_draw = now
        self.draw_points()
        for c in list(self.controllers):
            fn = getattr(c, "draw", None)
            if fn is not None:
                fn(self, self.overlay)
        if self.show_hud:
            self._draw_hud()

    def draw_points(self) -> None:
        """Project (per the render path) and draw the points; the GL context must be current."""
        ia, ib, s = self._blend()
        path = self._path
        path.prepare(ia, self.layer_data(ia), ib, self.layer_data(ib), s, self.frame)
        k = self.pixels_per_unit()
        w, h = self.size
        path.set_view(center=self.center, scale=(2 * k / w, 2 * k / h), extent=self.extent(),
                      point_size=self.point_size(), alpha=POINT_ALPHA, fade_alpha=FADE_ALPHA)
        if self.image_mode and self._atlases:
            plan = self._atlas_plan
            if self._rest_buffer is not None:
                path.set_image_pass(None)
                path.draw(self._rest_buffer)
            for k_, (tex, ib_) in enumerate(zip(self._atlases, self._index_buffers)):
                path.set_image_pass(tex, base=k_ * plan.per_atlas, cols=plan.cols,
                                    cell_uv=(1.0 / plan.cols, 1.0 / plan.cols), scale=IMAGE_SCALE)
                path.draw(ib_)
            path.set_image_pass(None)
        else:
            path.set_image_pass(None)
            path.draw()
        was_failed = getattr(path, "failed", None)
        path.after_draw(self)
        failed = getattr(path, "failed", None)
        if failed is not None and was_failed is None:
            self.status_message(f"CUDA-GL interop unavailable ({failed}): drawing through the copy path",
                                10.0)

    def _draw_hud(self) -> None:
        ov = self.overlay
        w, h = self.size
        layer = self.model.layers[self.layer_index]
        L = len(self.model.layers)
        ov.text(f"{self.model.name}  ·  layer {self.layer_index + 1}/{L}  {layer.name}", (12, 16),
                vov.TEXT, 14, "left")
        tour = "playing" if self.tour.playing else "paused"
        fps = f"{self._fps:4.0f} fps  ·  " if self.show_fps else ""
        ov.text(f"N {self.bundle.n:,}  ·  p {self.p}  ·  {self.dims}-D  ·  {fps}"
                f"tour {tour} ×{self.tour.speed:.2g}  ·  path {self.render_path}",
                (12, 36), vov.DIM, 12, "left")
        if self._status is not None:
            msg, until = self._status
            if time.monotonic() < until:
                ov.text(msg, (12, 56), vov.ACCENT, 13, "left")
            else:
                self._status = None
        names = [ly.name for ly in self.model.layers]
        target = self.transition[1] if self.transition is not None else None
        vov.draw_layer_strip(ov, names, self.layer_index, self._hover_layer, w, h, target)
        vov.draw_legend(ov, self.coloring, self._legend_enabled(), self._hover_legend, h)
        ov.text("? help", (w - 12, h - 14), vov.DIM, 11, "right")
        if self.show_help:
            vov.draw_help(ov, self.help_entries, w, h)

    def _legend_enabled(self):
        if self._legend_filter is None or self.coloring.kind != "categorical":
            return None
        e = np.zeros(len(self.coloring.palette), bool)
        e[[k for k in self._legend_filter if 0 <= k < len(e)]] = True
        return e

    def screenshot(self, path=None) -> Path:
        """Render the current view to a PNG (default: ./<bundle>-<model>-<layer>-<time>.png)."""
        import imageio.v3 as iio

        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            layer = self.model.layers[self.layer_index].id
            name = f"{Path(str(self.bundle.path)).name}-{self.model.name}-{layer}-{stamp}.png"
            path = self._screenshot_dir / name
        path = Path(path)
        iio.imwrite(path, self.render()[..., :3])
        return path

    # ------------------------------------------------------------------ events
    def on_mouse_press(self, event) -> None:
        if self._dispatch("on_mouse_press", event):
            return
        x, y = event.pos[:2]
        if self.show_hud:
            for i, b in enumerate(vov.layer_strip_boxes([ly.name for ly in self.model.layers], *self.size)):
                if b.contains(x, y):
                    self.set_layer(i)
                    return
            hit = vov.legend_hit(self.coloring, x, y, self.size[1])
            if hit == "title":
                self.legend_filter = None
                return
            if hit is not None:
                self.toggle_legend_class(hit)
                return
        if event.button == 1:
            self._pan_from = (np.array(event.pos[:2], np.float64), self.center.copy())

    def on_mouse_move(self, event) -> None:
        if self._dispatch("on_mouse_move", event):
            return
        x, y = event.pos[:2]
        if self._pan_from is not None:
            start, c0 = self._pan_from
            d = (np.array([x, y], np.float64) - start) / self.pixels_per_unit()
            self.center = c0 + np.array([-d[0], d[1]])
            self.update()
            return
        if self.show_hud:
            hover_layer = next((i for i, b in enumerate(vov.layer_strip_boxes(
                [ly.name for ly in self.model.layers], *self.size)) if b.contains(x, y)), None)
            hit = vov.legend_hit(self.coloring, x, y, self.size[1])
            hover_legend = hit if isinstance(hit, int) else None
            if (hover_layer, hover_legend) != (self._hover_layer, self._hover_legend):
                self._hover_layer, self._hover_legend = hover_layer, hover_legend
                self.update()

    def on_mouse_release(self, event) -> None:
        self._pan_from = None
        self._dispatch("on_mouse_release", event)

    def on_mouse_wheel(self, event) -> None:
        if self._dispatch("on_mouse_wheel", event):
            return
        self.zoom_at(event.pos[:2], 1.15 ** float(event.delta[1]))

    def on_key_press(self, event) -> None:
        if self._dispatch("on_key_press", event):
            return
        text = event.text or ""
        name = event.key.name if event.key is not None else ""
        L = len(self.model.layers)
        if text == "j":
            self.set_layer((self.layer_index + 1) % L)
        elif text == "k":
            self.set_layer((self.layer_index - 1) % L)
        elif text == "m" and len(self.bundle.models) > 1:
            names = list(self.bundle.models)
            self.set_model(names[(names.index(self.model.name) + 1) % len(names)])
        elif text == "i":
            self.set_image_mode(not self.image_mode)
        elif text == "3":
            self.set_dims(3 if self.dims == 2 else 2)
        elif common_key(self, text, name) is None:
            return  # the window closed
        self.update()

    def on_close(self, event) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._path is not None:
            self._path.release()
