"""The HUD panels, drawn with :class:`viewer.overlay.Overlay` into the rectangles of a
:class:`viewer.layout.Layout`: status and message bars, the layer strip, the checkpoint slider of a
training run, the legend (named rows, groups, filter box, scroll) or colour bar, and the help
column.

Each function draws inside the rectangle it is given and nowhere else (text is shortened to fit),
so the layout alone decides what may cover what. Content and hit tests are GL-free
(:mod:`viewer.layout`, :mod:`viewer.legend`); this module only draws. Sizes scale with the
layout's ``scale``.
"""

from __future__ import annotations

import numpy as np

from viewer import legend as vlegend
from viewer.layout import COMPACT, Rect, StripRows
from viewer.text import fit_text, text_width
from viewer.timeline import SliderGeometry

TEXT = (0.86, 0.88, 0.92, 1.0)
DIM = (0.55, 0.58, 0.64, 1.0)
ACCENT = (1.0, 0.78, 0.35, 1.0)
PANEL = (0.03, 0.035, 0.045, 0.78)
EDGE = (0.22, 0.24, 0.29, 1.0)


def strip_width(names) -> float:
    """Preferred width (scale 1) of a layer strip showing ``names`` (each cut at 22 characters)."""
    return float(min(max((text_width(str(n)[:22], 12) for n in names), default=40.0) + 26, 200.0))


def help_width(entries) -> float:
    keys = max((text_width(str(k), 12) for k, _ in entries), default=30.0)
    desc = max((text_width(str(d), 12) for _, d in entries), default=100.0)
    return float(min(keys + desc + 44, 480.0))


def draw_bar(ov, rect: Rect, lines, scale: float) -> None:
    """Lines of (text, colour, size) stacked in ``rect`` from its top, each cut to its width."""
    if rect is None:
        return
    ov.rect(rect.x, rect.y, rect.x1, rect.y1, None, fill=PANEL)
    row = rect.h / max(len(lines), 1)
    for k, (text, color, size) in enumerate(lines):
        sz = size * scale
        ov.text(fit_text(text, sz, rect.w - 20 * scale), (rect.x + 10 * scale, rect.y + row * (k + 0.5)),
                color, sz, "left middle")


def draw_corner_text(ov, rect: Rect, text: str, color, size: float) -> None:
    """Right-aligned text at the right end of a bar (e.g. "? help")."""
    if rect is not None:
        ov.text(text, (rect.x1 - 8, rect.y + rect.h / 2), color, size, "right middle")


def draw_strip(ov, rect: Rect, rows: StripRows, names, current: int, hover: int | None,
               target: int | None, compact: bool, scale: float) -> None:
    """The layer strip: one row per visible layer (name right-aligned beside a dot; the current
    one in the accent colour, the transition's target filled), arrows where rows are hidden."""
    if rect is None or not rows.boxes:
        return
    size = 12 * scale if rows.boxes[0].h >= 14 * scale else 10 * scale
    dot_x = rect.x1 - COMPACT * scale / 2
    for k, b in enumerate(rows.boxes):
        i = rows.first + k
        cy = b.y + b.h / 2
        on = i == current
        color = ACCENT if on else (TEXT if i == hover else DIM)
        if not compact:
            label = fit_text(names[i], size, b.w - COMPACT * scale - 4)
            ov.text(label, (dot_x - 8 * scale, cy), color, size, "right middle")
        r = (4.0 if on else 2.5) * scale
        ov.circles([[dot_x, cy]], r, color, fill=color if on or i == target else None, segments=12)
    if rows.more_above:
        ov.text("▲", (dot_x, rows.boxes[0].y - 2), DIM, 9 * scale, "center bottom")
    if rows.more_below:
        ov.text("▼", (dot_x, rows.boxes[-1].y1 + 2), DIM, 9 * scale, "center top")


