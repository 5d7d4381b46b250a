"""The layer-similarity heat map of the compare view: layout and hit tests (GL-free), and drawing.

S[i, j] is the similarity of model A's layer i (rows, top to bottom) with model B's layer j
(columns, left to right), ``engine.align.similarity`` values in [0, 1]. Colours are the viewer's
continuous map (:func:`viewer.colors.continuous_colormap`) over the matrix's own range
[min S, max S] (shown on a colour bar beside the matrix), so
the structure stays visible when every pair is similar. All coordinates are logical window
pixels, origin top-left, as the overlay and VisPy mouse events use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewer import colors as vcolors
from viewer import hud as vov
from viewer.text import fit_text

MAX_W, MAX_H = 240.0, 190.0
CELL_RANGE = (3.0, 28.0)
BAR_W = 8.0


@dataclass(frozen=True)
class HeatmapLayout:
    """Where the (La, Lb) matrix is drawn: its top-left corner (x0, y0), cell size in pixels, and
    the colour bar's box (x0, y0, x1, y1)."""

    x0: float
    y0: float
    cell: float
    rows: int
    cols: int
    bar: tuple[float, float, float, float]

    @property
    def x1(self) -> float:
        return self.x0 + self.cols * self.cell

    @property
    def y1(self) -> float:
        return self.y0 + self.rows * self.cell

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(i, j) of the cell under pixel (x, y), or None outside the matrix."""
        if not (self.x0 <= x < self.x1 and self.y0 <= y < self.y1):
            return None
        return int((y - self.y0) // self.cell), int((x - self.x0) // self.cell)

    def cell_center(self, i: int, j: int) -> tuple[float, float]:
        return self.x0 + (j + 0.5) * self.cell, self.y0 + (i + 0.5) * self.cell


def heatmap_layout(rows: int, cols: int, right: float, bottom: float) -> HeatmapLayout:
    """Layout of a rows x cols matrix whose colour bar ends at x = ``right`` and whose bottom edge
    is at y = ``bottom`` (cells square, between 3 and 16 px, the matrix within 240 x 190 px)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"heat map needs at least one row and column, got {rows} x {cols}")
    cell = float(np.clip(min(MAX_W / cols, MAX_H / rows), *CELL_RANGE))
    cell = float(np.floor(cell))
    bx1 = float(right)
    bx0 = bx1 - BAR_W
    x1 = bx0 - 10.0
    x0 = x1 - cols * cell
    y1 = float(bottom)
    y0 = y1 - rows * cell
    return HeatmapLayout(x0, y0, cell, rows, cols, (bx0, y0, bx1, y1))


LABEL_W = 40.0  # room for the colour bar's tick labels right of it
TEXT_H = 40.0   # two lines of text above the matrix


def heatmap_size(rows: int, cols: int) -> tuple[float, float]:
    """Preferred (w, h) in logical px (scale 1) of the heat map panel for a rows x cols matrix."""
    cell = float(np.floor(np.clip(min(MAX_W / max(cols, 1), MAX_H / max(rows, 1)), *CELL_RANGE)))
    return cols * cell + 10.0 + BAR_W + LABEL_W + 12.0, rows * cell + TEXT_H + 16.0


def heatmap_in(rect, rows: int, cols: int) -> HeatmapLayout:
    """The matrix laid out inside the panel ``rect`` (a :class:`viewer.layout.Rect`): cells as
    large as fit (at most CELL_RANGE[1], at least 2 px), the colour bar and labels at the right."""
    if rows < 1 or cols < 1:
        raise ValueError(f"heat map needs at least one row and column, got {rows} x {cols}")
    cell = np.floor(min((rect.w - 10.0 - BAR_W - LABEL_W - 12.0) / cols, (rect.h - TEXT_H - 16.0) / rows,
                        CELL_RANGE[1]))
    cell = float(max(cell, 2.0))
    bx1 = rect.x1 - LABEL_W
    bx0 = bx1 - BAR_W
    x0 = bx0 - 10.0 - cols * cell
    y1 = rect.y1 - 8.0
    y0 = y1 - rows * cell
    return HeatmapLayout(x0, y0, cell, rows, cols, (bx0, y0, bx1, y1))


