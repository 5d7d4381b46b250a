"""Headless rendering of a bundle's tour to PNG, GIF or MP4 with the viewer's own drawing code.

The window is a hidden VisPy canvas: the glfw back end when a display exists (a real X server or
Xvfb), otherwise the offscreen context :mod:`viewer.offscreen` chooses (EGL — NVIDIA's driver on a
headless GPU machine, which CUDA–GL interop needs, or Mesa's surfaceless platform — then OSMesa).
Frames are read back with ``canvas.render()`` (an FBO the size of the canvas) and the tour advances
by exactly ``1/fps`` seconds between frames, so the output does not depend on how fast the machine
draws.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("layertour.viewer")

FORMATS = (".png", ".gif", ".mp4")


def ensure_backend(prefer: str | None = None) -> str:
    """Select VisPy's app back end once: ``prefer``, else glfw with a display, else the offscreen
    order of :func:`viewer.offscreen.select_app` (EGL, then OSMesa).

    Returns the back end's name. When an application already exists (e.g. a test session chose
    glfw), that one is kept.
    """
    from viewer import offscreen

    current = offscreen.running_app()
    if current is not None:
        return current
    if prefer is None and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        prefer = "glfw"
    return offscreen.select_app(prefer)


def parse_size(text: str) -> tuple[int, int]:
    """"800x600" -> (800, 600); raises ValueError naming --size."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 800x600, got {text!r}") from None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise ValueError(f"--size {text!r}: width and height must be between 16 and 16384")
    return w, h


class _FrameSink:
    """Writes frames to ``out`` atomically: into ``.<name>.tmp<suffix>`` beside it, renamed into
    place on success and removed on failure, so an interrupted render never leaves a truncated
    file at ``out``. MP4 frames are encoded as they come (a long clip is never held in memory);
    a GIF is assembled at the end (its palette is chosen over all frames); a PNG keeps the last."""

    def __init__(self, out: Path, fps: int):
        self.out, self.fps = out, fps
        self.ext = out.suffix.lower()
        self.tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
        self.frames: list[np.ndarray] = []
        self.writer = None

    def __enter__(self):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        return self

    def append(self, frame: np.ndarray) -> None:
        if self.ext != ".mp4":
            self.frames = [frame] if self.ext == ".png" else self.frames + [frame]
            return
        if self.writer is None:
            import imageio.v2 as iio2

            self.writer = iio2.get_writer(self.tmp, format="FFMPEG", fps=self.fps, codec="libx264", quality=8,
                                          macro_block_size=1, pixelformat="yuv420p")
        h, w = frame.shape[:2]
        self.writer.append_data(frame[: h - h % 2, : w - w % 2])  # yuv420p needs even sides

    def __exit__(self, exc_type, exc, tb) -> None:
        import imageio.v3 as iio

        try:
            if self.writer is not None:
                self.writer.close()
            if exc_type is None:
                if self.ext == ".png":
                    iio.imwrite(self.tmp, self.frames[-1], extension=".png")
                elif self.ext == ".gif":
                    iio.imwrite(self.tmp, np.stack(self.frames), extension=".gif",
                                duration=1000.0 / self.fps, loop=0)
                os.replace(self.tmp, self.out)
        finally:
            self.tmp.unlink(missing_ok=True)


def _check_out(out: Path, frames: int, fps: int) -> None:
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: the suffix must be one of {', '.join(FORMATS)}")
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    if fps < 1:
        raise ValueError(f"--fps must be >= 1, got {fps}")
    if out.suffix.lower() == ".png" and frames > 1:
        raise ValueError(f"--out {out}: a PNG holds one frame; use .gif or .mp4 for --frames {frames}")


def clip_frames(frames: int, fps: int, walk: float | None, train: float | None, n_layers: int) -> int:
    """Frames of a clip: ``frames``, or when it is left at 1 with ``train`` and/or ``walk``, enough
    for the training sweep (``train`` seconds) and one walk through the ``n_layers`` layers."""
    if frames != 1 or (walk is None and train is None):
        return frames
    seconds = (train or 0.0) + (walk * n_layers if walk is not None else 0.0)
    return max(1, int(round(seconds * fps)) + 1)


