"""The viewer's rendering under a real OpenGL context (Xvfb + Mesa): pixels of known configurations.

Each test builds a tiny bundle with fresh random data, pauses the tour on a random frame, hides the
HUD, renders with ``canvas.render()`` and checks pixels at screen positions computed independently
(float64 NumPy projection + the canvas's documented view mapping).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gl

vispy = pytest.importorskip("vispy")


def _bundle(tmp_path, rng, *, n=40, p=6, layers=3, k=5, images=False, attrs=True, name="t.lt"):
    from engine.store import BundleWriter, load_bundle

    w = BundleWriter(tmp_path / name, n=n, dim=p)
    w.add_model("net")
    data = []
    for i in range(layers):
        e = (rng.normal(size=(n, p)) + rng.normal(size=p)).astype(np.float32)
        # no stored alignment: the viewer shows the layer centred on its mean
        data.append(e.astype(np.float64) - e.astype(np.float64).mean(0))
        w.write_layer("net", f"{i}-Block", e)
    labels = rng.integers(0, k, n).astype(np.int32)
    if attrs:
        w.set_attribute("label", labels, "categorical", categories=[f"class {j}" for j in range(k)],
                        default=True)
        w.set_attribute("score", rng.random(n).astype(np.float32), "continuous")
    img = None
    if images:
        top = rng.integers(30, 226, (n, 3), dtype=np.uint8)
        bottom = rng.integers(30, 226, (n, 3), dtype=np.uint8)
        img = np.empty((n, 32, 32, 3), np.uint8)
        img[:, :16] = top[:, None, None]
        img[:, 16:] = bottom[:, None, None]
        w.set_images(img)
    w.commit()
    return load_bundle(tmp_path / name), data, labels, img


def _canvas(bundle, rng, *, path="shader", size=(360, 300), dims=2, **kw):
    from engine.tour import random_frame
    from viewer.canvas import TourCanvas

    c = TourCanvas(bundle, size=size, show=False, animate=False, render_path=path, dims=dims, **kw)
    c.show_hud = False
    c.pause_tour()
    c.set_frame(random_frame(c.p, dims, rng))
    return c


def _isolated(px, size, min_gap, margin=12):
    """Indices of points at least min_gap px from every other point and inside the window."""
    d = np.sqrt(((px[:, None] - px[None]) ** 2).sum(-1))
    d[np.eye(len(px), dtype=bool)] = np.inf
    w, h = size
    inside = (px[:, 0] > margin) & (px[:, 0] < w - margin) & (px[:, 1] > margin) & (px[:, 1] < h - margin)
    return np.flatnonzero((d.min(1) > min_gap) & inside)


def _pixel(img, xy):
    x, y = int(np.floor(xy[0])), int(np.floor(xy[1]))
    return img[y, x, :3].astype(np.float64) / 255.0


def _check(img, xy, rgb, alpha):
    """The pixel under a point's centre is its colour blended over the background with ``alpha``."""
    np.testing.assert_allclose(_pixel(img, xy), _expected(rgb, alpha), atol=4 / 255)


def _expected(rgb, alpha):
    from viewer.colors import BACKGROUND

    return np.asarray(rgb[:3]) * alpha + np.asarray(BACKGROUND[:3]) * (1 - alpha)


@pytest.mark.parametrize("path", ["shader", "copy"])
def test_class_colours_at_computed_positions(tmp_path, rng, path):
    bundle, data, labels, _ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng, path=path)
    try:
        ref = data[0] @ c.frame
        np.testing.assert_allclose(c.project_current(), ref, rtol=1e-5, atol=1e-5)
        px = c.data_to_pixels(ref)
        img = c.render()
        assert img.shape[:2] == (c.size[1], c.size[0])
        idx = _isolated(px, c.size, 3 * c.point_size())
        assert len(idx) >= 3, "random layout left too few isolated points"
        pal = c.coloring.palette
        for i in idx:
            _check(img, px[i], pal[labels[i]], c.point_alpha())
        # away from every point the background shows
        far = np.array([[3.0, 3.0]])
        if np.sqrt(((px - far) ** 2).sum(1)).min() > 3 * c.point_size():
            np.testing.assert_allclose(_pixel(img, far[0]), _expected((0, 0, 0), 0.0), atol=2 / 255)
    finally:
        c.close()


