"""The notebook widget in this process (real OpenGL: glfw under Xvfb here, EGL / OSMesa in
subprocesses), fed the event dicts jupyter_rfb's browser side sends: Python handles, events reaching
the desktop controllers, resizing, saved views, compare, closing, and show()'s errors. The same
widget in a real browser is tests/test_notebook_browser.py."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
from _v2_helpers import make_bundle, random_frame

pytestmark = pytest.mark.gl

N, P = 400, 6


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("nbw") / "w.lt", np.random.default_rng(7), n=N, p=P, layers=3)


@pytest.fixture
def widget(bundle, tmp_path):
    import vispy

    vispy.use("glfw")
    from viewer.notebook import show

    w = show(bundle, size=(360, 300), device="cpu")
    w.playing = False
    try:
        yield w
    finally:
        w.close()


def ev(kind, **kw):
    base = {"type": kind, "modifiers": [], "timestamp": 0.0}
    if kind.startswith("pointer"):
        base.update(button=1, buttons=[1] if kind != "pointer_up" else [])
    base.update(kw)
    return base


def key(w, k):
    w._browser_event(ev("key_down", key=k))


def drag(w, a, b):
    w._browser_event(ev("pointer_down", x=a[0], y=a[1]))
    w._browser_event(ev("pointer_move", x=(a[0] + b[0]) / 2, y=(a[1] + b[1]) / 2))
    w._browser_event(ev("pointer_move", x=b[0], y=b[1]))
    w._browser_event(ev("pointer_up", x=b[0], y=b[1]))


def points_visible(img) -> int:
    """Pixels clearly brighter than the dark background inside the plot disc's box."""
    h, w = img.shape[:2]
    core = img[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(int)
    return int((core.max(axis=2) > 90).sum())


def test_widget_shows_the_desktop_window_offscreen(widget):
    w = widget
    from viewer.canvas import TourCanvas

    assert isinstance(w.window, TourCanvas)
    assert w.gl.app == "glfw" and w.gl.kind in ("Xvfb", f"X display {os.environ.get('DISPLAY')}")
    img = w.snapshot()
    assert img.shape == (300, 360, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert points_visible(img) > 50
    assert "offscreen" in w.status.value and w.gl.kind in w.status.value


def test_python_handles(widget, bundle):
    w = widget
    assert w.layer == 0 and w.color == "label" and w.frame.shape == (P, 2)
    w.layer = "2-Layer"
    assert w.layer == 2
    w.color = "confidence"
    assert w.color == "confidence"
    with pytest.raises(KeyError, match="cannot colour by 'nope'.*label"):
        w.color = "nope"
    F = random_frame(np.random.default_rng(1), P)
    w.frame = F
    np.testing.assert_allclose(w.frame, F, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        w.frame = np.eye(3)
    with pytest.raises(ValueError, match="orthonormal"):
        w.frame = F * 2
    seen = []
    w.on_selection(seen.append)
    w.selection = [5, 1, 9]
    np.testing.assert_array_equal(w.selection, [1, 5, 9])
    np.testing.assert_array_equal(seen[-1], [1, 5, 9])
    mask = np.zeros(N, bool)
    mask[[3, 4]] = True
    w.selection = mask
    np.testing.assert_array_equal(w.window.selection, mask)
    w.selection = None
    assert w.selection.size == 0 and seen[-1].size == 0 and len(seen) == 3
    with pytest.raises(IndexError, match=r"\[0, 400\)"):
        w.selection = [N]
    w.on_selection(seen.append, remove=True)
    w.selection = [0]
    assert len(seen) == 3


def test_browser_events_drive_the_desktop_controllers(widget):
    """Keys, a brush, a handle drag and the wheel, as dicts from the browser."""
    w = widget
    key(w, "j")
    assert w.layer == 1
    w.window.advance(1.0)  # finish the blend
    # rectangle brush: b, then drag; the selection equals an independent reference
    seen = []
    w.on_selection(seen.append)
    c = w.window
    y = np.asarray(c.layer_data(c.layer_index), np.float64)
    px = c.data_to_pixels((y @ c.frame)[:, :2])
    r0, r1 = np.array([110.0, 90.0]), np.array([250.0, 220.0])
    key(w, "b")
    drag(w, r0, r1)
    inside = np.all((px >= r0) & (px <= r1), axis=1)
    clear = np.min(np.abs(np.concatenate([px - r0, px - r1], axis=1)), axis=1) > 1e-3
    got = np.zeros(N, bool)
    got[w.selection] = True
    assert inside.sum() > 10
    np.testing.assert_array_equal(got[clear], inside[clear])
    np.testing.assert_array_equal(seen[-1], w.selection)
    # axis handles (a), then drag one: the frame turns
    key(w, "a")
    from viewer.controllers import HandleController

    handles = next(k for k in c.controllers if isinstance(k, HandleController))
    pos = handles.pixel_positions(c)
    centre = c.data_to_pixels(np.zeros((1, 2)))[0]
    k = int(np.argmax(np.linalg.norm(pos - centre, axis=1)))
    before = w.frame
    drag(w, pos[k], pos[k] + (pos[k] - centre) * -0.5 + [15, 10])
    assert not np.allclose(w.frame, before, atol=1e-3)
    # the wheel zooms about the pointer
    z = c.zoom
    w._browser_event(ev("wheel", x=180, y=150, dx=0, dy=-100, buttons=[]))
    assert c.zoom == pytest.approx(z * 1.15)


def test_resize_follows_the_browser(widget):
    w = widget
    w._browser_event(ev("resize", width=420, height=330, pwidth=420, pheight=330, ratio=1))
    assert tuple(w.window.size) == (420, 330)
    assert w.snapshot().shape == (330, 420, 3)
    w._browser_event(ev("resize", width=0, height=0, ratio=1))  # a view being laid out: ignored
    assert tuple(w.window.size) == (420, 330)


def test_frames_are_skipped_when_nothing_changed(widget):
    w = widget
    assert w._frame() is not None
    assert w._frame() is None  # same picture: nothing to send
    w.layer = 2
    w.window.advance(1.0)
    assert w._frame() is not None


def test_saved_view_round_trip(widget, tmp_path):
    w = widget
    w.layer = 1
    w.window.advance(1.0)
    w.selection = [2, 3, 4]
    F = random_frame(np.random.default_rng(3), P)
    w.frame = F
    path = w.save_view(tmp_path / "v.json")
    assert json.loads(path.read_text())["format"] == "layertour-view"
    w.layer = 0
    w.selection = None
    w.frame = random_frame(np.random.default_rng(4), P)
    w.load_view(path)
    w.window.advance(1.0)
    assert w.layer == 1
    np.testing.assert_array_equal(w.selection, [2, 3, 4])
    np.testing.assert_allclose(w.frame, F, atol=1e-9)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    from viewer.viewstate import ViewStateError

    with pytest.raises(ViewStateError, match="bad.json"):
        w.load_view(bad)


def test_close_frees_the_window_and_q_does_not_close(bundle):
    from viewer.notebook import show

    w = show(bundle, size=(200, 160), device="cpu")
    ref = weakref.ref(w.window)
    w.close()
    assert w.closed
    with pytest.raises(RuntimeError, match="closed"):
        w.layer = 1
    w.close()  # twice is fine
    del w
    gc.collect()
    assert ref() is None, "the closed window (and its layer data and GL objects) is still referenced"
    w2 = show(bundle, size=(200, 160), device="cpu")
    key(w2, "q")  # the desktop's quit key: in a notebook it only says how to close the view
    key(w2, "Escape")
    assert not w2.closed and "w.close()" in w2.window.current_status()
    assert w2.snapshot().shape == (160, 200, 3)
    w2.close()
    assert w2.closed


def test_compare_widget(bundle, tmp_path):
    from viewer.notebook import show
    from viewer.viewstate import ViewStateError

    w = show(bundle, compare="net", layer=(0, 2), size=(480, 260), device="cpu")
    try:
        assert w.compare and w.layer == (0, 2)
        w.layer = (1, None)
        assert w.layer == (1, 2)
        w.selection = [1, 2]
        np.testing.assert_array_equal(w.selection, [1, 2])
        assert points_visible(w.snapshot()) > 20
        # saved views: both panes and the shared tour, back exactly
        w.playing = False
        w.window.advance(1.0)  # the layer blend ends
        w.color = "confidence"
        w.frame = random_frame(np.random.default_rng(5), P)
        F = w.frame  # as the setter orthonormalised it
        w.window.panels[1].zoom = 1.7
        img = w.snapshot()
        path = w.save_view(tmp_path / "c.json")
        saved = json.loads(path.read_text())
        assert saved["kind"] == "compare" and [p["layer"] for p in saved["panes"]] == [1, 2]
        w.layer = (2, 0)
        w.selection = None
        w.color = "label"
        w.frame = random_frame(np.random.default_rng(6), P)
        w.window.panels[1].zoom = 1.0
        w.load_view(path)
        assert w.layer == (1, 2) and w.color == "confidence" and w.window.panels[1].zoom == 1.7
        np.testing.assert_array_equal(w.selection, [1, 2])
        np.testing.assert_array_equal(w.frame, F)
        np.testing.assert_array_equal(w.snapshot()[:200], img[:200])  # above the message bar
        # a single-model view is not a compare view (and the reverse)
        single = show(bundle, size=(200, 160), device="cpu")
        try:
            one = single.save_view(tmp_path / "one.json")
            with pytest.raises(ViewStateError, match=r"one\.json: field 'kind' is 'single'"):
                w.load_view(one)
            with pytest.raises(ViewStateError, match=r"c\.json: field 'kind' is 'compare'"):
                single.load_view(path)
        finally:
            single.close()
        assert w.layer == (1, 2)
    finally:
        w.close()


def test_show_errors_name_the_problem(bundle, tmp_path):
    from engine.store import BundleError
    from viewer.notebook import show

    with pytest.raises(ValueError, match="size"):
        show(bundle, size=(5, 5))
    with pytest.raises(ValueError, match="quality"):
        show(bundle, quality=0)
    with pytest.raises(TypeError, match="colour_by"):
        show(bundle, colour_by="label")
    with pytest.raises(BundleError, match="missing.lt"):
        show(tmp_path / "missing.lt")
    with pytest.raises(ValueError, match="offscreen back end 'vulkan'"):
        show(bundle, gl="vulkan")


@pytest.mark.parametrize("backend, kind", [("egl", "Mesa EGL"), ("osmesa", "OSMesa")])
def test_offscreen_back_ends_without_a_display(backend, kind, bundle, tmp_path):
    """In a fresh process with no X display: the widget renders points through EGL / OSMesa,
    says which, and closing destroys the native context."""
    import ctypes.util

    if backend == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("libOSMesa not installed (Debian: libosmesa6)")
    script = f"""
import gc, json, weakref, numpy as np
from viewer import offscreen
from viewer.notebook import show
w = show({str(bundle.path)!r}, size=(240, 200), device="cpu", gl={backend!r})
img = w.snapshot()
h, wd = img.shape[:2]
lit = int((img[h // 4: 3 * h // 4, wd // 4: 3 * wd // 4].max(axis=2) > 90).sum())
ctx, ref = w._context, weakref.ref(w.window)
alive_before = offscreen.context_alive(w.gl.app, ctx)
w.close(); gc.collect()
print(json.dumps({{"kind": w.gl.kind, "lit": lit, "shape": list(img.shape), "alive_before": alive_before,
                  "alive_after": offscreen.context_alive(w.gl.app, ctx), "window_gone": ref() is None}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kind"] == kind and r["shape"] == [200, 240, 3] and r["lit"] > 20
    assert r["window_gone"]
    if backend == "egl":
        assert r["alive_before"] and not r["alive_after"]


def test_layertour_info_names_the_offscreen_gl():
    """``layertour info`` says what a notebook widget would render through on this machine."""
    from engine.info import report
    from viewer.sysinfo import offscreen_gl

    o = offscreen_gl()
    assert isinstance(o, dict), o
    assert o["kind"] in ("Mesa EGL", "NVIDIA EGL", "OSMesa", "Xvfb") \
        or o["kind"].startswith(("EGL", "X display"))
    line = next(ln for ln in report(device="cpu").splitlines() if ln.startswith("offscreen"))
    assert o["kind"] in line and "notebook widget" in line


@pytest.mark.slow
def test_example_notebook_runs(tmp_path):
    """examples/notebook.ipynb, every cell, in a real kernel (no browser), on a small bundle in
    place of the demo's: the example stays in step with the API."""
    import nbformat
    from conftest import REPO
    from nbclient import NotebookClient

    make_bundle(tmp_path / "small.lt", np.random.default_rng(5), n=300, p=P, layers=3, images=False)
    nb = nbformat.read(REPO / "examples" / "notebook.ipynb", as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "BUNDLE = " in c.source)
    setup.source = 'from pathlib import Path\nBUNDLE = Path("small.lt")'
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", ()))
    assert "300 images" in outputs
    assert (tmp_path / "demo-view.json").exists()


@pytest.mark.gpu
def test_widget_on_nvidia_egl_draws_through_cuda_interop(bundle):
    """On a GPU server with no display: the widget's context is NVIDIA's EGL, the render path is
    CUDA–OpenGL interop, and its picture matches the shader path's (same frame, same layer)."""
    pytest.importorskip("jupyter_rfb")
    script = f"""
import json, numpy as np
from viewer.notebook import show
a = show({str(bundle.path)!r}, size=(240, 200), device="cuda", gl="egl", render_path="auto", seed=1)
b = show({str(bundle.path)!r}, size=(240, 200), device="cpu", gl="egl", render_path="shader", seed=1)
a.playing = b.playing = False
ia, ib = a.snapshot().astype(int), b.snapshot().astype(int)
print(json.dumps({{"kind": a.gl.kind, "path": a.window.render_path, "diff": float(np.abs(ia - ib).mean()),
                  "lit": int((ia.max(axis=2) > 90).sum())}}))
a.close(); b.close()
"""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["kind"] == "NVIDIA EGL" and r["path"].startswith("cuda"), r
    assert r["lit"] > 20 and r["diff"] < 2.0, r


def test_offscreen_falls_back_to_osmesa_when_egl_cannot_initialise():
    """No display and an EGL platform that cannot work without one: the probe says why EGL
    failed and renders through OSMesa instead (the order is EGL, OSMesa, glfw)."""
    import ctypes.util

    if ctypes.util.find_library("OSMesa") is None:
        pytest.skip("libOSMesa not installed (Debian: libosmesa6)")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "LAYERTOUR_OFFSCREEN")}
    env["EGL_PLATFORM"] = "x11"
    run = [sys.executable, "-m", "viewer.offscreen"]
    out = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["kind"] == "OSMesa"
    only = subprocess.run(run + ["egl"], capture_output=True, text=True, env=env, timeout=120)
    assert only.returncode == 1 and "eglInitialize failed" in json.loads(only.stdout)["error"]
