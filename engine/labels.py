"""Class names and coarse groups for real image sets: the ImageNet class table, the weights' own
category list, and a coarse table such as the study's ``imagenet_coarse_categories.csv``.

A data set's raw class names are its folder names (``n01440764``) or the labels of a file list.
:func:`name_classes` turns them into display names and, when they are the model's own classes,
into the model's output indices (``targets``, what a prediction is compared with):

1. every raw name is an ImageNet-1k WordNet id -> the class index of :func:`imagenet_classes`;
   names from the weights' categories when the model has the 1,000 ImageNet outputs, else the
   table's short names;
2. else every raw name is one of the weights' categories (compared by :func:`normalize`) -> that
   category's index and spelling;
3. else the raw names themselves (no targets).

:func:`read_coarse_table` reads and checks a coarse table (one group per row: the group's name,
then its fine class names); :func:`coarse_groups` assigns each class to its group by name, trying
every name the class is known by (display, raw, ImageNet short name) and resolving a name that
matches several classes by elimination (the study's table says ``crane (bird)`` under *bird* and
``crane`` under *vehicle*; torchvision calls class 134 ``crane bird`` and class 517 ``crane``).

A leaf module: standard library only (the ImageNet table is package data, ``engine/data``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from engine.errors import UserError
from engine.files import read_regular

__all__ = ["ClassNames", "CoarseTableError", "UNASSIGNED", "coarse_groups", "imagenet_classes",
           "is_wnid", "name_classes", "normalize", "read_coarse_table"]

log = logging.getLogger("layertour")

UNASSIGNED = "unassigned"  # the coarse group of classes the table does not list
_TABLE = Path(__file__).resolve().parent / "data" / "imagenet_classes.tsv"
_WNID = re.compile(r"^n\d{8}$")
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_COARSE_LIMIT = 16 * 2**20


class CoarseTableError(UserError, ValueError):
    """A coarse table (``--coarse FILE.csv``) cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ClassNames:
    """How a data set's classes are named.

    names : display name of each class, in the data set's class order (str).
    targets : each class's index among the model's outputs, or None when the classes are not the
        model's (then no prediction can be called right or wrong).
    imagenet : each class's ImageNet-1k index, or None when the raw names are not WordNet ids.
    source : how the names were found (recorded in the bundle's provenance).
    """

    names: list[str]
    targets: list[int] | None
    imagenet: list[int] | None
    source: str


@cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1,000 ImageNet-1k classes by class index: ``(WordNet id, short name)`` (package data)."""
    rows = []
    for line in _TABLE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        idx, wnid, name = line.split("\t")
        if int(idx) != len(rows):
            raise RuntimeError(f"{_TABLE}: class {idx} out of order (a damaged installation)")
        rows.append((wnid, name))
    if len(rows) != 1000:
        raise RuntimeError(f"{_TABLE}: {len(rows)} classes instead of 1,000 (a damaged installation)")
    return tuple(rows)


@cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, (w, _) in enumerate(imagenet_classes())}


def is_wnid(name: str) -> bool:
    """True for an ImageNet-1k WordNet id such as ``n01440764``."""
    return bool(_WNID.match(name)) and name in _wnid_index()


def normalize(name: str, fold: bool = False) -> str:
    """A class name reduced for comparison: ``_`` and ``-`` as spaces, parentheses and apostrophes
    dropped, runs of spaces joined (``"crane (bird)"`` -> ``"crane bird"``); lower case with ``fold``
    (case can matter: ImageNet has the dog ``Cardigan`` and the garment ``cardigan``)."""
    s = name.replace("_", " ").replace("-", " ")
    s = re.sub(r"[()'\u2019]", "", s)
    s = " ".join(s.split())
    return s.casefold() if fold else s


def name_classes(raw: Sequence[str], categories: Sequence[str] | None = None,
                 imagenet_names: Sequence[str] | None = None) -> ClassNames:
    """Display names and model targets of the classes ``raw`` (folder names or list labels).

    categories : the model's output classes in order (torchvision weights'
        ``meta["categories"]``), or None. See the module docstring for the rules.
    imagenet_names : 1,000 names by ImageNet class index to use for WordNet ids when
        ``categories`` are not ImageNet's (torchvision's list; its spellings tell classes such as
        the two cranes apart), else the table's short names are used.
    """
    raw = [str(r) for r in raw]
    cats = None if categories is None else [str(c) for c in categories]
    if raw and all(is_wnid(r) for r in raw):
        idx = [_wnid_index()[r] for r in raw]
        if cats is not None and len(cats) == 1000:
            return ClassNames([cats[i] for i in idx], idx, idx,
                              "ImageNet WordNet ids, named by the weights' categories")
        if imagenet_names is not None and len(imagenet_names) == 1000:
            return ClassNames([str(imagenet_names[i]) for i in idx], None, idx,
                              "ImageNet WordNet ids, named by torchvision's ImageNet categories")
        short = [imagenet_classes()[i][1].replace("_", " ") for i in idx]
        return ClassNames(short, None, idx, "ImageNet WordNet ids, named by the ImageNet class table")
    if cats:
        by_name: dict[str, list[int]] = {}
        for j, c in enumerate(cats):
            by_name.setdefault(normalize(c, fold=True), []).append(j)
        hits = [by_name.get(normalize(r, fold=True), []) for r in raw]
        if raw and all(len(h) == 1 for h in hits):
            idx = [h[0] for h in hits]
            return ClassNames([cats[i] for i in idx], idx, None, "the weights' categories")
    return ClassNames(list(raw), None, None, "folder or list names")


def read_coarse_table(path) -> list[tuple[str, list[str]]]:
    """Rows ``(group, [fine class names])`` of a coarse table: a CSV (UTF-8, optional BOM) with one
    group per row, its name first; a header row whose first cell is ``category`` or ``group`` is
    skipped; empty cells are ignored. Raises :class:`CoarseTableError` naming the file and line for
    a missing or unreadable file, an empty group name, control characters, a class listed in two
    groups, or a table without groups."""
    path = Path(path)
    try:
        text = read_regular(path, limit=_COARSE_LIMIT).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CoarseTableError(f"--coarse {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                               ) from None
    except OSError as exc:
        raise CoarseTableError(f"--coarse {path}: cannot read it ({exc.strerror or exc})") from None
    rows: list[tuple[str, list[str]]] = []
    seen: dict[str, tuple[str, int]] = {}
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise CoarseTableError(f"--coarse {path}: not a CSV table ({exc})") from None
    for line, rec in enumerate(records, 1):
        cells = [c.strip() for c in rec]
        if not any(cells):
            continue
        if line == 1 and cells[0].casefold() in ("category", "group", "coarse"):
            continue
        for c in cells:
            if _CONTROL.search(c):
                raise CoarseTableError(f"--coarse {path}, line {line}: control characters in {c[:40]!r}")
        group, fine = cells[0], [c for c in cells[1:] if c]
        if not group:
            raise CoarseTableError(f"--coarse {path}, line {line}: the first cell (the group's name) is "
                                   "empty")
        for f in fine:
            key = normalize(f)
            if key in seen and seen[key][0] != group:
                raise CoarseTableError(f"--coarse {path}, line {line}: class {f!r} is also in group "
                                       f"{seen[key][0]!r} (line {seen[key][1]})")
            seen[key] = (group, line)
        rows.append((group, fine))
    if not rows:
        raise CoarseTableError(f"--coarse {path}: no groups (expected rows 'group,class,class,...')")
    return rows


def coarse_groups(classes: ClassNames, raw: Sequence[str], table: list[tuple[str, list[str]]],
                  where: str = "--coarse") -> tuple[list[int], list[str], list[str]]:
    """Each class's coarse group: ``(group index per class, group names, unmatched class names)``.

    A class is matched by any of its names (display, raw, ImageNet short name); a table entry
    that fits one class only is assigned first, which removes that class from the entries that
    fit several (elimination, repeated). An entry that still fits several classes goes to all of
    them (logged). Classes the table does not list get the group :data:`UNASSIGNED` (added at
    the end of the names), and are returned so the caller can report them.
    """
    n = len(classes.names)
    exact: dict[str, set[int]] = {}
    folded: dict[str, set[int]] = {}
    base: dict[str, set[int]] = {}  # names without a parenthesised qualifier: "maillot (tank suit)"
    for c in range(n):
        names = [classes.names[c], str(raw[c])]
        if classes.imagenet is not None:
            names.append(imagenet_classes()[classes.imagenet[c]][1])
        for s in names:
            exact.setdefault(normalize(s), set()).add(c)
            folded.setdefault(normalize(s, fold=True), set()).add(c)
            base.setdefault(normalize(_QUALIFIER.sub("", s), fold=True), set()).add(c)
    group_names = list(dict.fromkeys(g for g, _ in table))
    entries = []  # (group, name, candidate classes by precedence: exact spelling, any case, base name)
    for g, fine in table:
        for f in fine:
            levels = [exact.get(normalize(f)) or folded.get(normalize(f, fold=True)) or set(),
                      base.get(normalize(f, fold=True), set())]
            if levels[0] or levels[1]:
                entries.append((group_names.index(g), f, levels))
    entries.sort(key=lambda e: (not e[2][0], len(e[2][0] or e[2][1])))  # exact single fits first
    assigned: dict[int, int] = {}
    changed = True
    while changed:  # elimination: an entry with one free candidate (at its first level that has
        changed = False  # any) takes it; that may leave one free candidate for another entry
        for g, _f, levels in entries:
            for cands in levels:
                free = cands - assigned.keys()
                if free:
                    if len(free) == 1:
                        assigned[free.pop()] = g
                        changed = True
                    break
    for g, f, levels in entries:
        free = levels[0] - assigned.keys()
        if len(free) > 1:
            log.warning("%s: %r fits %d classes (%s); all get group %r", where, f, len(free),
                        ", ".join(classes.names[c] for c in sorted(free)[:4]), group_names[g])
            for c in free:
                assigned[c] = g
    unmatched = [classes.names[c] for c in range(n) if c not in assigned]
    codes = [assigned.get(c, -1) for c in range(n)]
    used = sorted(set(codes) - {-1})
    remap = {g: k for k, g in enumerate(used)}
    names_out = [group_names[g] for g in used]
    if unmatched:
        remap[-1] = len(names_out)
        names_out.append(UNASSIGNED)
    return [remap[c] for c in codes], names_out, unmatched
