"""``layertour view`` and ``layertour render``: the viewer's side of the command line.

The viewer owns these subcommands whole: :func:`register` (the ``layertour.commands`` entry
point that ``engine.cli`` loads) adds their options and handlers to the ``layertour`` parser,
and user errors (bad size, unknown model, layer or colouring, unreadable saved view) raise
:class:`ViewerCliError`, an ``engine.errors.UserError``, so the command prints them on one line
without a traceback. Importing this module is cheap: VisPy loads only when a handler runs.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from engine.errors import UserError

DEFAULT_SPEED = 0.8  # rad/s; the same as viewer.window.DEFAULT_SPEED (checked by a test), kept here so
# that ``--help`` does not import VisPy

log = logging.getLogger("layertour.viewer")


class ViewerCliError(UserError):
    """A mistake in the arguments of ``view`` or ``render``; the message names the argument."""


def _add_view_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory (from prepare, import or demo)")
    p.add_argument("--model", help="model to show (default: the bundle's first model)")
    p.add_argument("--layer", help="layer id or index to start on (default: the first layer)")
    p.add_argument("--checkpoint", help="for a training run: the checkpoint (name or index) to show (default "
                   "the last: the trained model; with --compare, for the sides without @CHECKPOINT)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="show models A and B side by side; MODEL@CHECKPOINT names a checkpoint of a training "
                        "run, so --compare net@step-0 net@step-690 shows two states of one model")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3], help="2-D or 3-D projection (default 2)")
    p.add_argument("--state", type=Path, help="saved view (JSON, from v in the viewer) to start from; a view "
                   "saved in the compare window opens it (with --compare A B: those two models)")
    p.add_argument("--color", help="attribute to colour by (default: the bundle's default label set)")
    p.add_argument("--render-path", default="auto", choices=["auto", "cuda", "copy", "shader"],
                   help="auto picks CUDA-GL interop on NVIDIA, else the vertex-shader path")
    p.add_argument("--seed", type=int, default=0, help="seed of the tour's random targets")
    p.add_argument("--speed", type=_speed, default=None, metavar="RAD_PER_S",
                   help=f"tour speed in radians per second (default {DEFAULT_SPEED:g}; + and - change it "
                        "live)")
    p.add_argument("--guided", type=_guided_index, metavar="INDEX",
                   help="start in the guided tour, which climbs to the view where INDEX is highest: "
                        "lda / pda (classes separate; PDA is penalised LDA), purity (neighbours share a "
                        "class), holes / cmass (an empty / a dense centre). The class indices take "
                        "their classes from --color, which must be categorical. In the viewer u turns it "
                        "on and off, n picks the next index, w shows the best view of the selection; "
                        "with --compare it climbs model A's index")


GUIDED_INDICES = ("lda", "pda", "holes", "cmass", "purity")  # viewer.guided.INDEX_ORDER (checked by a
# test), kept here so that ``--help`` does not import VisPy
CLASS_INDICES = ("lda", "pda", "purity")


def _guided_index(text: str) -> str:
    if text not in GUIDED_INDICES:
        names = ", ".join(GUIDED_INDICES)
        raise argparse.ArgumentTypeError(f"unknown index {text!r} (choose one of {names})")
    return text


def _check_guided(args, bundle) -> None:
    """Refuse a class index whose colouring has no classes before any window opens."""
    index = getattr(args, "guided", None)
    if index not in CLASS_INDICES:
        return
    attrs = bundle.attributes
    color = args.color
    if color is None:
        default = getattr(bundle, "default_attribute", None)
        color = default if default in attrs else next(iter(attrs), "none")
    if color not in attrs and color not in ("none", "movement", "difference"):
        return  # an unknown attribute: the window names it
    from viewer.guided import GuidedError, class_source

    try:
        class_source(index, color, bundle)
    except GuidedError as exc:
        raise _guided_error(args, exc) from exc


def _guided_error(args, exc) -> ViewerCliError:
    opt = f"--guided {args.guided}" + (f" --color {args.color}" if args.color else "")
    hint = " with --color" if "categorical attribute (" in str(exc) else ""
    return ViewerCliError(f"{opt}: {exc}{hint}")


def _start_guided(args, canvas) -> None:
    if getattr(args, "guided", None) is None:
        return
    from viewer import guided

    try:
        guided.start(canvas, args.guided)
    except guided.GuidedError as exc:
        canvas.close()
        raise _guided_error(args, exc) from exc


def _speed(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number of radians per second, got {text!r}") \
            from None
    if not (v >= 0 and v < 100):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"--speed must be between 0 and 100 rad/s, got {text!r}")
    return v


def register(sub) -> None:
    """Add ``view`` and ``render`` to the ``layertour`` subparsers ``sub`` (an argparse
    subparsers action); each sets ``handler`` to the function that runs it."""
    p = sub.add_parser("view", help="open the interactive Grand Tour viewer on a bundle")
    _add_view_args(p)
    p.add_argument("--size", default=None,
                   help="window size WxH in logical pixels (default 1100x820; with --compare 1600x860)")
    p.set_defaults(handler=_needs_vispy(view))

    p = sub.add_parser("render", help="render a bundle's tour headless to PNG, GIF or MP4")
    _add_view_args(p)
    p.add_argument("--size", default="800x800",
                   help="WxH in pixels, up to 3840x2160 (4K) and beyond where the GL allows (default "
                        "800x800; "
                        "with --compare 1600x800)")
    p.add_argument("--no-hud", dest="hud", action="store_false",
                   help="points only, no text or panels (figures for papers)")
    p.add_argument("--images", action="store_true", help="draw each point as its thumbnail (image mode)")
    p.add_argument("--frames", type=int, default=1,
                   help="frames to render (1 = a still; with --guided a still is the best view found, a "
                        "clip shows the climb)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--walk", type=float, metavar="SECONDS",
                   help="step to the next layer every SECONDS (animated), to show every layer")
    p.add_argument("--train", type=float, metavar="SECONDS",
                   help="training run: sweep one layer (--layer, default the last) from the first to the "
                        "last checkpoint in SECONDS, on a still projection (unless --speed); with --walk the "
                        "layer walk follows at the last checkpoint. --frames defaults to the whole clip")
    p.add_argument("--image-sample", type=int, metavar="N",
                   help="with --images: only a seeded sample of N points as thumbnails (the rest as dots)")
    p.add_argument("--images-after", type=float, metavar="SECONDS",
                   help="with --images: switch to thumbnails SECONDS into the clip")
    p.add_argument("--out", type=Path, required=True, help="FILE.png, FILE.gif or FILE.mp4")
    p.set_defaults(handler=_needs_vispy(render))


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
        raise ViewerCliError(f"--state {args.state}: {exc}") from exc


def _needs_vispy(run):
    """``run`` with a missing viewer dependency turned into one line that says what to install."""
    def handler(args) -> int:
        try:
            import vispy  # noqa: F401
        except ImportError as exc:
            raise ViewerCliError(f"the viewer is not installed ({exc}); "
                                 "pip install 'layertour[viewer]'") from exc
        return run(args)

    handler.__doc__ = run.__doc__
    return handler


def view(args) -> int:
    """Open the interactive viewer window on ``args.bundle`` and run until it is closed."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ViewerCliError("no display to open a window on (no DISPLAY); use `layertour render BUNDLE "
                           "--out tour.gif` to render headless, or run under xvfb-run")
    from viewer.headless import ensure_backend

    ensure_backend("glfw")
    from vispy import app

    from viewer import controllers
    from viewer.canvas import TourCanvas

    try:
        size = None if args.size is None else _parse_size(args.size)
    except ValueError as exc:
        raise ViewerCliError(str(exc)) from exc
    bundle = _load(args)
    state = _state(args)
    _check_guided(args, bundle)
    if getattr(args, "compare", None) or _compare_state(state):
        return _view_compare(args, bundle, app, size, state)
    model = args.model or (state["model"] if state else None)
    try:
        canvas = TourCanvas(bundle, model=model, layer=args.layer, dims=args.dims, color=args.color,
                            render_path=args.render_path, seed=args.seed, show=True, size=size or (1100, 820),
                            speed=args.speed, checkpoint=_checkpoint(args))
    except (KeyError, ValueError, IndexError) as exc:
        raise ViewerCliError(str(exc).strip("'\"")) from exc
    controllers.install(canvas, state_path=args.state)
    _apply_state(args, canvas, state)
    _start_guided(args, canvas)
    canvas.status_message(f"render path: {canvas.render_path} on {canvas.gl_renderer}  (? for help)", 6.0)
    app.run()
    return 0


