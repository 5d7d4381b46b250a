"""The training axis in the viewer: the checkpoint clock and blend (GL-free), the slider's layout,
and under Xvfb the blend's pixels on every render path, the slider driven by mouse events and keys,
per-checkpoint colourings, the HUD, compare of two checkpoints, saved views and ``render --train``."""

from __future__ import annotations

import numpy as np
import pytest

N, P, K, L = 60, 6, 3, 2
NAMES = ["step-0", "step-10", "step-200"]
ACC = [0.1, 0.55, 0.95]


def _run_bundle(path, rng, *, n=N, k=K, layers=L, labels=5):
    """A training run written with identity alignments (so the aligned data are the embeddings the
    test made): data[k][l] is (n, p) float64, centred; each checkpoint has its own 'correct'."""
    from engine.store import BundleWriter, load_bundle

    w = BundleWriter(path, n=n, dim=P)
    w.add_model("net")
    data = []
    for j in range(k):
        w.add_checkpoint("net", NAMES[j], meta={"step": int(NAMES[j].split("-")[1]), "accuracy": ACC[j],
                                                  "loss": 2.0 - j})
        row = []
        for i in range(layers):
            e = rng.normal(size=(n, P)) * (1 + i)
            e -= e.mean(0)
            row.append(e.astype(np.float32).astype(np.float64))
            w.write_layer("net", f"{i}-Block", e.astype(np.float32), name=f"block{i}", checkpoint=NAMES[j])
            w.set_alignment("net", f"{i}-Block", np.eye(P), np.zeros(P), checkpoint=NAMES[j])
        w.set_checkpoint_attribute("net", NAMES[j], "correct", (rng.random(n) < ACC[j]).astype(np.int32),
                                   "categorical", categories=["wrong", "correct"])
        data.append(row)
    w.set_attribute("label", rng.integers(0, labels, n).astype(np.int32), "categorical",
                    categories=[f"class {c}" for c in range(labels)], default=True)
    w.commit()
    return load_bundle(path), data


# ------------------------------------------------------------------------------ GL-free

def test_checkpoint_clock_positions_glides_and_play():
    from viewer.timeline import STEP_SECONDS, CheckpointClock, checkpoint_label

    c = CheckpointClock(4)
    assert c.position == 3 and c.index == 3 and c.pair == (3, 3, 0.0)
    c.set(1.25)
    assert c.pair == (1, 2, 0.25) and c.index == 1
    c.set(1.75)
    assert c.index == 2 and c.pair[:2] == (1, 2)
    c.set(-5)
    assert c.position == 0.0
    assert c.step(+1) and c.moving
    c.advance(STEP_SECONDS / 2)
    assert c.position == pytest.approx(0.5)  # smoothstep's midpoint
    c.advance(STEP_SECONDS)
    assert c.position == 1.0 and not c.moving
    assert not CheckpointClock(4, 3).step(+1)  # already at the end
    c.play()
    c.advance(1.0)
    assert c.position == pytest.approx(1.0 + c.speed)
    c.advance(100.0)
    assert c.position == 3.0 and not c.playing  # stops at the last checkpoint
    c.play()
    assert c.position == 0.0 and c.playing  # from the end, play starts over
    assert checkpoint_label(NAMES, 1.0) == "step-10"
    assert checkpoint_label(NAMES, 0.4) == "step-0 → step-10 (40%)"
    with pytest.raises(ValueError):
        c.set(float("nan"))