@pytest.mark.parametrize("p, mode", [(15, "texture"), (37, "texture"), (28, "attributes")])
def test_shader_path_variants_and_uncapped_p(tmp_path, rng, monkeypatch, p, mode):
    """p is not capped: beyond 7 vec4 attributes the layer data go through a float texture."""
    from viewer import render_paths

    if p <= 28:
        monkeypatch.setattr(render_paths, "SHADER_MODE", mode)
    bundle, data, labels, _ = _bundle(tmp_path, rng, p=p)
    c = _canvas(bundle, rng)
    try:
        assert c.points.path.mode == mode
        c.set_layer(1, animate=True)
        c.advance(0.3)
        s = c.transition[2]
        ref = ((1 - s) * data[0] + s * data[1]) @ c.frame
        px = c.data_to_pixels(ref)  # the framing follows the blend: the points fill the window
        img = c.render()
        idx = _isolated(px, c.size, 3 * c.point_size())
        assert len(idx) >= 3
        for i in idx:
            _check(img, px[i], c.coloring.palette[labels[i]], c.point_alpha())
        inside = np.all((px > 0) & (px < np.array(c.size)), axis=1)
        assert inside.mean() > 0.9  # framed by what is drawn, not by the p-D radius
    finally:
        c.close()


def test_selection_fades_and_legend_filter_combines(tmp_path, rng):
    from viewer.canvas import FADE_ALPHA

    bundle, data, labels, _ = _bundle(tmp_path, rng, n=36)
    c = _canvas(bundle, rng)
    try:
        px = c.data_to_pixels(data[0] @ c.frame)
        idx = _isolated(px, c.size, 3 * c.point_size())
        assert len(idx) >= 4
        mask = np.zeros(bundle.n, bool)
        mask[idx[::2]] = True
        c.set_selection(mask)
        img = c.render()
        pal = c.coloring.palette
        POINT_ALPHA = c.point_alpha()
        for i in idx:
            alpha = POINT_ALPHA if mask[i] else FADE_ALPHA
            _check(img, px[i], pal[labels[i]], alpha)
        # legend filter on one class: a selected point of another class fades too
        keep = int(labels[idx[0]])
        c.legend_filter = {keep}
        img = c.render()
        for i in idx:
            alpha = POINT_ALPHA if mask[i] and labels[i] == keep else FADE_ALPHA
            _check(img, px[i], pal[labels[i]], alpha)
        c.set_selection(None)
        c.legend_filter = None
        img = c.render()
        for i in idx:
            _check(img, px[i], pal[labels[i]], POINT_ALPHA)
    finally:
        c.close()


def test_image_mode_draws_atlas_thumbnails_upright(tmp_path, rng):
    from viewer.canvas import IMAGE_SCALE

    bundle, data, labels, img = _bundle(tmp_path, rng, n=14, images=True)
    c = _canvas(bundle, rng, size=(420, 420))
    try:
        c.set_image_mode(True)
        assert c.image_mode and c.points.atlas_plan.complete
        sprite = c.point_size() * IMAGE_SCALE
        px = c.data_to_pixels(data[0] @ c.frame)
        idx = _isolated(px, c.size, 1.5 * sprite, margin=sprite)
        if len(idx) == 0:  # spread the points by zooming in until thumbnails do not overlap
            c.zoom = 3.0
            px = c.data_to_pixels(data[0] @ c.frame)
            idx = _isolated(px, c.size, 1.5 * sprite, margin=sprite)
        assert len(idx) >= 1
        out = c.render()
        for i in idx:
            top = _pixel(out, px[i] + [0, -sprite / 4])
            bottom = _pixel(out, px[i] + [0, sprite / 4])
            np.testing.assert_allclose(top, img[i, 8, 16] / 255.0, atol=2 / 255)
            np.testing.assert_allclose(bottom, img[i, 24, 16] / 255.0, atol=2 / 255)
    finally:
        c.close()


def test_j_starts_a_transition_whose_midpoint_is_the_blend(tmp_path, rng):
    from vispy.util import keys

    from viewer.canvas import TRANSITION_SECONDS

    bundle, data, labels, _ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng)
    try:
        c.events.key_press(key=keys.Key("J"), text="j")
        assert c.transition == (0, 1, 0.0) and c.layer_index == 1
        c.advance(TRANSITION_SECONDS / 2)
        ia, ib, s = c.transition
        assert (ia, ib) == (0, 1) and s == pytest.approx(0.5, abs=1e-12)
        ref = (0.5 * data[0] + 0.5 * data[1]) @ c.frame
        np.testing.assert_allclose(c.project_current(), ref, rtol=1e-5, atol=1e-5)
        px = c.data_to_pixels(ref)
        img = c.render()
        idx = _isolated(px, c.size, 3 * c.point_size())
        assert len(idx) >= 2
        for i in idx:
            _check(img, px[i], c.coloring.palette[labels[i]], c.point_alpha())
        c.advance(TRANSITION_SECONDS)
        assert c.transition is None and c.layer_index == 1
        np.testing.assert_allclose(c.project_current(), data[1] @ c.frame, rtol=1e-5,
                                   atol=1e-5)
        c.events.key_press(key=keys.Key("K"), text="k")
        assert c.transition[:2] == (1, 0)
    finally:
        c.close()