def _compare_state(state) -> bool:
    """Whether a loaded --state view was saved in the compare window."""
    from viewer.viewstate import kind_of

    return state is not None and kind_of(state) == "compare"


def _apply_state(args, canvas, state) -> None:
    """Put a new window into the --state view; a view that does not fit it (another bundle, models
    or layers, or the other kind of window) closes the window and is one line naming the file."""
    if state is None:
        return
    from viewer import viewstate

    try:
        viewstate.check_fits(canvas, state, source=str(args.state))
        viewstate.apply(canvas, state)
    except (viewstate.ViewStateError, KeyError, ValueError) as exc:
        canvas.close()
        raise ViewerCliError(f"--state {args.state}: {str(exc).strip(chr(39) + chr(34))}") from exc


def _state_sides(state):
    """--compare's two sides from a saved compare view: its models (the view sets the checkpoints)."""
    return tuple((pane["model"], None) for pane in state["panes"])


def _parse_size(text):
    from viewer.headless import parse_size

    return parse_size(text)


def _checkpoint(args):
    """``--checkpoint`` as a name, or as an index when it is all digits (or a negative number)."""
    c = getattr(args, "checkpoint", None)
    if c is not None and c.lstrip("-").isdigit():
        return int(c)
    return c


def compare_sides(spec, default=None):
    """``--compare A B`` -> ((model, checkpoint or None), (model, checkpoint or None)): each side
    is MODEL or MODEL@CHECKPOINT (a checkpoint name or index of that model's training run); a side
    without one gets ``default`` (``--checkpoint``)."""
    out = []
    for side in spec:
        model, sep, ck = str(side).partition("@")
        if sep and not ck:
            raise ViewerCliError(f"--compare {side}: give MODEL@CHECKPOINT with a checkpoint name or index")
        out.append((model, (int(ck) if ck.lstrip("-").isdigit() else ck) if sep else default))
    return tuple(out)