def _capture(canvas, out: Path, frames: int, fps: int, walk: float | None = None, train: float | None = None,
             images_after: float | None = None, hold_tour: bool = False) -> None:
    """Render ``frames`` frames ``1/fps`` s apart.

    train : seconds in which the training run goes from its first to its last checkpoint (a
        continuous sweep: between checkpoints the view shows their blend), at the layer shown;
        ``hold_tour`` keeps the projection still meanwhile (the points move only by training).
    walk : after the sweep (or from the start), step to the next layer (animated, wrapping) every
        ``walk`` seconds, so one clip shows the whole network; the tour plays during the walk.
    images_after : switch image mode on (thumbnails) that many seconds into the clip.
    """
    if walk is not None and walk <= 0:
        raise ValueError(f"walk must be > 0 seconds, got {walk}")
    if train is not None:
        if train <= 0:
            raise ValueError(f"--train must be > 0 seconds, got {train}")
        if not canvas.view.trained:
            raise ValueError(f"--train: model {canvas.model.name!r} of {canvas.bundle.path} has no training "
                             "run (one state; prepare --checkpoints records one)")
        if hold_tour:
            canvas.tour.pause()
            sweep_framing(canvas)
        canvas.set_checkpoint(0)
    k = len(canvas.view.checkpoints) if train is not None else 1
    walk_from = train or 0.0
    with _FrameSink(out, fps) as sink:
        for i in range(frames):
            t = i / fps
            if i:
                canvas.advance(1.0 / fps)
            if train is not None and t <= train + 0.5 / fps:
                canvas.set_checkpoint(min(t / train, 1.0) * (k - 1))
            elif train is not None and hold_tour and not canvas.tour.playing and walk is not None:
                canvas.tour.play()  # the sweep is over: the walk tours as it goes
            if walk is not None and t > walk_from:
                prev = (i - 1) / fps
                if i and prev > walk_from and int((t - walk_from) / walk) != int((prev - walk_from) / walk):
                    canvas.set_layer((canvas.layer_index + 1) % len(canvas.model.layers))
            if images_after is not None and t >= images_after and not canvas.image_mode:
                canvas.set_image_mode(True)
            sink.append(np.ascontiguousarray(canvas.render()[..., :3]))


def sweep_framing(canvas) -> None:
    """Frame every checkpoint of the layer shown at once (for a sweep on a still projection: the
    camera holds while training moves the points, and none leaves the picture): the framing circle
    that holds each checkpoint's own (:meth:`viewer.view.ModelView.fit_target`)."""
    v = canvas.view
    keep = v.clock.position
    targets = []
    for k in range(len(v.checkpoints)):
        v.set_checkpoint(k)
        targets.append(v.fit_target(canvas.frame))
    centers = np.array([c for c, _ in targets], dtype=np.float64)
    center = 0.5 * (centers.min(axis=0) + centers.max(axis=0))
    radius = max(float(np.linalg.norm(c - center)) + r for c, r in targets)
    v.set_checkpoint(keep)
    v.fit.snap(center, radius)
    v.fitted = True


def _start_guided(canvas, guided: str | None, frames: int) -> None:
    """Start the guided tour ``guided`` (an index name) on ``canvas``; for a still (one frame) run it
    to the best view it finds first. Raises ``viewer.guided.GuidedError``."""
    if guided is None:
        return
    from viewer import guided as vguided

    ctrl = vguided.start(canvas, guided)
    if frames == 1:
        ctrl.settle(canvas)
        canvas.reset_view()  # frame the view found, not the one the search started from


def render_compare(bundle, out, a: str, b: str, *, layer_a=None, layer_b=None, size=(1600, 800),
                   frames: int = 1, fps: int = 30, dims: int = 2, color=None, render_path: str = "auto",
                   seed: int = 0, device: str = "auto", hud: bool = True, heatmap: bool = True,
                   warmup: float = 0.0, speed: float | None = None, guided: str | None = None,
                   checkpoint_a=None, checkpoint_b=None, state=None) -> Path:
    """Render models ``a`` and ``b`` of ``bundle`` side by side (:class:`viewer.compare.CompareCanvas`:
    one tour, B aligned to A, the similarity heat map unless ``heatmap=False``) to ``out``.

    Arguments as for :func:`render_tour`; ``size`` is the whole window (each model gets half);
    ``guided`` climbs model A's index; ``checkpoint_a`` / ``checkpoint_b`` : the checkpoint of each
    model's training run to show (a model may be compared with itself at two checkpoints);
    ``state`` : a saved compare view (path or dict from ``viewer.viewstate``) to start from, with
    both panes' layers, checkpoints, zoom/pan, handles and brushes and the shared tour; it must be
    for models ``a`` and ``b`` (``viewer.viewstate.ViewStateError``, a ValueError, naming the file
    and field otherwise, also for a single-model view).
    """
    out = Path(out)
    _check_out(out, frames, fps)
    ensure_backend()
    from engine import load_bundle
    from viewer.compare import CompareCanvas

    if not hasattr(bundle, "models"):
        bundle = load_bundle(bundle)
    st, source = _saved_view(state)
    if st is not None:
        dims = len(st["frame"][0])  # the saved view's projection (a compare window keeps its dims)
    canvas = CompareCanvas(bundle, a, b, layer_a=layer_a, layer_b=layer_b, dims=dims, color=color,
                           render_path=render_path, seed=seed, size=tuple(size), show=False, animate=False,
                           device=device, controllers=st is not None, speed=speed, checkpoint_a=checkpoint_a,
                           checkpoint_b=checkpoint_b)
    try:
        canvas.show_hud = hud
        canvas.show_heatmap = heatmap
        canvas.reset_view()
        if st is not None:
            from viewer import viewstate

            viewstate.check_fits(canvas, st, source)
            viewstate.apply(canvas, st)
        _start_guided(canvas, guided, frames)
        if warmup > 0:
            canvas.advance(warmup)
        _capture(canvas, out, frames, fps)
        log.info("rendered %d frame(s) of %s vs %s with the %s path (%s) to %s", frames, a, b,
                 canvas.panels[0].points.describe(), canvas.gl_renderer, out)
    finally:
        canvas.close()
    return out