def test_shader_path_image_equals_copy_path_image(tmp_path, rng):
    from engine.tour import random_frame

    bundle, data, labels, _ = _bundle(tmp_path, rng, n=300, p=9)
    F = random_frame(9, 2, rng)
    mask = rng.random(300) < 0.5
    images = {}
    for path in ("shader", "copy"):
        c = _canvas(bundle, rng, path=path)
        try:
            c.set_frame(F)
            c.set_layer(2, animate=True)
            c.advance(0.2)
            c.set_selection(mask)
            c.zoom_at((150, 120), 1.7)
            images[path] = c.render()[..., :3].astype(int)
            assert c.render_path == path
        finally:
            c.close()
    diff = np.abs(images["shader"] - images["copy"])
    # float32 rounding may move a rare edge pixel by a level or two, never a point
    assert np.mean(diff > 3) < 1e-3 and diff.mean() < 0.2


def test_3d_depth_cue_near_points_are_bigger(tmp_path, rng):
    bundle, data, labels, _ = _bundle(tmp_path, rng, n=30, attrs=False)
    c = _canvas(bundle, rng, dims=3, size=(400, 400))
    try:
        pos = data[0] @ c.frame
        px = c.data_to_pixels(pos[:, :2])
        base = c.point_size()
        idx = _isolated(px, c.size, 4 * base)
        z = pos[idx, 2]
        assert len(idx) >= 2 and np.ptp(z) > 0.2 * c.extent()
        img = c.render()[..., :3].astype(int)
        bg = np.round(np.asarray(__import__("viewer.colors", fromlist=["BACKGROUND"]).BACKGROUND[:3]) * 255)

        def footprint(i):
            x, y = int(px[i, 0]), int(px[i, 1])
            r = int(2 * base) + 2
            win = img[max(y - r, 0): y + r + 1, max(x - r, 0): x + r + 1]
            return int((np.abs(win - bg).sum(-1) > 6).sum())

        near, far = idx[np.argmax(z)], idx[np.argmin(z)]
        assert footprint(near) > footprint(far)
    finally:
        c.close()


def test_legend_click_filters_and_layer_strip_click_switches(tmp_path, rng):
    from viewer import layout as vlayout

    bundle, data, labels, _ = _bundle(tmp_path, rng, k=4)
    c = _canvas(bundle, rng, size=(500, 400))
    try:
        c.show_hud = True
        lay = c.layout()
        rows = dict((r.code, b) for r, b in c.legend.layout(lay.legend, lay.scale).rows)
        assert sorted(rows) == [0, 1, 2, 3]
        b = rows[2]
        mid = (b.x + b.w / 2, b.y + b.h / 2)
        c.events.mouse_move(pos=mid, button=None)
        assert c.hover_legend == ("class", 2)
        c.events.mouse_press(pos=mid, button=1)
        c.events.mouse_release(pos=mid, button=1)
        assert c.legend_filter == {2}
        b1 = rows[1]
        from vispy.util import keys

        c.events.mouse_press(pos=(b1.x + b1.w / 2, b1.y + b1.h / 2), button=1, modifiers=(keys.SHIFT,))
        assert c.legend_filter == {1, 2}  # shift-click adds
        t = c.legend.layout(lay.legend, lay.scale).title
        c.events.mouse_press(pos=(t.x + t.w / 2, t.y + t.h / 2), button=1)
        assert c.legend_filter is None
        rows_ = vlayout.strip_rows(len(c.model.layers), lay.strips[0], lay.scale, c.layer_index)
        s2 = rows_.boxes[2]
        c.events.mouse_press(pos=(s2.x + s2.w / 2, s2.y + s2.h / 2), button=1)
        assert c.transition == (0, 2, 0.0)
        img = c.render()  # HUD with legend, strip and text draws without error
        assert img.shape[:2] == (400, 500)
        drawn = [t for t, _ in c.overlay.drawn]
        assert any("class 2" in t for t in drawn)
    finally:
        c.close()