def draw_legend(ov, rect: Rect, scale: float, legend: vlegend.Legend, enabled, hover,
                filter_active: bool) -> None:
    """A categorical legend in ``rect``: title, filter box, rows of swatch + name + count;
    classes outside the legend filter dimmed; the hovered row outlined; a scroll bar when rows
    are hidden. ``enabled`` : (K,) bool or None; ``hover`` : a hit from :meth:`Legend.hit`."""
    if rect is None:
        return
    lay = legend.layout(rect, scale)
    ov.rect(rect.x, rect.y, rect.x1, rect.y1, None, fill=PANEL)
    c = legend.coloring
    title = c.name + (f"  ({legend.k:,} classes)" if legend.k > vlegend.FILTER_MIN else "")
    ov.text(fit_text(title, vlegend.TITLE * scale, rect.w - 2 * vlegend.PAD * scale),
            (rect.x + vlegend.PAD * scale, lay.title.y + lay.title.h / 2), TEXT, vlegend.TITLE * scale,
            "left middle")
    ts = vlegend.TEXT * scale
    if lay.filter is not None:
        f = lay.filter
        ov.rect(f.x, f.y, f.x1, f.y1, ACCENT if filter_active else EDGE, fill=(0.0, 0.0, 0.0, 0.35))
        shown = legend.query + ("_" if filter_active else "")
        label = shown if shown else "filter classes… (click, type)"
        ov.text(fit_text(label, ts, f.w - 8 * scale), (f.x + 4 * scale, f.y + f.h / 2),
                TEXT if shown else DIM, ts, "left middle")
    on = np.ones(legend.k, bool) if enabled is None else np.asarray(enabled, bool)
    pad = vlegend.PAD * scale
    for r, b in lay.rows:
        cy = b.y + b.h / 2
        x = b.x + pad + (12 * scale if r.indent else 0.0)
        if r.kind == "group":
            lit = any(on[m] for m in r.members)
            ov.text("▾" if r.expanded else "▸", (x, cy), DIM, ts, "left middle")
            x += 12 * scale
        else:
            lit = bool(on[r.code])
        col = tuple(r.color) if lit else tuple(np.asarray(r.color) * [0.35, 0.35, 0.35, 1.0])
        ov.circles([[x + 4.5 * scale, cy]], 4.5 * scale, col, fill=col, segments=14)
        count = f"{r.count:,}"
        cw = text_width(count, ts)
        name_w = b.x1 - pad - cw - 6 * scale - (x + 14 * scale)
        ov.text(legend.label_of(r, max(name_w, 8.0), scale), (x + 14 * scale, cy), TEXT if lit else DIM, ts,
                "left middle")
        ov.text(count, (b.x1 - pad, cy), DIM, ts, "right middle")
        is_hover = hover is not None and (
            (hover[0] == "class" and r.kind == "class" and hover[1] == r.code)
            or (hover[0] in ("group", "toggle") and r.kind == "group" and tuple(np.atleast_1d(hover[1]))
                in (r.members, (r.code,))))
        if is_hover:
            ov.rect(b.x + 1, b.y, b.x1 - 1, b.y1, (1, 1, 1, 0.7))
    if lay.total > len(lay.rows) and lay.body.h > 0:  # scroll bar
        bx = rect.x1 - 3 * scale
        frac0, frac1 = lay.first / lay.total, (lay.first + len(lay.rows)) / lay.total
        ov.rect(bx - 1.5 * scale, lay.body.y, bx + 1.5 * scale, lay.body.y1, None, fill=EDGE)
        ov.rect(bx - 1.5 * scale, lay.body.y + frac0 * lay.body.h, bx + 1.5 * scale,
                lay.body.y + frac1 * lay.body.h, None, fill=DIM)


COLORBAR_WIDTH = 112.0


def colorbar_width(name: str) -> float:
    """Preferred width (scale 1) of the colour bar of attribute ``name``: room for its title."""
    return float(min(max(COLORBAR_WIDTH, text_width(str(name), 12) + 20), 220.0))


def draw_colorbar(ov, rect: Rect, scale: float, coloring, ticks: int = 5) -> None:
    """A vertical colour bar in ``rect``: the attribute's name on top, the map from low (bottom)
    to high (top), and ``ticks`` tick values on its right."""
    if rect is None:
        return
    ov.rect(rect.x, rect.y, rect.x1, rect.y1, None, fill=PANEL)
    pad = 8 * scale
    ov.text(fit_text(coloring.name, 12 * scale, rect.w - 2 * pad), (rect.x + pad, rect.y + 14 * scale), TEXT,
            12 * scale, "left middle")
    x0, x1 = rect.x + pad, rect.x + pad + 14 * scale
    y0, y1 = rect.y + 32 * scale, rect.y + min(rect.h - 12 * scale, 32 * scale + 260 * scale)
    if y1 - y0 < 20:
        return
    bar = np.asarray(coloring.palette, np.float32)
    n = len(bar)
    j = np.arange(n)
    ys = y1 - (y1 - y0) * (j + 1) / n
    ov.quads(np.stack([np.full(n, x0), ys, np.full(n, x1), ys + (y1 - y0) / n + 0.5], 1), bar)
    ov.rect(x0, y0, x1, y1, DIM)
    lo, hi = coloring.extent if coloring.extent is not None else (0.0, 1.0)
    for t in np.linspace(0.0, 1.0, ticks):
        y = y1 - t * (y1 - y0)
        ov.lines(np.array([[x1, y], [x1 + 4 * scale, y]]), DIM)
        ov.text(f"{lo + t * (hi - lo):.3g}", (x1 + 7 * scale, y), TEXT, 11 * scale, "left middle")


