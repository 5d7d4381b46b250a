"""The interaction controllers on V1's real TourCanvas (OpenGL under Xvfb + Mesa), driven by
synthetic vispy mouse and key events: brushing, handles, hover and search, saved views."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _v2_helpers import edge_distance, even_odd, make_bundle, random_frame

pytestmark = pytest.mark.gl

N, P = 300, 6


@pytest.fixture
def view(tmp_path, rng):
    """(canvas, controllers by name) on a small real bundle; tour paused on a random frame."""
    import vispy

    vispy.use("glfw")
    from viewer.canvas import TourCanvas
    from viewer.controllers import install

    bundle = make_bundle(tmp_path / "b.lt", rng, n=N, p=P, layers=3)
    c = TourCanvas(bundle, size=(420, 400), show=False, animate=False, device="cpu")
    ctrls = install(c, directory=tmp_path)
    c.pause_tour()
    c.set_frame(random_frame(rng, P))
    try:
        yield c, {type(k).__name__: k for k in ctrls}
    finally:
        c.close()


def key(c, name, text=None):
    from vispy.util import keys

    if text is None:
        text = name.lower() if len(name) == 1 else ""
    c.events.key_press(key=keys.Key(name), text=text)


def drag(c, path, modifiers=()):
    path = [np.asarray(q, dtype=float) for q in path]
    c.events.mouse_press(pos=path[0], button=1, modifiers=modifiers)
    for q in path[1:]:
        c.events.mouse_move(pos=q, button=1, buttons=[1], modifiers=modifiers)
    c.events.mouse_release(pos=path[-1], button=1, modifiers=modifiers)


def drawn_pixels(c):
    """Independent float64 reference of where each point is drawn: layer data @ frame -> pixels."""
    y = np.asarray(c.layer_data(c.layer_index), dtype=np.float64)
    return c.data_to_pixels((y @ c.frame)[:, :2])


def test_rectangle_brush_selects_and_combines(view):
    c, ctrl = view
    px = drawn_pixels(c)
    r0, r1 = np.array([120.0, 110.0]), np.array([300.0, 260.0])
    key(c, "B")
    drag(c, [r1, (200, 200), r0])  # dragged from bottom-right to top-left
    ref = np.all((px >= r0) & (px <= r1), axis=1)
    clear = np.min(np.abs(np.concatenate([px - r0, px - r1], axis=1)), axis=1) > 1e-3
    assert c.selection is not None and ref[clear].sum() > 5
    np.testing.assert_array_equal(c.selection[clear], ref[clear])
    # shift adds a second rectangle, ctrl subtracts a third
    from vispy.util import keys

    s0, s1 = np.array([40.0, 40.0]), np.array([140.0, 380.0])
    key(c, "B")
    drag(c, [s0, s1], modifiers=(keys.SHIFT,))
    ref2 = ref | np.all((px >= s0) & (px <= s1), axis=1)
    clear &= np.min(np.abs(np.concatenate([px - s0, px - s1], axis=1)), axis=1) > 1e-3
    np.testing.assert_array_equal(c.selection[clear], ref2[clear])
    key(c, "B")
    drag(c, [r0, r1], modifiers=(keys.CONTROL,))
    np.testing.assert_array_equal(c.selection[clear], (ref2 & ~ref)[clear])
    before = c.selection.copy()
    # persists across layers and while the tour moves; x clears
    key(c, "J")
    c.resume_tour()
    c.advance(1.0)
    np.testing.assert_array_equal(c.selection, before)
    key(c, "X")
    assert c.selection is None


def test_concave_lasso_selects_the_expected_indices(view):
    c, _ = view
    px = drawn_pixels(c)
    u = np.array([[60, 60], [160, 60], [160, 300], [260, 300], [260, 60], [360, 60], [360, 360], [60, 360]],
                 dtype=float)
    path = []
    for a, b in zip(u, np.roll(u, -1, axis=0)):  # walk every edge, as a hand would
        path.extend(a + (b - a) * t for t in np.linspace(0, 1, 6)[:-1])
    key(c, "L")
    drag(c, path)
    poly = np.array(path)
    ref = even_odd(px, poly)
    clear = edge_distance(px, poly) > 1e-2
    assert ref[clear].sum() > 5 and (~ref[clear]).sum() > 5
    np.testing.assert_array_equal(c.selection[clear], ref[clear])
    notch = np.all((px > 165) & (px < 255), axis=1) & (px[:, 1] < 295)
    assert not c.selection[notch].any()


def _members_in_corner(c, px):
    """Points drawn in the upper-right part of the plot area: a handle away from the origin."""
    x0, y0, w, h = c.plot_rect
    return np.flatnonzero((px[:, 0] > x0 + 0.62 * w) & (px[:, 1] < y0 + 0.38 * h))


def _pan_to_upper_right(c):
    """Pan so that the (at least 3) points furthest up and right, by s = min(x, y) of their projection,
    are drawn in the window's upper-right corner by construction; returns their indices."""
    y = np.asarray(c.layer_data(c.layer_index), dtype=np.float64) @ c.frame
    s = np.minimum(y[:, 0], y[:, 1])
    s3 = np.sort(s)[-3]
    _, _, w, h = c.plot_rect
    k = c.pixels_per_unit()
    # the data point (s3, s3) is drawn 4 px inside the corner region, so every s >= s3 lies in it
    # (the plot centre shows the framing's centre plus the pan ``center``)
    c.center = np.array([s3 - (0.12 * w + 4) / k, s3 - (0.12 * h + 4) / k]) - c.view.fit.center
    return np.flatnonzero(s >= s3)


