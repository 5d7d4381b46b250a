"""The ``layertour`` command: ``demo``, ``prepare``, ``view``, ``render``, ``import``, ``export``,
``info``, ``similarity``, ``bench``.

Argument parsing only: each subcommand imports its stage lazily and calls one function, so
``layertour --help`` and ``layertour info`` start fast and never load torch or CuPy needlessly.

Subcommands that live above the engine (``view`` and ``render``, owned by :mod:`viewer.cli`)
are *registered*, not imported: every installed entry point of the group ``layertour.commands``
names a ``register(subparsers)`` function that adds its subcommands and sets each one's
``handler`` default (a callable taking the parsed Namespace and returning an exit status). The
engine therefore never imports the viewer, and each side owns its own options and errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.errors import UserError

EPILOG = """\
examples:
  layertour demo                                  train a small CNN on digits, embed its layers, view them
  layertour import ../shared/data/umap-tour/googlenet ../shared/data/umap-tour/resnet50 --out study.lt
  layertour view study.lt --model googlenet
  layertour render study.lt --frames 120 --out tour.gif
  layertour prepare --model googlenet --weights DEFAULT --images ~/imagenet/val --n 50000 \\
                    --layers study --coarse imagenet_coarse_categories.csv --out googlenet.lt
  layertour prepare --model resnet50 --images ~/imagenet/train --memory-budget 16 --stream \\
                    --out resnet50-1M.lt                      1.28M images in a fixed memory budget
  layertour prepare --model net.py:build --checkpoints runs/ckpt/ --images ~/data/val --out run.lt
                                                  a training run: every layer at every checkpoint
  layertour render run.lt --train 8 --layer fc --out training.gif
  layertour info                                  back end, library versions, OpenGL renderer
