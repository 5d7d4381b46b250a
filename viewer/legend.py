"""The legend's content and hit tests, GL-free: named rows, coarse groups, a filter box, scrolling.

A categorical legend shows one row per class: a swatch, the class *name* and its count. With many
classes and a coarse grouping (ImageNet's 1,000 classes in 67 coarse categories) it shows one row
per group instead, each expandable into its classes (click the triangle), so a long list stays
readable. A filter box narrows the rows to names containing the typed text (groups whose name or
any member matches, opened). Rows that do not fit the legend's rectangle scroll (wheel).

Clicking a class row makes it the only class shown in full (the others fade); shift-click adds it
to, or removes it from, the classes shown; a group row acts on all of its classes; the title clears
the filter. The window keeps the set of shown classes; this module only says what was hit.
All coordinates are logical window pixels; sizes grow with the layout's ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewer.layout import Rect
from viewer.text import fit_text, text_width

ROW = 16.0
TEXT = 11.0
TITLE = 12.0
GROUP_MIN = 30   # more classes than this, with a grouping: show groups
FILTER_MIN = 12  # more rows than this: a filter box
PAD = 6.0


@dataclass(frozen=True)
class Row:
    """One legend row: ``kind`` "class" (``code`` = class code) or "group" (``code`` = group
    number, ``members`` its class codes); ``label``, ``count`` points; RGBA ``color``."""

    kind: str
    code: int
    label: str
    count: int
    color: tuple
    members: tuple[int, ...] = ()
    indent: bool = False
    expanded: bool = False


@dataclass(frozen=True)
class LegendLayout:
    """Boxes of a drawn legend: the title, the filter box (or None), the visible rows with their
    boxes, and the scroll state (first visible row, total rows)."""

    title: Rect
    filter: Rect | None
    rows: tuple[tuple[Row, Rect], ...]
    first: int
    total: int
    body: Rect


class Legend:
    """Rows of a categorical :class:`viewer.colors.Coloring` (see the module docstring).

    State: ``query`` (filter text), ``expanded`` (group numbers shown open), ``scroll`` (first row).
    """

    def __init__(self, coloring):
        self.coloring = coloring
        self.k = len(coloring.palette)
        self.groups = getattr(coloring, "groups", None)
        self.group_names = getattr(coloring, "group_names", None)
        self.grouped = self.groups is not None and self.k > GROUP_MIN
        self.query = ""
        self.expanded: set[int] = set()
        self.scroll = 0
        self._members: dict[int, tuple[int, ...]] = {}
        if self.grouped:
            g = np.asarray(self.groups, dtype=np.int64)
            for j in np.unique(g):
                self._members[int(j)] = tuple(int(c) for c in np.flatnonzero(g == j))

    def _name(self, k: int) -> str:
        cats = self.coloring.categories or ()
        return str(cats[k]) if 0 <= k < len(cats) else str(k)

    def _group_name(self, j: int) -> str:
        names = self.group_names or ()
        return str(names[j]) if 0 <= j < len(names) else f"group {j}"

    def _class_row(self, k: int, indent: bool = False) -> Row:
        counts = self.coloring.counts
        return Row("class", k, self._name(k), int(counts[k]) if counts is not None else 0,
                   tuple(float(c) for c in self.coloring.palette[k]), indent=indent)

    def rows(self) -> list[Row]:
        """The rows after the filter and the open/closed state of the groups."""
        q = self.query.strip().lower()
        if not self.grouped:
            return [self._class_row(k) for k in range(self.k) if not q or q in self._name(k).lower()]
        out = []
        counts = self.coloring.counts
        for j, members in sorted(self._members.items(), key=lambda jm: self._group_name(jm[0]).lower()):
            gname = self._group_name(j)
            hits = members if not q or q in gname.lower() else tuple(
                m for m in members if q in self._name(m).lower())
            if not hits:
                continue
            open_ = j in self.expanded or (bool(q) and q not in gname.lower())
            pal = np.asarray(self.coloring.palette)[list(members)]
            color = tuple(float(c) for c in pal[len(pal) // 2])
            total = int(sum(int(counts[m]) for m in members)) if counts is not None else 0
            out.append(Row("group", j, gname, total, color, members, False, open_))
            if open_:
                out.extend(self._class_row(m, indent=True) for m in hits)
        return out

    def has_filter_box(self) -> bool:
        return self.k > FILTER_MIN

    def preferred_width(self) -> float:
        """Width at scale 1 that shows the longest name (up to 24 characters) and its count."""
        names = [self._group_name(j) for j in self._members] if self.grouped else \
            [self._name(k) for k in range(self.k)]
        longest = max((text_width(n[:24], TEXT) for n in names), default=40.0)
        most = int(np.max(self.coloring.counts)) if self.coloring.counts is not None else 0
        count_w = text_width(f"{most:,}", TEXT)
        title_w = text_width(self.coloring.name, TITLE)
        return float(max(2 * PAD + 18 + longest + 8 + count_w + (14 if self.grouped else 0),
                         title_w + 2 * PAD, 90.0))

    def layout(self, rect: Rect, scale: float) -> LegendLayout:
        """Boxes inside ``rect`` (the layout's legend column); clamps ``scroll`` to the rows."""
        row = ROW * scale
        title = Rect(rect.x, rect.y + 2 * scale, rect.w, 20 * scale)
        y = title.y1
        filt = None
        if self.has_filter_box():
            filt = Rect(rect.x + PAD * scale, y + 2 * scale, rect.w - 2 * PAD * scale, 18 * scale)
            y = filt.y1 + 4 * scale
        rows = self.rows()
        body = Rect(rect.x, y, rect.w, max(rect.y1 - y - 4 * scale, 0.0))
        fit = max(1, int(body.h // row))
        self.scroll = int(np.clip(self.scroll, 0, max(len(rows) - fit, 0)))
        shown = rows[self.scroll: self.scroll + fit]
        boxes = tuple((r, Rect(rect.x, y + i * row, rect.w, row)) for i, r in enumerate(shown))
        return LegendLayout(title, filt, boxes, self.scroll, len(rows), body)

    def scroll_by(self, rows: int) -> None:
        self.scroll = max(0, self.scroll + int(rows))

    def hit(self, rect: Rect, scale: float, x: float, y: float):
        """What is under (x, y): ("title",), ("filter",), ("toggle", group), ("group", members
        tuple), ("class", code), or None."""
        lay = self.layout(rect, scale)
        if lay.title.contains(x, y):
            return ("title",)
        if lay.filter is not None and lay.filter.contains(x, y):
            return ("filter",)
        for r, b in lay.rows:
            if b.contains(x, y):
                if r.kind == "group":
                    if x < b.x + (PAD + 12) * scale:
                        return ("toggle", r.code)
                    return ("group", r.members)
                return ("class", r.code)
        return None

    def toggle_group(self, j: int) -> None:
        self.expanded ^= {int(j)}

    def label_of(self, r: Row, width: float, scale: float) -> str:
        """The row's name, shortened to fit ``width`` px beside its count."""
        return fit_text(r.label, TEXT * scale, width)


def apply_click(current: set | None, codes, k: int, additive: bool) -> set | None:
    """The new set of fully shown classes after clicking ``codes`` (one class or a group's classes).

    Plain click: exactly ``codes`` (clicking the only shown selection again clears it).
    Shift-click: toggle ``codes`` in the current set. None means "all shown".
    """
    codes = {int(c) for c in codes}
    if additive:
        cur = set(current or ())
        new = cur - codes if codes <= cur else cur | codes
    else:
        new = set() if current == codes else codes
    if not new or len(new) >= k:
        return None
    return new
