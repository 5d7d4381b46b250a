"""Two networks side by side: :class:`CompareCanvas`, one window with a :class:`Panel` per model.

Both panels show the same N images of one bundle (rows in the same order) and are driven by a
single ``engine.tour.GrandTour``. Model A (left) is drawn with the tour's frame F; model B (right)
is expressed in A's frame by orthogonal Procrustes between the two layers shown now,
``Q = engine.align.procrustes(B_j, A_i)`` (so ``B_j Q ~ A_i``), and drawn with the frame ``Q F``
(the same thing as drawing ``B_j Q`` with F, without touching the N-sized data). When either panel
changes layer, Q is recomputed for the new pair and B's frame glides from ``Q_old F`` to
``Q_new F`` along ``engine.tour.view_path`` while the layers blend.

Linked interaction: each panel keeps its own brushed mask and both show their intersection;
colouring (attributes, per-model ``movement``, the pair's ``difference``), legend filters, search
highlights, play/pause and zoom reset act on both; handles are created in both panels from the
same point indices (each at its own model's centroid), and dragging one in either panel sets the
shared frame. The layer-similarity heat map (:mod:`viewer.heatmap`; ``t`` toggles it) sets both
layers on click.

Each panel draws into its half of the window with its own render path (GL viewport = its
rectangle), so everything drawn for a panel, controllers included, uses panel-local pixels.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from vispy import app, gloo

from engine.tour import smoothstep
from viewer import colors as vcolors
from viewer import heatmap as vhm
from viewer import overlay as vov
from viewer.canvas import FADE_ALPHA, POINT_ALPHA, TRANSITION_SECONDS, TourCanvas, common_key
from viewer.render_paths import choose_path, make_path

log = logging.getLogger("layertour.viewer")

DIFFERENCE = "difference"
COMPARE_HELP = [
    ("space", "play / pause the shared tour"), ("+ / -", "tour speed"), ("⌫ / ←", "scrub back"),
    ("j / k", "layer of the panel under the mouse (or click a name)"),
    ("t", "similarity heat map (click a cell: both layers)"),
    ("c", "cycle colouring (incl. movement, difference)"),
    ("drag / wheel", "pan / zoom a panel"), ("r", "reset zoom and pan of both"),
    ("b / l", "rectangle / lasso brush (linked selection)"), ("x", "clear the selection"),
    ("d", "handle at the selection's centroids (both)"), ("Delete", "remove the last handle"),
    ("a", "axis handles"), ("/", "search and highlight"), ("s", "screenshot"), ("h", "HUD"),
    ("?", "this help"), ("q / esc", "quit"),
]


class _Event(SimpleNamespace):
    """A mouse event moved into a panel's coordinates (what the controllers read)."""