def _saved_view(state) -> tuple[dict | None, str]:
    """(the saved view, the name its errors give): ``state`` is None, a dict or a path."""
    from viewer import viewstate

    if state is None:
        return None, "view state"
    if isinstance(state, dict):
        viewstate.validate(state)
        return state, "view state"
    return viewstate.load(state), str(state)


def render_tour(bundle, out, *, model=None, layer=None, size=(800, 800), frames: int = 1, fps: int = 30,
                state=None, dims: int = 2, color=None, render_path: str = "auto", seed: int = 0,
                device: str = "auto", hud: bool = True, warmup: float = 0.0,
                walk: float | None = None, speed: float | None = None, images: bool = False,
                guided: str | None = None, checkpoint=None, train: float | None = None,
                image_sample: int | None = None, images_after: float | None = None) -> Path:
    """Render ``frames`` frames of the tour of ``bundle`` (a Bundle or a path) to ``out``.

    out : FILE.png (one frame), FILE.gif or FILE.mp4. state : saved view (path or dict from
    ``viewer.viewstate``) to start from, with its handles and selection. warmup : seconds of tour
    to run before the first frame. walk : step to the next layer every ``walk`` seconds of the
    clip (animated transitions, wrapping to the first layer). speed : tour speed in rad/s (default
    the viewer's). images : draw the bundle's thumbnails (image mode); image_sample : only a seeded
    sample of that many points as thumbnails (the rest as dots); images_after : start image mode
    that many seconds into the clip. guided : an index name (``viewer.guided.INDEX_ORDER``): the
    tour is the guided tour of that index, the class indices taking their classes from ``color``;
    a clip shows the climb from the start frame (or the saved view), a still (``frames=1``) the best
    view the search finds. checkpoint : the training run's checkpoint to show (name or index;
    default the last). train : sweep the training run from its first to its last checkpoint in
    ``train`` seconds at the layer shown (default the last layer), on a still projection (unless
    ``speed`` is given) framed on the last checkpoint's principal axes; a walk follows the sweep.
    ``frames`` left at 1 with ``train`` or ``walk`` renders the whole sweep and walk
    (:func:`clip_frames`). Returns the output path. Raises ValueError for a bad suffix or frame
    count, a sweep of a model without a training run (``viewer.guided.GuidedError``, a ValueError,
    for an index that cannot guide), and the bundle's own errors for a bad bundle.
    """
    out = Path(out)
    if not hasattr(bundle, "models"):
        from engine import load_bundle

        bundle = load_bundle(bundle)
    name = model or (state.get("model") if isinstance(state, dict) else None) or next(iter(bundle.models))
    m = bundle.models.get(name)
    n_layers = len(m.layers) if m is not None else 1
    frames = clip_frames(frames, fps, walk, train, n_layers)
    _check_out(out, frames, fps)
    ensure_backend()
    from viewer import viewstate
    from viewer.canvas import TourCanvas

    st = None
    if state is not None:
        st = state if isinstance(state, dict) else viewstate.load(state)
        model = model or st.get("model")
    if train is not None and layer is None and st is None and m is not None:
        layer = len(m.layers) - 1  # the output layer: where training shows most
    canvas = TourCanvas(bundle, model=model, layer=layer, dims=dims, color=color, render_path=render_path,
                        seed=seed, size=tuple(size), show=False, animate=False, device=device, speed=speed,
                        checkpoint=checkpoint)
    try:
        canvas.show_hud = hud
        canvas.show_fps = False
        if train is not None and st is None:
            from engine.device import to_host
            from engine.frames import principal_frame

            canvas.set_frame(principal_frame(to_host(canvas.layer_data(canvas.view.current_key)), dims))
        canvas.reset_view()  # frame the first picture for the plot area of this layout
        if image_sample is not None:
            n = int(bundle.n)
            pick = np.random.default_rng(seed).choice(n, min(int(image_sample), n), replace=False)
            canvas.points.set_image_subset(pick)
        if images and images_after is None:
            canvas.set_image_mode(True)
        if st is not None:
            from viewer import controllers

            controllers.install(canvas, state_path=None if isinstance(state, dict) else state)
            viewstate.apply(canvas, st)
        _start_guided(canvas, guided, frames)
        if warmup > 0:
            canvas.advance(warmup)
        _capture(canvas, out, frames, fps, walk, train, images_after if images else None,
                 hold_tour=speed is None)
        log.info("rendered %d frame(s) with the %s path (%s) to %s", frames, canvas.render_path,
                 canvas.gl_renderer, out)
    finally:
        canvas.close()
    return out
