"""Saved views of the compare window on real OpenGL under Xvfb, with real files: v / o round trips
of both panes (layers, checkpoints, zoom/pan, framing, handles, brushes) and the shared tour
(also guided), refusals that name the file and field (malformed, other models, the other kind of
window), and ``--state`` with ``--compare`` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _v2_helpers import random_frame, record_compare_windows
from test_compare import LB, SIZE, N, P, key, make_pair_bundle

pytestmark = pytest.mark.gl


def _window(bundle, size=SIZE, **kw):
    import vispy

    vispy.use("glfw")
    from viewer.compare import CompareCanvas

    c = CompareCanvas(bundle, "alpha", "beta", size=size, show=False, animate=False, device="cpu", **kw)
    c.tour.pause()
    return c


@pytest.fixture
def pair(tmp_path, rng):
    return make_pair_bundle(tmp_path / "pair.lt", rng)


def _wander_to_a_view(c, rng):
    """A view with something set in every part: layers, zoom/pan per pane, colouring and legend
    filter, a brush in each pane, handles from the selection, hidden heat map, a frame."""
    a, b = c.panels
    c.set_layers(a=2, b=1, animate=False)
    c.set_coloring("label")
    c.legend_filter = {0, 2, 3}
    a.zoom, a.center = 1.6, np.array([0.3, -0.2])
    b.zoom = 0.7
    a.set_selection(rng.random(N) < 0.6)
    b.set_selection(rng.random(N) < 0.7)
    c.focus = a
    key(c, "D")  # a handle at the selection's centroid, in both panes
    key(c, "A")  # and the axis handles
    c.show_heatmap = False
    c.tour.speed = 0.37
    c.set_frame(random_frame(rng, P))


def _leave_it(c, rng):
    a, b = c.panels
    c.set_layers(a=0, b=2, animate=True)
    c.advance(0.2)  # mid-blend, B mid-glide
    c.set_coloring("confidence")
    a.zoom, b.center = 0.9, np.array([1.0, 1.0])
    key(c, "X")
    key(c, "Delete", "")
    c.show_heatmap = True
    c.set_frame(random_frame(rng, P))


def _picture(c):
    """The window's pixels above the message bar (which says what was just saved or loaded)."""
    img = c.render()
    return img[: int(c.layout().bottom.y * c.pixel_scale)]


def _json(x):
    return json.loads(json.dumps(x))


def test_v_and_o_round_trip_both_panes_exactly(pair, tmp_path, rng):
    from viewer import viewstate

    c = _window(pair, directory=tmp_path)
    try:
        a, b = c.panels
        _wander_to_a_view(c, rng)
        want = _json(viewstate.capture(c))
        frames = [c.frame_for(p).copy() for p in c.panels]
        img = _picture(c)
        key(c, "V")
        (path,) = tmp_path.glob("pair.lt-view-*.json")
        saved = json.loads(path.read_text())
        assert saved == want and saved["kind"] == "compare"
        pa, pb = saved["panes"]
        assert [(q["side"], q["model"], q["layer"]) for q in (pa, pb)] == [("a", "alpha", 2),
                                                                            ("b", "beta", 1)]
        assert len(pa["handles"]) == 1 + P and pa["brush"] != pb["brush"]
        _leave_it(c, rng)
        assert not np.array_equal(_picture(c), img)
        key(c, "O")
        assert "loaded view" in c.current_status()
        assert _json(viewstate.capture(c)) == want
        assert (a.layer_index, b.layer_index, a.transition, b.transition) == (2, 1, None, None)
        assert (a.zoom, b.zoom, c.legend_filter, c.show_heatmap) == (1.6, 0.7, {0, 2, 3}, False)
        for p, F in zip(c.panels, frames):
            np.testing.assert_array_equal(p.frame, F)  # B's too: Q F for the restored pair of layers
        expected = np.logical_and(_mask(saved["panes"][0]["brush"]), _mask(saved["panes"][1]["brush"]))
        np.testing.assert_array_equal(c.selection, expected)
        assert [len(c.controls[s].handles.handles) for s in "ab"] == [1 + P, 1 + P]
        np.testing.assert_array_equal(_picture(c), img)
        # g glides there from elsewhere and arrives on the same picture
        _leave_it(c, rng)
        key(c, "G")
        for _ in range(30):
            c.advance(1 / 30)
        assert _json(viewstate.capture(c)) == want
        np.testing.assert_array_equal(_picture(c), img)
    finally:
        c.close()


def _mask(idx):
    m = np.zeros(N, bool)
    m[idx] = True
    return m