def test_view_blends_neighbouring_checkpoints_and_has_no_path_dependence(tmp_path, rng):
    from engine.tour import random_frame
    from viewer.view import TRANSITION_SECONDS, ModelView

    b, data = _run_bundle(tmp_path / "r.lt", rng)
    v = ModelView(b, "net", layer=1)
    assert v.checkpoints == NAMES and v.checkpoint == K - 1 and v.trained
    F = random_frame(P, 2, rng)
    v.set_checkpoint(0.3)
    assert v.blend() == ((0, 1), (1, 1), pytest.approx(0.3))
    np.testing.assert_allclose(v.project_current(F), (0.7 * data[0][1] + 0.3 * data[1][1]) @ F, atol=1e-5)
    assert v.drawn() == ((0, 1), (1, 1), pytest.approx(0.3))
    # a layer change between checkpoints settles on the nearest one, then blends the layers there
    v.set_layer(0)
    assert v.clock.position == 0.0 and v.transition == (1, 0, 0.0) and v.blend()[0] == (0, 1)
    v.clock.play()
    v.advance(TRANSITION_SECONDS / 2, F)
    assert v.clock.position == 0.0  # training holds still while the layers blend
    v.advance(TRANSITION_SECONDS, F)
    v.advance(0.5, F)
    assert v.transition is None and v.clock.position == pytest.approx(0.5 * v.clock.speed)
    v.clock.pause()

    def land(path):  # visit (checkpoint, layer) stops; the picture at the end is the last stop's
        for k, i in path:
            v.set_layer(i, animate=False)
            v.set_checkpoint(k)
        return np.array(v.project_current(F))

    a = land([(0, 0), (2, 0), (2, 1), (1, 1)])
    c = land([(1, 0), (0, 1), (1, 1)])
    np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(a, data[1][1] @ F, atol=1e-5)


def test_plain_bundles_have_one_checkpoint_and_no_slider(tmp_path, rng):
    from _v2_helpers import make_bundle

    from viewer import layout as vlayout
    from viewer.view import ModelView

    b = make_bundle(tmp_path / "plain.lt", rng, n=50)
    v = ModelView(b, "net")
    assert v.checkpoints == ["final"] and not v.trained and v.blend() == ((0, 0), (0, 0), 0.0)
    assert v.set_checkpoint(0.5) is False
    lay = vlayout.compute((800, 600), [vlayout.PaneSpec(100.0, slider=False)])
    assert lay.sliders == (None,)


@pytest.mark.parametrize("size", [(480, 480), (800, 600), (1200, 600), (1920, 1080), (3840, 2160)])
@pytest.mark.parametrize("panes", [1, 2])
def test_sliders_are_docked_under_their_plots_and_cover_nothing(size, panes):
    from viewer import layout as vlayout

    specs = [vlayout.PaneSpec(120.0, slider=True) for _ in range(panes)]
    lay = vlayout.compute(size, specs, legend_width=160.0, help_width=300.0,
                          heatmap_size=(200.0, 200.0) if panes == 2 else None)
    rects = lay.panel_rects()
    for i, plot in enumerate(lay.plots):
        s = lay.sliders[i]
        assert s is not None and s.w == pytest.approx(plot.w) and s.x == pytest.approx(plot.x)
        assert s.y >= plot.y1 and s.h >= 30
        for name, r in rects:
            assert not plot.intersects(r), (name, r, plot)
            if name != f"slider{i}":
                assert not s.intersects(r), (name, r, s)


def test_slider_geometry_maps_positions_and_hits():
    from viewer.layout import Rect
    from viewer.timeline import SliderGeometry

    g = SliderGeometry(Rect(100, 500, 600, 54), 5)
    x0, x1, y = g.track
    assert g.x_of(0) == x0 and g.x_of(4) == x1
    assert g.position_at(g.x_of(2.5)) == pytest.approx(2.5)
    assert g.position_at(0) == 0.0 and g.position_at(10_000) == 4.0
    assert g.hit(g.play.x + 3, g.play.y + 3) == ("play", None)
    hit = g.hit(g.x_of(1), y)
    assert hit[0] == "track" and hit[1] == pytest.approx(1.0)
    assert g.hit(50, 50) is None and g.nearest_tick(g.x_of(3) + 4) == 3
    assert g.curve([0.0, 0.5, 1.0, 1.0, 1.0])[0, 1] > g.curve([0.0, 0.5, 1.0, 1.0, 1.0])[2, 1]
    assert g.curve([0.1, None, 1, 1, 1]) is None


# ------------------------------------------------------------------------------ GL

gl = pytest.mark.gl


def _canvas(bundle, rng, *, path="shader", size=(420, 360), hud=False, **kw):
    pytest.importorskip("vispy")
    from engine.tour import random_frame
    from viewer.canvas import TourCanvas

    c = TourCanvas(bundle, size=size, show=False, animate=False, render_path=path, **kw)
    c.show_hud = hud
    c.show_fps = False
    c.pause_tour()
    c.set_frame(random_frame(c.p, 2, rng))
    return c


