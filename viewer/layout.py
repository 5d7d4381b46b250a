"""Where everything goes in a window, GL-free: the plot areas and the panels docked around them.

One function, :func:`compute`, takes the window size, one :class:`PaneSpec` per model shown (one,
or two side by side in the compare window) and the preferred widths of the panels, and returns a
:class:`Layout` of rectangles in logical pixels (origin top-left): a status bar on top, a message
bar at the bottom, the legend in a column on the left, each model's layer strip in a column on the
right of its plot (with the compare window's heat map at the foot of the last one), and the help
in a column on the far right while it is open. The plot areas are what is left, so no panel ever
covers one; points are drawn with the GL scissor set to their plot area, so none spill onto a
panel either. Text and rows grow with :func:`ui_scale` on large windows (a 4K render stays
readable). Columns are capped so the plots keep most of the window; a strip that cannot get its
names' width turns into a compact column of dots (the layer's name is in the status bar).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOP = 40.0        # status bar height at scale 1 (two lines)
BOTTOM = 22.0     # message bar height
COMPACT = 18.0    # a layer strip of dots only
GAP = 6.0         # between a column and its neighbour
LEGEND_MAX = 0.30  # of the window width
STRIP_MAX = 0.22   # of the window width, per strip
HELP_MAX = 0.55
PLOT_MIN = 0.5    # of the window width, all plot areas together
SLIDER = 54.0     # a checkpoint slider's height (viewer.timeline draws inside it)


def ui_scale(width: float, height: float) -> float:
    """Factor for text and row sizes: 1 up to ~1000 px on the shorter side, growing to 2.4 at 4K."""
    return float(np.clip(min(width, height) / 900.0, 1.0, 2.4))


@dataclass(frozen=True)
class Rect:
    """x, y (top-left), w, h in logical pixels."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x1(self) -> float:
        return self.x + self.w

    @property
    def y1(self) -> float:
        return self.y + self.h

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px < self.x1 and self.y <= py < self.y1

    def intersects(self, other: Rect) -> bool:
        """True when the two rectangles share an area (touching edges do not count)."""
        return (min(self.x1, other.x1) - max(self.x, other.x) > 1e-9
                and min(self.y1, other.y1) - max(self.y, other.y) > 1e-9)

    def local(self, px: float, py: float) -> tuple[float, float]:
        return px - self.x, py - self.y

    def __iter__(self):
        return iter((self.x, self.y, self.w, self.h))

    def __getitem__(self, k):
        return (self.x, self.y, self.w, self.h)[k]


@dataclass(frozen=True)
class PaneSpec:
    """What one model's column asks for: the layer strip's width with names (scale 1), and whether
    it shows a training run (a checkpoint slider docked under its plot)."""

    strip_width: float
    slider: bool = False


@dataclass(frozen=True)
class Layout:
    """The rectangles of one window (see the module docstring); None where a panel is absent."""

    size: tuple[float, float]
    scale: float
    plots: tuple[Rect, ...]
    strips: tuple[Rect | None, ...]
    compact: tuple[bool, ...]
    top: Rect | None = None
    bottom: Rect | None = None
    legend: Rect | None = None
    heatmap: Rect | None = None
    help: Rect | None = None
    panels: dict = field(default_factory=dict)
    sliders: tuple[Rect | None, ...] = ()

    def panel_rects(self) -> list[tuple[str, Rect]]:
        """Every non-plot rectangle with its name (for tests and hit testing)."""
        out = [(k, r) for k, r in (("top", self.top), ("bottom", self.bottom), ("legend", self.legend),
                                   ("heatmap", self.heatmap), ("help", self.help)) if r is not None]
        out += [(f"strip{i}", r) for i, r in enumerate(self.strips) if r is not None]
        out += [(f"slider{i}", r) for i, r in enumerate(self.sliders) if r is not None]
        return out

    def slider(self, i: int) -> Rect | None:
        """Pane ``i``'s checkpoint slider, or None."""
        return self.sliders[i] if i < len(self.sliders) else None


