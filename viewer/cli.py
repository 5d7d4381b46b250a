"""``layertour view`` and ``layertour render``: the viewer's side of the command line.

Both take the argparse Namespace built by ``engine.cli`` (``_add_view_args`` plus, for render,
``--size --frames --fps --out``) and return an exit status. User errors (bad size, unknown model,
layer or colouring, unreadable saved view) raise ``engine.cli.CliError`` so the command prints
them without a traceback.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("layertour.viewer")


def _cli_error():
    from engine.cli import CliError

    return CliError


def _load(args):
    from engine import load_bundle

    return load_bundle(args.bundle)


def _state(args):
    if getattr(args, "state", None) is None:
        return None
    from viewer import viewstate

    try:
        return viewstate.load(args.state)
    except (viewstate.ViewStateError, OSError) as exc:
        raise _cli_error()(f"--state {args.state}: {exc}") from exc


def view(args) -> int:
    """Open the interactive viewer window on ``args.bundle`` and run until it is closed."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise _cli_error()("no display to open a window on (no DISPLAY); use `layertour render BUNDLE "
                           "--out tour.gif` to render headless, or run under xvfb-run")
    from viewer.headless import ensure_backend

    ensure_backend("glfw")
    from vispy import app

    from viewer import controllers, viewstate
    from viewer.canvas import TourCanvas

    bundle = _load(args)
    state = _state(args)
    model = args.model or (state["model"] if state else None)
    if getattr(args, "compare", None):
        return _view_compare(args, bundle, app)
    try:
        canvas = TourCanvas(bundle, model=model, layer=args.layer, dims=args.dims, color=args.color,
                            render_path=args.render_path, seed=args.seed, show=True)
    except (KeyError, ValueError, IndexError) as exc:
        raise _cli_error()(str(exc).strip("'\"")) from exc
    controllers.install(canvas, state_path=args.state)
    if state is not None:
        viewstate.apply(canvas, state)
    canvas.status_message(f"render path: {canvas.render_path} on {canvas.gl_renderer}  (? for help)", 6.0)
    app.run()
    return 0


def _view_compare(args, bundle, app) -> int:
    """The side-by-side window for ``--compare A B`` (--layer sets both views' layer index)."""
    from viewer.compare import CompareCanvas

    if getattr(args, "state", None) is not None:
        raise _cli_error()("--state applies to the single-model view; it cannot be combined with --compare")
    a, b = args.compare
    try:
        canvas = CompareCanvas(bundle, a, b, layer_a=args.layer, layer_b=_layer_b(bundle, a, b, args.layer),
                               dims=args.dims, color=args.color, render_path=args.render_path, seed=args.seed,
                               show=True)
    except (KeyError, ValueError, IndexError) as exc:
        raise _cli_error()(f"--compare {a} {b}: {str(exc).strip(chr(39) + chr(34))}") from exc
    canvas.status_message(f"{b} aligned to {a}; t toggles the similarity heat map  (? for help)", 6.0)
    app.run()
    return 0


def _layer_b(bundle, a, b, layer):
    """--layer for model B: B's layer with that id or name when it has one, else the position of
    A's layer ``layer`` (clamped to B's depth); None stays None. Unknown models are left to the
    canvas, which names them."""
    if layer is None or a not in bundle.models or b not in bundle.models:
        return layer
    mb = bundle.models[b]
    try:
        return mb.layer(layer).index
    except KeyError:
        return min(bundle.models[a].layer(layer).index, len(mb.layers) - 1)


def render(args) -> int:
    """Render the tour headless to ``args.out`` (PNG, GIF or MP4); prints the path written."""
    from viewer.headless import parse_size, render_compare, render_tour

    try:
        size = parse_size(args.size)
        bundle = _load(args)
        state = _state(args)
        compare = getattr(args, "compare", None)
        if compare:
            if state is not None:
                raise ValueError("--state applies to the single-model view, not to --compare")
            if args.size == "800x800":  # the parser's default: give each model an 800x800 half
                size = (1600, 800)
            out = render_compare(bundle, args.out, compare[0], compare[1], layer_a=args.layer,
                                 layer_b=_layer_b(bundle, *compare, args.layer), size=size,
                                 frames=args.frames, fps=args.fps, dims=args.dims, color=args.color,
                                 render_path=args.render_path, seed=args.seed)
        else:
            out = render_tour(bundle, args.out, model=args.model, layer=args.layer, size=size,
                              frames=args.frames, fps=args.fps, state=state, dims=args.dims, color=args.color,
                              render_path=args.render_path, seed=args.seed, walk=getattr(args, "walk", None))
    except (KeyError, ValueError, IndexError) as exc:
        raise _cli_error()(str(exc).strip("'\"")) from exc
    print(f"wrote {out}")
    return 0