def test_checkpoints_of_a_training_run_round_trip_in_compare(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from test_viewer_training import _run_bundle

    from viewer import viewstate
    from viewer.compare import CompareCanvas

    b, _ = _run_bundle(tmp_path / "r.lt", rng)
    c = CompareCanvas(b, "net", "net", checkpoint_a=0, checkpoint_b="step-200", size=(700, 400), show=False,
                      animate=False, device="cpu")
    try:
        pa, pb = c.panels
        c.set_layers(a=1, b=0, animate=False)
        c.set_pane_checkpoint(pa, 0.4)  # between step-0 and step-10: their blend
        want = _json(viewstate.capture(c))
        assert want["panes"][0]["view"]["checkpoint_position"] == 0.4
        path = viewstate.save(tmp_path / "v.json", want)
        c.set_pane_checkpoint(pa, 2)
        c.set_pane_checkpoint(pb, 1)
        c.set_layers(a=0, b=1, animate=False)
        viewstate.apply(c, viewstate.load(path))
        assert (pa.view.clock.position, pb.view.clock.position) == (0.4, 2.0)
        assert (pa.layer_index, pb.layer_index) == (1, 0)
        assert _json(viewstate.capture(c)) == want
        bad = json.loads(json.dumps(want))
        bad["panes"][0]["view"]["checkpoint"] = "step-9"
        with pytest.raises(viewstate.ViewStateError, match=r"'panes\[0\]\.view\.checkpoint' is 'step-9'"):
            viewstate.apply(c, bad)
    finally:
        c.close()


def test_guided_compare_view_round_trip(pair, tmp_path, rng):
    from engine.tour import GrandTour
    from viewer import viewstate

    c = _window(pair)
    try:
        c.set_coloring("label")
        c.set_frame(random_frame(rng, P))
        key(c, "U")
        for _ in range(10):
            c.advance(1 / 30)
        state = _json(viewstate.capture(c))
        assert state["controllers"]["guided"] == {"active": True, "index": "lda", "attribute": "label"}
        path = viewstate.save(tmp_path / "g.json", state)
        expected = [c.tour.step(1 / 30).copy() for _ in range(15)]
        key(c, "U")
        c.set_layers(a=1, animate=False)
        assert type(c.tour) is GrandTour
        viewstate.apply(c, viewstate.load(path))
        guided = c.controls["a"].guided
        assert guided.mode.active and c.tour is guided.mode.tour
        for F in expected:
            np.testing.assert_array_equal(c.tour.step(1 / 30), F)
    finally:
        c.close()


MALFORMED = [
    (lambda s: s.update(kind="triple"), "'kind' must be one of"),
    (lambda s: s.update(panes=s["panes"][:1]), "'panes' must be a list of 2 panes"),
    (lambda s: s["panes"][1].update(side="a"), r"'panes\[1\]\.side' must be 'b'"),
    (lambda s: s["panes"][0].update(layer=-1), r"'panes\[0\]\.layer' must be a non-negative integer"),
    (lambda s: s["panes"][1]["view"].update(zoom="x"), r"'panes\[1\]\.view\.zoom' must be a finite number"),
    (lambda s: s["panes"][0]["view"].update(fit=[0, 0, -1]), r"'panes\[0\]\.view\.fit' must be \[x, y"),
    (lambda s: s["panes"][0].update(brush=[0, N]), r"'panes\[0\]\.brush' has indices outside \[0, 400\)"),
    (lambda s: s["panes"][1]["handles"][0].update(members=[]), r"'panes\[1\]\.handles\[0\]\.members'"),
    (lambda s: s.update(selection=[1, 2, 3]), "'selection' must be the intersection of the panes' brushes"),
    (lambda s: s["view"].update(heatmap="yes"), "'view.heatmap' must be true or false"),
    (lambda s: s["panes"][0].update(model=7), r"'panes\[0\]\.model' must be a model name"),
]
MISMATCHED = [
    (lambda s: s["panes"][0].update(model="gamma"), r"'panes\[0\]\.model' is 'gamma' but the bundle has"),
    (lambda s: s["panes"][1].update(layer=LB), rf"'panes\[1\]\.layer' is {LB} but model 'beta' has {LB} "),
    (lambda s: (s["panes"][0].update(model="beta", layer=0), s["panes"][1].update(model="alpha")),
     r"'panes\[0\]\.model' is 'beta' but this window's pane A shows 'alpha' \(open the view with "
     r"--compare beta alpha\)"),
    (lambda s: s["view"].update(color="nope"), "'view.color' is 'nope'.*choices"),
    (lambda s: s.update(n=N + 1), "saved for N=401"),
]


def test_malformed_and_mismatched_compare_views_are_refused_by_file_and_field(pair, tmp_path, rng):
    from viewer import viewstate

    c = _window(pair)
    try:
        _wander_to_a_view(c, rng)
        good = _json(viewstate.capture(c))
        before = _json(viewstate.capture(c))
        for k, (edit, message) in enumerate(MALFORMED + MISMATCHED):
            s = json.loads(json.dumps(good))
            edit(s)
            path = tmp_path / f"bad{k}.json"
            path.write_text(json.dumps(s))
            with pytest.raises(viewstate.ViewStateError, match=message) as info:
                viewstate.check_fits(c, viewstate.load(path), source=str(path))
            assert f"bad{k}.json" in str(info.value)
        assert _json(viewstate.capture(c)) == before  # nothing was applied
        # o with a bad file says so in the status line and leaves the view alone
        c.controls["a"].views.state_path = path
        key(c, "O")
        assert "saved for N=401" in c.current_status()
        assert _json(viewstate.capture(c)) == before
    finally:
        c.close()


def test_single_and_compare_views_do_not_cross(pair, tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from viewer import controllers, viewstate
    from viewer.canvas import TourCanvas

    c = _window(pair)
    s = TourCanvas(pair, model="alpha", size=(300, 260), show=False, animate=False, device="cpu")
    try:
        views = next(k for k in controllers.install(s, directory=tmp_path)
                     if isinstance(k, controllers.ViewStateController))
        single = viewstate.save(tmp_path / "single.json", viewstate.capture(s))
        compare = viewstate.save(tmp_path / "compare.json", viewstate.capture(c))
        with pytest.raises(viewstate.ViewStateError, match=r"single\.json: field 'kind' is 'single'.*"
                                                           r"single-model window.*cannot be opened in the "
                                                           r"compare window"):
            viewstate.check_fits(c, viewstate.load(single), source=str(single))
        with pytest.raises(viewstate.ViewStateError, match="field 'kind' is 'compare'"):
            viewstate.apply(s, viewstate.load(compare))
        old = json.loads(single.read_text())
        del old["kind"]  # a single view written before compare views existed
        single.write_text(json.dumps(old))
        viewstate.apply(s, viewstate.load(single))
        with pytest.raises(viewstate.ViewStateError, match="'kind' is 'single'"):
            viewstate.apply(c, viewstate.load(single))
        before = _json(viewstate.capture(s))
        views.state_path = compare  # the single window's o, given the compare file
        key(s, "O")
        assert "'kind' is 'compare'" in s.current_status()
        assert _json(viewstate.capture(s)) == before
    finally:
        s.close()
        c.close()


def test_render_and_view_with_state_and_compare(pair, tmp_path, rng, monkeypatch, capsys):

    import imageio.v3 as iio

    from engine.cli import main
    from viewer import viewstate

    c = _window(pair, size=(640, 320))
    try:
        c.set_layers(a=3, b=1, animate=False)
        c.panels[1].zoom = 1.3
        c.panels[0].set_selection(rng.random(N) < 0.5)
        key(c, "D")
        c.set_frame(random_frame(rng, P))
        state = viewstate.capture(c)
        want = _picture(c)[..., :3]  # the live window's message bar still says "handle ... on N points"
    finally:
        c.close()
    path = viewstate.save(tmp_path / "cv.json", state)
    bundle = str(pair.path)
    for extra in (["--compare", "alpha", "beta"], []):  # a compare view opens the compare window itself
        out = tmp_path / f"r{len(extra)}.png"
        assert main(["render", bundle, *extra, "--size", "640x320", "--state", str(path),
                     "--out", str(out)]) == 0
        got = iio.imread(out)
        assert got.shape == (320, 640, 3)
        got = got[: len(want)]
        assert np.mean(np.abs(got.astype(int) - want.astype(int)) > 3) < 1e-3
    # refusals: other models, a single-model view with --compare
    assert main(["render", bundle, "--compare", "beta", "alpha", "--state", str(path),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "cv.json: field 'panes[0].model' is 'alpha'" in capsys.readouterr().err
    single = json.loads(path.read_text())
    single = {k: v for k, v in single.items() if k != "panes"}
    single.update(kind="single", model="alpha", layer=0, handles=[])
    (tmp_path / "single.json").write_text(json.dumps(single))
    assert main(["render", bundle, "--compare", "alpha", "beta", "--state", str(tmp_path / "single.json"),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "single.json: field 'kind' is 'single'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    # the desktop window: --compare A B --state FILE opens in the saved view, and o reads that file
    opened = record_compare_windows(monkeypatch)
    try:
        assert main(["view", bundle, "--compare", "alpha", "beta", "--state", str(path)]) == 0
        (w,) = opened
        assert _json(viewstate.capture(w)) == _json(state)
        assert w.controls["a"].views.state_path == path
    finally:
        for w in opened:
            w.close()