def _isolated(px, size, min_gap, margin=12):
    d = np.sqrt(((px[:, None] - px[None]) ** 2).sum(-1))
    d[np.eye(len(px), dtype=bool)] = np.inf
    w, h = size
    inside = (px[:, 0] > margin) & (px[:, 0] < w - margin) & (px[:, 1] > margin) & (px[:, 1] < h - margin)
    return np.flatnonzero((d.min(1) > min_gap) & inside)


@gl
@pytest.mark.parametrize("path", ["shader", "copy"])
def test_a_fractional_checkpoint_draws_the_blend(tmp_path, rng, path):
    """At position 0.35 between checkpoints 0 and 1 every point is drawn at the blend of its two
    aligned positions, in its colour; the picture equals one of a bundle holding that blend."""
    from engine.store import BundleWriter, load_bundle
    from viewer.colors import BACKGROUND

    b, data = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng, path=path, layer=1)
    try:
        F = c.frame
        c.set_checkpoint(0.35)
        c.reset_view()
        assert c.view.blend() == ((0, 1), (1, 1), pytest.approx(0.35))
        ref = (0.65 * data[0][1] + 0.35 * data[1][1]) @ F
        px = c.data_to_pixels(ref)
        img = c.render()
        labels = np.asarray(b.attributes["label"].values)
        idx = _isolated(px, c.size, 3 * c.point_size())
        assert len(idx) >= 3
        alpha = c.point_alpha()
        for i in idx:
            rgb = np.asarray(c.coloring.palette[labels[i]][:3])
            want = rgb * alpha + np.asarray(BACKGROUND[:3]) * (1 - alpha)
            got = img[int(px[i, 1]), int(px[i, 0]), :3] / 255.0
            np.testing.assert_allclose(got, want, atol=4 / 255)
        fit, zoom = c.view.fit.to_list(), c.zoom
    finally:
        c.close()
    w = BundleWriter(tmp_path / "blend.lt", n=N, dim=P)  # the same picture, made by hand
    w.add_model("net")
    for i in range(L):
        e = (0.65 * data[0][i] + 0.35 * data[1][i]).astype(np.float32)
        w.write_layer("net", f"{i}-Block", e, name=f"block{i}")
        w.set_alignment("net", f"{i}-Block", np.eye(P), np.zeros(P))
    w.set_attribute("label", labels, "categorical", categories=b.attributes["label"].categories, default=True)
    w.commit()
    c2 = _canvas(load_bundle(tmp_path / "blend.lt"), rng, path=path, layer=1)
    try:
        c2.set_frame(F)
        c2.set_view_params({"fit": fit, "zoom": zoom})
        img2 = c2.render()
    finally:
        c2.close()
    diff = np.abs(img[..., :3].astype(int) - img2[..., :3].astype(int))
    assert np.mean(diff > 3) < 2e-3, np.mean(diff > 3)


@gl
def test_slider_drag_keys_play_and_hud(tmp_path, rng):
    from vispy.util import keys

    from viewer.timeline import STEP_SECONDS

    b, _ = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng, hud=True, size=(700, 520))
    try:
        lay = c.layout()
        geom = c.slider_geometry(lay, 0)
        assert geom is not None and not lay.plots[0].intersects(geom.rect)
        _, _, y = geom.track
        c.events.mouse_press(pos=(geom.x_of(0.5), y), button=1, modifiers=())
        assert c.checkpoint_position == pytest.approx(0.5, abs=1e-3)
        c.events.mouse_move(pos=(geom.x_of(1.25), y), button=1, buttons=[1], modifiers=())
        assert c.checkpoint_position == pytest.approx(1.25, abs=1e-3)
        c.events.mouse_move(pos=(geom.rect.x1 + 500, y), buttons=[1], modifiers=())
        assert c.checkpoint_position == 2.0  # clamped to the last checkpoint
        c.events.mouse_release(pos=(geom.x_of(2), y), button=1, modifiers=())
        c.events.mouse_move(pos=(geom.x_of(0), y), modifiers=())  # no drag after the release
        assert c.checkpoint_position == 2.0 and c.hover_checkpoint == (c.pane, 0)
        c.render()
        texts = [t for t, _ in c.overlay.drawn]
        assert any("step-200  ·  accuracy 95.0%" in t for t in texts), texts
        assert any("checkpoint 1/3 step-0" in t for t in texts)  # the hover hint in the message bar
        boxes = [box for t, box in c.overlay.drawn if t in NAMES]
        assert boxes and all(geom.rect.x - 1 <= bx0 and bx1 <= geom.rect.x1 + 1 and geom.rect.y - 1 <= by0
                             and by1 <= geom.rect.y1 + 1 for bx0, by0, bx1, by1 in boxes)
        c.set_checkpoint(1.5)
        c.render()
        texts = [t for t, _ in c.overlay.drawn]
        assert any("step-10 → step-200 (50%)  ·  accuracy 55.0% → 95.0%" in t for t in texts), texts
        c.set_checkpoint(2)
        c.events.key_press(key=keys.Key("["), text="[")
        assert c.view.clock.moving
        c.advance(STEP_SECONDS + 0.01)
        assert c.checkpoint_position == 1.0 and c.checkpoint == "step-10"
        c.events.key_press(key=keys.Key("]"), text="]")
        c.advance(STEP_SECONDS + 0.01)
        assert c.checkpoint_position == 2.0
        c.events.key_press(key=keys.Key("P"), text="p")  # from the end, play starts over
        assert c.view.clock.playing and c.checkpoint_position == 0.0 and c.animating()
        for _ in range(40):
            c.advance(0.1)
        assert c.checkpoint_position == 2.0 and not c.view.clock.playing
        c.events.mouse_press(pos=(geom.play.x + 4, geom.play.y + 4), button=1, modifiers=())
        assert c.view.clock.playing  # the button plays too
    finally:
        c.close()


