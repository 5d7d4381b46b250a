"""Image mode: the bundle's thumbnails packed into texture atlases, with no fixed cap.

Each atlas is a square RGB texture of side ``<= GL_MAX_TEXTURE_SIZE`` holding ``cols x cols`` cells
of ``cell x cell`` pixels (32 for bundle images); point i lives in atlas ``i // per_atlas`` at cell
``i % per_atlas`` (row-major). Atlases are allocated one after the other until every image is in,
or until the GPU memory budget is reached (NVIDIA's ``GL_NVX_gpu_memory_info`` or ATI's
``GL_ATI_meminfo`` when the driver has one, else an explicit budget); the points beyond are drawn
as dots and the canvas says so. Where the driver reports nothing (Mesa), each upload is checked
for GL_OUT_OF_MEMORY instead. ``plan_atlases`` and ``pack_atlas`` are pure host functions; only
:func:`upload_atlases` touches GL (context current).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("layertour.viewer")

GL_GPU_MEM_INFO_CURRENT_AVAILABLE_MEM_NVX = 0x9049
GL_TEXTURE_FREE_MEMORY_ATI = 0x87FC
GL_OUT_OF_MEMORY = 0x0505
HEADROOM = 0.5  # use at most this share of the free GPU memory the driver reports


@dataclass(frozen=True)
class AtlasPlan:
    """cell : thumbnail side (px); cols : cells per atlas row; per_atlas : cols²;
    side : atlas texture side (px); n_atlases : atlases to build; n_loaded : images they hold
    (the first n_loaded points); n_total : images in the bundle."""

    cell: int
    cols: int
    per_atlas: int
    side: int
    n_atlases: int
    n_loaded: int
    n_total: int

    @property
    def bytes(self) -> int:
        return self.n_atlases * self.side * self.side * 3

    @property
    def complete(self) -> bool:
        return self.n_loaded == self.n_total


def plan_atlases(n: int, cell: int, max_texture_size: int, budget_bytes: int | None) -> AtlasPlan:
    """Lay out n thumbnails of cell x cell px in atlases no bigger than max_texture_size, within
    ``budget_bytes`` of GPU memory (None: no limit known)."""
    if cell < 1 or cell > max_texture_size:
        raise ValueError(f"thumbnail size {cell} does not fit a {max_texture_size}px texture")
    max_cols = max_texture_size // cell
    cols = int(min(max_cols, max(1, np.ceil(np.sqrt(max(n, 1))))))
    per = cols * cols
    side = cols * cell
    n_atlases = -(-n // per) if n else 0
    if budget_bytes is not None:
        n_atlases = min(n_atlases, int(budget_bytes // (side * side * 3)))
    n_loaded = min(n, n_atlases * per)
    return AtlasPlan(cell, cols, per, side, n_atlases, n_loaded, n)


def pack_atlas(images: np.ndarray, plan: AtlasPlan, k: int) -> np.ndarray:
    """(side, side, 3) uint8 atlas k holding images[k*per : (k+1)*per] (host)."""
    lo = k * plan.per_atlas
    hi = min(plan.n_loaded, lo + plan.per_atlas)
    chunk = np.asarray(images[lo:hi], dtype=np.uint8)
    if chunk.ndim != 4 or chunk.shape[1:3] != (plan.cell, plan.cell) or chunk.shape[3] not in (3, 4):
        raise ValueError(f"images must be (N, {plan.cell}, {plan.cell}, 3) uint8, got {chunk.shape}")
    m = len(chunk)
    grid = np.zeros((plan.cols * plan.cols, plan.cell, plan.cell, 3), np.uint8)
    grid[:m] = chunk[..., :3]
    grid = grid.reshape(plan.cols, plan.cols, plan.cell, plan.cell, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(grid.reshape(plan.side, plan.side, 3))


def free_gpu_memory_bytes() -> int | None:
    """Free GPU memory the GL driver reports (NVX or ATI extension), or None (Mesa, unknown)."""
    from vispy.gloo import gl

    try:
        ext = gl.glGetParameter(gl.GL_EXTENSIONS) or ""
    except Exception:
        return None
    try:
        if "GL_NVX_gpu_memory_info" in ext:
            return int(gl.glGetParameter(GL_GPU_MEM_INFO_CURRENT_AVAILABLE_MEM_NVX)) * 1024
        if "GL_ATI_meminfo" in ext:
            return int(gl.glGetParameter(GL_TEXTURE_FREE_MEMORY_ATI)) * 1024
    except Exception:
        return None
    return None


def upload_atlases(images, plan: AtlasPlan, flush=None) -> tuple[list, AtlasPlan]:
    """Build and upload the planned atlases (GL context current). Returns (gloo Texture2D list,
    the plan actually achieved).

    flush : callable that executes VisPy's queued GL commands (``canvas.context.flush_commands``);
    with it each atlas is checked for GL_OUT_OF_MEMORY right after its upload, and the upload
    stops there (the remaining images are drawn as dots), so no fixed cap is needed even where the
    driver does not report free memory.
    """
    from dataclasses import replace

    from vispy import gloo
    from vispy.gloo import gl

    textures = []
    for k in range(plan.n_atlases):
        tex = gloo.Texture2D(pack_atlas(images, plan, k), interpolation="nearest", wrapping="clamp_to_edge")
        if flush is not None:
            flush()
            if gl.glGetError() == GL_OUT_OF_MEMORY:
                tex.delete()
                flush()
                log.warning("image mode: GPU memory full after %d atlas(es)", k)
                plan = replace(plan, n_atlases=k, n_loaded=min(plan.n_total, k * plan.per_atlas))
                break
        textures.append(tex)
    log.info("image mode: %d atlas(es) of %dpx, %d of %d images", plan.n_atlases, plan.side,
             plan.n_loaded, plan.n_total)
    return textures, plan
