"""``layertour render`` / ``view`` through engine.cli, and viewer.headless.render_tour (real GL)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("vispy")
iio = pytest.importorskip("imageio.v3")

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _bundle(path, rng, n=120, p=7, layers=3, k=6):
    from engine.store import BundleWriter

    w = BundleWriter(path, n=n, dim=p)
    w.add_model("net")
    for i in range(layers):
        w.write_layer("net", f"{i}-Conv", rng.normal(size=(n, p)).astype(np.float32))
    w.set_attribute("label", rng.integers(0, k, n).astype(np.int32), "categorical",
                    categories=[f"c{j}" for j in range(k)], default=True)
    w.commit()
    return path


def _main(*argv):
    from engine.cli import main

    return main([str(a) for a in argv])


@pytest.mark.gl
def test_render_png_gif_mp4(tmp_path, rng, capsys):
    b = _bundle(tmp_path / "b.lt", rng)
    assert _main("render", b, "--size", "200x160", "--out", tmp_path / "a.png") == 0
    assert f"wrote {tmp_path / 'a.png'}" in capsys.readouterr().out
    png = iio.imread(tmp_path / "a.png")
    assert png.shape == (160, 200, 3) and png.std() > 1

    assert _main("render", b, "--size", "200x160", "--frames", "5", "--fps", "10", "--layer", "2",
                 "--out", tmp_path / "a.gif") == 0
    gif = iio.imread(tmp_path / "a.gif", index=None)
    assert gif.shape[:3] == (5, 160, 200)
    # the tour moves between frames
    assert np.abs(gif[0].astype(int) - gif[-1].astype(int)).sum() > 0

    assert _main("render", b, "--size", "200x160", "--frames", "4", "--color", "movement",
                 "--out", tmp_path / "a.mp4") == 0
    frames = iio.imread(tmp_path / "a.mp4", index=None, plugin="FFMPEG")
    assert frames.shape[:3] == (4, 160, 200)


@pytest.mark.gl
def test_render_with_saved_view_reproduces_the_canvas(tmp_path, rng):
    from engine import load_bundle
    from engine.tour import random_frame
    from viewer import controllers, viewstate
    from viewer.canvas import TourCanvas

    b = _bundle(tmp_path / "b.lt", rng)
    bundle = load_bundle(b)
    c = TourCanvas(bundle, size=(240, 200), show=False, animate=False)
    try:
        controllers.install(c)
        c.show_fps = False
        c.pause_tour()
        c.set_frame(random_frame(c.p, 2, rng))
        c.set_layer(1, animate=False)
        c.zoom_at((100, 90), 1.5)
        c.set_selection(rng.random(bundle.n) < 0.4)
        state = viewstate.capture(c)
        want = c.render()[..., :3]
    finally:
        c.close()
    path = viewstate.save(tmp_path / "view.json", state)
    assert _main("render", b, "--size", "240x200", "--state", path, "--out", tmp_path / "s.png") == 0
    got = iio.imread(tmp_path / "s.png")
    diff = np.abs(got.astype(int) - want.astype(int))
    assert np.mean(diff > 3) < 1e-3


@pytest.mark.gl
@pytest.mark.parametrize("argv, words", [
    (["--size", "big", "--out", "x.png"], "--size"),
    (["--frames", "3", "--out", "x.png"], "PNG holds one frame"),
    (["--out", "x.bmp"], "suffix"),
    (["--color", "nope", "--out", "x.png"], "'nope'"),
    (["--model", "other", "--out", "x.png"], "no model 'other'"),
    (["--layer", "9", "--out", "x.png"], "9"),
])
def test_render_bad_arguments_exit_2_with_a_clear_message(tmp_path, rng, capsys, argv, words):
    b = _bundle(tmp_path / "b.lt", rng, n=20)
    argv = [a if not a.startswith("x.") else str(tmp_path / a) for a in argv]
    assert _main("render", b, *argv) == 2
    err = capsys.readouterr().err
    assert "layertour render: error:" in err and words in err


def test_view_without_a_display_says_how_to_render(tmp_path, rng, capsys, monkeypatch):
    b = _bundle(tmp_path / "b.lt", rng, n=20)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert _main("view", b) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "layertour render" in err


def test_render_without_any_x_server_uses_egl(tmp_path, rng):
    """No DISPLAY at all: VisPy's EGL back end (Mesa: EGL_PLATFORM=surfaceless) renders the PNG."""
    b = _bundle(tmp_path / "b.lt", rng, n=50)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = tmp_path / "egl.png"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "render", str(b), "--size", "160x120",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0 and "EGL" in proc.stderr and "Could not" in proc.stderr:
        pytest.skip(f"no EGL implementation here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    img = iio.imread(out)
    assert img.shape == (120, 160, 3) and img.std() > 1


@pytest.mark.gl
def test_walk_steps_through_every_layer_with_transitions(tmp_path, rng):
    """--walk: each `walk` seconds the clip starts an animated step to the next layer (wrapping)."""
    from engine import load_bundle
    from viewer.canvas import TourCanvas
    from viewer.headless import _capture, ensure_backend

    ensure_backend()
    b = load_bundle(_bundle(tmp_path / "b.lt", rng, layers=3))
    canvas = TourCanvas(b, size=(120, 100), show=False, animate=False)
    seen = []
    real_set_layer = canvas.set_layer

    def spy(i, animate=True):
        seen.append((canvas.layer_index, i, animate))
        real_set_layer(i, animate)

    canvas.set_layer = spy
    try:
        _capture(canvas, tmp_path / "w.gif", frames=40, fps=10, walk=1.0)  # 4 s: steps at 1, 2, 3 s
    finally:
        canvas.close()
    assert [(a, b_) for a, b_, _ in seen] == [(0, 1), (1, 2), (2, 0)]
    assert all(anim for *_, anim in seen)
    assert iio.imread(tmp_path / "w.gif", index=None).shape[0] == 40
    with pytest.raises(ValueError, match="walk"):
        _capture(None, tmp_path / "x.gif", frames=2, fps=10, walk=0)


@pytest.mark.gl
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_an_interrupted_render_leaves_nothing_at_out(tmp_path, rng, suffix):
    """Frames go to a temporary file beside --out, renamed into place only when the clip is complete."""
    from engine import load_bundle
    from viewer.canvas import TourCanvas
    from viewer.headless import _capture, ensure_backend

    ensure_backend()
    canvas = TourCanvas(load_bundle(_bundle(tmp_path / "b.lt", rng)), size=(64, 48), show=False,
                        animate=False)
    real_render, calls = canvas.render, []

    def failing_render(*a, **k):  # the GL context dies on the third frame
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("context lost")
        return real_render(*a, **k)

    canvas.render = failing_render
    out = tmp_path / f"clip{suffix}"
    try:
        with pytest.raises(RuntimeError, match="context lost"):
            _capture(canvas, out, frames=5, fps=10)
    finally:
        canvas.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.lt"]