def compute(size, panes, *, hud: bool = True, legend_width: float = 0.0,
            heatmap_size: tuple[float, float] | None = None, help_width: float = 0.0) -> Layout:
    """Lay out a window of ``size`` (w, h) logical px for ``panes`` (list of :class:`PaneSpec`).

    legend_width, help_width : preferred widths at scale 1 (0: no such panel).
    heatmap_size : (w, h) at scale 1 of the heat map, docked under the last pane's strip, or None.
    A pane whose spec asks for a slider gets one under its plot, as wide as the plot (the plot is
    that much shorter). Without ``hud`` the plots share the whole window (no panels, no sliders).
    Raises ValueError for an empty pane list.
    """
    W, H = float(size[0]), float(size[1])
    panes = list(panes)
    if not panes:
        raise ValueError("layout needs at least one pane")
    P = len(panes)
    s = ui_scale(W, H)
    if not hud:
        xs = np.linspace(0.0, W, P + 1)
        plots = tuple(Rect(float(xs[i]), 0.0, float(xs[i + 1] - xs[i]), H) for i in range(P))
        return Layout((W, H), s, plots, (None,) * P, (True,) * P)
    top = Rect(0.0, 0.0, W, min(TOP * s, 0.2 * H))
    bottom = Rect(0.0, H - min(BOTTOM * s, 0.1 * H), W, min(BOTTOM * s, 0.1 * H))
    y0, y1 = top.y1, bottom.y
    body = max(y1 - y0, 1.0)
    hw = min(help_width * s, HELP_MAX * W) if help_width > 0 else 0.0
    lw = min(legend_width * s, LEGEND_MAX * W) if legend_width > 0 else 0.0
    hm_w = hm_h = 0.0
    if heatmap_size is not None:
        hm_w = min(heatmap_size[0] * s, 0.32 * W)
        hm_h = min(heatmap_size[1] * s, 0.6 * body)
    cols = [min(p.strip_width * s, STRIP_MAX * W) for p in panes]
    compact = [False] * P
    gaps = GAP * P + (GAP if lw else 0.0)

    def side(cols, lw, hw, hm_w):
        widths = [max(c, hm_w if i == P - 1 else 0.0) for i, c in enumerate(cols)]
        return lw + hw + sum(widths) + gaps, widths

    target = PLOT_MIN * W  # all plots together keep at least this much of the width
    total, widths = side(cols, lw, hw, hm_w)
    if W - total < target:  # names do not fit beside good plots: strips of dots
        cols = [COMPACT * s] * P
        compact = [True] * P
        total, widths = side(cols, lw, hw, hm_w)
    if W - total < target:  # still too wide: shrink the legend, help and heat map alike
        fixed = side(cols, 0.0, 0.0, 0.0)[0]
        f = max(W - target - fixed, 0.0) / max(lw + hw + hm_w, 1e-9)
        lw, hw, hm_w = lw * f, hw * f, hm_w * f
        total, widths = side(cols, lw, hw, hm_w)
    x0, xr = 0.0, W
    help_rect = Rect(xr - hw, y0, hw, body) if hw > 0 else None
    xr -= hw
    legend = None
    if lw > 0:
        legend = Rect(x0, y0, lw, body)
        x0 += lw + GAP
    pw = max((W - total) / P, 1.0)
    plots, strips, sliders = [], [], []
    x = x0
    heat = None
    slider_h = min(SLIDER * s, 0.25 * body)
    for i in range(P):
        if panes[i].slider:
            plots.append(Rect(x, y0, pw, max(body - slider_h - GAP, 1.0)))
            sliders.append(Rect(x, y1 - slider_h, pw, slider_h))
        else:
            plots.append(Rect(x, y0, pw, body))
            sliders.append(None)
        x += pw + GAP
        cw = widths[i]
        if i == P - 1 and heatmap_size is not None:
            heat = Rect(x, y1 - hm_h, cw, hm_h)
            strips.append(Rect(x, y0, cw, max(body - hm_h - GAP, 0.0)))
        else:
            strips.append(Rect(x, y0, cw, body))
        x += cw
    return Layout((W, H), s, tuple(plots), tuple(strips), tuple(compact), top, bottom, legend, heat,
                  help_rect, sliders=tuple(sliders))


# --- the layer strip's rows ------------------------------------------------------------------

ROW = 17.0


@dataclass(frozen=True)
class StripRows:
    """The visible rows of a layer strip: ``first`` (index of the top row), ``boxes`` (one Rect
    per visible layer, in order, for layers first .. first + len(boxes) - 1), and whether rows are
    hidden above or below (drawn as arrows; the wheel scrolls)."""

    first: int
    boxes: tuple[Rect, ...]
    more_above: bool
    more_below: bool

    def hit(self, x: float, y: float) -> int | None:
        for k, b in enumerate(self.boxes):
            if b.contains(x, y):
                return self.first + k
        return None


def strip_rows(n: int, rect: Rect | None, scale: float, current: int, scroll: int | None = None) -> StripRows:
    """Rows of an ``n``-layer strip in ``rect``: all of them when they fit, else a window of rows
    starting at ``scroll`` (None: centred on ``current``), clamped to the list."""
    if rect is None or n <= 0 or rect.h <= 0:
        return StripRows(0, (), False, False)
    row = ROW * scale
    fit = max(1, int(rect.h // row))
    if n <= fit:
        top = rect.y + (rect.h - n * row) / 2
        return StripRows(0, tuple(Rect(rect.x, top + i * row, rect.w, row) for i in range(n)), False, False)
    first = current - fit // 2 if scroll is None else int(scroll)
    first = int(np.clip(first, 0, n - fit))
    boxes = tuple(Rect(rect.x, rect.y + i * row, rect.w, row) for i in range(fit))
    return StripRows(first, boxes, first > 0, first + fit < n)