@gl
def test_colourings_follow_the_checkpoint(tmp_path, rng):
    b, data = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng, color="correct")
    try:
        assert "checkpoint-movement" in c.color_options and "correct" in c.color_options
        for k in (0, 2, 1):
            c.set_checkpoint(k)
            want = b.model_at("net", k).attributes["correct"].values
            np.testing.assert_array_equal(c.coloring.codes, want.astype(np.float32))
        c.set_coloring("checkpoint-movement")
        from engine.align import movement

        d = movement(data[0][0].astype(np.float32), data[1][0].astype(np.float32))
        assert c.coloring.extent[1] == pytest.approx(np.quantile(d, 0.99), rel=1e-4)
        c.set_checkpoint(0)
        assert np.all(c.coloring.codes == 0)  # no previous checkpoint
        sel = rng.random(N) < 0.3
        c.set_selection(sel)
        c.set_checkpoint(2)
        np.testing.assert_array_equal(c.selection, sel)  # brushing persists across checkpoints
    finally:
        c.close()


@gl
def test_handles_follow_each_checkpoint_and_the_blend(tmp_path, rng):
    from vispy.util import keys

    from viewer import controllers

    b, data = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng, layer=1)
    try:
        hc = next(x for x in controllers.install(c) if isinstance(x, controllers.HandleController))
        sel = rng.random(N) < 0.4
        c.set_selection(sel)
        c.events.key_press(key=keys.Key("D"), text="d")
        assert len(hc.handles) == 1
        for pos in (2.0, 0.0, 0.25):
            c.set_checkpoint(pos)
            lo, hi, f = c.view.clock.pair
            want = (1 - f) * data[lo][1][sel].mean(0) + f * data[hi][1][sel].mean(0)
            np.testing.assert_allclose(hc.points(c.pane)[0], want, atol=1e-5)
    finally:
        c.close()


@gl
def test_compare_two_checkpoints_of_one_model(tmp_path, rng):
    from engine.align import similarity_matrix
    from viewer.compare import CompareCanvas

    b, data = _run_bundle(tmp_path / "r.lt", rng)
    c = CompareCanvas(b, "net", "net", checkpoint_a=0, checkpoint_b="step-200", size=(1000, 500), show=False,
                      animate=False, render_path="shader", controllers=False)
    try:
        a_pane, b_pane = c.panels
        assert a_pane.view.checkpoint == 0 and b_pane.view.checkpoint == 2
        S = similarity_matrix([ly.embedding for ly in b.model_at("net", 0).layers],
                              [ly.embedding for ly in b.model_at("net", 2).layers])
        np.testing.assert_allclose(c.similarity, S, atol=1e-9)
        c.render()
        title = c.title_lines(c.layout())[0][0]
        assert "step-0" in title and "step-200" in title
        lay = c.layout()
        assert all(r is not None for r in lay.sliders)
        q0 = c.rotation.copy()
        c.set_pane_checkpoint(b_pane, 1)
        assert c.animating()  # B glides to its alignment for the new pair
        assert not np.allclose(c.rotation, q0)
        assert c.pane_name(b_pane) == "net@step-10"
    finally:
        c.close()