def heat_colors(S: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """(La*Lb, 4) float32 RGBA per cell (row-major) and the (lo, hi) range the colours span."""
    S = np.asarray(S, dtype=np.float64)
    finite = S[np.isfinite(S)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    cmap = vcolors.continuous_colormap(vcolors.N_CONTINUOUS)
    t = np.clip(np.nan_to_num((S - lo) / span, nan=0.0), 0.0, 1.0)
    return cmap[np.round(t * (len(cmap) - 1)).astype(int).ravel()], (lo, hi)


def draw_heatmap(ov, lay: HeatmapLayout, S: np.ndarray, current: tuple[int, int],
                 hover: tuple[int, int] | None, names_a, names_b, model_a: str, model_b: str,
                 rect=None) -> None:
    """Draw the matrix, its colour bar, the current pair (white outline) and, when hovering, both
    layer names and the value, inside the panel ``rect`` (text cut to its width). ``ov`` is a
    window-sized :class:`viewer.overlay.Overlay`."""
    cols, (lo, hi) = heat_colors(S)
    c = lay.cell
    i, j = current
    xr = lay.bar[2] + 28.0 if rect is None else rect.x1 - 6.0
    if hover is not None:
        hi_, hj = hover
        lines = (f"{model_a} {names_a[hi_]}  ×  {model_b} {names_b[hj]}",
                 f"similarity {float(S[hi_, hj]):.3f}   (click: show this pair)")
        colors = (vov.TEXT, vov.ACCENT)
    else:
        lines = (f"layer similarity: {model_a} (rows) × {model_b} (columns)",
                 f"{model_a} {names_a[i]} × {model_b} {names_b[j]}: {float(S[i, j]):.3f}")
        colors = (vov.TEXT, vov.DIM)
    if rect is not None:
        lines = tuple(fit_text(s, 11, rect.w - 12) for s in lines)
        ov.rect(rect.x, rect.y, rect.x1, rect.y1, None, fill=vov.PANEL)
    else:
        tw = max(ov.text_size(s, 11)[0] for s in lines)
        ov.rect(min(lay.x0, xr - tw) - 8, lay.y0 - 40, xr + 6, lay.y1 + 8, None, fill=vov.PANEL)
    for k, (s, col) in enumerate(zip(lines, colors)):
        ov.text(s, (xr, lay.y0 - 28 + 16 * k), col, 11, "right middle")
    ii, jj = np.divmod(np.arange(lay.rows * lay.cols), lay.cols)
    boxes = np.stack([lay.x0 + jj * c, lay.y0 + ii * c, lay.x0 + (jj + 1) * c, lay.y0 + (ii + 1) * c], 1)
    ov.quads(boxes, cols)
    bar = vcolors.continuous_colormap(64)
    bx0, by0, bx1, by1 = lay.bar
    k = np.arange(len(bar))
    ys = by1 - (by1 - by0) * (k + 1) / len(bar)
    ov.quads(np.stack([np.full(len(k), bx0), ys, np.full(len(k), bx1), ys + (by1 - by0) / len(bar) + 0.5], 1),
             bar)
    ov.text(f"{hi:.2f}", (bx1 + 3, by0 + 4), vov.DIM, 10, "left middle")
    ov.text(f"{lo:.2f}", (bx1 + 3, by1 - 4), vov.DIM, 10, "left middle")
    ov.rect(lay.x0 + j * c - 1, lay.y0 + i * c - 1, lay.x0 + (j + 1) * c + 1, lay.y0 + (i + 1) * c + 1,
            (1, 1, 1, 1))
    if hover is not None:
        ov.rect(lay.x0 + hj * c, lay.y0 + hi_ * c, lay.x0 + (hj + 1) * c, lay.y0 + (hi_ + 1) * c, vov.ACCENT)
