"""Two networks side by side: :class:`CompareCanvas`, a :class:`viewer.window.TourWindow` with a
pane per model.

Both panes show the same N images of one bundle (rows in the same order) and are driven by a
single ``engine.tour.GrandTour``. Model A (left) is drawn with the tour's frame F; model B (right)
is expressed in A's frame by orthogonal Procrustes between the two layers shown now,
``Q = engine.align.procrustes(B_j, A_i)`` (so ``B_j Q ~ A_i``), and drawn with the frame ``Q F``
(the same thing as drawing ``B_j Q`` with F, without touching the N-sized data). When either pane
changes layer, Q is recomputed for the new pair and B's frame glides from ``Q_old F`` to
``Q_new F`` along ``engine.tour.view_path`` while the layers blend.

Each pane is the same composition as the single window's (:class:`viewer.view.ModelView`,
:class:`viewer.points.PointsLayer`, :class:`viewer.pane.Pane`) with its own framing, zoom and
pan. Linked interaction: each pane keeps its own brush and both show their intersection;
colouring (attributes, per-model ``movement``, the pair's ``difference``), the legend filter,
search highlights, play/pause and re-fit act on both; handles are created in both panes from the
same point indices (each at its own model's centroid), and dragging one in either pane sets the
shared frame. The guided tour (:mod:`viewer.guided`: u, n, w) climbs model A's index (A's layer,
the colouring's classes) and so steers the shared tour; B follows with Q F, which shows whether
B separates A's best view too. The layer-similarity heat map (:mod:`viewer.heatmap`; ``t``
toggles it) is docked under B's layer strip and sets both layers on click.

Training runs: each pane may show a checkpoint of its model's run (``checkpoint_a``,
``checkpoint_b``; a model may be compared with itself at two checkpoints) and has its own
checkpoint slider; B is re-aligned to A for the (checkpoint, layer) pair shown, and the heat map
compares the two checkpoints' layers.

Saved views (:mod:`viewer.viewstate`, kind "compare"): ``v`` / ``o`` / ``g`` save, load and glide
to the whole window: the shared tour and frame, the window's :meth:`CompareCanvas.view_params`
and each pane's model, layer, :meth:`viewer.pane.Pane.view_params`, handles and brush; B's
rotation is recomputed from the bundle for the restored pair of layers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.tour import smoothstep
from viewer import colors as vcolors
from viewer import heatmap as vhm
from viewer.controllers import BrushController, HandleController, HoverController, ViewStateController
from viewer.guided import GUIDED_HELP, GuidedController
from viewer.pane import Pane
from viewer.points import PointsLayer
from viewer.text import tour_state_text
from viewer.timeline import accuracy_label, checkpoint_label
from viewer.view import TRANSITION_SECONDS, ModelView
from viewer.window import COMMON_HELP, TourWindow

log = logging.getLogger("layertour.viewer")

DIFFERENCE = "difference"
COMPARE_HELP = COMMON_HELP[:4] + [
    ("j / k", "layer of the pane under the mouse (or click a name)"),
    ("t", "similarity heat map (click a cell: both layers)"),
    ("b / l", "rectangle / lasso brush (linked selection)"), ("x", "clear the selection"),
    ("d", "handle at the selection's centroids (both)"), ("Delete", "remove the last handle"),
    ("a", "axis handles"), ("/", "search and highlight"),
    *((k, d + (" (by model A's data)" if k != "n" else "")) for k, d in GUIDED_HELP),
    *ViewStateController.help,
] + COMMON_HELP[4:]
LINKED_KEYS = ("b", "l", "d", "delete", "a")  # armed / created / removed in both panes


@dataclass(frozen=True)
class PaneControls:
    """The interaction controllers of one pane of the compare window."""

    brush: BrushController
    handles: HandleController
    hover: HoverController
    views: ViewStateController  # one for the window, in both panes' lists: v / o save / load it whole
    guided: GuidedController  # one for the window, in both panes' lists: it guides by model A's data


class CompareCanvas(TourWindow):
    """Models ``a`` (left) and ``b`` (right) of one bundle side by side (see module docstring).

    bundle : engine.store.Bundle; a, b : model names (may be equal); layer_a, layer_b : id, name or
    index; checkpoint_a, checkpoint_b : checkpoint (name or index) of each model's training run
    (default the last); color : attribute name, "movement", "difference" or "none"; render_path,
    device, dims, seed, speed, size, show, animate : as for :class:`viewer.canvas.TourCanvas`;
    controllers : install brushing, handles, hover, saved views and the guided tour (False for
    headless rendering); directory : where ``v`` writes saved views (default the current
    directory); state_path : the saved view (``--state``) that ``o`` and ``g`` read (default the
    newest ``v`` wrote).
    """

    view_kind = "compare"

    def __init__(self, bundle, a: str, b: str, *, layer_a=None, layer_b=None, dims: int = 2, color=None,
                 render_path: str = "auto", seed: int = 0, size=(1600, 860), show: bool = True,
                 animate: bool = True, device: str = "auto", title: str | None = None,
                 layer_cache_bytes: int = 2 << 30, controllers: bool = True, speed: float | None = None,
                 checkpoint_a=None, checkpoint_b=None, directory=None, state_path=None):
        for name in (a, b):
            if name not in bundle.models:
                raise KeyError(f"bundle {bundle.path}: no model {name!r} (has: {', '.join(bundle.models)})")
            if not bundle.models[name].layers:
                raise ValueError(f"bundle {bundle.path}: model {name!r} has no layers")
        pa, pb = (int(bundle.models[m].layers[0].embedding.shape[1]) for m in (a, b))
        if pa != pb:
            raise ValueError(f"--compare {a} {b}: the models have p={pa} and p={pb}; one tour needs one p")
        super().__init__(bundle, pa, dims=dims, render_path=render_path, seed=seed, speed=speed, size=size,
                         show=show, animate=animate, device=device,
                         title=title or f"layertour — {Path(str(bundle.path)).name}: {a} vs {b}")
        self.help_entries = list(COMPARE_HELP)
        self.panels = tuple(
            Pane(self, ModelView(bundle, m, layer, self.data_xp, layer_cache_bytes, checkpoint=ck),
                 PointsLayer(self.render_path_name, bundle.n, pa, dims, self.max_texture_size), side)
            for m, layer, ck, side in ((a, layer_a, checkpoint_a, "a"), (b, layer_b, checkpoint_b, "b")))
        self.panes = list(self.panels)
        self._rotations: dict = {}
        self._q_to = self.rotation_for(self.panels[0].current_key, self.panels[1].current_key)
        self._q_from = self._q_to
        self._q_t = TRANSITION_SECONDS
        self.last_realign_seconds = 0.0
        self._similarity: dict = {}
        self.show_heatmap = True
        self._hover_cell = None
        self._colorings: dict = {}
        own = [n for p in self.panels for n in p.view.state_model.attributes if n not in bundle.attributes]
        self.color_options = [*bundle.attributes, *dict.fromkeys(own), "movement", DIFFERENCE, "none"]
        self.set_coloring(self._initial_color(color))
        self.refresh_states()
        self.controls = self._install(directory, state_path) if controllers else {}
        self._start()

    def _install(self, directory, state_path) -> dict:
        out = {}
        guided = GuidedController()
        views = ViewStateController(directory, state_path)
        for pane in self.panels:
            pc = PaneControls(BrushController(int(self.bundle.n), export_dir=directory),
                              HandleController(self.p, self.entry), HoverController(self.entry),
                              views, guided)
            pane.controllers = [pc.brush, pc.handles, pc.hover, views, guided]
            out[pane.side] = pc
        return out

    # ------------------------------------------------------------------ layout
    def layout_extras(self) -> dict:
        if not self.show_heatmap:
            return {}
        la, lb = (len(p.model.layers) for p in self.panels)
        return {"heatmap_size": vhm.heatmap_size(la, lb)}

    def heatmap_layout(self):
        """The heat map's :class:`viewer.heatmap.HeatmapLayout` in window pixels, or None when hidden."""
        lay = self.layout()
        if lay.heatmap is None:
            return None
        la, lb = (len(p.model.layers) for p in self.panels)
        return vhm.heatmap_in(lay.heatmap, la, lb)

    def draw_extras(self, lay) -> None:
        if lay.heatmap is None:
            return
        a, b = self.panels
        la, lb = len(a.model.layers), len(b.model.layers)
        vhm.draw_heatmap(self.overlay, vhm.heatmap_in(lay.heatmap, la, lb), self.similarity,
                         (a.layer_index, b.layer_index), self._hover_cell, [ly.name for ly in a.model.layers],
                         [ly.name for ly in b.model.layers], self.pane_name(a), self.pane_name(b),
                         rect=lay.heatmap)

    def press_extras(self, x, y, event) -> bool:
        return getattr(event, "button", 1) == 1 and self.click_heatmap(x, y) is not None

    def hover_extras(self, x, y) -> bool:
        lay = self.heatmap_layout() if self.show_heatmap else None
        hover = lay.cell_at(x, y) if lay is not None else None
        if hover != self._hover_cell:
            self._hover_cell = hover
            return True
        return False

    def panel_at(self, x: float, y: float) -> Pane:
        return self.pane_at(x, y)

    def pane_name(self, pane) -> str:
        """The model's name, with its checkpoint when it shows a training run."""
        v = pane.view
        return pane.model.name + (f"@{v.checkpoints[v.checkpoint]}" if v.trained else "")

    def pane_prefix(self, pane) -> str:
        return f"{self.pane_name(pane)}: "

    def title_lines(self, lay) -> list:
        a, b = self.panels
        tour = tour_state_text(self.tour)

        def name(p):
            layer = p.model.layers[p.layer_index].name
            text = f"{p.model.name} · layer {p.layer_index + 1}/{len(p.model.layers)} {layer}"
            if p.view.trained:
                text += f" · {checkpoint_label(p.view.checkpoints, p.view.clock.position)}"
                acc = accuracy_label(p.view)
                if acc:
                    text += f" · {acc}"
            return text

        return [(f"{name(a)}     |     {name(b)}", (0.86, 0.88, 0.92, 1.0), 14),
                (f"N {self.bundle.n:,}  ·  p {self.p}  ·  one {tour}  ·  "
                 f"{self.pane_name(b)} aligned to {self.pane_name(a)} by Procrustes  ·  "
                 f"path {a.points.describe()}",
                 (0.55, 0.58, 0.64, 1.0), 12)]

    def screenshot_stem(self) -> str:
        a, b = self.panels
        return f"{Path(str(self.bundle.path)).name}-{a.model.name}-vs-{b.model.name}"

    # ------------------------------------------------------------------ alignment
    def rotation_for(self, ia, ib) -> np.ndarray:
        """(p, p) float64 host Q with B's layer ib @ Q ~ A's layer ia (Procrustes; cached per pair).
        ia, ib : layer indices at each pane's checkpoint, or (checkpoint, layer) keys."""
        key = (self.panels[0].view.key(ia), self.panels[1].view.key(ib))
        ia, ib = key
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
        Q = self.rotation_for(self.panels[0].current_key, i)
        return np.asarray(to_host(b.layer_data(i)), dtype=np.float64) @ Q

    def frame_for(self, panel) -> np.ndarray:
        """A's frame is the tour's; B's is ``Q F`` (gliding after a layer change)."""
        F = np.asarray(self.tour.frame, dtype=np.float64)
        if panel is self.panels[0]:
            return F
        if self._q_t >= TRANSITION_SECONDS:
            return self._q_to @ F
        from engine.tour import view_path

        u = smoothstep(self._q_t / TRANSITION_SECONDS)
        return np.asarray(view_path(self._q_from @ F, self._q_to @ F).frame(u), dtype=np.float64)

    def set_frame_for(self, panel, G) -> None:
        """Make ``panel`` show frame G (p, d): A's frame is the tour's; B's is ``Q F`` (so F = Qᵀ G)."""
        G = np.asarray(G, dtype=np.float64)
        if panel is self.panels[1]:
            self._q_t = TRANSITION_SECONDS
            G = self._q_to.T @ G
        self.tour.set_frame(G)
        self.update()

    def _realign(self, animate: bool) -> None:
        a, b = self.panels
        Q = self.rotation_for(a.current_key, b.current_key)
        if Q is self._q_to:
            if not animate:  # a glide in progress ends at once
                self._q_t = TRANSITION_SECONDS
            return
        self._q_from, self._q_to = self._q_to, Q
        self._q_t = 0.0 if animate else TRANSITION_SECONDS

    # ------------------------------------------------------------------ layers and time
    def set_layers(self, a: int | None = None, b: int | None = None, animate: bool = True) -> None:
        """Show layer ``a`` of model A and/or ``b`` of model B (indices), animated by default, and
        re-align B to A for the new pair."""
        for pane, i in zip(self.panels, (a, b)):
            if i is not None and pane.view.set_layer(i, animate):
                pane.layer_changed()
        self._realign(animate)
        if self.coloring_name in ("movement", DIFFERENCE):
            self.set_coloring(self.coloring_name)
        self.update()

    def set_pane_layer(self, pane, i: int, animate: bool = True) -> None:
        self.set_layers(**{pane.side: i}, animate=animate)

    def checkpoint_changed(self, pane) -> None:
        """A pane moved to another checkpoint: B glides to its alignment for the new pair, and
        colourings that depend on the checkpoint follow."""
        self._realign(animate=True)
        name = self.coloring_name
        if name in ("movement", DIFFERENCE) or name in pane.view.state_model.attributes:
            self.set_coloring(name)

    def animating(self) -> bool:
        """The window's, or B gliding to its new alignment."""
        return super().animating() or self._q_t < TRANSITION_SECONDS

    def advance(self, dt: float) -> None:
        """Move time on by ``dt`` seconds: B's re-alignment glide, then the window's (tour, layer
        transitions, framing, controllers)."""
        self._q_t = min(self._q_t + max(float(dt), 0.0), TRANSITION_SECONDS)
        super().advance(dt)

    # ------------------------------------------------------------------ similarity
    @property
    def similarity(self) -> np.ndarray:
        """(La, Lb) float64 host: for the checkpoints shown, the bundle's stored matrix (the models'
        last checkpoints; a model with itself: its layer similarity there), else
        ``engine.align.similarity_matrix`` of the two checkpoints' layers (computed once per pair
        of checkpoints, on the canvas's back end)."""
        va, vb = (p.view for p in self.panels)
        key = (va.model.name, va.checkpoint, vb.model.name, vb.checkpoint)
        if key not in self._similarity:
            a, b = va.state_model, vb.state_model
            S = None
            if va.checkpoint == len(va.checkpoints) - 1 and vb.checkpoint == len(vb.checkpoints) - 1:
                S = self.bundle.similarity(a.name, b.name)
            if S is None and a.name == b.name and va.checkpoint == vb.checkpoint:
                S = self.bundle.layer_similarity(a.name, va.checkpoints[va.checkpoint])
            if S is None:
                from engine.align import similarity_matrix
                from engine.device import to_host

                S = to_host(similarity_matrix([ly.embedding for ly in a.layers],
                                              [ly.embedding for ly in b.layers], xp=self.backend.xp))
            self._similarity[key] = np.asarray(S, dtype=np.float64)
        return self._similarity[key]

    def click_heatmap(self, x: float, y: float, animate: bool = True) -> tuple[int, int] | None:
        """Set both layers to the pair under pixel (x, y) of the heat map; returns it (or None)."""
        if not self.show_heatmap:
            return None
        lay = self.heatmap_layout()
        cell = lay.cell_at(x, y) if lay is not None else None
        if cell is not None:
            self.set_layers(*cell, animate=animate)
            a, b = self.panels
            self.status_message(f"{self.pane_name(a)} {a.model.layers[cell[0]].name}  ×  {self.pane_name(b)} "
                                f"{b.model.layers[cell[1]].name}: similarity {self.similarity[cell]:.3f}")
        return cell

    # ------------------------------------------------------------------ colour
    def _initial_color(self, color) -> str:
        if color is not None:
            if color not in self.color_options:
                raise KeyError(f"bundle {self.bundle.path}: cannot colour by {color!r} "
                               f"(choices: {', '.join(self.color_options)})")
            return color
        default = getattr(self.bundle, "default_attribute", None)
        return default if default in self.bundle.attributes else next(iter(self.bundle.attributes), "none")

    def coloring_of(self, pane):
        return self._colorings.get(pane.side)

    @property
    def coloring_name(self) -> str:
        c = self._colorings.get("a")
        return c.name if c is not None else "none"

    def set_coloring(self, name: str) -> None:
        """Colour both panes by attribute ``name``, "movement" (each model from its previous
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
            cols = [vcolors.attribute_coloring(self.bundle, name,
                                               {**self.bundle.attributes, **p.view.state_model.attributes})
                    for p in self.panels]
        if name != self.coloring_name:
            self._legend_filter = None
        self._colorings = {"a": cols[0], "b": cols[1]}
        self.upload_coloring()
        self.update()

    # ------------------------------------------------------------------ saved views
    def view_params(self) -> dict:
        """The window-owned part of a saved compare view (JSON-ready): colouring, legend filter,
        dims, render path, tour speed and whether the heat map shows. Each pane's own part (zoom,
        pan, framing, checkpoint) is :meth:`viewer.pane.Pane.view_params`."""
        return {"color": self.coloring_name,
                "legend_filter": None if self._legend_filter is None else sorted(self._legend_filter),
                "dims": int(self.dims), "render_path": self.render_path_name,
                "speed": float(self.tour.speed), "heatmap": bool(self.show_heatmap)}

    def set_view_params(self, d: dict, animate: bool = False) -> None:
        """Apply a dict from :meth:`view_params` (unknown keys ignored, missing keys kept). The
        projection's dimension is fixed when the window opens: another ``dims`` is a ValueError."""
        if "dims" in d and int(d["dims"]) != self.dims:
            raise ValueError(f"view params: 'dims' is {d['dims']} but this compare window shows "
                             f"{self.dims}-D (open it with --dims {d['dims']})")
        if "color" in d and d["color"] != self.coloring_name:
            self.set_coloring(d["color"])  # KeyError naming the choices
        if "legend_filter" in d:
            self.legend_filter = None if d["legend_filter"] is None else set(d["legend_filter"])
        if "heatmap" in d:
            self.show_heatmap = bool(d["heatmap"])
        if "speed" in d:
            self.tour.speed = float(d["speed"])
        self.update()

    def cycle_coloring(self) -> None:
        opts = self.color_options
        i = opts.index(self.coloring_name) if self.coloring_name in opts else -1
        self.set_coloring(opts[(i + 1) % len(opts)])
        self.status_message(f"colour: {self.coloring_name}")

    # ------------------------------------------------------------------ events
    def key_panes(self, key: str) -> list:
        if not self.controls:
            return []
        return list(self.panels) if key in LINKED_KEYS else [self.focus or self.panels[0]]

    def on_key_press(self, event) -> None:
        from viewer.window import key_name

        if not self.entry.active and key_name(event) in LINKED_KEYS and self.controls:
            for pane in self.panels:  # armed / created / removed in both panes
                self.dispatch(pane, "on_key_press", event)
            self.update()
            return
        super().on_key_press(event)

    def window_key(self, text: str, key: str) -> bool:
        focus = self.focus or self.panels[0]
        if text in ("j", "k"):
            step = 1 if text == "j" else -1
            focus.set_layer((focus.layer_index + step) % len(focus.model.layers))
        elif text == "t":
            self.show_heatmap = not self.show_heatmap
        else:
            return False
        return True

    def _other(self, pane) -> Pane:
        return self.panels[1] if pane is self.panels[0] else self.panels[0]

    def after_move(self, pane) -> None:
        """The image under the cursor in ``pane`` is marked (with its tooltip) in the other one too."""
        if self.controls and self.controls[self._other(pane).side].hover.follow(
                self.controls[pane.side].hover):
            self.update()

    def after_entry(self) -> None:
        """A handle renamed in one pane is renamed in the other (created in lockstep)."""
        if self.controls and not self.entry.active:
            src = self.focus or self.panels[0]
            self.controls[self._other(src).side].handles.copy_labels(self.controls[src.side].handles)

    def after_release(self, pane) -> None:
        """A brush armed by a key is spent by the gesture in either pane."""
        if self.controls:
            self.controls[self._other(pane).side].brush.disarm()