@pytest.mark.parametrize("dims", [2, 3])
def test_dragging_a_centroid_handle_moves_it_to_the_cursor(view, rng, dims):
    from engine import tour

    c, ctrl = view
    if dims == 3:
        c.set_dims(3)
        c.pause_tour()
        c.set_frame(random_frame(rng, P, 3))
    hc = ctrl["HandleController"]
    members = _pan_to_upper_right(c)
    px = drawn_pixels(c)
    assert members.size >= 3
    np.testing.assert_array_equal(np.intersect1d(members, _members_in_corner(c, px)), members)
    mask = np.zeros(N, bool)
    mask[members] = True
    c.set_selection(mask)
    key(c, "D")
    assert len(hc.handles) == 1
    centroid = np.asarray(c.layer_data(c.layer_index), dtype=np.float64)[members].mean(0)
    start = hc.pixel_positions(c)[0]
    np.testing.assert_allclose(start, c.data_to_pixels((centroid @ c.frame)[None, :2])[0], atol=1e-3)
    origin = c.data_to_pixels(np.zeros((1, 2)))[0]
    mid, end = start + 0.15 * (origin - start), start + 0.3 * (origin - start) + np.array([6.0, -4.0])

    def predicted(F, q):  # the cursor sets x, y; a 3-D view keeps the handle's depth
        t = centroid @ F
        t[:2] = c.pixels_to_data(q[None])[0]
        return tour.drag_handle(F, centroid, t)

    c.resume_tour()
    F = c.frame
    c.events.mouse_press(pos=start, button=1)
    assert not c.tour.playing  # the tour pauses during a drag
    for q in (mid, end):
        c.events.mouse_move(pos=q, button=1, buttons=[1])
        F = predicted(F, q)
    c.events.mouse_release(pos=end, button=1)
    F = predicted(F, end)
    assert c.tour.playing  # and resumes from the new frame
    np.testing.assert_allclose(c.frame, F, atol=1e-6)
    assert np.linalg.norm(hc.pixel_positions(c)[0] - end) < 0.5
    assert np.linalg.norm(c.data_to_pixels((centroid @ c.frame)[None, :2])[0] - end) < 0.5


def test_dragging_an_axis_handle_sets_its_row(view, rng):
    c, ctrl = view
    hc = ctrl["HandleController"]
    key(c, "A")
    assert len(hc.handles) == P
    i = int(rng.integers(P))
    start = hc.pixel_positions(c)[i]
    r = hc.handles.radius(c.layer_data, c.layer_index)
    target_data = 0.4 * r * np.array([np.cos(i), np.sin(i)])
    end = c.data_to_pixels(target_data[None])[0]
    drag(c, [start, (start + end) / 2, end])
    np.testing.assert_allclose(c.frame[i], c.pixels_to_data(end[None])[0] / r, atol=1e-9)
    assert np.linalg.norm(hc.pixel_positions(c)[i] - end) < 0.5
    np.testing.assert_allclose(c.frame.T @ c.frame, np.eye(2), atol=1e-9)
    key(c, "A")
    assert len(hc.handles) == 0