def draw_help(ov, rect: Rect, entries, scale: float) -> None:
    """Every (key, description) pair in the help column."""
    if rect is None:
        return
    ov.rect(rect.x, rect.y, rect.x1, rect.y1, EDGE, fill=(0.02, 0.025, 0.035, 0.95))
    ov.text("keys and mouse", (rect.x + 12 * scale, rect.y + 16 * scale), ACCENT, 14 * scale, "left middle")
    row = min(17.0 * scale, (rect.h - 36 * scale) / max(len(entries), 1))
    size = 12 * scale if row >= 14 * scale else max(row * 0.8, 8.0)
    kw = min(max((text_width(str(k), size) for k, _ in entries), default=30.0), 0.4 * rect.w)
    for i, (key, desc) in enumerate(entries):
        y = rect.y + 34 * scale + i * row + row / 2
        ov.text(fit_text(key, size, kw), (rect.x + 12 * scale + kw, y), ACCENT, size, "right middle")
        ov.text(fit_text(desc, size, rect.w - kw - 32 * scale), (rect.x + 22 * scale + kw, y), TEXT, size,
                "left middle")


def draw_slider(ov, geom: SliderGeometry, names, position: float, playing: bool, accuracy=None,
                hover: int | None = None) -> None:
    """The checkpoint slider in ``geom.rect``: a play / pause button, the track with a tick per
    checkpoint (names under the ticks, shortened or thinned out to fit), the knob at ``position``
    (fractional between checkpoints), and, when every checkpoint has one, the accuracy through
    training as a curve above the track (``accuracy``: K values in [0, 1] or None)."""
    rect, s = geom.rect, geom.scale
    ov.rect(rect.x, rect.y, rect.x1, rect.y1, None, fill=PANEL)
    b = geom.play
    ov.rect(b.x, b.y, b.x1, b.y1, EDGE)
    cx, cy = b.x + b.w / 2, b.y + b.h / 2
    if playing:
        w = b.w * 0.12
        ov.quads(np.array([[cx - 2.5 * w, b.y + b.h * 0.28, cx - 0.8 * w, b.y1 - b.h * 0.28],
                           [cx + 0.8 * w, b.y + b.h * 0.28, cx + 2.5 * w, b.y1 - b.h * 0.28]]),
                 [ACCENT, ACCENT])
    else:
        ov.text("▶", (cx + 1, cy), ACCENT, 12 * s, "center middle")
    x0, x1, y = geom.track
    ov.lines(np.array([[x0, y], [x1, y]]), DIM)
    ticks = geom.ticks()
    k = len(ticks)
    now = int(np.floor(position + 0.5))
    curve = geom.curve(accuracy)
    if curve is not None:
        green = (0.45, 0.75, 0.55, 0.9)
        ov.lines(curve, green)
        ov.circles(curve, 1.8 * s, green, fill=green, segments=8)
        ov.circles(curve[now:now + 1], 3.0 * s, ACCENT, fill=ACCENT, segments=10)
        label = f"accuracy {100 * float(accuracy[now]):.1f}%"
        lx, ly = curve[now]
        size = 10 * s
        right = lx + 6 * s + text_width(label, size) < rect.x1 - 4 * s
        ov.text(label, (lx + 6 * s if right else lx - 6 * s, min(ly + 7 * s, y - 6 * s)), green, size,
                "left middle" if right else "right middle")
    ov.circles(np.stack([ticks, np.full(k, y)], 1), 2.5 * s, DIM, fill=DIM, segments=10)
    if hover is not None and 0 <= hover < k:
        ov.circles([[ticks[hover], y]], 5.0 * s, TEXT, segments=14)
    ov.circles([[geom.x_of(position), y]], 5.5 * s, ACCENT, fill=ACCENT, segments=16)
    size = 10 * s
    gap = (ticks[1] - ticks[0]) if k > 1 else rect.w
    widths = [text_width(str(nm), size) for nm in names]
    # every name when they fit (the end labels are aligned to the slider's ends, so they need 1.5
    # names of room), else the first, the last and the current one
    keep = set(range(k)) if 1.5 * max(widths, default=0) + 6 * s <= gap else {0, k - 1, now}
    if hover is not None:
        keep.add(hover)
    label_y = min(rect.y1 - size * 0.7, y + 11 * s)
    for i in sorted(keep):
        room = max(gap if len(keep) == k else 2.5 * gap, 24 * s)
        anchor = "left middle" if i == 0 else ("right middle" if i == k - 1 else "center middle")
        tx = ticks[i] - (4 * s if i == 0 else 0) + (4 * s if i == k - 1 else 0)
        color = ACCENT if i == now else (TEXT if i == hover else DIM)
        ov.text(fit_text(str(names[i]), size, room), (tx, label_y), color, size, anchor)