def _view_compare(args, bundle, app, size, state=None) -> int:
    """The side-by-side window for ``--compare A B`` (--layer sets both views' layer index), or for
    a --state view saved in the compare window (its models when --compare is not given)."""
    from viewer.compare import CompareCanvas

    if args.compare:
        (a, ca), (b, cb) = compare_sides(args.compare, _checkpoint(args))
    else:
        (a, ca), (b, cb) = _state_sides(state)
    spec = " ".join(args.compare or (a, b))
    dims = len(state["frame"][0]) if state is not None else args.dims  # as the single view's --state does
    try:
        canvas = CompareCanvas(bundle, a, b, layer_a=args.layer, layer_b=_layer_b(bundle, a, b, args.layer),
                               dims=dims, color=args.color, render_path=args.render_path, seed=args.seed,
                               show=True, size=size or (1600, 860), speed=args.speed, checkpoint_a=ca,
                               checkpoint_b=cb, state_path=args.state)
    except (KeyError, ValueError, IndexError) as exc:
        why = str(exc).strip(chr(39) + chr(34))
        raise ViewerCliError(f"--compare {spec}: {why}") from exc
    _apply_state(args, canvas, state)
    _start_guided(args, canvas)
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
        _check_guided(args, bundle)
        compare = getattr(args, "compare", None)
        if compare or _compare_state(state):
            if getattr(args, "train", None) is not None:
                raise ValueError("--train renders one model's training run; it cannot be combined with "
                                 "--compare")
            if args.size == "800x800":  # the parser's default: give each model an 800x800 half
                size = (1600, 800)
            (a, ca), (b, cb) = compare_sides(compare, _checkpoint(args)) if compare else _state_sides(state)
            out = render_compare(bundle, args.out, a, b, layer_a=args.layer,
                                 layer_b=_layer_b(bundle, a, b, args.layer), size=size,
                                 frames=args.frames, fps=args.fps, dims=args.dims, color=args.color,
                                 render_path=args.render_path, seed=args.seed, hud=args.hud, speed=args.speed,
                                 checkpoint_a=ca, checkpoint_b=cb, guided=args.guided,
                                 state=args.state if state is not None else None)
        else:
            for opt in ("image_sample", "images_after"):
                if getattr(args, opt, None) is not None and not args.images:
                    raise ValueError(f"--{opt.replace('_', '-')} needs --images")
            sample = getattr(args, "image_sample", None)
            if sample is not None and sample < 1:
                raise ValueError(f"--image-sample must be >= 1, got {sample}")
            out = render_tour(bundle, args.out, model=args.model, layer=args.layer, size=size,
                              frames=args.frames, fps=args.fps, state=state, dims=args.dims, color=args.color,
                              render_path=args.render_path, seed=args.seed, walk=getattr(args, "walk", None),
                              hud=args.hud, speed=args.speed, images=args.images, guided=args.guided,
                              checkpoint=_checkpoint(args), train=getattr(args, "train", None),
                              image_sample=sample, images_after=getattr(args, "images_after", None))
    except (KeyError, ValueError, IndexError) as exc:
        from viewer.guided import GuidedError

        if isinstance(exc, GuidedError):
            raise _guided_error(args, exc) from exc
        raise ViewerCliError(str(exc).strip("'\"")) from exc
    print(f"wrote {out}")
    return 0