def test_handle_follows_layers_and_can_be_renamed_and_deleted(view):
    c, ctrl = view
    hc = ctrl["HandleController"]
    members = np.arange(0, N, 7)
    c.set_selection(np.isin(np.arange(N), members))
    key(c, "D")
    key(c, "J", "j")
    c.advance(0.35)
    ia, ib, s = c.transition
    ya, yb = (np.asarray(c.layer_data(k), np.float64) for k in (ia, ib))
    blend = (1 - s) * ya + s * yb
    want = c.data_to_pixels((blend[members].mean(0) @ c.frame)[None])[0]
    np.testing.assert_allclose(hc.pixel_positions(c)[0], want, atol=1e-3)
    c.advance(1.0)
    # rename: hover it, Enter, type, Enter (keys go to the text field, not the layer strip)
    q = hc.pixel_positions(c)[0]
    c.events.mouse_move(pos=q)
    layer = c.layer_index
    key(c, "Enter", "")
    key(c, "Backspace", "")
    for ch in "xk":
        key(c, ch.upper(), ch)
    key(c, "Enter", "")
    assert hc.handles.handles[0].label == "xk" and c.layer_index == layer
    c.render()  # draws the handle, its label and the line to the origin
    key(c, "Delete", "")
    assert len(hc.handles) == 0


def test_hover_picks_the_point_and_search_highlights(view):
    c, ctrl = view
    hov = ctrl["HoverController"]
    px = drawn_pixels(c)
    x0, y0, w, h = c.plot_rect
    inside = np.flatnonzero((px[:, 0] > x0 + 20) & (px[:, 0] < x0 + w - 20) & (px[:, 1] > y0 + 20)
                            & (px[:, 1] < y0 + h - 20))
    i = int(inside[0])
    c.events.mouse_move(pos=px[i])
    d = np.linalg.norm(px - px[i], axis=1)
    assert hov.index is not None and d[hov.index] == pytest.approx(0.0, abs=1e-6)
    with_tip = c.render()
    c.events.mouse_move(pos=(-500, -500))
    assert hov.index is None
    assert np.abs(with_tip.astype(int) - c.render().astype(int)).sum() > 0
    key(c, "/", "/")
    for ch in "Retriever":
        key(c, ch.upper(), ch)
    key(c, "Enter", "")
    codes = np.asarray(c.bundle.attributes["label"].values)
    np.testing.assert_array_equal(c._highlight, np.flatnonzero(np.isin(codes, [0, 1])))
    assert hov.result.indices.size == np.isin(codes, [0, 1]).sum()


def test_export_key_writes_the_selection(view, tmp_path):
    c, _ = view
    sel = np.zeros(N, bool)
    sel[[3, 10, 299]] = True
    c.set_selection(sel)
    key(c, "E")
    files = list(tmp_path.glob("b.lt-selection-*.csv"))
    assert len(files) == 1
    rows = list(csv.reader(files[0].open()))
    assert [int(r[0]) for r in rows[1:]] == [3, 10, 299]