"""


COMMAND_GROUP = "layertour.commands"


class CliError(UserError):
    """A mistake in the engine's own subcommands' arguments: printed without a traceback, exit 2."""


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="compute back end (default auto: CUDA when available; env LAYERTOUR_DEVICE)")


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cluster", metavar="local:N",
                   help="run on a local Dask cluster of N worker processes (one per GPU with dask-cuda)")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on an existing Dask cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layertour",
        description="See how a neural network's layers organise images: record activations, embed "
                    "each layer to 15-D with UMAP, align layers with Procrustes, and explore them with "
                    "an interactive Grand Tour.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="train a small CNN on scikit-learn digits, embed, align, view",
                       description="The main job on a fresh machine: trains (seeded, cached) a small CNN "
                                   "on scikit-learn's digits keeping 6 checkpoints (the untrained network "
                                   "first), records its layers at every checkpoint, embeds them with UMAP, "
                                   "aligns everything into one frame, writes a bundle and opens the viewer "
                                   "(or, with no display, renders a GIF: the output layer through "
                                   "training, then a walk through the layers).")
    p.add_argument("--out", type=Path, default=Path("demo.lt"), help="bundle path (default demo.lt)")
    p.add_argument("--no-view", action="store_true", help="do not open a window; render a GIF instead")
    p.add_argument("--gif", type=Path,
                   help="where to write the GIF when not viewing (default <bundle>-tour.gif)")
    p.add_argument("--resume", action="store_true", help="reuse finished layers of an interrupted run")
    _add_device(p)
    _add_cluster(p)

    p = sub.add_parser("prepare", help="activations -> 15-D UMAP -> alignment -> bundle",
                       description="Record the chosen layers of one or more models over the same images, "
                                   "embed each layer with UMAP, align layers and models, write a bundle.")
    p.add_argument("--model", action="append", required=True,
                   help="torchvision model name (googlenet, resnet50, ...) or FILE.py:factory; repeat for "
                        "several models over the same images")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT (torchvision pretrained, downloads once), none (random init), or a "
                        "state-dict PATH (default DEFAULT)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR|LIST",
                     help="an image folder in ImageFolder layout (DIR/<class>/xxx.jpg), or a file list "
                          "(.txt/.tsv/.lst: one 'PATH' or 'PATH<tab>LABEL' per line; .csv: path,label; "
                          "relative paths start at the list's folder). Class names: the weights' categories "
                          "when the folders are the model's classes (ImageNet WordNet ids such as n01440764 "
                          "included), else the folder names or labels")
    src.add_argument("--digits", action="store_true", help="scikit-learn's bundled 8x8 digits (1,797 images)")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N procedural images in 10 classes, each a function of its index only "
                          "(3x224x224 for torchvision models, 3x32x32 for FILE.py models): runs at any scale "
                          "without data")
    p.add_argument("--n", type=int,
                   help="number of images (default: all), evenly spaced over the sorted files")
    p.add_argument("--coarse", type=Path, metavar="FILE.csv",
                   help="coarse groups of the classes: one row per group, 'group,class,class,...' (e.g. the "
                        "study's imagenet_coarse_categories.csv); adds the attribute label_coarse (classes "
                        "it does not list are reported and grouped as 'unassigned')")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first image that cannot be read (default: every chosen image is "
                        "decode-checked first, in parallel, and unreadable ones are left out with a count "
                        "and the first names in a warning)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help=argparse.SUPPRESS)  # the default since streaming prepare; kept for old scripts
    p.add_argument("--workers", type=int, metavar="N",
                   help="image decoding worker processes (default: CPU cores - 1, at most 16; 0 decodes in "
                        "the main process)")
    p.add_argument("--layers", default="study",
                   help="'study' (the UMAP Tour's preset for googlenet/resnet50), 'all-leaves', or "
                        "comma-separated module names (default study)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished layers of an interrupted run (and, streaming, its finished chunks)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out (only once "
                   "the new one is complete)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dim", type=int, default=15, help="embedding dimension (default 15)")
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--checkpoints", nargs="+", metavar="PATH",
                   help="record a training run: checkpoint files (state dicts or saved modules of --model's "
                        "architecture), folders of them or globs, in training order (as given; a folder's or "
                        "glob's files sorted naturally by name); every layer is recorded at every checkpoint")
    p.add_argument("--trust-checkpoints", action="store_true",
                   help="allow checkpoints that are pickled modules (PyTorch runs code from such files to "
                        "load them; only for files you trust)")
    p.add_argument("--init", default=None, choices=["spectral", "previous", "previous-checkpoint"],
                   help="UMAP init: spectral (the study's), previous (the previous layer's aligned "
                        "embedding) or previous-checkpoint (the same layer at the previous checkpoint: the "
                        "default with --checkpoints, so that images move only where the representation "
                        "changes; else spectral)")
    p.add_argument("--pooling", default="avg", choices=["avg", "max"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--umap-backend", default="auto", choices=["auto", "cuml", "umap-learn"])
    p.add_argument("--memory-budget", type=float, metavar="GiB",
                   help="memory the run's data may use: recorded activations, fit samples, fitted models, "
                        "chunk buffers (default: 60%% of free device memory, or half the available RAM). "
                        "When one layer of all N inputs does not fit, prepare streams (see --stream)")
    p.add_argument("--fit-sample", type=int, metavar="M",
                   help="fit UMAP on M seeded rows and transform the others (default when streaming: as many "
                        "as the budget holds, up to 20,000 and N/2)")
    p.add_argument("--stream", action="store_true",
                   help="stream the activations: fit each layer's PCA basis and UMAP on the fit sample, then "
                        "record, reduce and transform the other images chunk by chunk, so memory does not "
                        "grow with N (chosen automatically when the budget requires it); --resume continues "
                        "at the first unfinished chunk")
    p.add_argument("--transform-chunk", type=int, default=8192, metavar="ROWS",
                   help="sample fits: rows per UMAP transform call (default 8,192; umap-learn optimises "
                        "chunks of up to 10,000 rows for 100 epochs, larger ones for 30)")
    p.add_argument("--reduce-dims", type=int, default=256, metavar="K",
                   help="sample fits: a randomised-PCA basis of K dimensions, fitted on the sample, maps "
                        "every row before UMAP when a layer is wider (default 256; 0: none)")
    _add_device(p)
    _add_cluster(p)

    for register in _registered_commands():
        register(sub)
    parser.commands = sub.choices  # name -> subparser: lets callers ask which commands are installed

    p = sub.add_parser("import", help="import the original UMAP Tour data layout into a bundle")
    p.add_argument("dirs", nargs="+", type=Path, help="model directories (each with schema.json)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--name", action="append", help="model name for each DIR, in order (default: dir name)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")

    p = sub.add_parser("export", help="export a bundle to the original UMAP Tour layout")
    p.add_argument("bundle", type=Path)
    p.add_argument("--format", default="umap-tour", choices=["umap-tour"])
    p.add_argument("--model", action="append", help="models to export (default all)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one subdirectory per model)")

    p = sub.add_parser("similarity", help="layer-similarity matrix between two models of a bundle")
    p.add_argument("bundle", type=Path)
    p.add_argument("a", help="model A (rows)")
    p.add_argument("b", help="model B (columns)")
    p.add_argument("--out", type=Path, required=True, help="S.csv (table) or S.png (heat map)")
    _add_device(p)

    p = sub.add_parser("info", help="back end, library versions, OpenGL renderer, CUDA device")
    _add_device(p)
    p.add_argument("--no-gl", action="store_true", help="skip creating an OpenGL context")

    p = sub.add_parser("bench", help="run a benchmark script from benchmarks/")
    p.add_argument("name", help="store, tour, similarity, prepare, viewer, scale")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the script")
    return parser


def _registered_commands() -> list:
    """The ``register(subparsers)`` functions of the installed ``layertour.commands`` entry points
    (the viewer's ``view``/``render``), in name order; an entry point that fails to load is
    reported once and skipped, so the engine's own commands keep working."""
    from importlib.metadata import entry_points

    found = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception as exc:  # a broken optional part must not take the engine's commands down
            logging.getLogger("layertour").warning("subcommands %r not loaded: %s", ep.name, exc)
    return found


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "info":
        from engine.info import report

        print(report(device=args.device, gl=not args.no_gl))
        return 0
    if cmd == "import":
        from engine.studyformat import import_umap_tour

        path = import_umap_tour(args.dirs, args.out, names=args.name, overwrite=args.force)
        print(f"wrote {path}")
        return 0
    if cmd == "export":
        from engine.studyformat import export_umap_tour

        for path in export_umap_tour(args.bundle, args.out, models=args.model):
            print(f"wrote {path}")
        return 0
    if cmd == "similarity":
        from engine.export import export_similarity

        export_similarity(args.bundle, args.a, args.b, args.out, device=args.device)
        print(f"wrote {args.out}")
        return 0
    if cmd == "prepare":
        from engine.pipeline import prepare_from_args

        path = prepare_from_args(args)
        print(f"wrote {path}")
        return 0
    if cmd == "demo":
        return _demo(args)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    if cmd == "bench":
        import runpy

        script = Path(__file__).resolve().parent.parent / "benchmarks" / f"bench_{args.name}.py"
        if not script.exists():
            raise CliError(f"no benchmark {args.name!r} ({script} does not exist)")
        sys.argv = [str(script), *args.rest]
        runpy.run_path(str(script), run_name="__main__")
        return 0
    raise CliError(f"unknown command {cmd!r}")


def _demo(args: argparse.Namespace) -> int:
    """Build the demo bundle, then view it (with a display) or render a GIF of its tour."""
    import os
    import time

    from engine import load_bundle
    from engine.demo import build_demo_bundle

    t0 = time.perf_counter()
    path = build_demo_bundle(args.out, device=args.device, resume=args.resume,
                             cluster=args.cluster, scheduler=args.scheduler)
    print(f"demo bundle written to {path} in {time.perf_counter() - t0:.0f}s")
    parser = build_parser()
    if "render" not in parser.commands:
        print(f"the viewer is not installed; pip install 'layertour[viewer]', then: layertour view {path}")
        return 0
    if not args.no_view and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        view = parser.parse_args(["view", str(path)])
        return view.handler(view)
    gif = args.gif or Path(path).with_name(Path(path).stem + "-tour.gif")
    bundle = load_bundle(path)
    trained = len(bundle.checkpoints("digits-cnn")) > 1
    # The showcase: the output layer through training (a still projection, so only learning moves
    # the points; the HUD names each checkpoint and its accuracy), then every layer of the trained
    # network with animated transitions while the tour turns, with a sample of the digits drawn as
    # thumbnails for the last layers.
    train, walk, fps = 6.0, 1.3, 15
    start = train if trained else 0.0
    render = parser.parse_args([
        "render", str(path), "--size", "640x480", "--fps", str(fps), "--walk", str(walk), "--images",
        "--image-sample", "160", "--images-after", str(start + 3.5 * walk), "--out", str(gif),
        *(["--train", str(train)] if trained else [])])
    rc = render.handler(render)
    if rc == 0:
        print(f"tour rendered to {gif}; explore it with: layertour view {path}")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Errors a user can fix (bad paths, arguments, data) print one line; -v adds the traceback.
    # Every engine and viewer error type for such mistakes is a UserError (BundleError,
    # CudaUnavailableError, ViewerCliError, ...); OSError and ValueError cover the libraries'.
    user_errors: tuple[type[BaseException], ...] = (UserError, OSError, ValueError)
    try:
        return _dispatch(args)
    except user_errors as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"layertour {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"layertour {args.command}: interrupted (finished layers are kept; rerun with --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
