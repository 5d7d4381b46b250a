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
        model = model or args.compare[0]
        log.warning("--compare: side-by-side panels are not implemented; showing %s (press m to switch "
                    "models)", model)
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


def render(args) -> int:
    """Render the tour headless to ``args.out`` (PNG, GIF or MP4); prints the path written."""
    from viewer.headless import parse_size, render_tour

    try:
        size = parse_size(args.size)
        bundle = _load(args)
        state = _state(args)
        out = render_tour(bundle, args.out, model=args.model, layer=args.layer, size=size, frames=args.frames,
                          fps=args.fps, state=state, dims=args.dims, color=args.color,
                          render_path=args.render_path, seed=args.seed)
    except (KeyError, ValueError, IndexError) as exc:
        raise _cli_error()(str(exc).strip("'\"")) from exc
    print(f"wrote {out}")
    return 0
