"""The guided tour in the viewer (viewer.guided): the GL-free mode (switching keeps the frame, the
selection view, index cycling, the badge's text, where classes come from, statistics computed once),
then the real windows under Xvfb (keys, badge drawn, the climb to the closed-form LDA optimum,
handles / brushing / layers / 3-D in guided mode, saved views, the compare window), the study data's
"Done when", and ``layertour render --guided``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _v2_helpers import random_frame

from engine import pursuit as P
from engine.tour import GrandTour, GuidedTour
from viewer import guided as G


def planted(rng, n=600, p=6, k=4, sep=3.0):
    """(X (n, p) float32, labels (n,), plane (p, 2)): k classes apart only inside one 2-plane."""
    plane = np.linalg.qr(rng.standard_normal((p, 2)))[0]
    labels = rng.integers(0, k, n)
    centres = sep * np.c_[np.cos(2 * np.pi * np.arange(k) / k), np.sin(2 * np.pi * np.arange(k) / k)]
    X = rng.standard_normal((n, p)) + centres[labels] @ plane.T
    return X.astype(np.float32), labels, plane


def closed_form_lda(X, labels, d=2):
    """Independent reference: 1 - prod 1/(1 + mu_i) over the d leading generalised eigenvalues of
    (B, W), from a float64 NumPy scatter (not engine.pursuit's)."""
    import scipy.linalg as sl

    X = np.asarray(X, dtype=np.float64)
    m = X.mean(axis=0)
    W, B = np.zeros((X.shape[1],) * 2), np.zeros((X.shape[1],) * 2)
    for c in np.unique(labels):
        Xc = X[labels == c]
        mc = Xc.mean(axis=0)
        W += (Xc - mc).T @ (Xc - mc)
        B += len(Xc) * np.outer(mc - m, mc - m)
    mu = np.sort(sl.eigh(B, W, eigvals_only=True))[::-1][:d]
    return 1.0 - float(np.prod(1.0 / (1.0 + mu)))


# ------------------------------------------------------------------------------------ GL-free


def test_switching_modes_keeps_the_frame_speed_and_play_state(rng):
    X, labels, _ = planted(rng)
    mode = G.GuidedMode("lda", seed=3)
    grand = GrandTour(6, 2, seed=1, speed=0.6)
    for _ in range(17):
        grand.step(0.1)
    F = grand.frame.copy()
    guided = mode.start(grand, X, ("net", 0), labels, "label")
    assert isinstance(guided, GuidedTour) and mode.active and mode.tour is guided
    np.testing.assert_allclose(guided.frame, F, rtol=0, atol=1e-15)  # the same frame, to rounding
    assert guided.speed == 0.6 and guided.playing
    for _ in range(5):
        guided.step(0.1)
    F2 = guided.frame.copy()
    guided.pause()
    back = mode.stop(guided)
    assert isinstance(back, GrandTour) and not mode.active and mode.tour is None
    np.testing.assert_allclose(back.frame, F2, rtol=0, atol=1e-15)
    assert back.speed == 0.6 and not back.playing
    again = mode.start(back, X, ("net", 0), labels, "label", play=False)
    np.testing.assert_allclose(again.frame, F2, rtol=0, atol=1e-15)
    assert not again.playing


def test_class_scatter_is_computed_once_per_layer_and_attribute(rng, monkeypatch):
    X, labels, _ = planted(rng)
    calls = []
    real = P.class_scatter
    monkeypatch.setattr(P, "class_scatter", lambda *a, **k: calls.append(1) or real(*a, **k))
    mode = G.GuidedMode("lda")
    lda = mode.objective("lda", X, ("net", 0), labels, "label")
    pda = mode.objective("pda", X, ("net", 0), labels, "label")
    assert len(calls) == 1 and lda.name == "lda" and pda.name == "pda"
    assert mode.objective("lda", X, ("net", 0), labels, "label") is lda
    mode.objective("lda", X, ("net", 1), labels, "label")
    mode.objective("lda", X, ("net", 0), labels % 2, "parity")
    assert len(calls) == 3
    F = random_frame(rng, 6)
    assert lda.value(F) == pytest.approx(P.lda(X @ F, labels), rel=1e-9)


def test_index_options_sample_on_the_cpu_and_describe_says_so(rng):
    X, labels, _ = planted(rng, n=9000)
    mode = G.GuidedMode()
    mode.attribute = "label"
    holes = mode.objective("holes", X, "k")
    assert holes.spec["sphere"] and holes.n == G.SAMPLE["holes"][0]
    assert mode.describe(holes) == "holes (sphered, 5,000 of 9,000 rows)"
    purity = mode.objective("purity", X, "k", labels, "label")
    assert purity.n == G.SAMPLE["purity"][0]
    assert mode.describe(purity) == "purity by label (300 of 9,000 rows)"
    assert mode.describe(mode.objective("pda", X, "k", labels, "label")) == "pda by label (λ 0.2)"
    assert mode.describe(mode.objective("lda", X, "k", labels, "label")) == "lda by label"


def test_index_cycling_and_bad_names(rng):
    mode = G.GuidedMode()
    seen = [mode.cycle() for _ in range(5)]
    assert seen == ["pda", "holes", "cmass", "purity", "lda"]
    mode.index = "holes"
    assert mode.cycle(["holes", "cmass"]) == "cmass" and mode.cycle(["holes", "cmass"]) == "holes"
    with pytest.raises(G.GuidedError, match="unknown index 'nope': choose one of lda, pda"):
        G.GuidedMode("nope")


def test_selection_view_improves_the_lda_of_the_mask(rng):
    X, _, _ = planted(rng, n=800)
    mask = X[:, 2] + 0.5 * X[:, 4] > 0.6  # a group defined off the planted plane
    F0 = np.zeros((6, 2))
    F0[[0, 1, 3, 5]] = random_frame(rng, 4)  # a view that does not see the group's direction
    mode = G.GuidedMode()
    hold = mode.selection_view(F0, X, mask)
    assert mode.hold is hold and hold.count == int(mask.sum()) and hold.n == 800
    X64 = X.astype(np.float64)  # the badge's values come from one float32 projection: 1e-6 is plenty
    assert hold.before == pytest.approx(P.lda(X64 @ F0, mask), rel=1e-6)
    assert hold.after == pytest.approx(P.lda(X64 @ hold.frame, mask), rel=1e-6)
    assert hold.after > hold.before + 0.15  # (at least 0.26 over 300 seeds)
    assert P.lda(X64 @ hold.frame, mask) == pytest.approx(closed_form_lda(X, mask), rel=1e-9)
    # the glide: view_path + smoothstep from F0, ending exactly on the selection view
    F, done = hold.glide.step(0.0)
    np.testing.assert_allclose(F, F0, atol=1e-12)
    F, done = hold.glide.step(G.SELECTION_SECONDS)
    assert done
    np.testing.assert_array_equal(F, hold.frame)
    for bad, msg in ((np.zeros(800, bool), "select points first"), (np.ones(800, bool), "every point")):
        with pytest.raises(G.GuidedError, match=msg):
            mode.selection_view(F0, X, bad)


def test_hud_text_names_index_value_and_status(rng):
    X, labels, _ = planted(rng)
    mode = G.GuidedMode("lda")
    tour = mode.start(GrandTour(6, 2, seed=0), X, "k", labels, "label_coarse")
    head, line = mode.hud_lines(tour)
    opt = closed_form_lda(X, labels)
    assert head == "guided tour: lda by label_coarse"
    assert line == f"1−Λ {tour.value:.4f}  ·  optimum {opt:.4f}  ·  climbing"
    tour.pause()
    assert mode.hud_lines(tour)[1].endswith("climbing, paused")
    mode.index = "holes"
    h = mode.start(tour, X, "k")
    assert mode.hud_lines(h)[1].startswith(f"holes {h.value:.4f}  ·  best ")
    assert mode.attribute == "label_coarse"  # kept for the next class index
    mode.stop(h)
    assert mode.hud_lines(h) == []
    mode.selection_view(h.frame, X, labels == 1)
    sel = mode.hud_lines(h)
    assert sel[0].startswith(f"selection view: {int((labels == 1).sum()):,} selected vs ")
    assert "gliding" in sel[1]


def test_classes_come_from_a_categorical_colouring(tmp_path, rng):
    from _v2_helpers import make_bundle

    b = make_bundle(tmp_path / "b.lt", rng, n=60, p=4, layers=1, images=False)
    attr, labels, note = G.class_source("lda", "label", b)
    assert attr == "label" and note is None and labels.shape == (60,)
    attr, _, note = G.class_source("lda", "confidence", b, previous="label")
    assert attr == "label" and note == "colouring 'confidence' is continuous"
    with pytest.raises(G.GuidedError, match=r"'confidence' is continuous; colour by a categorical attribute "
                                            r"\(label\)"):
        G.class_source("purity", "confidence", b)
    with pytest.raises(G.GuidedError, match="'none' is one colour"):
        G.class_source("lda", "none", b)


@pytest.mark.parametrize("value", [[], {"guided": 3}, {"": {}}, {"g\x00": {}}])
def test_a_saved_views_controllers_entry_is_validated(rng, value):
    from test_viewstate import _state

    from viewer import viewstate

    s = _state(rng)
    viewstate.validate(s)  # without the entry: a view saved before it existed
    s["controllers"] = {"guided": {"active": True, "index": "lda", "attribute": "label"}}
    viewstate.validate(s)
    s["controllers"] = value
    with pytest.raises(viewstate.ViewStateError, match="controllers"):
        viewstate.validate(s)


def test_the_cli_knows_the_same_indices():
    from viewer import cli

    assert cli.GUIDED_INDICES == G.INDEX_ORDER and cli.CLASS_INDICES == G.CLASS_INDICES


# ------------------------------------------------------------------------------ real windows


def planted_bundle(path, rng, n=500, p=6, layers=2):
    """A real bundle whose layers hold planted classes (a categorical "label", a continuous
    "confidence"); returns (bundle, per-layer X, labels)."""
    from engine.store import BundleWriter, load_bundle

    labels = rng.integers(0, 4, n)
    w = BundleWriter(path, n=n, dim=p)
    w.add_model("net")
    w.add_model("other")
    centres = 3.0 * np.c_[np.cos(labels * np.pi / 2), np.sin(labels * np.pi / 2)]
    Xs = []
    for k in range(layers):  # the classes lie apart in another plane in each layer
        plane = np.linalg.qr(rng.standard_normal((p, 2)))[0]
        X = (rng.standard_normal((n, p)) + centres @ plane.T).astype(np.float32)
        Xs.append(X)
        w.write_layer("net", f"{k}-Layer", X)
        Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
        w.write_layer("other", f"{k}-Layer", (X @ Q).astype(np.float32))
    w.set_attribute("label", labels, "categorical", categories=["a", "b", "c", "d"], default=True)
    w.set_attribute("confidence", rng.uniform(0, 1, n), "continuous")
    w.commit()
    return load_bundle(path), Xs, labels


@pytest.fixture
def window(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from viewer.canvas import TourCanvas
    from viewer.controllers import install

    bundle, Xs, labels = planted_bundle(tmp_path / "g.lt", rng)
    c = TourCanvas(bundle, size=(520, 420), show=False, animate=False, device="cpu")
    ctrls = install(c, directory=tmp_path)
    try:
        yield c, {type(k).__name__: k for k in ctrls}, Xs, labels
    finally:
        c.close()


def key(c, name):
    from vispy.util import keys

    c.events.key_press(key=keys.Key(name.upper()), text=name)


def texts(c):
    c.render()
    return [t for t, _ in c.overlay.drawn]


def lda_now(c, Xs, labels):
    return P.lda(np.asarray(Xs[c.layer_index], np.float64) @ c.frame, labels)


def run_until_finished(c, limit=3000, dt=1 / 30):
    for _ in range(limit):
        c.advance(dt)
        if getattr(c.tour, "status", None) == "finished":
            return
    raise AssertionError(f"guided tour still {c.tour.status} after {limit} frames")


@pytest.mark.gl
def test_key_starts_the_climb_draws_the_badge_and_reaches_the_optimum(window):
    c, ctrl, Xs, labels = window
    F0 = c.frame.copy()
    assert not any(t.startswith("guided tour:") for t in texts(c))
    key(c, "u")
    assert isinstance(c.tour, GuidedTour)
    np.testing.assert_allclose(c.frame, F0, rtol=0, atol=1e-15)  # no jump
    drawn = texts(c)
    assert "guided tour: lda by label" in drawn
    assert any(t.startswith("1−Λ ") and t.endswith("climbing") for t in drawn), drawn
    assert any("(lda) climbing" in t for t in drawn), drawn  # the title bar says so too (elided here)
    start = lda_now(c, Xs, labels)
    run_until_finished(c)
    opt = closed_form_lda(Xs[0], labels)
    assert lda_now(c, Xs, labels) >= 0.99 * opt and lda_now(c, Xs, labels) > start
    assert f"1−Λ {opt:.4f}  ·  optimum {opt:.4f}  ·  finished" in texts(c)
    key(c, "h")
    assert not any(t.startswith("guided tour:") for t in texts(c))  # the HUD key hides the badge too
    key(c, "h")
    F1 = c.frame.copy()
    key(c, "u")  # off: the grand tour goes on from here
    assert type(c.tour) is GrandTour and "guided tour off" in c.current_status()
    assert any("tour playing" in t for t in texts(c)) or any("tour paused" in t for t in texts(c))
    np.testing.assert_allclose(c.frame, F1, rtol=0, atol=1e-15)
    assert not any(t.startswith("guided tour:") for t in texts(c))
    assert ("u", G.GUIDED_HELP[0][1]) in c.help_entries


@pytest.mark.gl
def test_n_cycles_and_skips_class_indices_without_classes(window):
    c, _, _, _ = window
    key(c, "n")
    assert "guided tour index: pda (u starts" in c.current_status() and type(c.tour) is GrandTour
    key(c, "u")
    assert c.tour.index == "pda"
    key(c, "n")
    assert c.tour.index == "holes" and "holes (sphered)" in c.current_status()
    c.set_coloring("confidence")
    c.advance(0.05)
    key(c, "n")
    assert c.tour.index == "cmass"
    key(c, "n")  # purity and lda need classes; the guided tour keeps by "label", which it had
    assert c.tour.index == "purity"
    drawn = texts(c)
    assert any(t.startswith("classes: label (") for t in drawn), drawn  # (cut to the narrow plot)
    assert c.panes[0].controllers[-1].mode.hud_lines(c.tour)[2] == \
        "classes: label (colouring 'confidence' is continuous)"


@pytest.mark.gl
def test_class_index_refused_without_a_categorical_colouring(window):
    c, _, _, _ = window
    c.set_coloring("confidence")
    key(c, "u")
    assert type(c.tour) is GrandTour
    assert "lda takes its classes from the colouring, and 'confidence' is continuous" in c.current_status()


@pytest.mark.gl
def test_handles_brushing_layers_and_dims_keep_working_in_guided_mode(window):
    c, ctrl, Xs, labels = window
    key(c, "u")
    for _ in range(10):
        c.advance(1 / 30)
    # brushing: a selection in guided mode, then the best view of it (w)
    sel = (np.asarray(Xs[0]) @ random_frame(np.random.default_rng(1), 6))[:, 0] > 0.3
    c.set_selection(sel)
    key(c, "w")
    assert not c.tour.playing and "selection view" in c.current_status()
    for _ in range(40):
        c.advance(1 / 30)
    assert P.lda(np.asarray(Xs[0], np.float64) @ c.frame, sel) == pytest.approx(closed_form_lda(Xs[0], sel),
                                                                                  rel=1e-6)
    held = c.frame.copy()
    c.advance(0.5)
    np.testing.assert_array_equal(c.frame, held)  # held there
    assert any(t.endswith("held (space resumes)") for t in texts(c))
    key(c, "space")
    c.advance(0.2)
    assert isinstance(c.tour, GuidedTour) and not any("selected vs" in t for t in texts(c))
    # a handle drag sets the frame; the guided tour climbs again from there
    h = ctrl["HandleController"]
    c.set_selection(labels == 2)
    key(c, "d")
    px = h.pixel_positions(c)[0]
    c.events.mouse_press(pos=px, button=1)
    c.events.mouse_move(pos=px + [40, 25], button=1, buttons=[1])
    dragged = c.frame.copy()
    c.events.mouse_release(pos=px + [40, 25], button=1)
    assert isinstance(c.tour, GuidedTour) and c.tour.status == "climbing"
    np.testing.assert_allclose(c.frame, dragged, atol=1e-12)
    # a layer change re-targets on the new layer's data
    c.set_layer(1, animate=False)
    assert isinstance(c.tour, GuidedTour) and "re-targeted on net 1-Layer" in c.current_status()
    run_until_finished(c)
    assert lda_now(c, Xs, labels) >= 0.99 * closed_form_lda(Xs[1], labels)
    # 3-D: the guided tour follows with the new dimension
    key(c, "3")
    c.advance(1 / 30)
    assert isinstance(c.tour, GuidedTour) and c.tour.d == 3


@pytest.mark.gl
def test_saved_view_round_trips_the_guided_tour(window, tmp_path):
    from viewer import viewstate

    c, ctrl, Xs, labels = window
    c.set_layer(1, animate=False)
    key(c, "u")
    for _ in range(12):
        c.advance(1 / 30)
    state = json.loads(json.dumps(viewstate.capture(c)))
    assert state["controllers"]["guided"] == {"active": True, "index": "lda", "attribute": "label"}
    path = viewstate.save(tmp_path / "v.json", state)
    expected = [c.tour.step(1 / 30).copy() for _ in range(20)]
    key(c, "u")
    c.set_layer(0, animate=False)
    assert type(c.tour) is GrandTour
    viewstate.apply(c, viewstate.load(path))
    assert isinstance(c.tour, GuidedTour) and ctrl["GuidedController"].mode.active
    for F in expected:
        np.testing.assert_array_equal(c.tour.step(1 / 30), F)
    # a grand-tour view turns the guided tour off
    key(c, "u")
    plain = viewstate.capture(c)
    key(c, "u")
    viewstate.apply(c, plain)
    assert type(c.tour) is GrandTour and not ctrl["GuidedController"].mode.active
    # a saved guided view whose attribute is gone is refused, naming the field
    state["controllers"]["guided"]["attribute"] = "confidence"
    with pytest.raises(viewstate.ViewStateError, match="controllers.guided.attribute"):
        viewstate.apply(c, state)


@pytest.mark.gl
def test_compare_window_guides_the_shared_tour_by_model_a(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from viewer.compare import CompareCanvas

    bundle, Xs, labels = planted_bundle(tmp_path / "c.lt", rng)
    c = CompareCanvas(bundle, "net", "other", size=(900, 420), show=False, animate=False, device="cpu")
    try:
        a, b = c.panels
        c.focus = b  # the key works from either pane; A's data guide
        key(c, "u")
        assert isinstance(c.tour, GuidedTour)
        drawn = texts(c)
        assert drawn.count("guided tour: lda by label") == 1  # one badge, on A
        run_until_finished(c)
        reached = P.lda(np.asarray(Xs[0], np.float64) @ c.frame_for(a), labels)
        assert reached >= 0.99 * closed_form_lda(Xs[0], labels)
        c.set_layers(b=1, animate=False)  # B's layer: A's data unchanged, the tour keeps resting
        assert c.tour.status == "finished"
    finally:
        c.close()


@pytest.mark.gl
def test_study_layer_goes_to_the_closed_form_lda_optimum(study_data, tmp_path):
    """Done when: on a GoogLeNet layer coloured by label_coarse, one key takes the view to within
    0.5 % of the closed-form LDA optimum of that layer."""
    import vispy

    vispy.use("glfw")
    from engine import load_bundle
    from engine.cli import main
    from viewer.canvas import TourCanvas
    from viewer.controllers import install

    assert main(["import", str(study_data / "googlenet"), "--out", str(tmp_path / "study.lt")]) == 0
    bundle = load_bundle(tmp_path / "study.lt")
    c = TourCanvas(bundle, layer="16-Inception", color="label_coarse", size=(640, 480), show=False,
                   animate=False, device="cpu")
    try:
        install(c)
        X = np.asarray(c.layer_data(c.layer_index), np.float64)
        labels = np.asarray(bundle.attributes["label_coarse"].values)
        opt = closed_form_lda(X, labels)
        before = P.lda(X @ c.frame, labels)
        key(c, "u")
        run_until_finished(c)
        after = P.lda(X @ c.frame, labels)
        assert after >= 0.995 * opt and after > before, (before, after, opt)
    finally:
        c.close()


@pytest.mark.gl
def test_notebook_widget_starts_guided_and_its_keys_reach_the_same_controller(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from viewer.notebook import show

    bundle, Xs, labels = planted_bundle(tmp_path / "w.lt", rng, n=300)
    with pytest.raises(G.GuidedError, match="unknown index 'hole'"):
        show(bundle, size=(300, 240), device="cpu", guided="hole")
    w = show(bundle, size=(320, 260), device="cpu", guided="lda")
    try:
        assert isinstance(w.window.tour, GuidedTour) and w.window.tour.index == "lda"
        w._browser_event({"type": "key_down", "key": "n", "modifiers": [], "timestamp": 0.0})
        assert w.window.tour.index == "pda"
        w.snapshot()
        assert any(t.startswith("PDA ") for t, _ in w.window.overlay.drawn)  # the badge's value line
        w._browser_event({"type": "key_down", "key": "u", "modifiers": [], "timestamp": 0.0})
        assert type(w.window.tour) is GrandTour
        w.snapshot()
        assert not any(t.startswith("PDA ") for t, _ in w.window.overlay.drawn)
    finally:
        w.close()


# ---------------------------------------------------------------------------------- the CLI


def _main(*argv):
    from engine.cli import main

    return main([str(a) for a in argv])


@pytest.mark.gl
def test_render_guided_png_is_the_best_view_and_gif_the_climb(tmp_path, rng):
    iio = pytest.importorskip("imageio.v3")
    bundle, Xs, labels = planted_bundle(tmp_path / "b.lt", rng, n=300)
    out = tmp_path / "best.png"
    assert _main("render", bundle.path, "--guided", "lda", "--size", "320x240", "--out", out) == 0
    png = iio.imread(out)
    assert png.shape == (240, 320, 3) and png.std() > 1
    from viewer.headless import render_tour

    gif = tmp_path / "climb.gif"
    assert _main("render", bundle.path, "--guided", "pda", "--color", "label", "--frames", "6", "--fps", "10",
                 "--size", "200x160", "--out", gif) == 0
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (6, 160, 200)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0  # it climbs
    assert render_tour(bundle, tmp_path / "h.png", guided="holes", size=(160, 120),
                       color="confidence").exists()


@pytest.mark.gl
def test_render_guided_still_reaches_the_closed_form(tmp_path, rng):
    """What ``render --guided lda`` draws for a still: the settled window's frame is the LDA optimum."""
    import vispy

    vispy.use("glfw")
    from viewer import guided
    from viewer.canvas import TourCanvas

    bundle, Xs, labels = planted_bundle(tmp_path / "b.lt", rng, n=300)
    c = TourCanvas(bundle, size=(200, 160), show=False, animate=False, device="cpu")
    try:
        ctrl = guided.start(c, "lda")
        assert ctrl.settle(c)
        assert lda_now(c, Xs, labels) == pytest.approx(closed_form_lda(Xs[0], labels), rel=1e-9)
    finally:
        c.close()


@pytest.mark.gl
@pytest.mark.parametrize("compare", [False, True])
def test_view_guided_starts_the_window_in_guided_mode(tmp_path, rng, monkeypatch, compare):
    import vispy.app

    import viewer.canvas
    import viewer.compare

    bundle, _, _ = planted_bundle(tmp_path / "v.lt", rng, n=120)
    opened = []
    module, name = (viewer.compare, "CompareCanvas") if compare else (viewer.canvas, "TourCanvas")
    base = getattr(module, name)

    class Recorded(base):
        def __init__(self, *args, **kwargs):
            kwargs["show"] = False
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(module, name, Recorded)
    monkeypatch.setattr(vispy.app, "run", lambda: None)
    try:
        extra = ["--compare", "net", "other"] if compare else []
        assert _main("view", bundle.path, "--guided", "pda", "--size", "700x400", *extra) == 0
        (c,) = opened
        assert isinstance(c.tour, GuidedTour) and c.tour.index == "pda"
        assert G.controller_of(c).mode.attribute == "label"
    finally:
        for c in opened:
            c.close()


def test_guided_cli_errors_name_the_option(tmp_path, rng, capsys):
    bundle, _, _ = planted_bundle(tmp_path / "b.lt", rng, n=80)
    with pytest.raises(SystemExit) as exc:
        _main("render", bundle.path, "--guided", "ldaa", "--out", tmp_path / "x.png")
    assert exc.value.code == 2
    assert "argument --guided: unknown index 'ldaa' (choose one of lda, pda, holes, cmass, purity)" in \
        capsys.readouterr().err
    assert _main("render", bundle.path, "--guided", "purity", "--color", "confidence", "--out",
                 tmp_path / "x.png") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["layertour render: error: --guided purity --color confidence: purity takes its classes "
                   "from the colouring, and 'confidence' is continuous; colour by a categorical attribute "
                   "(label) with --color"]
    assert not (tmp_path / "x.png").exists()
    for cmd in ("view", "render"):
        with pytest.raises(SystemExit):
            _main(cmd, "--help")
        assert "--guided INDEX" in capsys.readouterr().out