def test_saved_view_reloads_to_the_same_pixels(view, tmp_path, rng):
    from engine.tour import GrandTour

    c, ctrl = view
    c.show_hud = False  # the HUD shows a live fps counter
    c.set_layer(1, animate=False)
    c.zoom, c.center = 1.4, np.array([0.3, -0.2])
    c.set_selection(rng.random(N) < 0.5)
    key(c, "D")
    saved_img = c.render()
    key(c, "V")
    files = list(tmp_path.glob("b.lt-view-*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["layer"] == 1 and len(saved["handles"]) == 1
    # wander off: another layer, frame, zoom; no selection, no handle
    key(c, "J")
    c.advance(1.0)
    c.set_frame(random_frame(rng, P))
    c.zoom = 0.8
    key(c, "X")
    key(c, "Delete", "")
    assert not np.array_equal(c.render(), saved_img)
    key(c, "O")
    np.testing.assert_array_equal(c.render(), saved_img)
    assert len(ctrl["HandleController"].handles) == 1
    twin = GrandTour.from_state(saved["tour"])
    np.testing.assert_array_equal(c.tour.state()["current"]["target"], saved["tour"]["current"]["target"])
    c.resume_tour()
    twin.play()
    c.advance(0.5)
    np.testing.assert_allclose(c.frame, twin.step(0.5 / c.zoom ** 0.7), atol=1e-12)


def test_go_to_view_glides_along_the_view_path(view, tmp_path, rng):
    from engine import tour

    c, ctrl = view
    c.show_hud = False
    saved_frame = c.frame
    key(c, "V")
    target_img = c.render()
    start = random_frame(rng, P)
    c.set_frame(start)
    key(c, "G")
    c.advance(0.15)
    path = tour.view_path(start, saved_frame)
    t = 0.15 / ctrl["ViewStateController"].goto.duration
    np.testing.assert_allclose(c.frame, path.frame(t * t * (3 - 2 * t)), atol=1e-9)
    c.advance(1.0)
    assert ctrl["ViewStateController"].goto is None
    np.testing.assert_allclose(c.frame, saved_frame, atol=1e-12)
    np.testing.assert_array_equal(c.render(), target_img)


def test_study_data_brush_handle_and_layers(tmp_path, study_data, rng):
    """The published GoogLeNet embeddings (N = 50,000, p = 15): brush, make a handle, drag it, step
    a layer; the selection is kept and the handle lands under the cursor."""
    import vispy

    vispy.use("glfw")
    from engine.store import load_bundle
    from engine.studyformat import import_umap_tour
    from viewer.canvas import TourCanvas
    from viewer.controllers import install

    b = load_bundle(import_umap_tour([study_data / "googlenet"], tmp_path / "g.lt"))
    c = TourCanvas(b, layer=12, size=(360, 360), show=False, animate=False, device="cpu")
    try:
        ctrl = {type(k).__name__: k for k in install(c, directory=tmp_path)}
        c.pause_tour()
        c.set_frame(random_frame(rng, 15))
        px = drawn_pixels(c)
        far = np.linalg.norm(px - np.array(c.size) / 2, axis=1)
        k = int(rng.choice(np.flatnonzero((far > 40) & (far < 120))))
        r0, r1 = px[k] - 20.0, px[k] + 20.0
        key(c, "B")
        drag(c, [r0, r1])
        ref = np.all((px >= r0) & (px <= r1), axis=1)
        clear = np.min(np.abs(np.concatenate([px - r0, px - r1], axis=1)), axis=1) > 1e-3
        np.testing.assert_array_equal(c.selection[clear], ref[clear])
        assert ref.sum() > 10
        key(c, "D")
        hc = ctrl["HandleController"]
        start = hc.pixel_positions(c)[0]
        end = start + 0.25 * (c.data_to_pixels(np.zeros((1, 2)))[0] - start)
        drag(c, [start, end])
        assert np.linalg.norm(hc.pixel_positions(c)[0] - end) < 0.5
        kept = c.selection.copy()
        key(c, "J")
        c.advance(1.0)
        assert c.layer_index == 13
        np.testing.assert_array_equal(c.selection, kept)
        c.render()
    finally:
        c.close()


def test_go_to_a_2d_view_from_3d_jumps_there(view, rng):
    c, ctrl = view
    c.show_hud = False
    saved_frame = c.frame
    key(c, "V")
    target_img = c.render()
    key(c, "3")
    assert c.dims == 3
    key(c, "G")
    assert c.dims == 2 and ctrl["ViewStateController"].goto is None
    np.testing.assert_allclose(c.frame, saved_frame, atol=1e-12)
    np.testing.assert_array_equal(c.render(), target_img)


def test_a_corrupt_layer_met_on_a_key_goes_to_the_status_line(tmp_path, rng):
    """A NaN the load-time spot check cannot see (between its sampled row blocks) is found when
    the layer is first shown: pressing the next-layer key reports it in the window, keeps the
    current layer, and raises nothing out of the event handler; '+' stops at the fastest speed."""
    import vispy

    vispy.use("glfw")
    from engine.store import BundleWriter, _spot_rows, load_bundle
    from engine.tour import MAX_SPEED
    from viewer.canvas import TourCanvas

    n = 9000
    unseen = int(np.setdiff1d(np.arange(n), _spot_rows(n))[0])
    w = BundleWriter(tmp_path / "b.lt", n=n, dim=P)
    w.add_model("net")
    w.write_layer("net", "0-Layer", rng.normal(size=(n, P)).astype(np.float32))
    w.write_layer("net", "1-Layer", rng.normal(size=(n, P)).astype(np.float32))
    w.commit()
    layer_file = load_bundle(tmp_path / "b.lt").models["net"].layers[1].embedding.filename
    damaged = np.load(layer_file, mmap_mode="r+")
    damaged[unseen, 2] = np.nan  # damage on disk after the (refusing) writer was done
    damaged.flush()
    del damaged
    c = TourCanvas(load_bundle(tmp_path / "b.lt"), size=(420, 400), show=False, animate=False, device="cpu")
    try:
        key(c, "J", "j")
        assert c.layer_index == 0
        status = c.current_status() or ""
        assert status.startswith("error:") and "1-Layer" in status and "NaN" in status, status
        for _ in range(60):
            key(c, "+", "+")
        assert c.tour.speed == MAX_SPEED and "fastest" in (c.current_status() or "")
    finally:
        c.close()
