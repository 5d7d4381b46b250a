"""The single-model window: :class:`TourCanvas`, a :class:`viewer.window.TourWindow` with one pane.

Composed of the shared parts: a :class:`viewer.view.ModelView` (layers, framing, zoom/pan), a
:class:`viewer.points.PointsLayer` (render path, colours, thumbnails) in a
:class:`viewer.pane.Pane`, inside the window base (tour, timer, keys, HUD, controllers). What is
its own: the keys j/k (layers), m (next model), i (image mode), 3 (2-D/3-D), the colouring
options ("movement" from the previous layer; for a training run "checkpoint-movement" from the
previous checkpoint, and each checkpoint's own attributes, e.g. its ``correct``), the HUD's
checkpoint line, and the saved-view parameters. The training run's slider and keys are the
window base's.

Coordinates: the canvas's own ``data_to_pixels`` / ``pixels_to_data`` map to logical *window*
pixels (origin top-left, as VisPy mouse events report them); the pane's (what controllers use)
map to its plot area's pixels. Time: :meth:`advance` moves the tour, the layer transition, the
framing and the controllers by ``dt`` seconds; an interactive canvas calls it from a timer, headless
rendering and tests call it with exact steps, and ``on_draw`` itself never moves anything.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from viewer import colors as vcolors
from viewer.pane import Pane
from viewer.points import FADE_ALPHA, IMAGE_SCALE, PointsLayer  # noqa: F401 (re-exported for tests)
from viewer.text import quality_text, tour_state_text
from viewer.timeline import accuracy_label, checkpoint_label
from viewer.view import POINT_ALPHA, TRANSITION_SECONDS, ZOOM_RANGE, ModelView  # noqa: F401
from viewer.window import COMMON_HELP, TourWindow

log = logging.getLogger("layertour.viewer")

CHECKPOINT_MOVEMENT = "checkpoint-movement"
V1_HELP = COMMON_HELP[:4] + [
    ("j / k", "next / previous layer (or click a name)"), ("m", "next model"),
    ("i", "image mode (thumbnails)"), ("3", "toggle 2-D / 3-D projection"),
] + COMMON_HELP[4:]


class TourCanvas(TourWindow):
    """Interactive Grand Tour of one model of a bundle (see the module docstring).

    bundle : engine.store.Bundle; model : name (default first); layer : id, name or index;
    checkpoint : name or index of the training run's checkpoint to start at (default the last);
    dims : 2 or 3; color : attribute name, "movement", "checkpoint-movement" or "none" (default:
    the bundle's default attribute); render_path : auto | cuda | copy | shader; device : engine
    back end for the data (auto | cuda | cpu); speed : tour speed (rad/s); animate : run the
    wall-clock timer.
    """

    view_kind = "single"

    def __init__(self, bundle, *, model=None, layer=None, dims: int = 2, color=None,
                 render_path: str = "auto", seed: int = 0, size=(1100, 820), show: bool = True,
                 animate: bool = True, device: str = "auto", title: str | None = None,
                 layer_cache_bytes: int = 4 << 30, speed: float | None = None, checkpoint=None):
        if not bundle.models:
            raise ValueError(f"bundle {bundle.path} has no models")
        model = next(iter(bundle.models)) if model is None else model
        if model not in bundle.models:
            raise KeyError(f"bundle {bundle.path}: no model {model!r} (has: {', '.join(bundle.models)})")
        if not bundle.models[model].layers:
            raise ValueError(f"bundle {bundle.path}: model {model!r} has no layers")
        p = int(bundle.models[model].layers[0].embedding.shape[1])
        super().__init__(bundle, p, dims=dims, render_path=render_path, seed=seed, speed=speed, size=size,
                         show=show, animate=animate, device=device,
                         title=title or f"layertour — {Path(str(bundle.path)).name}")
        self.help_entries = list(V1_HELP)
        view = ModelView(bundle, model, layer, self.data_xp, layer_cache_bytes, checkpoint=checkpoint)
        points = PointsLayer(self.render_path_name, bundle.n, p, dims, self.max_texture_size)
        self.pane = Pane(self, view, points, "a")
        self.panes = [self.pane]
        log.info("render path: %s (%s)", self.render_path_name, self.gl_renderer)
        self.coloring = None
        self.color_options = self._color_options()
        self.set_coloring(self._initial_color(color))
        self.refresh_states()
        self._start()

    # ------------------------------------------------------------------ the pane's view, forwarded
    @property
    def view(self) -> ModelView:
        return self.pane.view

    @property
    def points(self) -> PointsLayer:
        return self.pane.points

    @property
    def controllers(self) -> list:
        return self.pane.controllers

    @property
    def model(self):
        return self.view.model

    @property
    def layer_index(self) -> int:
        return self.view.layer_index

    @property
    def checkpoint(self) -> str:
        """The name of the checkpoint shown (the nearest one between two)."""
        return self.view.checkpoints[self.view.checkpoint]

    @property
    def checkpoint_position(self) -> float:
        """Where the training run stands: a checkpoint index, or a fraction between two."""
        return self.view.clock.position

    def set_checkpoint(self, position, animate: bool = False) -> None:
        """Show the training run at checkpoint ``position``: a name, an index, or a fractional
        index between two checkpoints (their blend); gliding there when ``animate``."""
        if isinstance(position, str):
            position = self.view.checkpoint_index_of(position)
        self.set_pane_checkpoint(self.pane, float(position), animate)

    @property
    def current_key(self) -> tuple[int, int]:
        return self.view.current_key

    @property
    def drawn(self):
        return self.view.drawn()

    @property
    def transition(self):
        return self.view.transition

    @property
    def zoom(self) -> float:
        return self.view.zoom

    @zoom.setter
    def zoom(self, value) -> None:
        self.view.zoom = float(value)

    @property
    def center(self) -> np.ndarray:
        """Pan: data offset of the plot centre from the framing's centre (0 = none)."""
        return self.view.center

    @center.setter
    def center(self, value) -> None:
        self.view.center = np.asarray(value, dtype=np.float64).reshape(2)

    @property
    def image_mode(self) -> bool:
        return self.points.image_mode

    @property
    def render_path(self) -> str:
        return self.points.describe()

    def layer_data(self, i: int):
        return self.view.layer_data(i)

    def project_current(self, xp=np):
        return self.view.project_current(self.frame, xp)

    def extent(self) -> float:
        return self.view.extent()

    def pixels_per_unit(self) -> float:
        self.layout()
        return self.view.pixels_per_unit()

    def data_to_pixels(self, xy) -> np.ndarray:
        """(k, 2) data positions -> (k, 2) float64 logical *window* pixels."""
        r = self.plot_rect
        return self.view.data_to_pixels(xy) + np.array([r.x, r.y])

    def pixels_to_data(self, px) -> np.ndarray:
        """(k, 2) logical window pixels -> (k, 2) float64 data positions."""
        r = self.plot_rect
        local = np.asarray(px, dtype=np.float64).reshape(-1, 2) - np.array([r.x, r.y])
        return self.view.pixels_to_data(local)

    def point_size(self) -> float:
        self.layout()
        return self.view.point_size(self.pixel_scale)

    def point_alpha(self) -> float:
        self.layout()
        return self.view.point_alpha()

    def zoom_at(self, px, factor: float) -> None:
        """Zoom by ``factor`` keeping the data point under window pixel ``px`` fixed."""
        r = self.plot_rect
        self.pane.zoom_at(np.asarray(px, dtype=np.float64).reshape(2) - np.array([r.x, r.y]), factor)

    def coloring_of(self, pane):
        return self.coloring

    def set_pane_layer(self, pane, i: int, animate: bool = True) -> None:
        self.set_layer(i, animate)

    def add_controller(self, c) -> None:
        """Append an interaction controller (a :class:`viewer.window.Controller`)."""
        self.pane.controllers.append(c)

    def handle_set(self):
        return self.pane.handle_set()

    def screenshot_stem(self) -> str:
        layer = self.model.layers[self.layer_index].id
        return f"{Path(str(self.bundle.path)).name}-{self.model.name}-{layer}"

    # ------------------------------------------------------------------ colour
    def _color_options(self) -> list[str]:
        opts = list(self.bundle.attributes)
        opts += [a for a in self.view.state_model.attributes if a not in opts]  # a checkpoint's own
        if len(self.model.layers) > 1:
            opts.append("movement")
        if self.view.trained:
            opts.append(CHECKPOINT_MOVEMENT)
        opts.append("none")
        return opts

    def attributes(self) -> dict:
        """The attributes colourings read now: the bundle's, with the shown checkpoint's own over
        them (a training run's per-checkpoint prediction, correctness, confidence, loss)."""
        return {**self.bundle.attributes, **self.view.state_model.attributes}

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
        """Colour by attribute ``name`` (the shown checkpoint's own when it has one), "movement"
        (from the previous layer), "checkpoint-movement" (from the previous checkpoint) or "none"."""
        same = self.coloring is not None and self.coloring.name == name
        if name == "none":
            self.coloring = vcolors.uniform_coloring(self.bundle.n)
        elif name == "movement":
            i = self.layer_index
            prev = max(i - 1, 0)
            self.coloring = vcolors.movement_coloring(self.layer_data(prev), self.layer_data(i))
            if i == 0:
                self.status_message("movement: the first layer has no previous layer (all zero)")
        elif name == CHECKPOINT_MOVEMENT:
            k, i = self.view.current_key
            c = vcolors.movement_coloring(self.layer_data((max(k - 1, 0), i)), self.layer_data((k, i)))
            self.coloring = vcolors.Coloring(CHECKPOINT_MOVEMENT, c.kind, c.codes, c.palette, extent=c.extent)
            if k == 0:
                self.status_message("checkpoint-movement: the first checkpoint has no previous one "
                                    "(all zero)")
        else:
            self.coloring = vcolors.attribute_coloring(self.bundle, name, self.attributes())
        if not same:  # the same attribute at another checkpoint keeps its legend filter
            self._legend_filter = None
        self.upload_coloring()
        self.update()

    def checkpoint_changed(self, pane) -> None:
        """Per-checkpoint colourings (the checkpoint's own attributes, its movement) follow it."""
        name = self.coloring.name if self.coloring is not None else None
        if name == CHECKPOINT_MOVEMENT or name in self.view.state_model.attributes:
            self.set_coloring(name)

    def cycle_coloring(self) -> None:
        i = self.color_options.index(self.coloring.name) if self.coloring.name in self.color_options else -1
        name = self.color_options[(i + 1) % len(self.color_options)]
        self.set_coloring(name)
        self.status_message(f"colour: {name}")

    # ------------------------------------------------------------------ tour, layers, model
    def set_layer(self, i: int, animate: bool = True) -> None:
        """Show layer i; with ``animate`` blend from what is drawn now over 0.7 s (smoothstep)."""
        if self.view.set_layer(i, animate):
            self._layers_changed()

    def _layers_changed(self) -> None:
        """After the shown layer or model changed: movement colouring is relative to the previous
        layer, so recompute it; tell the controllers; redraw."""
        if self.coloring is not None and self.coloring.name in ("movement", CHECKPOINT_MOVEMENT):
            self.set_coloring(self.coloring.name)
        self.pane.layer_changed()
        self.update()

    def set_model(self, name: str, checkpoint=None) -> None:
        """Show another model of the bundle (same canonical frame, so the tour carries over), at
        ``checkpoint`` of its training run (default the last)."""
        if name == self.model.name and name in self.bundle.models:
            return
        self.view.set_model(name, checkpoint)
        self.points.rebuild()
        self.color_options = self._color_options()
        self.view.refit(self.frame)
        self._layers_changed()

    def set_dims(self, dims: int) -> None:
        """Switch between a 2-D and a 3-D projection, keeping the first two axes of the view."""
        from engine.tour import orthonormalize

        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if dims == self.dims:
            return
        F = self.frame
        if dims == 3:
            rng = np.random.default_rng(0)
            extra = rng.normal(size=(self.p, 1))
            F = orthonormalize(np.concatenate([F, extra], axis=1))
        else:
            F = F[:, :2]
        from engine.tour import GrandTour

        playing, speed = self.tour.playing, self.tour.speed
        self.tour = GrandTour(self.p, dims, seed=0, speed=speed)
        self.tour.set_frame(F)
        if not playing:
            self.tour.pause()
        self.dims = dims
        self.points.set_dims(dims)
        self.view.refit(self.frame)
        self.update()

    def window_key(self, text: str, key: str) -> bool:
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
        else:
            return False
        return True

    # ------------------------------------------------------------------ image mode
    def set_image_mode(self, on: bool) -> None:
        if on and self.bundle.images is None:
            self.status_message("image mode: this bundle has no images")
            return
        if on:
            self.set_current()
            msg = self.points.enable_images(self.bundle.images, flush=self.context.flush_commands)
            if msg:
                self.status_message(msg, 8.0)
        self.points.image_mode = bool(on)
        # thumbnails are IMAGE_SCALE points wide: frame the cloud so that those at its edge stay whole
        self.view.pad_px = 0.5 * IMAGE_SCALE * self.view.point_size() if on else 0.0
        self.update()

    # ------------------------------------------------------------------ HUD
    def title_lines(self, lay) -> list:
        layer = self.model.layers[self.layer_index]
        tour = tour_state_text(self.tour)
        fps = f"{self._fps:4.0f} fps  ·  " if self.show_fps else ""
        head = f"{self.model.name}  ·  layer {self.layer_index + 1}/{len(self.model.layers)}  {layer.name}"
        v = self.view
        if v.trained:
            head += f"  ·  {checkpoint_label(v.checkpoints, v.clock.position)}"
            acc = accuracy_label(v)
            if acc:
                head += f"  ·  {acc}"
        quality = quality_text(layer.meta)
        if quality:
            head += f"  ·  {quality}"
        return [(head, (0.86, 0.88, 0.92, 1.0), 14),
                (f"N {self.bundle.n:,}  ·  p {self.p}  ·  {self.dims}-D  ·  {fps}{tour}  ·  "
                 f"path {self.render_path}", (0.55, 0.58, 0.64, 1.0), 12)]

    # ------------------------------------------------------------------ saved views
    def view_params(self) -> dict:
        """The canvas-owned part of a saved view (JSON-ready): the pane's (zoom, pan, framing,
        layer id, checkpoint: :meth:`viewer.pane.Pane.view_params`) with the model, layer,
        colouring, legend filter, dims, render path, image mode and tour speed."""
        return {
            **self.pane.view_params(),
            "model": self.model.name, "layer": int(self.layer_index),
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
        if "color" in d and d["color"] != self.coloring.name:
            if d["color"] not in self.color_options:
                raise KeyError(f"view params: cannot colour by {d['color']!r} "
                               f"(choices: {', '.join(self.color_options)})")
            self.set_coloring(d["color"])
        if "legend_filter" in d:
            self.legend_filter = None if d["legend_filter"] is None else set(d["legend_filter"])
        self.pane.set_view_params(d)  # zoom, pan, framing, checkpoint
        if "layer" in d and int(d["layer"]) != self.layer_index:
            self.set_layer(int(d["layer"]), animate=animate)
        if "image_mode" in d and bool(d["image_mode"]) != self.image_mode:
            self.set_image_mode(bool(d["image_mode"]))
        if "speed" in d:
            self.tour.speed = float(d["speed"])
        self.update()