def test_wheel_zoom_keeps_the_point_under_the_cursor_and_drag_pans(tmp_path, rng):
    bundle, *_ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng)
    try:
        at = np.array([[rng.uniform(40, 300), rng.uniform(40, 260)]])
        before = c.pixels_to_data(at)
        c.events.mouse_wheel(pos=tuple(at[0]), delta=(0, 2))
        assert c.zoom == pytest.approx(1.15 ** 2)
        np.testing.assert_allclose(c.pixels_to_data(at), before, atol=1e-9)
        np.testing.assert_allclose(c.data_to_pixels(c.pixels_to_data(at)), at, atol=1e-9)
        c.events.mouse_press(pos=(100, 100), button=1)
        c.events.mouse_move(pos=(130, 80), button=1, press_event=None)
        c.events.mouse_release(pos=(130, 80), button=1)
        np.testing.assert_allclose(c.data_to_pixels(before), at + [30, -20], atol=1e-9)
        c.events.key_press(key=vispy.util.keys.Key("R"), text="r")
        assert c.zoom == 1.0 and np.all(c.center == 0)
    finally:
        c.close()


def test_resize_and_close_during_a_transition(tmp_path, rng):
    from vispy import app
    from vispy.util import keys

    bundle, data, labels, _ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng)
    c.events.key_press(key=keys.Key("J"), text="j")
    c.advance(0.2)
    c.size = (420, 300)
    app.process_events()
    img = c.render()
    assert img.shape[:2] == (c.physical_size[1], c.physical_size[0]) == (300, 420)
    s = c.transition[2]
    ref = ((1 - s) * data[0] + s * data[1]) @ c.frame
    px = c.data_to_pixels(ref)
    idx = _isolated(px, c.size, 3 * c.point_size())
    for i in idx:
        _check(img, px[i], c.coloring.palette[labels[i]], c.point_alpha())
    c.close()
    app.process_events()
    c.advance(0.3)  # the transition clock may still run after close without touching GL


def test_bundle_without_images_or_attributes_opens_and_degrades(tmp_path, rng):
    from vispy.util import keys

    bundle, data, _, _ = _bundle(tmp_path, rng, attrs=False, images=False)
    c = _canvas(bundle, rng)
    try:
        assert c.coloring.name == "none" and c.color_options == ["movement", "none"]
        c.events.key_press(key=keys.Key("I"), text="i")
        assert not c.image_mode and "no images" in c._status[0]
        c.events.key_press(key=keys.Key("C"), text="c")
        assert c.coloring.name == "movement" and c.coloring.kind == "continuous"
        c.show_hud = True
        img = c.render()[..., :3]
        assert (np.abs(img.astype(int) - img[0, -1].astype(int)).sum(-1) > 30).sum() > 20
    finally:
        c.close()


def test_screenshot_key_writes_png(tmp_path, rng):
    import imageio.v3 as iio
    from vispy.util import keys

    bundle, *_ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng)
    try:
        c._screenshot_dir = tmp_path
        c.events.key_press(key=keys.Key("S"), text="s")
        shots = list(tmp_path.glob("t.lt-net-0-Block-*.png"))
        assert len(shots) == 1
        assert iio.imread(shots[0]).shape == (c.size[1], c.size[0], 3)
    finally:
        c.close()


def test_cuda_path_falls_back_to_copy_when_interop_cannot_register(tmp_path, rng):
    """Here (Mesa, no NVIDIA driver) registration must fail cleanly and say so; drawing goes on."""
    pytest.importorskip("cuda.bindings")
    bundle, data, labels, _ = _bundle(tmp_path, rng)
    c = _canvas(bundle, rng, path="copy")
    try:
        c.points.rebuild("cuda")
        c.render()
        if "failed" not in c.render_path:
            pytest.skip("CUDA-GL interop registered: this is an NVIDIA GL context")
        assert c.render_path.startswith("copy (CUDA interop failed:")
        assert "interop unavailable" in c._status[0]
        img = c.render()
        px = c.data_to_pixels(data[0] @ c.frame)
        for i in _isolated(px, c.size, 3 * c.point_size()):
            _check(img, px[i], c.coloring.palette[labels[i]], c.point_alpha())
    finally:
        c.close()


