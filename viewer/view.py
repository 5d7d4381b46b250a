"""The GL-free view of one model: layers, transitions, framing, zoom/pan, point look, projection.

:class:`ModelView` is everything about how one model is shown that needs no OpenGL, so it is
tested without a context and shared verbatim by the single window, both halves of the compare
window and the notebook widget:

- the layer cache (aligned (N, p) float32 data, NumPy or CuPy, LRU within a byte budget), keyed
  by ``(checkpoint, layer)``: a training run has one aligned embedding per pair, all in one frame;
- the layer transition clock, and the training axis (:class:`viewer.timeline.CheckpointClock`);
  what is drawn is always one blend ``(key_a, key_b, s)`` of two keyed embeddings: two layers of
  one checkpoint during a layer transition (smoothstep over ``TRANSITION_SECONDS``), or one layer
  at two neighbouring checkpoints at a fractional checkpoint position (the render paths blend and
  project both the same way, in the shader or the projection kernel). A layer change while the
  position is between checkpoints first settles on the nearest one, and training holds still
  while the layers blend;
- the framing (:mod:`viewer.fit`): a robust centre and radius of what is drawn, followed smoothly;
- zoom and pan on top of the framing, and the data <-> pixel maps of the plot area;
- point size and alpha from N, the plot area and zoom (density, not a solid blob);
- ``project_current``: the (N, d) positions exactly as drawn.

Coordinates: *data* positions are the projected points ((1-s) A + s B) F; *pixels* are logical
pixels of the plot area, origin top-left. The plot's shorter side spans
``2 * fit.radius * fit.MARGIN / zoom`` data units centred on ``fit.center + center``.
The frame is not stored here: the owner passes the (p, d) frame it draws with.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from engine.tour import smoothstep
from viewer import fit as vfit
from viewer.timeline import CheckpointClock

TRANSITION_SECONDS = 0.7
ZOOM_RANGE = (0.1, 150.0)
POINT_ALPHA = 0.85       # alpha of points where they do not overlap much (few points)
MIN_ALPHA = 0.035        # lowest alpha: 8-bit blending still accumulates above ~1/255 per point
COVERAGE = 0.5           # target summed alpha of an average pixel of the cloud (density shows)
SIZE_RANGE = (1.0, 8.0)   # point diameter, logical pixels


class ModelView:
    """One model of ``bundle`` as shown in a plot area (see the module docstring).

    bundle : engine.store.Bundle; model : name; layer : id, name or index (default 0);
    checkpoint : name or index of the checkpoint to start at (default the last: the trained model);
    data_xp : array module of the layer data (numpy, or cupy for the cuda/copy paths);
    cache_bytes : budget of the layer cache (at least three layers are kept).
    """

    def __init__(self, bundle, model: str, layer=None, data_xp=np, cache_bytes: int = 4 << 30,
                 checkpoint=None):
        if model not in bundle.models:
            raise KeyError(f"bundle {bundle.path}: no model {model!r} (has: {', '.join(bundle.models)})")
        m = bundle.models[model]
        if not m.layers:
            raise ValueError(f"bundle {bundle.path}: model {model!r} has no layers")
        self.bundle = bundle
        self.n = int(bundle.n)
        self.model = m
        self.p = int(m.layers[0].embedding.shape[1])
        self.data_xp = data_xp
        self.cache_bytes = int(cache_bytes)
        self._set_run(checkpoint)
        self.layer_index = 0 if layer is None else int(m.layer(layer).index)
        self.transition: tuple[int, int, float] | None = None
        self._transition_t = 0.0
        self.zoom = 1.0
        self.center = np.zeros(2, np.float64)  # pan: data offset of the plot centre from the fit's
        self.size: tuple[float, float] = (800.0, 800.0)  # plot area, logical pixels
        self._cache: OrderedDict = OrderedDict()
        self._samples: dict = {}
        self._sample_rows = vfit.sample_rows(self.n)
        self._projection: tuple | None = None
        self.fit = vfit.Fit.at((0.0, 0.0), 1.0)
        self.fitted = False
        self.pad_px = 0.0  # logical px the framing keeps free at the plot's edges

    # ------------------------------------------------------------------ training axis
    def _set_run(self, checkpoint=None) -> None:
        """The model's checkpoints (one for a model recorded in one state) and the clock on them."""
        self.checkpoints = list(self.bundle.checkpoints(self.model.name))
        self._runs = [self.bundle.model_at(self.model.name, c) for c in self.checkpoints]
        start = len(self._runs) - 1 if checkpoint is None else self.checkpoint_index_of(checkpoint)
        self.clock = CheckpointClock(len(self._runs), start)

    def checkpoint_index_of(self, key) -> int:
        """The index of checkpoint ``key`` (a name or an index, negative from the end); KeyError
        listing the checkpoints."""
        m = self.bundle.model_at(self.model.name, key)
        return next(i for i, r in enumerate(self._runs) if r is m)

    @property
    def trained(self) -> bool:
        """Whether this view shows a training run (more than one checkpoint)."""
        return len(self.checkpoints) > 1

    @property
    def checkpoint(self) -> int:
        """Index of the checkpoint nearest the position (what the HUD names, what per-checkpoint
        colourings use and what an integer ``layer_data`` key means)."""
        return self.clock.index

    @property
    def state_model(self):
        """The :class:`engine.store.Model` at :attr:`checkpoint` (its layers, meta, attributes)."""
        return self._runs[self.checkpoint]

    def model_at(self, k: int):
        return self._runs[int(k)]

    def set_checkpoint(self, position: float, animate: bool = False) -> bool:
        """Show the training run at ``position`` (a checkpoint index, or a fraction between two),
        gliding there when ``animate``; a layer transition in progress ends first. False when
        nothing changed."""
        if not self.trained:
            return False
        ended = self.transition is not None
        self.transition = None
        if animate:
            delta = int(round(float(position))) - self.checkpoint
            return self.clock.step(delta) or ended
        return self.clock.set(position) or ended

    @property
    def moving(self) -> bool:
        """Whether the picture changes by itself now: a layer blend, a checkpoint glide or play."""
        return self.transition is not None or self.clock.moving

    # ------------------------------------------------------------------ data
    def key(self, i) -> tuple[int, int]:
        """``(checkpoint, layer)`` of a data key: a layer index at the current :attr:`checkpoint`,
        or a (checkpoint, layer) pair already."""
        if isinstance(i, tuple):
            return int(i[0]), int(i[1])
        return self.checkpoint, int(i)

    @property
    def current_key(self) -> tuple[int, int]:
        return self.checkpoint, self.layer_index

    def layer_data(self, i):
        """(N, p) float32 aligned data of layer ``i`` (an index at the current checkpoint, or a
        ``(checkpoint, layer)`` key) in ``data_xp`` (cached; the first call reads the memory map
        and, on CuPy, copies host -> device once). A layer without a stored alignment (raw
        imported UMAP output) is centred on its mean, as the study's viewer does."""
        key = self.key(i)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        k, li = key
        if not 0 <= k < len(self._runs):
            raise IndexError(f"model {self.model.name!r} has {len(self._runs)} checkpoints, not {k}")
        if not 0 <= li < len(self.model.layers):
            raise IndexError(f"model {self.model.name!r} has {len(self.model.layers)} layers, not {li}")
        layer = self._runs[k].layers[li]
        xp = self.data_xp
        data = layer.aligned(xp=xp)
        if layer.center is None:
            data = (data - data.mean(axis=0, dtype=xp.float64)).astype(xp.float32)
        if data.shape != (self.n, self.p):
            raise ValueError(f"layer {layer.id!r} of {self.model.name!r} has shape {data.shape}, "
                             f"expected ({self.n}, {self.p})")
        self._cache[key] = data
        per = max(1, data.nbytes)
        while len(self._cache) > max(3, self.cache_bytes // per):
            self._cache.popitem(last=False)
        return data

    def _sample(self, key) -> np.ndarray:
        """(k, p) float64 host rows of a data key at the fit's sample rows (cached)."""
        key = self.key(key)
        if key not in self._samples:
            from engine.device import to_host

            d = self.layer_data(key)
            idx = self.data_xp.asarray(self._sample_rows)
            self._samples[key] = np.asarray(to_host(d[idx]), dtype=np.float64)
        return self._samples[key]

    def blend(self) -> tuple[tuple[int, int], tuple[int, int], float]:
        """(key_a, key_b, s): the two ``(checkpoint, layer)`` embeddings drawn now and the blend
        weight of key_b: two layers during a layer transition, two checkpoints of one layer at a
        fractional checkpoint position, else the current key twice with s = 0."""
        if self.transition is not None:
            ia, ib, s = self.transition
            k = self.checkpoint
            return (k, ia), (k, ib), s
        lo, hi, f = self.clock.pair
        return (lo, self.layer_index), (hi, self.layer_index), f

    def drawn(self):
        """The blend as :class:`viewer.handles.HandleSet` and the hover controller take it: None
        when one embedding is drawn, else (key_a, key_b, s)."""
        a, b, s = self.blend()
        return None if s == 0.0 else (a, b, s)

    def project_current(self, frame, xp=np):
        """(N, d) float32 data-space positions exactly as drawn with ``frame`` (p, d), in ``xp``.

        Memoised on (layers, blend, frame, xp): hover, brushing and handles ask on every mouse
        event and nothing changes while the tour is paused. Treat the result as read-only.
        """
        import kernels
        from engine.device import to_host

        ia, ib, s = self.blend()
        F = np.asarray(frame, dtype=np.float64)
        key = (self.model.name, ia, ib, float(s), F.tobytes(), xp.__name__)  # ia, ib: (checkpoint, layer)
        if self._projection is not None and self._projection[0] == key:
            return self._projection[1]
        a, b = self.layer_data(ia), self.layer_data(ib)
        if xp is np:
            a, b = to_host(a), to_host(b)
        else:
            a, b = xp.asarray(a), xp.asarray(b)
        out = kernels.project(a, b, float(s), xp.asarray(F))
        self._projection = (key, out)
        return out

    # ------------------------------------------------------------------ framing
    def fit_target(self, frame) -> tuple[np.ndarray, float]:
        """Robust (centre, radius) of the sample as drawn now with ``frame`` (:func:`viewer.fit.target`),
        keeping the points :attr:`pad_px` logical pixels inside the plot's edges (room for
        thumbnails in image mode)."""
        ia, ib, s = self.blend()
        a = self._sample(ia)
        y = a if s == 0 else (1.0 - s) * a + s * self._sample(ib)
        w, h = self.size
        m = min(float(self.pad_px), 0.3 * min(w, h))
        c, r = vfit.target(y @ np.asarray(frame, dtype=np.float64)[:, :2], (w - 2 * m, h - 2 * m))
        return c, r * min(w, h) / max(min(w, h) - 2 * m, 1.0)

    def refit(self, frame) -> None:
        """Frame what is drawn now at once (first frame, ``r``, a new model or dimension)."""
        self.fit.snap(*self.fit_target(frame))
        self.fitted = True

    def extent(self) -> float:
        """Data units from the plot centre to the middle of its shorter edge at zoom 1."""
        return self.fit.radius * vfit.MARGIN

    def advance(self, dt: float, frame, follow: bool = True) -> bool:
        """Move the layer transition and the checkpoint clock by ``dt`` seconds (training holds still
        while layers blend), then (``follow``) let the framing follow what is drawn with ``frame``.
        Returns whether the nearest checkpoint changed (per-checkpoint colourings then change)."""
        dt = max(float(dt), 0.0)
        before = self.checkpoint
        if self.transition is not None:
            self._transition_t += dt
            u = self._transition_t / TRANSITION_SECONDS
            self.transition = None if u >= 1.0 else (self.transition[0], self.transition[1], smoothstep(u))
        elif self.trained:
            self.clock.advance(dt)
        if not self.fitted:
            self.refit(frame)
        elif follow:
            self.fit.follow(*self.fit_target(frame), dt)
        return self.checkpoint != before

    # ------------------------------------------------------------------ layers
    def set_layer(self, i: int, animate: bool = True) -> bool:
        """Show layer i, blending from what is drawn now when ``animate``; False if nothing changed.

        Its data are read first, so a layer that fails its checks (``engine.store.BundleError``)
        raises before anything changes."""
        n = len(self.model.layers)
        i = int(i)
        if not 0 <= i < n:
            raise IndexError(f"model {self.model.name!r} has {n} layers, not {i}")
        if i == self.layer_index and self.transition is None:
            return False
        self.layer_data(i)  # read (and check) it now: a corrupt layer raises here, nothing changes
        if self.transition is None and self.clock.pair[2] > 0.0:
            self.clock.snap()  # between checkpoints: settle on the nearest, then blend the layers there
        if self.transition is not None:
            ia, ib, s = self.transition
        else:
            ia, ib, s = self.layer_index, self.layer_index, 0.0
        start = ib if s >= 0.5 else ia
        self.transition = (start, i, 0.0) if animate and start != i else None
        self._transition_t = 0.0
        self.layer_index = i
        return True

    def set_model(self, name: str, checkpoint=None) -> None:
        """Show model ``name`` of the same bundle (same p) at ``checkpoint`` (default its last); the
        layer index is kept where it exists."""
        if name not in self.bundle.models:
            raise KeyError(f"bundle {self.bundle.path}: no model {name!r} "
                           f"(has: {', '.join(self.bundle.models)})")
        m = self.bundle.models[name]
        p = int(m.layers[0].embedding.shape[1])
        if p != self.p:
            raise ValueError(f"model {name!r} has p={p} but the tour runs in p={self.p}")
        self.model = m
        self._cache.clear()
        self._samples.clear()
        self._projection = None
        self.transition = None
        self._set_run(checkpoint)
        self.layer_index = min(self.layer_index, len(m.layers) - 1)
        self.fitted = False

    # ------------------------------------------------------------------ pixels
    def pixels_per_unit(self) -> float:
        w, h = self.size
        return self.zoom * min(w, h) / (2.0 * self.extent())

    def view_center(self) -> np.ndarray:
        """(2,) data position drawn at the plot centre: the fit's centre plus the pan."""
        return self.fit.center + self.center

    def data_to_pixels(self, xy) -> np.ndarray:
        """(k, 2) data positions -> (k, 2) float64 logical plot pixels (origin top-left)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        k = self.pixels_per_unit()
        w, h = self.size
        c = self.view_center()
        return np.stack([w / 2 + (xy[:, 0] - c[0]) * k, h / 2 - (xy[:, 1] - c[1]) * k], 1)

    def pixels_to_data(self, px) -> np.ndarray:
        """(k, 2) logical plot pixels -> (k, 2) float64 data positions (inverse of data_to_pixels)."""
        px = np.asarray(px, dtype=np.float64).reshape(-1, 2)
        k = self.pixels_per_unit()
        w, h = self.size
        c = self.view_center()
        return np.stack([(px[:, 0] - w / 2) / k + c[0], (h / 2 - px[:, 1]) / k + c[1]], 1)

    def ndc_scale(self) -> tuple[float, float]:
        """Data units -> normalised device coordinates of the plot viewport, per axis."""
        k = self.pixels_per_unit()
        w, h = self.size
        return 2 * k / w, 2 * k / h

    def zoom_at(self, px, factor: float) -> None:
        """Zoom by ``factor`` keeping the data point under plot pixel ``px`` fixed."""
        before = self.pixels_to_data(px)[0]
        self.zoom = float(np.clip(self.zoom * factor, *ZOOM_RANGE))
        after = self.pixels_to_data(px)[0]
        self.center = self.center + (before - after)

    def pan_by(self, start_center, dpx) -> None:
        """Pan so that the content moves by ``dpx`` pixels from where it was at ``start_center``."""
        d = np.asarray(dpx, dtype=np.float64) / self.pixels_per_unit()
        self.center = np.asarray(start_center, dtype=np.float64) + np.array([-d[0], d[1]])

    def reset(self, frame) -> None:
        """Zoom 1, no pan, framing snapped to what is drawn (the ``r`` key)."""
        self.zoom = 1.0
        self.center = np.zeros(2)
        self.refit(frame)

    # ------------------------------------------------------------------ look
    def _cloud_area(self) -> float:
        """Logical px² the framed cloud covers at this zoom (the inscribed disc of the fit)."""
        r_px = self.fit.radius * self.pixels_per_unit()
        w, h = self.size
        return float(min(np.pi * r_px * r_px, max(w * h, 1.0) * self.zoom ** 2))

    def point_size(self, pixel_scale: float = 1.0) -> float:
        """Point diameter in framebuffer pixels: about the spacing of N points spread over the
        framed cloud (so sparse layers show dots and dense ones show texture), in SIZE_RANGE."""
        spacing = np.sqrt(self._cloud_area() / max(self.n, 1))
        return float(np.clip(1.2 * spacing, *SIZE_RANGE) * pixel_scale)

    def point_alpha(self) -> float:
        """Alpha per point so that an average pixel of the cloud sums to about COVERAGE: dense
        clusters saturate, sparse regions stay see-through (MIN_ALPHA .. POINT_ALPHA)."""
        s = self.point_size()
        coverage = self.n * np.pi * s * s / 4.0 / max(self._cloud_area(), 1.0)
        return float(np.clip(COVERAGE / max(coverage, 1e-9), MIN_ALPHA, POINT_ALPHA))
