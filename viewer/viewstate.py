"""Saved views: capture, save, load, validate and re-apply everything needed to reproduce a view.

A view is a JSON document (host data only) of one of two kinds, the window's ``view_kind``. The
single-model window's (``"kind"`` absent in files written before the compare window had saved
views: they load as ever)::

    {"format": "layertour-view", "version": 1, "kind": "single", "bundle": name, "n": N, "p": p,
     "model": name, "layer": index, "frame": [[p x d floats]], "tour": GrandTour.state(),
     "view": canvas.view_params() (zoom/pan, colouring, dims, render path: the canvas's own keys),
     "handles": [{"label", "kind", "color", "members" | "axis"}], "selection": [indices] | null,
     "controllers": {state_key: {...}}}   (optional: what controllers add, e.g. "guided")

The compare window's (:class:`viewer.compare.CompareCanvas`: one tour, two panes)::

    {"format": "layertour-view", "version": 1, "kind": "compare", "bundle", "n", "p",
     "frame": the tour's (model A's) frame, "tour": the shared tour's state,
     "view": window.view_params() (colouring, legend filter, dims, render path, speed, heat map),
     "panes": [{"side": "a" | "b", "model": name, "layer": index,
                "view": pane.view_params() (zoom, pan, framing, layer id, checkpoint and position),
                "handles": [...], "brush": [indices] | null}, ... two, A then B],
     "selection": [indices] | null (what both panes show: the intersection of the brushes),
     "controllers": {state_key: {...}}}

B's frame is not stored: it is ``Q F`` with Q the Procrustes rotation between the two layers
shown, recomputed from the bundle. :func:`capture` reads a window of either kind; :func:`save`
writes it atomically; :func:`load` parses and validates it and raises :class:`ViewStateError`
naming the file and the field for anything malformed; :func:`check_fits` refuses a view saved for
another bundle, models or layers, or for the other kind of window; :func:`apply` puts a window
(and its panes' handle and brush state) into that view, at once or, with :class:`GoTo`, along the
geodesic ``engine.tour.view_path`` from the current frame (smoothstep, ~0.6 s).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.tour import smoothstep
from viewer.selection import write_atomic

FORMAT = "layertour-view"
VERSION = 1
KINDS = ("single", "compare")  # a window's ``view_kind``; a view without "kind" is a single one
SIDES = ("a", "b")             # the compare window's panes, in order
WINDOWS = {"single": "the single-model window (layertour view BUNDLE --state FILE)",
           "compare": "the compare window (layertour view BUNDLE --compare A B --state FILE)"}
MAX_BYTES = 64 * 2**20   # a saved view of 1M selected points is ~8 MB; anything far larger is not one
ZOOM_LIMITS = (1e-6, 1e6)  # finite, positive; the canvas clips further to its own range
PAN_LIMIT = 1e9          # |center| in data units


class ViewStateError(ValueError):
    """A saved view that cannot be read or does not fit the bundle; names the file and field."""


def kind_of(state: dict) -> str:
    """The kind of a validated view: "single" (also for files without "kind") or "compare"."""
    return state.get("kind", "single")


def capture(canvas, handles=None) -> dict:
    """The window's current view as a JSON-ready dict of its ``view_kind`` (see the module
    docstring).

    handles : for a single-model window, the :class:`viewer.handles.HandleSet` to save (default:
    the one of the canvas's handle controller, if any); a compare window saves each pane's own.
    """
    bundle, frame = canvas.bundle, np.asarray(canvas.frame, dtype=np.float64)
    sel = canvas.selection
    head = {
        "format": FORMAT, "version": VERSION, "kind": canvas.view_kind,
        "bundle": Path(str(bundle.path)).name, "n": int(bundle.n), "p": int(frame.shape[0]),
    }
    tail = {
        "frame": frame.tolist(),
        "tour": _jsonable(canvas.tour.state()),
        "view": _jsonable(canvas.view_params()),
        "selection": _indices(sel),
        "controllers": _jsonable(_controller_states(canvas)),
    }
    if canvas.view_kind == "compare":
        return {**head, **tail, "panes": [_capture_pane(pane) for pane in canvas.panes]}
    handles = handles if handles is not None else _handle_set(canvas)
    return {**head, "model": canvas.model.name, "layer": int(canvas.layer_index), **tail,
            "handles": [h.to_dict() for h in handles.handles] if handles is not None else []}


def _capture_pane(pane) -> dict:
    hs = pane.handle_set()
    return {"side": pane.side, "model": pane.model.name, "layer": int(pane.layer_index),
            "view": _jsonable(pane.view_params()),
            "handles": [h.to_dict() for h in hs.handles] if hs is not None else [],
            "brush": _indices(pane.brushed)}


def _indices(mask) -> list[int] | None:
    return None if mask is None else np.flatnonzero(np.asarray(mask)).tolist()


def _controllers(canvas):
    """(pane, controller) for every controller of the window's panes, each controller once (the
    compare window puts one saved-view and one guided controller in both panes' lists)."""
    seen = set()
    for pane in canvas.panes:
        for c in pane.controllers:
            if id(c) not in seen:
                seen.add(id(c))
                yield pane, c


def _controller_states(canvas) -> dict:
    out = {}
    for pane, c in _controllers(canvas):
        key = c.state_key
        if key and key not in out:
            entry = c.save_state(pane)
            if entry is not None:
                out[key] = entry
    return out


def save(path, state: dict) -> Path:
    """Validate ``state`` and write it to ``path`` as JSON, atomically (temp file + rename)."""
    path = Path(path)
    validate(state, source=str(path))
    write_atomic(path, json.dumps(state, indent=1))
    return path


def load(path) -> dict:
    """Read and validate a saved view; raises :class:`ViewStateError` naming the file and field.

    Only a regular file is read (a FIFO or device is refused at once, never waited on), at most
    :data:`MAX_BYTES`; JSON nested too deeply to parse is refused like any other bad JSON.
    """
    from engine.files import read_regular

    path = Path(path)
    try:
        raw = read_regular(path, limit=MAX_BYTES)
    except OSError as exc:
        raise ViewStateError(f"cannot read saved view {path}: {exc.strerror or exc}") from exc
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ViewStateError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ViewStateError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from exc
    except RecursionError:
        raise ViewStateError(f"{path} is not a saved view (JSON nested too deeply)") from None
    validate(state, source=str(path))
    return state


def validate(state, source: str = "view state") -> None:
    """Check the structure and values of a view dict of either kind; raise
    :class:`ViewStateError` naming ``source`` and the field otherwise."""
    def fail(field, why):
        raise ViewStateError(f"{source}: field {field!r} {why}")

    if not isinstance(state, dict):
        raise ViewStateError(f"{source}: a saved view must be a JSON object, got {type(state).__name__}")
    if state.get("format") != FORMAT:
        fail("format", f"must be {FORMAT!r}, got {state.get('format')!r}")
    if state.get("version") != VERSION:
        fail("version", f"must be {VERSION}, got {state.get('version')!r} (saved by another layertour?)")
    kind = state.get("kind", "single")
    if kind not in KINDS:
        fail("kind", f"must be one of {', '.join(map(repr, KINDS))}, got {kind!r:.80}")
    for key in ("n", "p") + (("layer",) if kind == "single" else ()):
        if not _count(state.get(key)):
            fail(key, f"must be a non-negative integer, got {state.get(key)!r:.80}")
    n, p = state["n"], state["p"]
    try:
        frame = np.asarray(state.get("frame"), dtype=np.float64)
    except (TypeError, ValueError):
        fail("frame", "must be a p x d list of numbers")
    if frame.ndim != 2 or frame.shape[0] != p or frame.shape[1] not in (2, 3):
        fail("frame", f"must be a {p} x d list (d = 2 or 3), got shape {frame.shape}")
    if not np.all(np.isfinite(frame)):
        fail("frame", "contains NaN or infinity")
    if not np.allclose(frame.T @ frame, np.eye(frame.shape[1]), atol=1e-6):
        fail("frame", "is not orthonormal (columns must be orthonormal p-vectors)")
    for key in ("tour", "view"):
        if not isinstance(state.get(key), dict):
            fail(key, f"must be an object, got {type(state.get(key)).__name__}")
    if kind == "single":
        _validate_model(state.get("model"), "model", fail)
    _validate_view(state["view"], fail)
    if "heatmap" in state["view"] and not isinstance(state["view"]["heatmap"], bool):
        fail("view.heatmap", f"must be true or false, got {state['view']['heatmap']!r:.80}")
    _validate_tour(state["tour"], p, frame.shape[1], fail)
    if kind == "single":
        _validate_handles(state.get("handles"), "handles", n, p, fail)
    ctrl = state.get("controllers", {})
    if not isinstance(ctrl, dict) or len(ctrl) > 64 or not all(
            isinstance(k, str) and k and isinstance(v, dict) for k, v in ctrl.items()):
        fail("controllers", "must be an object of objects (one per controller)")
    for k in ctrl:
        _validate_text(k, f"controllers.{k}", fail)
    sel = _validate_indices(state.get("selection"), "selection", n, fail)
    if kind == "compare":
        _validate_panes(state.get("panes"), n, p, sel, fail)


def _count(v) -> bool:
    """Whether ``v`` is a non-negative integer (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _validate_model(name, field, fail):
    if not isinstance(name, str):
        fail(field, f"must be a model name, got {name!r:.80}")
    _validate_text(name, field, fail)


def _validate_handles(handles, field, n, p, fail):
    if not isinstance(handles, list):
        fail(field, "must be a list")
    for k, h in enumerate(handles):
        _validate_handle(h, f"{field}[{k}]", n, p, fail)


def _validate_indices(v, field, n, fail) -> np.ndarray | None:
    """A null or a list of point indices in [0, n): the (k,) int64 indices, or None."""
    if v is None:
        return None
    idx = _index_list(v)
    if idx is None:
        fail(field, "must be null or a list of point indices")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        fail(field, f"has indices outside [0, {n})")
    return idx


def _validate_panes(panes, n, p, selection, fail):
    """A compare view's two panes (A, then B); the selection must be what their brushes make."""
    if not isinstance(panes, list) or len(panes) != len(SIDES):
        fail("panes", f"must be a list of {len(SIDES)} panes (model A's, model B's), got {panes!r:.80}")
    brushes = []
    for k, (pane, side) in enumerate(zip(panes, SIDES)):
        field = f"panes[{k}]"
        if not isinstance(pane, dict):
            fail(field, f"must be an object, got {type(pane).__name__}")
        if pane.get("side") != side:
            fail(f"{field}.side", f"must be {side!r}, got {pane.get('side')!r:.80}")
        _validate_model(pane.get("model"), f"{field}.model", fail)
        if not _count(pane.get("layer")):
            fail(f"{field}.layer", f"must be a non-negative integer, got {pane.get('layer')!r:.80}")
        if not isinstance(pane.get("view"), dict):
            fail(f"{field}.view", f"must be an object, got {type(pane.get('view')).__name__}")
        _validate_view(pane["view"], fail, f"{field}.view")
        _validate_handles(pane.get("handles"), f"{field}.handles", n, p, fail)
        brush = _validate_indices(pane.get("brush"), f"{field}.brush", n, fail)
        if brush is not None:
            brushes.append(set(brush.tolist()))
    if brushes:
        shown = set.intersection(*brushes)
        if selection is None or set(selection.tolist()) != shown:
            fail("selection", "must be the intersection of the panes' brushes (panes[k].brush)")


def _validate_text(text, field, fail):
    """Text that is drawn (names, labels) must be a short string without control characters."""
    from engine.store import text_problem

    why = text_problem(text)
    if why is not None:
        fail(field, why)


def _number(v) -> float | None:
    """``v`` as a finite float, or None (bools, strings, NaN, Inf, huge ints are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if np.isfinite(f) else None


def _validate_view(view: dict, outer_fail, prefix: str = "view"):
    """The window's and panes' own keys (see ``TourCanvas.view_params``, ``Pane.view_params``,
    ``CompareCanvas.view_params``): numbers finite and in range, text drawable. Unknown keys are
    left to the window (it ignores them). ``prefix`` names the object in messages (a compare
    view's panes: "panes[0].view")."""
    from engine.tour import MAX_SPEED

    def fail(field, why):
        outer_fail(prefix + field[len("view"):], why)

    if "zoom" in view:
        z = _number(view["zoom"])
        if z is None or not ZOOM_LIMITS[0] <= z <= ZOOM_LIMITS[1]:
            fail("view.zoom", f"must be a finite number in [{ZOOM_LIMITS[0]:g}, {ZOOM_LIMITS[1]:g}], "
                              f"got {view['zoom']!r}")
    if "center" in view:
        c = view["center"]
        if not (isinstance(c, list) and len(c) == 2
                and all(_number(x) is not None and abs(x) <= PAN_LIMIT for x in c)):
            fail("view.center", f"must be 2 finite numbers of magnitude <= {PAN_LIMIT:g}, got {c!r:.80}")
    if "fit" in view:
        f = view["fit"]
        if not (isinstance(f, list) and len(f) == 3
                and all(_number(x) is not None and abs(x) <= PAN_LIMIT for x in f) and f[2] > 0):
            fail("view.fit", f"must be [x, y, radius > 0], finite numbers of magnitude <= {PAN_LIMIT:g}, "
                             f"got {f!r:.80}")
    if "speed" in view:
        v = _number(view["speed"])
        if v is None or not 0 <= v <= MAX_SPEED:
            fail("view.speed", f"must be a number in [0, {MAX_SPEED:g}] radians/s, got {view['speed']!r}")
    if "dims" in view and view["dims"] not in (2, 3):
        fail("view.dims", f"must be 2 or 3, got {view['dims']!r}")
    for key in ("layer",):
        if key in view and (not isinstance(view[key], int) or isinstance(view[key], bool) or view[key] < 0):
            fail(f"view.{key}", f"must be a non-negative integer, got {view[key]!r}")
    if "checkpoint_position" in view:
        c = _number(view["checkpoint_position"])
        if c is None or not 0 <= c <= 1e6:
            fail("view.checkpoint_position", f"must be a finite number >= 0 (a checkpoint index, or a "
                                             f"fraction between two), got {view['checkpoint_position']!r}")
    for key in ("model", "layer_id", "color", "render_path", "checkpoint"):
        if key in view and view[key] is not None:
            _validate_text(view[key], f"view.{key}", fail)
    if "image_mode" in view and not isinstance(view["image_mode"], bool):
        fail("view.image_mode", f"must be true or false, got {view['image_mode']!r}")
    lf = view.get("legend_filter")
    if lf is not None:
        if not isinstance(lf, list) or len(lf) > 100_000:
            fail("view.legend_filter", "must be null or a list")
        for k, x in enumerate(lf):
            if isinstance(x, str):
                _validate_text(x, f"view.legend_filter[{k}]", fail)
            elif isinstance(x, bool) or not isinstance(x, int):
                fail(f"view.legend_filter[{k}]", f"must be a category (string or integer), got {x!r}")


def _validate_tour(tour: dict, p: int, d: int, fail):
    """The tour state must rebuild (``GrandTour.from_state`` checks its numbers) for this p and d."""
    from engine.tour import GrandTour

    try:
        t = GrandTour.from_state(tour)
    except ValueError as exc:
        fail("tour", f"cannot be restored ({exc})")
    if (t.p, t.d) != (p, d):
        fail("tour", f"is for p={t.p}, d={t.d} but the frame is {p} x {d}")


def _validate_handle(h, field, n, p, fail):
    if not isinstance(h, dict) or not isinstance(h.get("label"), str):
        fail(field, "must be an object with a string 'label'")
    _validate_text(h["label"], f"{field}.label", fail)
    color = h.get("color")
    if not (isinstance(color, list) and len(color) == 4
            and all(_number(c) is not None and 0.0 <= c <= 1.0 for c in color)):
        fail(f"{field}.color", "must be 4 numbers (RGBA in [0, 1])")
    if h.get("kind") == "axis":
        a = h.get("axis")
        if not isinstance(a, int) or not 0 <= a < p:
            fail(f"{field}.axis", f"must be an integer in [0, {p}), got {a!r}")
    elif h.get("kind") == "centroid":
        idx = _index_list(h.get("members"))
        if idx is None or idx.size == 0:
            fail(f"{field}.members", "must be a non-empty list of point indices")
        if idx.min() < 0 or idx.max() >= n:
            fail(f"{field}.members", f"has indices outside [0, {n})")
    else:
        fail(f"{field}.kind", f"must be 'centroid' or 'axis', got {h.get('kind')!r}")


def _index_list(v) -> np.ndarray | None:
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return None
    return np.asarray(v, dtype=np.int64)


def _jsonable(obj):
    """Convert NumPy scalars/arrays (and tuples) inside a state dict to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def check_fits(canvas, state: dict, source: str = "view state") -> None:
    """Raise :class:`ViewStateError` unless ``state`` fits this window: the same kind of window
    (a single view in a compare window, or the reverse, is refused), the bundle's N and p, models
    the bundle has and layers (and checkpoints) they have; a compare view also needs the models
    the window shows, its dimension and a colouring it offers."""
    kind, want = kind_of(state), canvas.view_kind
    if kind != want:
        raise ViewStateError(f"{source}: field 'kind' is {kind!r}: the view was saved from {WINDOWS[kind]}, "
                             f"it cannot be opened in {WINDOWS[want]}")
    n, p = int(canvas.bundle.n), int(np.asarray(canvas.frame).shape[0])
    if state["n"] != n or state["p"] != p:
        raise ViewStateError(f"{source} was saved for N={state['n']}, p={state['p']} but the bundle "
                             f"{canvas.bundle.path} has N={n}, p={p}")
    if kind == "single":
        _check_model(canvas.bundle, state["model"], state["layer"], {}, "", source)
        return
    for k, (pane, saved) in enumerate(zip(canvas.panes, state["panes"])):
        field = f"panes[{k}]"
        _check_model(canvas.bundle, saved["model"], saved["layer"], saved["view"], f"{field}.", source)
        if saved["model"] != pane.model.name:
            names = " ".join(ps["model"] for ps in state["panes"])
            raise ViewStateError(f"{source}: field '{field}.model' is {saved['model']!r} but this window's "
                                 f"pane {pane.side.upper()} shows {pane.model.name!r} (open the view with "
                                 f"--compare {names})")
    view, d = state["view"], int(np.asarray(state["frame"]).shape[1])
    if d != canvas.dims:
        raise ViewStateError(f"{source}: field 'frame' is {d}-D but this compare window shows "
                             f"{canvas.dims}-D (open it with --dims {d})")
    if "color" in view and view["color"] not in canvas.color_options:
        raise ViewStateError(f"{source}: field 'view.color' is {view['color']!r}, which this window cannot "
                             f"colour by (choices: {', '.join(canvas.color_options)})")


def _check_model(bundle, name, layer, view, prefix, source) -> None:
    """The saved model, layer and (when saved) checkpoint exist in ``bundle``."""
    model = bundle.models.get(name)
    if model is None:
        raise ViewStateError(f"{source}: field '{prefix}model' is {name!r} but the bundle has models "
                             f"{', '.join(bundle.models)}")
    if layer >= len(model.layers):
        raise ViewStateError(f"{source}: field '{prefix}layer' is {layer} but model "
                             f"{name!r} has {len(model.layers)} layers")
    names = list(bundle.checkpoints(name))
    ck = view.get("checkpoint")
    if ck is not None and len(names) > 1:
        if ck not in names:
            raise ViewStateError(f"{source}: field '{prefix}view.checkpoint' is {ck!r} but model {name!r} "
                                 f"has checkpoints {', '.join(names)}")
        pos = view.get("checkpoint_position")
        if pos is not None and pos > len(names) - 1:
            raise ViewStateError(f"{source}: field '{prefix}view.checkpoint_position' is {pos} but model "
                                 f"{name!r} has {len(names)} checkpoints (positions 0 to {len(names) - 1})")


def apply(canvas, state: dict, handles=None, animate: bool = False) -> None:
    """Put the window ``canvas`` into the saved view ``state`` (from :func:`load` or :func:`capture`).

    Restores the window's and its panes' view parameters, the layers, the selection (a compare
    window: each pane's brush), the handles (into ``handles`` or each pane's handle controller's
    set) and the tour; the frame is set at once, or, with ``animate=True``, reached along
    ``engine.tour.view_path`` by a :class:`GoTo` that the caller (the view-state controller)
    advances each frame. Returns nothing; raises :class:`ViewStateError` when the view does not
    fit the window (:func:`check_fits`).
    """
    validate(state)
    check_fits(canvas, state)
    if kind_of(state) == "compare":
        _apply_compare(canvas, state, animate)
    else:
        _apply_single(canvas, state, handles, animate)
    restore_tour(canvas, state["tour"], state)
    frame = np.asarray(state["frame"], dtype=np.float64)
    if not animate and not np.allclose(canvas.frame, frame, rtol=0, atol=1e-12):
        canvas.set_frame(frame)  # the frame was edited apart from the tour: continue from it
    canvas.update()


def _apply_single(canvas, state, handles, animate) -> None:
    view = dict(state["view"])
    view["model"] = state["model"]
    view.pop("layer", None)
    canvas.set_view_params(view)
    if int(canvas.layer_index) != state["layer"] or canvas.transition is not None:
        canvas.set_layer(state["layer"], animate=animate)
    sel = state["selection"]
    canvas.set_selection(None if sel is None else _mask(int(canvas.bundle.n), sel))
    hs = handles if handles is not None else _handle_set(canvas)
    if hs is not None:
        restore_handles(hs, state["handles"])


def _apply_compare(window, state, animate) -> None:
    """The window's colouring, filter, speed and heat map, then per pane (A, B) the layer and the
    pane's zoom, pan, framing and checkpoint, the brushes and the handles. Without ``animate`` the
    layer comes first (a layer change settles a position between checkpoints, which the saved
    position then restores) and every blend and B's re-alignment glide end at once; with it the
    checkpoint comes first and the layers blend there."""
    window.set_view_params(state["view"])
    n = int(window.bundle.n)
    for pane, saved in zip(window.panes, state["panes"]):
        if not animate:
            pane.set_layer(saved["layer"], animate=False)
        pane.set_view_params(saved["view"])
        if animate and (pane.layer_index != saved["layer"] or pane.transition is not None):
            pane.set_layer(saved["layer"], animate=True)
    window.set_selection(None)
    brushes = [saved.get("brush") for saved in state["panes"]]
    if any(b is not None for b in brushes):
        for pane, b in zip(window.panes, brushes):
            if b is not None:
                pane.set_selection(_mask(n, b))
    elif state["selection"] is not None:
        window.set_selection(_mask(n, state["selection"]))
    for pane, saved in zip(window.panes, state["panes"]):
        hs = pane.handle_set()
        if hs is not None:
            restore_handles(hs, saved["handles"])


def restore_handles(hs, items: list[dict]) -> None:
    """Replace the handles of HandleSet ``hs`` by the saved ``items`` (validated dicts)."""
    hs.clear()
    for h in items:
        if h["kind"] == "axis":
            hs.add_axis(h["axis"], label=h["label"])
        else:
            hs.add_centroid(h["members"], label=h["label"], color=h["color"])


def _mask(n: int, indices: list[int]) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[np.asarray(indices, dtype=np.int64)] = True
    return m


def restore_tour(canvas, tour_state: dict, saved: dict | None = None) -> None:
    """Load the saved tour state (speed, targets, play state) into the canvas's tour.

    saved : the whole saved view, whose "controllers" entries go to the controllers' own
    ``restore_tour`` hooks first (the guided tour rebuilds itself there, on the data shown);
    when none takes it, the tour is a ``GrandTour`` continuing the saved path (a guided state
    loads as one too)."""
    from engine.tour import GrandTour

    entries = (saved or {}).get("controllers") or {}
    for pane, c in _controllers(canvas):
        key = c.state_key
        if c.restore_tour(pane, tour_state, entries.get(key) if key else None):
            return
    tour = canvas.tour
    try:
        restored = GrandTour.from_state(tour_state)
    except (ValueError, KeyError, TypeError) as exc:
        raise ViewStateError(f"view state: field 'tour' cannot be restored ({exc})") from exc
    if (restored.p, restored.d) != (tour.p, tour.d):
        raise ViewStateError(f"view state: field 'tour' is for p={restored.p}, d={restored.d} but the "
                             f"viewer tours p={tour.p}, d={tour.d}")
    canvas.tour = restored


def _handle_set(canvas):
    """The single window's HandleSet (its pane's handle controller's), or None."""
    return canvas.panes[0].handle_set()


@dataclass
class GoTo:
    """An animated go-to-view: the frame follows ``engine.tour.view_path(start, target)`` with
    smoothstep easing over ``duration`` seconds. State: ``elapsed``; :meth:`step` returns the
    (p, d) float64 frame for the new time and whether the animation has finished."""

    start: np.ndarray
    target: np.ndarray
    duration: float = 0.6
    elapsed: float = 0.0

    def __post_init__(self):
        from engine import tour

        self.path = tour.view_path(np.asarray(self.start, dtype=np.float64),
                                   np.asarray(self.target, dtype=np.float64))

    def step(self, dt: float) -> tuple[np.ndarray, bool]:
        self.elapsed += max(float(dt), 0.0)
        done = self.elapsed >= self.duration
        if done:
            return np.asarray(self.target, dtype=np.float64).copy(), True
        return np.asarray(self.path.frame(smoothstep(self.elapsed / self.duration)), dtype=np.float64), False


def default_path(bundle, directory=None) -> Path:
    """A new file name for a saved view: ``<bundle>-view-<YYYYmmdd-HHMMSS>.json`` in ``directory``
    (default: the current directory); a counter is appended if the name is taken."""
    directory = Path(directory) if directory is not None else Path.cwd()
    stem = f"{Path(str(bundle.path)).name}-view-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = directory / f"{stem}.json", 1
    while path.exists():
        k += 1
        path = directory / f"{stem}-{k}.json"
    return path


def latest_path(bundle, directory=None) -> Path | None:
    """The most recently written saved view of ``bundle`` in ``directory`` (cwd), or None."""
    directory = Path(directory) if directory is not None else Path.cwd()
    found = sorted(directory.glob(f"{Path(str(bundle.path)).name}-view-*.json"),
                   key=lambda q: q.stat().st_mtime)
    return found[-1] if found else None