@pytest.mark.slow
def test_long_session_keeps_gl_objects_constant_and_frames_orthonormal(tmp_path, rng):
    """Thousands of frames with the HUD, transitions, colour changes and selections: the number of
    live GL objects stops growing (no leak) and the tour frame stays orthonormal (no drift)."""
    bundle, *_ = _bundle(tmp_path, rng, n=60, images=True)
    c = _canvas(bundle, rng, size=(96, 96))
    try:
        c.show_hud = True
        c.resume_tour()
        objects = c.context.shared.parser._objects

        def frames(k, start):
            for i in range(start, start + k):
                c.advance(1 / 60)
                if i % 97 == 0:
                    c.set_layer((c.layer_index + 1) % 3)
                if i % 331 == 0:
                    c.cycle_coloring()
                if i % 149 == 0:
                    c.set_selection(rng.random(bundle.n) < 0.5)
                if i % 211 == 0:
                    c.set_image_mode(not c.image_mode)
                c.set_current()
                c.on_draw(None)
                c.context.flush_commands()

        from viewer.overlay import TEXT_CACHE

        cache = c.overlay._text_cache  # bounded LRU of text textures, counted separately

        frames(1500, 1)
        settled = len(objects) - len(cache)
        frames(3000, 1501)
        assert len(objects) - len(cache) <= settled
        assert len(cache) <= TEXT_CACHE
        F = c.frame
        np.testing.assert_allclose(F.T @ F, np.eye(F.shape[1]), atol=1e-10)
    finally:
        c.close()


def test_running_timer_transition_then_close(tmp_path, rng):
    """With the wall-clock timer running: j starts a transition that the timer advances; closing
    the window in the middle stops the timer and nothing fires afterwards."""
    import time

    from vispy import app
    from vispy.util import keys

    from viewer.canvas import TourCanvas

    bundle, *_ = _bundle(tmp_path, rng)
    c = TourCanvas(bundle, size=(200, 160), show=False, animate=True)
    c.events.key_press(key=keys.Key("J"), text="j")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.25:
        app.process_events()
    assert c.transition is not None and 0.0 < c.transition[2] < 1.0
    frame_before = c.frame.copy()
    c.close()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.15:
        app.process_events()
    assert c._timer is None
    np.testing.assert_array_equal(c.frame, frame_before)  # the tour no longer advances


def test_every_v1_key_does_its_job_with_the_controllers_installed(tmp_path, rng):
    from vispy import app
    from vispy.util import keys

    from viewer import controllers
    from viewer.canvas import V1_HELP, TourCanvas

    bundle, *_ = _bundle(tmp_path, rng, images=True)
    c = TourCanvas(bundle, size=(320, 260), show=False, animate=True)
    try:
        controllers.install(c)
        c._screenshot_dir = tmp_path

        def key(name, text=""):
            c.events.key_press(key=keys.Key(name), text=text)
            app.process_events()
            c.render()

        assert c.tour.playing
        key("Space", " ")
        assert not c.tour.playing
        key("Space", " ")
        assert c.tour.playing
        speed = c.tour.speed
        key("+", "+")
        assert c.tour.speed == pytest.approx(speed * 1.25)
        key("-", "-")
        assert c.tour.speed == pytest.approx(speed)
        c.advance(3.0)
        before = c.frame.copy()
        key("Backspace")
        assert not c.tour.playing and not np.allclose(c.frame, before)
        names = [c.coloring.name]
        for _ in range(len(c.color_options)):
            key("C", "c")
            names.append(c.coloring.name)
        assert names[-1] == names[0] and set(names) == set(c.color_options)
        key("I", "i")
        assert c.image_mode
        key("I", "i")
        assert not c.image_mode
        key("3", "3")
        assert c.dims == 3 and c.frame.shape == (c.p, 3)
        key("3", "3")
        assert c.dims == 2 and c.frame.shape == (c.p, 2)
        key("Question", "?")
        shown = dict(c.help_entries)
        assert c.show_help and {k for k, _ in V1_HELP} <= set(shown)
        assert {"b", "l", "d", "v"} <= set(shown)  # the controllers' keys are listed too
        key("H", "h")
        assert not c.show_hud
        key("S", "s")
        assert len(list(tmp_path.glob("*.png"))) == 1
        c.events.mouse_wheel(pos=(100, 100), delta=(0, -3))
        assert c.zoom < 1
        key("R", "r")
        assert c.zoom == 1
        c.events.key_press(key=keys.Key("Q"), text="q")
        app.process_events()
        assert c._timer is None
    finally:
        c.close()