@gl
def test_saved_view_keeps_the_checkpoint(tmp_path, rng):
    from viewer import viewstate

    b, _ = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng)
    try:
        c.set_checkpoint(0.75)
        state = viewstate.capture(c)
        assert state["view"]["checkpoint"] == "step-10" and state["view"]["checkpoint_position"] == 0.75
        path = viewstate.save(tmp_path / "v.json", state)
        c.set_checkpoint(2)
        viewstate.apply(c, viewstate.load(path))
        assert c.checkpoint_position == 0.75
        bad = dict(state, view={**state["view"], "checkpoint_position": -3})
        with pytest.raises(viewstate.ViewStateError, match="checkpoint_position"):
            viewstate.validate(bad)
    finally:
        c.close()


@gl
def test_render_train_sweeps_checkpoints_and_walk_at_a_checkpoint(tmp_path, rng, capsys):
    import imageio.v3 as iio

    from engine.cli import main

    _run_bundle(tmp_path / "r.lt", rng)
    out = tmp_path / "train.gif"
    assert main(["render", str(tmp_path / "r.lt"), "--train", "1", "--fps", "8", "--size", "320x260",
                 "--out", str(out)]) == 0
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 9  # 1 s at 8 fps, both ends included
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0
    walk = tmp_path / "walk.gif"
    assert main(["render", str(tmp_path / "r.lt"), "--walk", "0.25", "--fps", "8", "--checkpoint", "step-0",
                 "--size", "320x260", "--out", str(walk)]) == 0
    assert iio.imread(walk, index=None).shape[0] == 5
    from _v2_helpers import make_bundle

    make_bundle(tmp_path / "plain.lt", rng, n=40)
    assert main(["render", str(tmp_path / "plain.lt"), "--train", "1", "--out", str(tmp_path / "x.gif")]) == 2
    assert "no training run" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "r.lt"), "--checkpoint", "step-9",
                 "--out", str(tmp_path / "y.png")]) == 2
    assert "step-0, step-10, step-200" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "y.png").exists()


@gl
def test_notebook_widget_scrubs_through_the_same_events(tmp_path, rng):
    pytest.importorskip("jupyter_rfb")
    import vispy

    vispy.use("glfw")
    from viewer.notebook import show

    b, _ = _run_bundle(tmp_path / "r.lt", rng)
    w = show(b, size=(520, 420), device="cpu", checkpoint="step-0")
    try:
        w.playing = False
        assert w.checkpoint == "step-0"
        win = w.window
        geom = win.slider_geometry(win.layout(), 0)
        _, _, y = geom.track
        base = {"modifiers": [], "timestamp": 0.0, "button": 1, "buttons": [1]}
        w._browser_event({**base, "type": "pointer_down", "x": geom.x_of(1.0), "y": y})
        w._browser_event({**base, "type": "pointer_move", "x": geom.x_of(1.6), "y": y})
        w._browser_event({**base, "type": "pointer_up", "x": geom.x_of(1.6), "y": y, "buttons": []})
        assert win.checkpoint_position == pytest.approx(1.6, abs=1e-3) and w.checkpoint == "step-200"
        w._browser_event({"type": "key_down", "key": "[", "modifiers": [], "timestamp": 0.0})
        assert win.view.clock.moving
        w.checkpoint = 0.5
        assert win.checkpoint_position == 0.5
        w.checkpoint = "step-10"
        assert w.checkpoint == "step-10" and w.snapshot().shape == (420, 520, 3)
    finally:
        w.close()


@gl
def test_a_guided_tour_retargets_when_the_checkpoint_changes(tmp_path, rng):
    from viewer import guided as vguided

    b, _ = _run_bundle(tmp_path / "r.lt", rng)
    c = _canvas(b, rng, layer=1, color="label")
    try:
        vguided.start(c, "lda")
        c.advance(0.1)
        c.set_checkpoint(0)
        assert "re-targeted on net" in (c.current_status() or "")
    finally:
        c.close()
