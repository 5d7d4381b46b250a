"""The guided tour in the viewer: ``u`` turns it on and off, ``n`` picks the next index, ``w`` glides
to the best view of the selection; a HUD badge shows the index, its value and the climb.

Two parts, so the logic is tested without a window:

- :class:`GuidedMode` (GL-free): the chosen index, the pursuit objectives of the data shown and
  the switch between ``engine.tour.GrandTour`` and ``engine.tour.GuidedTour``, each started from
  the current frame (no jump), keeping speed and play state; the selection view; the HUD text.
  Statistics stay where the layer's data live (NumPy, or CuPy on the cuda/copy render paths):
  the class scatter is computed once per (layer, attribute) by ``engine.pursuit.class_scatter``
  and serves lda and pda (``engine.pursuit.scatter_objective``), after which a frame costs
  O(p^2 d) on p x p host matrices; holes/cmass (sphered, as tourr's users run them) and purity
  use the pursuit's row samples (:func:`index_options`: 5,000 / 300 rows on the CPU, 200,000 /
  1,000 on a GPU), so neither a frame nor a climb step scans all N rows.
- :class:`GuidedController`: a :class:`viewer.window.Controller` that routes a window's keys,
  frames, layer changes and saved views to the mode and draws the badge.

Which data guide the tour: the window's first pane (the single window's only one; in the
compare window model A's, whose frame is the tour's; B is drawn with Q F as always, so the
researcher sees whether B separates A's best view too). A layer or model change re-targets the
guided tour on the new layer's data from the frame shown; so does a change of the colouring to
another categorical attribute for the class indices (lda, pda, purity). Those take their classes
from the colouring when it is categorical; when it is not, they keep the attribute they had and
the badge says so, and turning the guided tour on then is refused with a message naming the
categorical attributes. Handles, brushing and rewind work as in the grand tour: a drag sets the
frame (the guided tour climbs again from there when it plays), a rewind restarts the climb.
Switching the view between 2-D and 3-D re-targets with the new dimension.

The selection view (``w``): ``engine.pursuit.selection_view`` of the brushed points against the
rest on the data pane's layer, reached along ``engine.tour.view_path`` with smoothstep easing
(:class:`viewer.viewstate.GoTo`), then held with the tour paused (space resumes the tour that
was running, guided or not). The badge shows 1 - Wilks' Lambda of the selection before and after.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from engine import pursuit as P
from engine.device import array_module, like
from engine.tour import GrandTour, GuidedTour
from viewer import hud
from viewer import layout as vlayout
from viewer.text import text_width
from viewer.viewstate import GoTo, ViewStateError
from viewer.window import Controller, key_name

__all__ = ["CLASS_INDICES", "GUIDED_HELP", "INDEX_ORDER", "GuidedController", "GuidedError", "GuidedMode",
           "SelectionHold", "check_index", "class_source", "controller_of", "index_options", "start"]

log = logging.getLogger("layertour.viewer")

INDEX_ORDER = ("lda", "pda", "holes", "cmass", "purity")  # what ``n`` cycles through
CLASS_INDICES = ("lda", "pda", "purity")
VALUE_NAMES = {"lda": "1−Λ", "pda": "PDA", "holes": "holes", "cmass": "cmass", "purity": "purity"}
GUIDED_HELP = (("u", "guided tour on / off: climb to the view the index likes best"),
               ("n", "guided tour's index: lda → pda → holes → cmass → purity"),
               ("w", "best view of the selection (LDA: selected vs the rest)"))
SAMPLE = {"holes": (5_000, 200_000), "purity": (300, 1_000)}  # rows (CPU, GPU) for the sampled indices
POLISH = {"purity": 10}  # CG iterations per restart candidate (default 20): one runs inside one frame,
# and a purity iteration (O(300^2) on the sample) costs ~1.5 ms on a CPU core
CLIMB = 10             # CG iterations of ascent per step: a climb is spread over the frames it animates
SELECTION_SECONDS = 0.8
CACHE = 16             # objectives (and scatters) kept: a few layers x indices
SETTLE_STEPS = 20_000  # steps of a still's search for the best view (about 11 min of tour at 30 fps)


class GuidedError(ValueError):
    """The guided tour cannot start as asked (unknown index, no classes to separate, no
    selection); the message says why and what to do."""


def check_index(name) -> str:
    """``name`` if it is one of :data:`INDEX_ORDER`, else :class:`GuidedError` listing them."""
    if name not in INDEX_ORDER:
        raise GuidedError(f"unknown index {name!r}: choose one of {', '.join(INDEX_ORDER)}")
    return name


def index_options(index: str, on_device: bool) -> dict:
    """The ``engine.pursuit.objective`` options the viewer uses for ``index``.

    holes/cmass: sphered (tourr's ``sphere = TRUE``; on raw layer coordinates exp(-|y|^2 / 2)
    measures the view's scale as much as its shape, so views along the layer's narrow directions
    would win cmass for being small) on a seeded row sample; purity: its O(sample^2) sample;
    pda: lam = 0.2 (Lee & Cook's default); lda: nothing (all rows, through the scatter).
    """
    if index in ("holes", "cmass"):
        return {"sphere": True, "sample": SAMPLE["holes"][on_device]}
    if index == "purity":
        return {"sample": SAMPLE["purity"][on_device]}
    if index == "pda":
        return {"lam": 0.2}
    return {}


def class_source(index: str, coloring_name: str, bundle, previous: str | None = None):
    """Where a class index takes its classes from: ``(attribute, labels (N,) host, note)``.

    The colouring ``coloring_name`` when it is a categorical attribute of ``bundle``; else
    ``previous`` (the attribute the guided tour had) with a note saying the colouring is not
    categorical; else :class:`GuidedError` naming the categorical attributes there are.
    """
    attrs = bundle.attributes
    a = attrs.get(coloring_name)
    if a is not None and a.kind == "categorical":
        return coloring_name, np.asarray(a.values), None
    what = "one colour (no classes)" if coloring_name == "none" else "continuous"
    if previous in attrs and attrs[previous].kind == "categorical":
        return previous, np.asarray(attrs[previous].values), f"colouring {coloring_name!r} is {what}"
    cats = [k for k, v in attrs.items() if v.kind == "categorical"]
    if not cats:
        raise GuidedError(f"{index} separates classes, and this bundle has no categorical attribute; "
                          "use holes or cmass")
    raise GuidedError(f"{index} takes its classes from the colouring, and {coloring_name!r} is {what}; "
                      f"colour by a categorical attribute ({', '.join(cats)})")


@dataclass
class SelectionHold:
    """The best view of a selection, gliding there (``glide``) or held (``glide`` None).

    count, n : points selected, of all; before, after : 1 - Wilks' Lambda of selected-vs-rest in
    the frame the glide started from and in ``frame`` (p, d), the selection view."""

    count: int
    n: int
    before: float
    after: float
    frame: np.ndarray
    glide: GoTo | None


class GuidedMode:
    """The guided tour's state in one window, GL-free (see the module docstring).

    index : the index ``n`` cycles and ``u`` starts; seed : seeds the tours it builds, in turn.
    ``active`` and ``tour`` (the GuidedTour while active), ``attribute`` (the categorical
    attribute a class index uses) and ``note`` (why it is not the colouring), ``hold`` (a
    :class:`SelectionHold` or None).
    """

    def __init__(self, index: str = "lda", seed: int = 0):
        self.index = check_index(index)
        self.active = False
        self.tour: GuidedTour | None = None
        self.attribute: str | None = None
        self.note: str | None = None
        self.hold: SelectionHold | None = None
        self._rng = np.random.default_rng(seed)
        self._scatters: OrderedDict = OrderedDict()
        self._objectives: OrderedDict = OrderedDict()
        self._optima: dict = {}

    # ---- objectives -----------------------------------------------------------------------------
    def scatter(self, X, key, labels, attribute) -> P.Scatter:
        """Class scatter of X (N, p) by ``labels``, once per (``key``, ``attribute``), where X lives."""
        k = (key, attribute)
        if k not in self._scatters:
            self._scatters[k] = P.class_scatter(X, labels)
            while len(self._scatters) > CACHE:
                self._scatters.popitem(last=False)
        self._scatters.move_to_end(k)
        return self._scatters[k]

    def objective(self, index: str, X, key, labels=None, attribute=None, spec: dict | None = None):
        """The Objective of ``index`` on X (N, p) (cached per data ``key``, attribute and options).

        spec : an Objective's ``spec`` to rebuild (a saved view's); default :func:`index_options`
        for X's array module. Raises ValueError from the pursuit for data it cannot use."""
        check_index(index)
        if spec is None:
            opts = index_options(index, array_module(X).__name__ == "cupy")
        else:
            opts = {k: v for k, v in spec.items() if k != "index"}
            unknown = set(opts) - {"sphere", "seed", "sample", "lam", "bandwidth"}
            if unknown:
                raise ValueError(f"unknown objective option(s) {', '.join(sorted(unknown))}")
        cls = attribute if index in CLASS_INDICES else None
        k = (key, cls, index, tuple(sorted(opts.items())))
        if k not in self._objectives:
            if index in ("lda", "pda"):
                obj = P.scatter_objective(index, self.scatter(X, key, labels, cls), **opts)
            else:
                obj = P.objective(index, X, labels if cls is not None else None, **opts)
            self._objectives[k] = obj
            while len(self._objectives) > CACHE:
                self._objectives.popitem(last=False)
        self._objectives.move_to_end(k)
        return self._objectives[k]

    def optimum(self, obj, d: int) -> float | None:
        """The closed-form optimum of an lda/pda objective for d-D views (cached), else None."""
        if obj.name not in ("lda", "pda"):
            return None
        k = (id(obj), d)
        if k not in self._optima:
            self._optima[k] = obj.maximize(d).value
            if len(self._optima) > 4 * CACHE:
                self._optima.pop(next(iter(self._optima)))
        return self._optima[k]

    # ---- switching tours ------------------------------------------------------------------------
    def _seed(self) -> int:
        return int(self._rng.integers(1 << 31))

    def start(self, tour, X, key, labels=None, attribute=None, *, note=None, play: bool = True) -> GuidedTour:
        """A GuidedTour on X (N, p) for the current index, starting exactly at ``tour``'s frame
        with its speed; playing when ``play`` (else paused). Raises :class:`GuidedError` when the
        data cannot be guided by this index (the pursuit's reason in the message)."""
        index = self.index
        if index in CLASS_INDICES and labels is None:
            raise GuidedError(f"{index} needs class labels")
        try:
            obj = self.objective(index, X, key, labels, attribute)
            self.optimum(obj, tour.d)  # fails now, not inside a frame, when the closed form cannot exist
            guided = GuidedTour(tour.p, tour.d, index=obj, start=tour.frame, seed=self._seed(),
                                speed=tour.speed, polish=POLISH.get(index, 20), climb=CLIMB)
        except ValueError as exc:
            raise GuidedError(f"{index} cannot guide this layer: {exc}") from exc
        if not play:
            guided.pause()
        self.adopt(guided, attribute if index in CLASS_INDICES else None, note)
        return guided

    def adopt(self, guided: GuidedTour, attribute: str | None, note: str | None = None) -> None:
        """Make ``guided`` this mode's running tour (its index becomes the chosen one)."""
        self.active, self.tour = True, guided
        self.index = guided.index
        if attribute is not None:
            self.attribute = attribute
        self.note = note if guided.index in CLASS_INDICES else None

    def stop(self, tour) -> GrandTour:
        """A GrandTour from ``tour``'s frame with its speed and play state; the mode is off."""
        grand = GrandTour(tour.p, tour.d, seed=self._seed(), speed=tour.speed, start=tour.frame)
        if not tour.playing:
            grand.pause()
        self.active, self.tour, self.note = False, None, None
        return grand

    def cycle(self, available=None) -> str:
        """Choose the next index in :data:`INDEX_ORDER` (among ``available`` when given)."""
        order = [i for i in INDEX_ORDER if available is None or i in available] or list(INDEX_ORDER)
        k = order.index(self.index) if self.index in order else -1
        self.index = order[(k + 1) % len(order)]
        return self.index

    # ---- the selection view ---------------------------------------------------------------------
    def selection_view(self, frame, X, mask, duration: float = SELECTION_SECONDS) -> SelectionHold:
        """Glide from ``frame`` (p, d) to the LDA view of ``mask`` (N,) bool against the rest on
        X (N, p) (``engine.pursuit.selection_view``; selection to the right). Returns the hold,
        also kept in ``hold``. Raises :class:`GuidedError` for an empty or full selection."""
        frame = np.asarray(frame, dtype=np.float64)
        mask = None if mask is None else np.asarray(mask, dtype=bool).ravel()
        count = 0 if mask is None else int(mask.sum())
        n = int(X.shape[0])
        if count == 0:
            raise GuidedError("select points first (b or l); w then shows the view that separates them")
        if count == n:
            raise GuidedError("every point is selected: nothing to separate them from (x clears)")
        d = frame.shape[1]
        try:
            F = P.selection_view(X, mask, d=d)
            Y = X @ like(np.hstack([frame, F]).astype(X.dtype), X)  # both views at once: (N, 2d)
            before, after = P.lda(Y[:, :d], mask), P.lda(Y[:, d:], mask)
        except ValueError as exc:
            raise GuidedError(f"selection view: {exc}") from exc
        self.hold = SelectionHold(count, n, before, after, F, GoTo(frame, F, duration))
        return self.hold

    # ---- what the badge says ---------------------------------------------------------------------
    def describe(self, obj) -> str:
        """The index and what it is computed on, e.g. "lda by label_coarse", "holes (sphered, 5,000 of
        50,000 rows)", "pda by label (λ 0.2)"."""
        spec, name = obj.spec, obj.name
        parts = ["sphered"] if spec.get("sphere") else []
        total = int(obj.fingerprint[0])  # every objective's fingerprint starts with the data's N
        if obj.n < total:
            parts.append(f"{obj.n:,} of {total:,} rows")
        if name == "pda":
            parts.append(f"λ {spec.get('lam', 0.2):g}")
        text = f"{name} by {self.attribute}" if name in CLASS_INDICES else name
        return text + (f" ({', '.join(parts)})" if parts else "")

    def hud_lines(self, tour) -> list[str]:
        """The badge's lines for the window's ``tour`` now (what runs, its value and status, and a
        third when the classes are not the colouring's), or [] when there is nothing to show."""
        h = self.hold
        if h is not None:
            then = "gliding" if h.glide is not None else "held (space resumes)"
            return [f"selection view: {h.count:,} selected vs {h.n - h.count:,} others (LDA)",
                    f"1−Λ {h.before:.4f} → {h.after:.4f}  ·  {then}"]
        if not self.active or tour is not self.tour:
            return []
        obj = tour.objective
        head = f"guided tour: {self.describe(obj)}"
        value = f"{VALUE_NAMES[obj.name]} {tour.value:.4f}"
        opt = self.optimum(obj, tour.d)
        value += f"  ·  optimum {opt:.4f}" if opt is not None else f"  ·  best {tour.best[0]:.4f}"
        status = tour.status + ("" if tour.playing else ", paused")
        note = [f"classes: {self.attribute} ({self.note})"] if self.note else []
        return [head, f"{value}  ·  {status}", *note]