class Panel:
    """One model's half of a :class:`CompareCanvas`: layer, transition, zoom/pan, colouring and
    selection states, a render path and an overlay, drawn in the rectangle ``rect`` (logical
    pixels x0, y0, w, h). It offers the canvas interface the controllers of
    :mod:`viewer.controllers` use, with pixels local to the panel; the view mapping and the
    layer cache are :class:`viewer.canvas.TourCanvas`'s own functions."""

    # the single-model canvas's view maths and layer cache, shared verbatim
    layer_data = TourCanvas.layer_data
    layer_extent = TourCanvas.layer_extent
    _blend = TourCanvas._blend
    extent = TourCanvas.extent
    project_current = TourCanvas.project_current
    pixels_per_unit = TourCanvas.pixels_per_unit
    data_to_pixels = TourCanvas.data_to_pixels
    pixels_to_data = TourCanvas.pixels_to_data
    point_size = TourCanvas.point_size
    zoom_at = TourCanvas.zoom_at
    _legend_enabled = TourCanvas._legend_enabled

    def __init__(self, owner, model, layer, side: str, data_xp, layer_cache_bytes: int):
        self.owner = owner
        self.side = side
        self.bundle = owner.bundle
        self.model = model
        self.layer_index = 0 if layer is None else int(model.layer(layer).index)
        self.p = owner.p
        self._data_xp = data_xp
        self._layer_cache: OrderedDict = OrderedDict()
        self._extents: dict = {}
        self._layer_cache_bytes = layer_cache_bytes
        self.transition: tuple[int, int, float] | None = None
        self._transition_t = 0.0
        self.zoom = 1.0
        self.center = np.zeros(2, np.float64)
        self.rect = (0.0, 0.0, 1.0, 1.0)
        self.brushed: np.ndarray | None = None
        self.coloring = None
        self.controllers: list = []
        self._hover_layer = None
        self._hover_legend = None
        self._pan_from = None
        self.path = make_path(owner.render_path_name, owner.bundle.n, owner.p, owner.dims,
                              owner.max_texture_size)
        self.overlay = vov.Overlay(self)
        self._highlight = None
        self.states = np.ones(owner.bundle.n, np.float32)  # (N,) host: 0 faded, 1 normal, 2 highlighted

    # ---- the canvas interface, delegated ------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        return int(round(self.rect[2])), int(round(self.rect[3]))

    @property
    def pixel_scale(self) -> float:
        return self.owner.pixel_scale

    @property
    def tour(self):
        return self.owner.tour

    @property
    def frame(self) -> np.ndarray:
        """The (p, d) float64 frame this panel is drawn with (B: ``Q F``, gliding after a change)."""
        return self.owner.panel_frame(self)

    @property
    def selection(self) -> np.ndarray | None:
        """The linked selection both panels show: (N,) bool host, or None."""
        return self.owner.selection

    def set_frame(self, F) -> None:
        self.owner.set_panel_frame(self, F)

    def set_selection(self, mask) -> None:
        self.owner.set_brushed(self, mask)

    def highlight(self, indices) -> None:
        self.owner.highlight(indices)

    def pause_tour(self) -> None:
        self.owner.tour.pause()

    def resume_tour(self) -> None:
        self.owner.tour.play()

    def status_message(self, text: str, seconds: float = 4.0) -> None:
        self.owner.status_message(f"{self.model.name}: {text}", seconds)

    def update(self) -> None:
        self.owner.update()

    def set_layer(self, i: int, animate: bool = True) -> None:
        self.owner.set_layers(**{self.side: i}, animate=animate)

    def reset_view(self) -> None:
        self.zoom = 1.0
        self.center = np.zeros(2)
        self.update()

    # ---- local state --------------------------------------------------------------------------
    def contains(self, x: float, y: float) -> bool:
        x0, y0, w, h = self.rect
        return x0 <= x < x0 + w and y0 <= y < y0 + h

    def _go_to_layer(self, i: int, animate: bool) -> None:
        n = len(self.model.layers)
        if not 0 <= int(i) < n:
            raise IndexError(f"model {self.model.name!r} has {n} layers, not {i}")
        i = int(i)
        if i == self.layer_index and self.transition is None:
            return
        ia, ib, s = self._blend()
        start = ib if s >= 0.5 else ia
        self.transition = (start, i, 0.0) if animate and start != i else None
        self._transition_t = 0.0
        self.layer_index = i
        for c in self.controllers:
            fn = getattr(c, "on_layer_changed", None)
            if fn is not None:
                fn(self)

    def _advance(self, dt: float) -> None:
        if self.transition is not None:
            self._transition_t += dt
            u = self._transition_t / TRANSITION_SECONDS
            self.transition = None if u >= 1.0 else (self.transition[0], self.transition[1], smoothstep(u))

    def _upload_coloring(self, legend_filter) -> None:
        c = self.coloring
        self.path.set_codes(c.codes)
        enabled = None
        if legend_filter is not None and c.kind == "categorical":
            enabled = np.zeros(len(c.palette), bool)
            enabled[[k for k in legend_filter if 0 <= k < len(c.palette)]] = True
        self.path.set_palette(c.palette, enabled)

    def _upload_states(self, selection, highlight) -> None:
        st = np.ones(self.bundle.n, np.float32)
        if selection is not None:
            st[~selection] = 0.0
        if highlight is not None and highlight.size:
            st[highlight] = 2.0
        self.states = st
        self.path.set_states(st)

    def draw(self, hud: bool, legend: bool, strip_height: float, status=None) -> None:
        """Draw points, controllers and HUD; the GL viewport must be this panel's rectangle."""
        ia, ib, s = self._blend()
        self.path.prepare(ia, self.layer_data(ia), ib, self.layer_data(ib), s, self.frame)
        k = self.pixels_per_unit()
        w, h = self.size
        self.path.set_view(center=self.center, scale=(2 * k / w, 2 * k / h), extent=self.extent(),
                           point_size=self.point_size(), alpha=POINT_ALPHA, fade_alpha=FADE_ALPHA)
        self.path.set_image_pass(None)
        self.path.draw()
        self.path.after_draw(self.owner)
        for c in self.controllers:
            fn = getattr(c, "draw", None)
            if fn is not None:
                fn(self, self.overlay)
        if not hud:
            return
        ov = self.overlay
        layer = self.model.layers[self.layer_index]
        ov.text(f"{self.model.name}  ·  layer {self.layer_index + 1}/{len(self.model.layers)}  {layer.name}",
                (12, 16), vov.TEXT, 14, "left")
        if status:
            ov.text(status[0], (12, 36), status[1], 12, "left")
        names = [ly.name for ly in self.model.layers]
        target = self.transition[1] if self.transition is not None else None
        vov.draw_layer_strip(ov, names, self.layer_index, self._hover_layer, w, strip_height, target)
        if legend:
            vov.draw_legend(ov, self.coloring, self._legend_enabled(), self._hover_legend, h)

    @property
    def _legend_filter(self):
        return self.owner.legend_filter


