"""The GL points layer of one view: a render path, the colouring and per-point states it draws
with, and the image pass (thumbnails from texture atlases).

:class:`PointsLayer` owns every GL object the points need; :meth:`PointsLayer.draw` takes a
:class:`viewer.view.ModelView` and the (p, d) frame, and draws exactly what that view says (blend,
framing, zoom/pan, point size and alpha) into the current viewport, whichever render path
(:mod:`viewer.render_paths`: shader, copy or cuda) is in use, so every path has the same look.
The GL context must be current for every method except :meth:`describe`.
"""

from __future__ import annotations

import logging

import numpy as np
from vispy import gloo

from viewer.render_paths import make_path

log = logging.getLogger("layertour.viewer")

FADE_ALPHA = 0.06
IMAGE_SCALE = 5.0


class PointsLayer:
    """Points of one view on render path ``path_name`` for N points in p dimensions, d = ``dims``."""

    def __init__(self, path_name: str, n: int, p: int, dims: int, max_texture_size: int):
        self.path_name = path_name
        self.n, self.p, self.dims = int(n), int(p), int(dims)
        self.max_texture_size = int(max_texture_size)
        self.path = make_path(path_name, self.n, self.p, self.dims, self.max_texture_size)
        self._codes = None
        self._palette = None
        self._states = np.ones(self.n, np.float32)
        self.atlases: list = []
        self.atlas_plan = None
        self._index_buffers: list = []
        self._rest_buffer = None
        self.image_subset: np.ndarray | None = None  # points drawn as thumbnails (None: all that fit)
        self.image_mode = False
        self.reported_failure: str | None = None

    # ------------------------------------------------------------------ state uploads
    def set_coloring(self, coloring, enabled=None) -> None:
        """Upload a :class:`viewer.colors.Coloring`; ``enabled`` (K,) bool legend filter or None."""
        self._codes = coloring.codes
        self._palette = (coloring.palette, enabled)
        self.path.set_codes(coloring.codes)
        self.path.set_palette(coloring.palette, enabled)

    def set_states(self, states: np.ndarray) -> None:
        """(N,) float32 host: 0 faded, 1 normal, 2 highlighted."""
        self._states = np.ascontiguousarray(states, dtype=np.float32)
        self.path.set_states(self._states)

    @property
    def states(self) -> np.ndarray:
        return self._states

    def set_dims(self, dims: int) -> None:
        """Rebuild the render path for 2-D or 3-D positions, keeping colours and states."""
        self.path.release()
        self.dims = int(dims)
        self.path = make_path(self.path_name, self.n, self.p, self.dims, self.max_texture_size)
        self._reupload()

    def rebuild(self, path_name: str | None = None) -> None:
        """A fresh render path (another model's layers, or another path), same colours and states."""
        self.path.release()
        if path_name is not None:
            self.path_name = path_name
        self.path = make_path(self.path_name, self.n, self.p, self.dims, self.max_texture_size)
        self._reupload()

    def _reupload(self) -> None:
        if self._codes is not None:
            self.path.set_codes(self._codes)
            self.path.set_palette(*self._palette)
        self.path.set_states(self._states)

    # ------------------------------------------------------------------ images
    def enable_images(self, images, flush=None) -> str | None:
        """Upload the thumbnails ((N, 32, 32, 3) uint8) into atlases once; returns a message when
        not all of them fit in GPU memory (the rest are drawn as dots), else None."""
        if self.atlases:
            return None
        from viewer.atlas import HEADROOM, free_gpu_memory_bytes, plan_atlases, upload_atlases

        free = free_gpu_memory_bytes()
        budget = None if free is None else int(free * HEADROOM)
        plan = plan_atlases(len(images), int(images.shape[1]), self.max_texture_size, budget)
        self.atlases, plan = upload_atlases(images, plan, flush=flush)
        self.atlas_plan = plan
        self._image_buffers()
        if not plan.complete:
            return (f"image mode: {plan.n_loaded:,} of {plan.n_total:,} thumbnails fit in GPU memory; "
                    f"the rest are drawn as dots")
        return None

    def _image_buffers(self) -> None:
        """Index buffers of the image pass: per atlas the points it holds that are drawn as images
        (all of them, or those of :attr:`image_subset`), and the rest drawn as dots."""
        for b in [*self._index_buffers, self._rest_buffer]:
            if b is not None:
                b.delete()
        plan = self.atlas_plan
        as_image = np.zeros(self.n, bool)
        as_image[: plan.n_loaded] = True
        if self.image_subset is not None:
            keep = np.zeros(self.n, bool)
            keep[self.image_subset] = True
            as_image &= keep
        self._index_buffers = []
        for k in range(plan.n_atlases):
            lo = k * plan.per_atlas
            hi = min(plan.n_loaded, lo + plan.per_atlas)
            idx = lo + np.flatnonzero(as_image[lo:hi]).astype(np.uint32)
            self._index_buffers.append(gloo.IndexBuffer(idx) if idx.size else None)
        rest = np.flatnonzero(~as_image).astype(np.uint32)
        self._rest_buffer = gloo.IndexBuffer(rest) if rest.size else None

    def set_image_subset(self, indices) -> None:
        """Draw only points ``indices`` (int array, or None: every point) as thumbnails in image
        mode, the others as dots (a sample of thumbnails keeps a dense layer readable)."""
        if indices is not None:
            idx = np.unique(np.asarray(indices, dtype=np.int64).ravel())
            if idx.size and (idx[0] < 0 or idx[-1] >= self.n):
                raise IndexError(f"image subset: indices must lie in [0, {self.n})")
            indices = idx
        self.image_subset = indices
        if self.atlases:
            self._image_buffers()

    # ------------------------------------------------------------------ drawing
    def draw(self, view, frame, context, pixel_scale: float = 1.0) -> str | None:
        """Draw ``view`` (a :class:`viewer.view.ModelView`) with ``frame`` (p, d) into the current
        viewport (the view's plot area). Returns a message the first time the CUDA path falls back
        to the copy path, else None."""
        ia, ib, s = view.blend()
        path = self.path
        path.prepare(ia, view.layer_data(ia), ib, view.layer_data(ib), s, frame)
        path.set_view(center=view.view_center(), scale=view.ndc_scale(), extent=view.extent(),
                      point_size=view.point_size(pixel_scale), alpha=view.point_alpha(),
                      fade_alpha=FADE_ALPHA)
        if self.image_mode and self.atlases:
            plan = self.atlas_plan
            if self._rest_buffer is not None:
                path.set_image_pass(None)
                path.draw(self._rest_buffer)
            for k, (tex, ib_) in enumerate(zip(self.atlases, self._index_buffers)):
                if ib_ is None:
                    continue
                path.set_image_pass(tex, base=k * plan.per_atlas, cols=plan.cols,
                                    cell_uv=(1.0 / plan.cols, 1.0 / plan.cols), scale=IMAGE_SCALE)
                path.draw(ib_)
            path.set_image_pass(None)
        else:
            path.set_image_pass(None)
            path.draw()
        path.after_draw(context)
        failed = getattr(path, "failed", None)
        if failed is not None and self.reported_failure is None:
            self.reported_failure = failed
            return f"CUDA-GL interop unavailable ({failed}): drawing through the copy path"
        return None

    def describe(self) -> str:
        return self.path.describe()

    def release(self) -> None:
        self.path.release()