class GuidedController(Controller):
    """``u`` / ``n`` / ``w`` and the guided badge for a window (see the module docstring).

    index : the index ``u`` starts with (default lda); seed : seeds the tours it builds. One
    instance per window: the compare window puts the same one in both panes' lists, and it acts
    for the first pane (model A) whichever pane has the focus.
    """

    help = GUIDED_HELP
    state_key = "guided"

    def __init__(self, index: str = "lda", seed: int = 0):
        self.mode = GuidedMode(index, seed)
        self._coloring_seen: str | None = None

    # ---- the window's data ------------------------------------------------------------------------
    @staticmethod
    def _window(pane_or_window):
        return getattr(pane_or_window, "window", pane_or_window)

    def _data(self, window):
        """(X (N, p) in the data's array module, cache key) of the first pane's layer (at the
        checkpoint shown, for a training run)."""
        pane = window.panes[0]
        return pane.layer_data(pane.layer_index), (pane.model.name, *pane.current_key)

    def _coloring(self, window) -> str:
        c = window.coloring_of(window.panes[0])
        return "none" if c is None else c.name

    def _classes(self, window, index):
        if index not in CLASS_INDICES:
            return None, None, None
        return class_source(index, self._coloring(window), window.bundle, self.mode.attribute)

    # ---- switching ---------------------------------------------------------------------------------
    def enable(self, window, index: str | None = None, *, play: bool = True) -> GuidedTour:
        """Start (or re-target) the guided tour of ``window`` with ``index`` (default the chosen
        one) from the frame shown. Raises :class:`GuidedError` saying why it cannot."""
        window = self._window(window)
        previous = self.mode.index
        if index is not None:
            self.mode.index = check_index(index)
        try:
            attribute, labels, note = self._classes(window, self.mode.index)
            X, key = self._data(window)
            tour = self.mode.start(window.tour, X, key, labels, attribute, note=note, play=play)
        except GuidedError:
            if index is not None and not self.mode.active:
                self.mode.index = previous
            raise
        window.tour = tour
        self._coloring_seen = self._coloring(window)
        window.update()
        return tour

    def disable(self, window) -> None:
        """Back to the grand tour, from the frame shown."""
        window = self._window(window)
        if self.mode.active:
            window.tour = self.mode.stop(window.tour)
            window.update()

    def retarget(self, window, why: str) -> None:
        """Rebuild the running guided tour on the data shown now (play state kept); if that
        cannot be, fall back to the grand tour and say why."""
        window = self._window(window)
        if not self.mode.active:
            return
        try:
            self.enable(window, play=window.tour.playing)
        except GuidedError as exc:
            self.disable(window)
            window.status_message(f"guided tour off: {exc}", 8.0)
            return
        window.status_message(f"guided tour: {self.mode.describe(self.mode.tour.objective)} ({why})")

    def settle(self, window, dt: float = 1.0 / 30.0, limit: int = SETTLE_STEPS) -> bool:
        """Run the guided tour (without drawing) until it rests on its best view, at most ``limit``
        steps of ``dt`` seconds; then show the best view found. True when the search finished."""
        window = self._window(window)
        tour = self.mode.tour
        if not self.mode.active or window.tour is not tour:
            raise GuidedError("the guided tour is not running")
        tour.play()
        for _ in range(int(limit)):
            if tour.status == "finished":
                break
            tour.step(dt)
        if tour.status == "finished":
            return True
        log.warning("the guided %s tour was still %s after %d steps of %.3g s; showing the best view "
                    "found so far", tour.index, tour.status, limit, dt)
        tour.pause()
        window.set_frame_for(window.panes[0], tour.best[1])
        return False

    def select_view(self, window) -> SelectionHold:
        """Glide to the best view of the window's selection (tour paused there)."""
        window = self._window(window)
        pane = window.panes[0]
        X, _ = self._data(window)
        hold = self.mode.selection_view(window.frame_for(pane), X, window.selection)
        window.tour.pause()
        window.update()
        return hold

    # ---- controller hooks ------------------------------------------------------------------------
    def on_key_press(self, pane, event) -> bool:
        k = key_name(event)
        if k not in ("u", "n", "w"):
            return False
        window = self._window(pane)
        try:
            if k == "u" and self.mode.active:
                self.disable(window)
                window.status_message("guided tour off: the grand tour continues from this view")
            elif k == "u":
                self.enable(window)
                window.status_message(f"guided tour: {self.mode.describe(self.mode.tour.objective)} "
                                      "(u stops, n changes the index)")
            elif k == "n":
                self._next_index(window)
            else:
                hold = self.select_view(window)
                window.status_message(f"selection view: 1−Λ {hold.before:.3f} → {hold.after:.3f} "
                                      "(space resumes)")
        except GuidedError as exc:
            window.status_message(str(exc), 8.0)
        return True

    def _next_index(self, window) -> None:
        if not self.mode.active:
            name = self.mode.cycle()
            window.status_message(f"guided tour index: {name} (u starts the guided tour)")
            return
        available, skipped = [], []
        for name in INDEX_ORDER:
            try:
                self._classes(window, name)
                available.append(name)
            except GuidedError:
                skipped.append(name)
        self.mode.cycle(available)
        self.retarget(window, "n: next index" + (f"; {', '.join(skipped)} need a categorical colouring"
                                                 if skipped else ""))

    def on_layer_changed(self, pane) -> None:
        window = self._window(pane)
        if pane is not window.panes[0]:
            return
        self.mode.hold = None
        if self.mode.active:
            layer = pane.model.layers[pane.layer_index].name
            self.retarget(window, f"re-targeted on {pane.model.name} {layer}")

    def on_frame(self, pane, dt: float) -> None:
        window = self._window(pane)
        if pane is not window.panes[0]:
            return
        mode = self.mode
        h = mode.hold
        if h is not None and h.glide is not None:
            if window.tour.playing:  # space during the glide: the tour goes on from where it is
                mode.hold = None
            else:
                F, done = h.glide.step(dt)
                window.set_frame_for(pane, F)
                if done:
                    h.glide = None
                window.update()
        elif h is not None and (window.tour.playing or not np.allclose(window.frame_for(pane), h.frame,
                                                                        rtol=0, atol=1e-9)):
            mode.hold = None  # resumed or moved on: the badge goes back to the tour
            window.update()
        if not mode.active:
            return
        if window.tour is not mode.tour:  # another part replaced the tour (2-D / 3-D): keep guiding
            self.retarget(window, f"{window.tour.d}-D")
            return
        name = self._coloring(window)
        if name != self._coloring_seen:
            self._coloring_seen = name
            if mode.index in CLASS_INDICES and name != mode.attribute:
                self.retarget(window, f"colouring {name}")

    def draw(self, pane, overlay) -> None:
        window = self._window(pane)
        if pane is not window.panes[0] or not window.show_hud:
            return
        lines = self.mode.hud_lines(window.tour)
        if not lines:
            return
        s = vlayout.ui_scale(*window.size)
        size = 12
        w = max(text_width(t, size * s) for t in lines) + 20 * s
        w = min(w, max(pane.rect.w - 16 * s, 40.0))
        h = (8 + 18 * len(lines)) * s
        rect = vlayout.Rect(8 * s, 8 * s, w, h)
        styled = [(lines[0], hud.ACCENT, size)] + [(t, hud.TEXT, size) for t in lines[1:]]
        hud.draw_bar(overlay, rect, styled, s)

    def save_state(self, pane) -> dict:
        return {"active": bool(self.mode.active), "index": self.mode.index, "attribute": self.mode.attribute}

    def restore_tour(self, pane, tour_state: dict, saved) -> bool:
        """Rebuild a saved guided tour on the data shown (the saved view's layer and colouring are
        applied by then); False (the grand tour is restored) when the view was not guided."""
        window = self._window(pane)
        if pane is not window.panes[0]:
            return False
        mode = self.mode
        mode.hold = None
        entry = saved if isinstance(saved, dict) else {}
        if entry.get("index") in INDEX_ORDER:
            mode.index = entry["index"]
        g = tour_state.get("guided") if isinstance(tour_state, dict) else None
        if not (isinstance(g, dict) and entry.get("active") is True):
            mode.active, mode.tour, mode.note = False, None, None
            return False
        spec = g.get("objective")
        if not isinstance(spec, dict) or spec.get("index") not in INDEX_ORDER:
            raise ViewStateError("view state: field 'tour.guided.objective' must name one of "
                                 f"{', '.join(INDEX_ORDER)}")
        index, attribute, labels = spec["index"], entry.get("attribute"), None
        if index in CLASS_INDICES:
            a = window.bundle.attributes.get(attribute) if isinstance(attribute, str) else None
            if a is None or a.kind != "categorical":
                raise ViewStateError("view state: field 'controllers.guided.attribute' must name a "
                                     f"categorical attribute of the bundle for {index}, got {attribute!r}")
            labels = np.asarray(a.values)
        X, key = self._data(window)
        try:
            obj = mode.objective(index, X, key, labels, attribute, spec=spec)
            tour = GuidedTour.from_state(tour_state, objective=obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ViewStateError(f"view state: the guided tour cannot be restored ({exc})") from exc
        note = None
        if index in CLASS_INDICES and self._coloring(window) != attribute:
            note = f"colouring {self._coloring(window)!r} is not {attribute!r}"
        mode.adopt(tour, attribute, note)
        window.tour = tour
        self._coloring_seen = self._coloring(window)
        return True


def controller_of(window) -> GuidedController | None:
    """The window's GuidedController (in any pane's list), or None."""
    for pane in window.panes:
        for c in pane.controllers:
            if isinstance(c, GuidedController):
                return c
    return None


def start(window, index: str) -> GuidedController:
    """Start ``window``'s guided tour with ``index`` (installing a GuidedController in every pane
    when it has none, as headless rendering needs). Raises :class:`GuidedError`."""
    ctrl = controller_of(window)
    if ctrl is None:
        ctrl = GuidedController()
        for pane in window.panes:
            pane.controllers.append(ctrl)
    ctrl.enable(window, index)
    return ctrl