class CompareCanvas(app.Canvas):
    """Models ``a`` (left) and ``b`` (right) of one bundle side by side (see module docstring).

    bundle : engine.store.Bundle; a, b : model names (may be equal); layer_a, layer_b : id, name or
    index; color : attribute name, "movement", "difference" or "none"; render_path, device, dims,
    seed, size, show, animate : as for :class:`viewer.canvas.TourCanvas`.
    """

    def __init__(self, bundle, a: str, b: str, *, layer_a=None, layer_b=None, dims: int = 2, color=None,
                 render_path: str = "auto", seed: int = 0, size=(1600, 860), show: bool = True,
                 animate: bool = True, device: str = "auto", title: str | None = None,
                 layer_cache_bytes: int = 2 << 30, controllers: bool = True):
        from engine.device import resolve
        from engine.tour import GrandTour

        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        for name in (a, b):
            if name not in bundle.models:
                raise KeyError(f"bundle {bundle.path}: no model {name!r} (has: {', '.join(bundle.models)})")
            if not bundle.models[name].layers:
                raise ValueError(f"bundle {bundle.path}: model {name!r} has no layers")
        pa, pb = (int(bundle.models[m].layers[0].embedding.shape[1]) for m in (a, b))
        if pa != pb:
            raise ValueError(f"--compare {a} {b}: the models have p={pa} and p={pb}; one tour needs one p")
        self.bundle = bundle
        self.p = pa
        self.dims = dims
        self.backend = resolve(device)
        choose_path(render_path, self.backend.is_cuda)
        super().__init__(title=title or f"layertour — {Path(str(bundle.path)).name}: {a} vs {b}", size=size,
                         show=False, keys=None)
        self.set_current()
        from vispy.gloo import gl

        self.max_texture_size = int(gl.glGetParameter(gl.GL_MAX_TEXTURE_SIZE))
        self.gl_renderer = str(gl.glGetParameter(gl.GL_RENDERER))
        vendor = str(gl.glGetParameter(gl.GL_VENDOR))
        self.render_path_name = choose_path(render_path, self.backend.is_cuda, vendor)
        data_xp = self.backend.xp if self.render_path_name in ("cuda", "copy") else np
        self.tour = GrandTour(self.p, dims, seed=seed)
        self.panels = (Panel(self, bundle.models[a], layer_a, "a", data_xp, layer_cache_bytes),
                       Panel(self, bundle.models[b], layer_b, "b", data_xp, layer_cache_bytes))
        self.selection: np.ndarray | None = None
        self._highlight: np.ndarray | None = None
        self.legend_filter: set | None = None
        self._rotations: dict = {}
        self._q_to = self.rotation_for(self.panels[0].layer_index, self.panels[1].layer_index)
        self._q_from = self._q_to
        self._q_t = TRANSITION_SECONDS
        self.last_realign_seconds = 0.0
        self._similarity = None
        self.show_heatmap = True
        self.show_hud = True
        self.show_help = False
        self._hover_cell = None
        self._status: tuple[str, float] | None = None
        self._capture = None  # the panel a press started in: it gets the moves and the release
        self._focus = self.panels[0]
        self._screenshot_dir = Path.cwd()
        self.window_overlay = vov.Overlay(self)
        self.color_options = list(bundle.attributes) + ["movement", DIFFERENCE, "none"]
        self._layout()
        self.set_coloring(self._initial_color(color))
        self._refresh_states()
        self.controllers = self._install() if controllers else {}
        gloo.set_state(clear_color=vcolors.BACKGROUND, blend=True, depth_test=False,
                       blend_func=("src_alpha", "one_minus_src_alpha"))
        self._timer = None
        self._last_tick = None
        if animate:
            self._timer = app.Timer("auto", connect=self._on_timer, start=True)
        if show:
            self.show()

    # ------------------------------------------------------------------ controllers
    def _install(self) -> dict:
        from viewer.controllers import BrushController, HandleController, HoverController, TextEntry

        self.entry = TextEntry()
        out = {}
        for panel in self.panels:
            ctrls = [BrushController(int(self.bundle.n), export_dir=None),
                     HandleController(self.p, self.entry), HoverController(self.entry)]
            panel.controllers = ctrls
            out[panel.side] = {type(c).__name__: c for c in ctrls}
        return out

    # ------------------------------------------------------------------ layout
    def _layout(self) -> None:
        w, h = self.size
        half = w / 2.0
        self.panels[0].rect = (0.0, 0.0, half, float(h))
        self.panels[1].rect = (half, 0.0, w - half, float(h))

    def heatmap_layout(self):
        """The heat map's :class:`viewer.heatmap.HeatmapLayout` (bottom-right of B), in window pixels."""
        la, lb = (len(p.model.layers) for p in self.panels)
        w, h = self.size
        return vhm.heatmap_layout(la, lb, right=w - 40.0, bottom=h - 14.0)

    def _strip_height(self, panel) -> float:
        if panel.side == "b" and self.show_heatmap:
            return max(120.0, self.heatmap_layout().y0 - 44.0)
        return panel.size[1]

    def panel_at(self, x: float, y: float) -> Panel:
        return self.panels[0] if x < self.panels[1].rect[0] else self.panels[1]

    # ------------------------------------------------------------------ alignment
    def rotation_for(self, ia: int, ib: int) -> np.ndarray:
        """(p, p) float64 host Q with B's layer ib @ Q ~ A's layer ia (Procrustes; cached per pair)."""
        key = (int(ia), int(ib))
        if key not in self._rotations:
            from engine.align import procrustes
            from engine.device import to_host

            t = time.perf_counter()
            A, B = self.panels[0].layer_data(ia), self.panels[1].layer_data(ib)
            self._rotations[key] = np.asarray(to_host(procrustes(B, A)), dtype=np.float64)
            self.last_realign_seconds = time.perf_counter() - t
        return self._rotations[key]

    @property
    def rotation(self) -> np.ndarray:
        """B's current target rotation into A's frame, (p, p) float64 host."""
        return self._q_to

    def aligned_b(self, i: int | None = None) -> np.ndarray:
        """(N, p) float64 host: B's layer i (default: shown) in A's frame, ``B_i @ Q``."""
        from engine.device import to_host

        b = self.panels[1]
        i = b.layer_index if i is None else int(i)
        Q = self.rotation_for(self.panels[0].layer_index, i)
        return np.asarray(to_host(b.layer_data(i)), dtype=np.float64) @ Q

    def panel_frame(self, panel) -> np.ndarray:
        F = np.asarray(self.tour.frame, dtype=np.float64)
        if panel is self.panels[0]:
            return F
        if self._q_t >= TRANSITION_SECONDS:
            return self._q_to @ F
        from engine.tour import view_path

        u = smoothstep(self._q_t / TRANSITION_SECONDS)
        return np.asarray(view_path(self._q_from @ F, self._q_to @ F).frame(u), dtype=np.float64)

    def set_panel_frame(self, panel, G) -> None:
        """Make ``panel`` show frame G (p, d): A's frame is the tour's; B's is ``Q F`` (so F = Qᵀ G)."""
        G = np.asarray(G, dtype=np.float64)
        if panel is self.panels[1]:
            self._q_t = TRANSITION_SECONDS
            G = self._q_to.T @ G
        self.tour.set_frame(G)
        self.update()

    def _realign(self, animate: bool) -> None:
        a, b = self.panels
        Q = self.rotation_for(a.layer_index, b.layer_index)
        if Q is self._q_to:
            return
        self._q_from, self._q_to = self._q_to, Q
        self._q_t = 0.0 if animate else TRANSITION_SECONDS

    # ------------------------------------------------------------------ layers and time
    def set_layers(self, a: int | None = None, b: int | None = None, animate: bool = True) -> None:
        """Show layer ``a`` of model A and/or ``b`` of model B (indices), animated by default, and
        re-align B to A for the new pair."""
        for panel, i in zip(self.panels, (a, b)):
            if i is not None:
                panel._go_to_layer(i, animate)
        self._realign(animate)
        if self.coloring_name in ("movement", DIFFERENCE):
            self.set_coloring(self.coloring_name)
        self.update()

    def advance(self, dt: float) -> None:
        """Move time on by ``dt`` seconds: layer transitions, B's re-alignment glide, the tour."""
        dt = max(float(dt), 0.0)
        for panel in self.panels:
            panel._advance(dt)
        self._q_t = min(self._q_t + dt, TRANSITION_SECONDS)
        if self.tour.playing:
            self.tour.step(dt / max(p.zoom for p in self.panels) ** 0.7)
        for panel in self.panels:
            for c in panel.controllers:
                fn = getattr(c, "on_frame", None)
                if fn is not None:
                    fn(panel, dt)

    def _on_timer(self, event) -> None:
        now = time.perf_counter()
        dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 0.1)
        self._last_tick = now
        self.advance(dt)
        self.update()

    # ------------------------------------------------------------------ similarity
    @property
    def similarity(self) -> np.ndarray:
        """(La, Lb) float64 host: the bundle's stored matrix, else ``engine.align.similarity_matrix``
        of the two models' layers (computed once, on the canvas's back end)."""
        if self._similarity is None:
            a, b = (p.model for p in self.panels)
            S = self.bundle.similarity(a.name, b.name)
            if S is None:
                from engine.align import similarity_matrix
                from engine.device import to_host

                S = to_host(similarity_matrix([ly.embedding for ly in a.layers],
                                              [ly.embedding for ly in b.layers], xp=self.backend.xp))
            self._similarity = np.asarray(S, dtype=np.float64)
        return self._similarity

    def click_heatmap(self, x: float, y: float, animate: bool = True) -> tuple[int, int] | None:
        """Set both layers to the pair under pixel (x, y) of the heat map; returns it (or None)."""
        if not self.show_heatmap:
            return None
        cell = self.heatmap_layout().cell_at(x, y)
        if cell is not None:
            self.set_layers(*cell, animate=animate)
            a, b = self.panels
            self.status_message(f"{a.model.name} {a.model.layers[cell[0]].name}  ×  {b.model.name} "
                                f"{b.model.layers[cell[1]].name}: similarity {self.similarity[cell]:.3f}")
        return cell

    # ------------------------------------------------------------------ colour, selection
    def _initial_color(self, color) -> str:
        if color is not None:
            if color not in self.color_options:
                raise KeyError(f"bundle {self.bundle.path}: cannot colour by {color!r} "
                               f"(choices: {', '.join(self.color_options)})")
            return color
        default = getattr(self.bundle, "default_attribute", None)
        return default if default in self.bundle.attributes else next(iter(self.bundle.attributes), "none")

    @property
    def coloring_name(self) -> str:
        return self.panels[0].coloring.name if self.panels[0].coloring is not None else "none"

    def set_coloring(self, name: str) -> None:
        """Colour both panels by attribute ``name``, "movement" (each model from its previous
        layer), "difference" (per point, between the two shown layers after alignment:
        ``engine.align.movement``) or "none"."""
        if name not in self.color_options:
            raise KeyError(f"cannot colour by {name!r} (choices: {', '.join(self.color_options)})")
        if name == "none":
            cols = [vcolors.uniform_coloring(self.bundle.n)] * 2
        elif name == "movement":
            cols = [vcolors.movement_coloring(p.layer_data(max(p.layer_index - 1, 0)),
                                              p.layer_data(p.layer_index)) for p in self.panels]
        elif name == DIFFERENCE:
            a, b = self.panels
            c = vcolors.movement_coloring(a.layer_data(a.layer_index), b.layer_data(b.layer_index))
            cols = [vcolors.Coloring(DIFFERENCE, c.kind, c.codes, c.palette, extent=c.extent)] * 2
        else:
            cols = [vcolors.attribute_coloring(self.bundle, name)] * 2
        if name != self.coloring_name:
            self.legend_filter = None
        for panel, c in zip(self.panels, cols):
            panel.coloring = c
            panel._upload_coloring(self.legend_filter)
        self.update()

    def cycle_coloring(self) -> None:
        opts = self.color_options
        i = opts.index(self.coloring_name) if self.coloring_name in opts else -1
        self.set_coloring(opts[(i + 1) % len(opts)])
        self.status_message(f"colour: {self.coloring_name}")

    def toggle_legend_class(self, k: int) -> None:
        cur = set(self.legend_filter or ()) ^ {int(k)}
        n = len(self.panels[0].coloring.palette)
        self.legend_filter = None if not cur or cur >= set(range(n)) else cur
        for panel in self.panels:
            panel._upload_coloring(self.legend_filter)
        self.update()

    def set_brushed(self, panel, mask) -> None:
        """Record ``panel``'s own brush ((N,) bool or None); both panels show the intersection of
        the panels' brushes (a panel without one does not restrict)."""
        from engine.device import to_host

        if mask is not None:
            mask = np.asarray(to_host(mask)).astype(bool).ravel()
            if mask.shape != (self.bundle.n,):
                raise ValueError(f"selection must have shape ({self.bundle.n},), got {mask.shape}")
        panel.brushed = mask
        if mask is None:  # "clear" (x) clears the linked selection
            for p in self.panels:
                p.brushed = None
        masks = [p.brushed for p in self.panels if p.brushed is not None]
        self.selection = None if not masks else np.logical_and.reduce(masks)
        self._refresh_states()
        self.update()

    def highlight(self, indices) -> None:
        from engine.device import to_host

        self._highlight = None if indices is None else np.asarray(to_host(indices), np.int64).ravel()
        self._refresh_states()
        self.update()

    def _refresh_states(self) -> None:
        for panel in self.panels:
            panel._upload_states(self.selection, self._highlight)

    # ------------------------------------------------------------------ HUD
    def status_message(self, text: str, seconds: float = 4.0) -> None:
        log.info("%s", text)
        self._status = (str(text), time.monotonic() + seconds)
        self.update()

    def reset_view(self) -> None:
        for panel in self.panels:
            panel.reset_view()

    # ------------------------------------------------------------------ drawing
    def on_resize(self, event) -> None:
        if hasattr(self, "panels"):  # the back end reports a size before __init__ has built them
            self._layout()
        self.update()

    def on_draw(self, event) -> None:
        W, H = self.physical_size
        if W <= 0 or H <= 0:
            return
        self._layout()
        gloo.set_viewport(0, 0, W, H)
        gloo.clear(color=vcolors.BACKGROUND)
        status = None
        if self._status is not None:
            if time.monotonic() < self._status[1]:
                status = (self._status[0], vov.ACCENT)
            else:
                self._status = None
        ps = self.pixel_scale
        for panel in self.panels:
            x0, y0, w, h = panel.rect
            gloo.set_viewport(int(round(x0 * ps)), int(round(H - (y0 + h) * ps)), int(round(w * ps)),
                              int(round(h * ps)))
            panel.draw(self.show_hud, panel.side == "a", self._strip_height(panel),
                       status if panel.side == "a" else None)
        gloo.set_viewport(0, 0, W, H)
        ov = self.window_overlay
        w, h = self.size
        x = self.panels[1].rect[0]
        ov.lines(np.array([[x, 0.0], [x, float(h)]]), (0.3, 0.32, 0.38, 1.0))
        if self.show_hud:
            a, b = self.panels
            tour = "playing" if self.tour.playing else "paused"
            ov.text(f"N {self.bundle.n:,}  ·  p {self.p}  ·  one tour ({tour} ×{self.tour.speed:.2g})  ·  "
                    f"{b.model.name} aligned to {a.model.name} by Procrustes  ·  "
                    f"path {self.panels[0].path.describe()}",
                    (x + 12, 36), vov.DIM, 12, "left")
            ov.text("? help", (w - 12, 16), vov.DIM, 11, "right")
        if self.show_heatmap:
            lay = self.heatmap_layout()
            a, b = self.panels
            vhm.draw_heatmap(ov, lay, self.similarity, (a.layer_index, b.layer_index), self._hover_cell,
                             [ly.name for ly in a.model.layers], [ly.name for ly in b.model.layers],
                             a.model.name, b.model.name)
        entry = getattr(self, "entry", None)
        if entry is not None and entry.active:
            ov.rect(8, h - 40, min(w - 8, 520), h - 14, None, fill=vov.PANEL)
            ov.text(f"{entry.prompt}{entry.text}_", (14, h - 27), (1, 1, 1, 1), 13, "left")
        if self.show_help:
            vov.draw_help(ov, COMPARE_HELP, w, h)

    def screenshot(self, path=None) -> Path:
        import imageio.v3 as iio

        if path is None:
            a, b = self.panels
            stem = f"{Path(str(self.bundle.path)).name}-{a.model.name}-vs-{b.model.name}"
            path = self._screenshot_dir / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        iio.imwrite(path, self.render()[..., :3])
        return path

    # ------------------------------------------------------------------ events
    def _local(self, panel, event) -> _Event:
        pos = np.asarray(event.pos, dtype=np.float64)[:2] - np.asarray(panel.rect[:2])
        return _Event(pos=pos, button=getattr(event, "button", None), buttons=getattr(event, "buttons", None),
                      modifiers=getattr(event, "modifiers", ()), delta=getattr(event, "delta", (0, 0)))

    @staticmethod
    def _dispatch(panel, name: str, ev) -> bool:
        for c in panel.controllers:
            fn = getattr(c, name, None)
            if fn is not None and fn(panel, ev):
                return True
        return False

    def on_mouse_press(self, event) -> None:
        x, y = event.pos[:2]
        if self.show_heatmap and event.button == 1 and self.click_heatmap(x, y) is not None:
            return
        panel = self.panel_at(x, y)
        self._focus = panel
        ev = self._local(panel, event)
        if self._dispatch(panel, "on_mouse_press", ev):
            self._capture = panel
            return
        lx, ly = ev.pos
        if self.show_hud:
            names = [layer.name for layer in panel.model.layers]
            for i, box in enumerate(vov.layer_strip_boxes(names, panel.size[0], self._strip_height(panel))):
                if box.contains(lx, ly):
                    panel.set_layer(i)
                    return
            if panel.side == "a":
                hit = vov.legend_hit(panel.coloring, lx, ly, panel.size[1])
                if hit == "title":
                    self.legend_filter = None
                    for p in self.panels:
                        p._upload_coloring(None)
                    self.update()
                    return
                if hit is not None:
                    self.toggle_legend_class(hit)
                    return
        if event.button == 1:
            panel._pan_from = (np.array(ev.pos, np.float64), panel.center.copy())
            self._capture = panel

    def on_mouse_move(self, event) -> None:
        x, y = event.pos[:2]
        panel = self._capture or self.panel_at(x, y)
        if self._capture is None:
            self._focus = panel
        ev = self._local(panel, event)
        consumed = self._dispatch(panel, "on_mouse_move", ev)
        self._link_hover(panel)
        if consumed:
            return
        if panel._pan_from is not None:
            start, c0 = panel._pan_from
            d = (ev.pos - start) / panel.pixels_per_unit()
            panel.center = c0 + np.array([-d[0], d[1]])
            self.update()
            return
        hover = self.heatmap_layout().cell_at(x, y) if self.show_heatmap else None
        lx, ly = ev.pos
        names = [layer.name for layer in panel.model.layers]
        boxes = vov.layer_strip_boxes(names, panel.size[0], self._strip_height(panel))
        hl = next((i for i, b in enumerate(boxes) if b.contains(lx, ly)), None)
        hit = vov.legend_hit(panel.coloring, lx, ly, panel.size[1]) if panel.side == "a" else None
        legend = hit if isinstance(hit, int) else None
        if (hover, hl, legend) != (self._hover_cell, panel._hover_layer, panel._hover_legend):
            self._hover_cell, panel._hover_layer, panel._hover_legend = hover, hl, legend
            self.update()

    def _other(self, panel) -> Panel:
        return self.panels[1] if panel is self.panels[0] else self.panels[0]

    def _link_hover(self, panel) -> None:
        """The image under the cursor in ``panel`` is marked (with its tooltip) in the other one too."""
        if not self.controllers:
            return
        src = self.controllers[panel.side]["HoverController"]
        dst = self.controllers[self._other(panel).side]["HoverController"]
        if dst.index != src.index:
            dst.index = src.index
            self.update()

    def _sync_labels(self, panel) -> None:
        """Copy ``panel``'s handle labels onto the other panel's handles (created in lockstep)."""
        if not self.controllers:
            return
        src = self.controllers[panel.side]["HandleController"].handles
        dst = self.controllers[self._other(panel).side]["HandleController"].handles
        for h, g in zip(src.handles, list(dst.handles)):
            if g.label != h.label:
                dst.rename(g.uid, h.label)

    def on_mouse_release(self, event) -> None:
        panel = self._capture or self.panel_at(*event.pos[:2])
        self._capture = None
        panel._pan_from = None
        self._dispatch(panel, "on_mouse_release", self._local(panel, event))
        other = self._other(panel)
        brush = self.controllers.get(other.side, {}).get("BrushController") if self.controllers else None
        if brush is not None:  # a brush armed by a key is spent by the gesture in either panel
            brush.armed, brush.path = None, []

    def on_mouse_wheel(self, event) -> None:
        panel = self.panel_at(*event.pos[:2])
        if not self._dispatch(panel, "on_mouse_wheel", self._local(panel, event)):
            panel.zoom_at(self._local(panel, event).pos, 1.15 ** float(event.delta[1]))

    def on_key_press(self, event) -> None:
        from viewer.controllers import key_name

        entry = getattr(self, "entry", None)
        if entry is not None and entry.key(event):
            if not entry.active:  # a handle renamed in one panel is renamed in both
                self._sync_labels(self._focus)
            self.update()
            return
        k = key_name(event)
        text = event.text or ""
        focus = self._focus
        if self.controllers and k in ("b", "l", "d", "delete", "a"):
            for panel in self.panels:  # armed / created / removed in both panels
                self._dispatch(panel, "on_key_press", event)
        elif self.controllers and k in ("x", "e", "/", "enter", "return", "escape") and \
                self._dispatch(focus, "on_key_press", event):
            pass
        elif text in ("j", "k"):
            step = 1 if text == "j" else -1
            focus.set_layer((focus.layer_index + step) % len(focus.model.layers))
        elif text == "t":
            self.show_heatmap = not self.show_heatmap
        elif common_key(self, text, k) is None:
            return  # the window closed
        self.update()

    def on_close(self, event) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        for panel in self.panels:
            panel.path.release()
