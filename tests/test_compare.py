"""The compare view (two models side by side, one tour) on real OpenGL under Xvfb + Mesa, driven by
synthetic vispy events; the references are independent float64 NumPy (Procrustes by SVD, pixel
maps, the similarity formula)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _v2_helpers import CLASS_NAMES, random_frame, record_compare_windows

pytestmark = pytest.mark.gl

N, P = 400, 6
LA, LB = 4, 3
SIZE = (840, 440)


def make_pair_bundle(path, rng):
    """Models "alpha" (LA layers) and "beta" (LB layers) over the same N points: beta's layers are
    alpha-like class structure under a random orthogonal map plus noise, so aligning matters."""
    from engine.store import BundleWriter, load_bundle

    labels = rng.integers(0, len(CLASS_NAMES), N)
    centers = rng.normal(size=(len(CLASS_NAMES), P)) * 2.5
    base = rng.normal(size=(N, P))
    w = BundleWriter(path, n=N, dim=P)
    w.add_model("alpha")
    w.add_model("beta")
    for k in range(LA):
        w.write_layer("alpha", f"{k}-A", (base * (1 + 0.3 * k) + centers[labels] * k / LA).astype(np.float32))
    for k in range(LB):
        Q, _ = np.linalg.qr(rng.normal(size=(P, P)))
        e = (base + centers[labels] * k / LB) @ Q + rng.normal(size=(N, P)) * 0.2 + rng.normal(size=P)
        w.write_layer("beta", f"{k}-B", e.astype(np.float32))
    w.set_attribute("label", labels, "categorical", categories=CLASS_NAMES)
    w.set_attribute("confidence", rng.uniform(0, 1, N), "continuous")
    w.commit()
    return load_bundle(path)


@pytest.fixture
def cmp(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from viewer.compare import CompareCanvas

    bundle = make_pair_bundle(tmp_path / "pair.lt", rng)
    c = CompareCanvas(bundle, "alpha", "beta", size=SIZE, show=False, animate=False, device="cpu")
    c.tour.pause()
    c.tour.set_frame(random_frame(rng, P))
    try:
        yield c
    finally:
        c.close()


def centred(model, i):
    e = np.asarray(model.layers[i].embedding, dtype=np.float64)
    return e - e.mean(axis=0)


def procrustes_ref(X, Y):
    """Orthogonal Q minimising ||X Q - Y||_F, float64 SVD of X^T Y."""
    U, _, Vt = np.linalg.svd(X.T @ Y)
    return U @ Vt


def window_pixels(c, panel, data):
    """Where ``data`` (N, p) float64 is drawn in the window with the panel's frame (x, y px)."""
    return panel.data_to_pixels((data @ panel.frame)[:, :2]) + np.asarray(panel.rect[:2])


def key(c, name, text=None):
    from vispy.util import keys

    if text is None:
        text = name.lower() if len(name) == 1 else ""
    c.events.key_press(key=keys.Key(name), text=text)


def drag(c, path):
    path = [np.asarray(q, dtype=float) for q in path]
    c.events.mouse_press(pos=path[0], button=1)
    for q in path[1:]:
        c.events.mouse_move(pos=q, button=1, buttons=[1])
    c.events.mouse_release(pos=path[-1], button=1)


def expected_rotation(c):
    a, b = c.panels
    return procrustes_ref(centred(b.model, b.layer_index), centred(a.model, a.layer_index))


def test_both_panels_draw_their_points_where_the_shared_frame_puts_them(cmp):
    c = cmp
    c.show_hud = False
    c.show_heatmap = False
    c.set_coloring("none")
    img = np.asarray(c.render()[..., :3], dtype=np.int16)
    from viewer.colors import BACKGROUND

    bg = np.round(np.asarray(BACKGROUND[:3]) * 255).astype(np.int16)
    a, b = c.panels
    Q = expected_rotation(c)
    np.testing.assert_allclose(c.rotation, Q, atol=1e-8)
    np.testing.assert_allclose(b.frame, c.rotation @ c.tour.frame, atol=1e-12)
    for panel, data in ((a, centred(a.model, a.layer_index)), (b, centred(b.model, b.layer_index))):
        px = window_pixels(c, panel, data)
        x0, y0, w, h = panel.rect
        inside = (px[:, 0] > x0 + 3) & (px[:, 0] < x0 + w - 3) & (px[:, 1] > 3) & (px[:, 1] < h - 3)
        assert inside.mean() > 0.9
        xy = np.floor(px[inside]).astype(int)
        lit = np.abs(img[xy[:, 1], xy[:, 0]] - bg).sum(axis=1) > 30
        assert lit.mean() > 0.95, f"{panel.model.name}: only {lit.mean():.2f} of the points drawn"
        x0i, x1i = int(x0), int(x0 + w)
        half = np.abs(img[:, x0i:x1i] - bg).sum(axis=2) > 30
        assert half.sum() > N  # and each half really holds its own points
    # B's positions (its own data, frame Q F) equal B aligned into A's frame, projected by F
    np.testing.assert_allclose(b.project_current(), centred(b.model, b.layer_index) @ Q @ c.tour.frame,
                               atol=1e-4)


def test_alignment_brings_b_closer_to_a_and_follows_layer_changes(cmp, rng):
    c = cmp
    a, b = c.panels
    for ia, ib in ((0, 0), (int(rng.integers(1, LA)), int(rng.integers(1, LB)))):
        c.set_layers(ia, ib, animate=False)
        A, B = centred(a.model, ia), centred(b.model, ib)
        Q = expected_rotation(c)
        np.testing.assert_allclose(c.rotation, Q, atol=1e-8)
        before, after = np.linalg.norm(B - A), np.linalg.norm(c.aligned_b() - A)
        assert after < 0.9 * before
        np.testing.assert_allclose(after, np.linalg.norm(B @ Q - A), rtol=1e-6)
    # an animated change glides B's frame from Q_old F to Q_new F, orthonormal on the way
    Q_old = c.rotation
    c.set_layers(a=(a.layer_index + 1) % LA)
    Q_new = expected_rotation(c)
    F = c.tour.frame
    np.testing.assert_allclose(b.frame, Q_old @ F, atol=1e-7)
    c.advance(0.3)
    mid = b.frame
    np.testing.assert_allclose(mid.T @ mid, np.eye(2), atol=1e-9)
    assert min(np.linalg.norm(mid - Q_old @ F), np.linalg.norm(mid - Q_new @ F)) > 1e-3
    c.advance(1.0)
    np.testing.assert_allclose(b.frame, Q_new @ c.tour.frame, atol=1e-7)


def test_a_brush_in_the_left_view_selects_the_same_indices_in_the_right(cmp):
    c = cmp
    a, b = c.panels
    pa = window_pixels(c, a, centred(a.model, a.layer_index))
    mid = np.median(pa, axis=0)  # a rectangle holding part of the cloud, by construction
    r0, r1 = mid - (70.0, 50.0), mid + (30.0, 60.0)
    key(c, "B")
    drag(c, [r1, mid, r0])
    ref = np.all((pa >= r0) & (pa <= r1), axis=1)
    clear = np.min(np.abs(np.concatenate([pa - r0, pa - r1], axis=1)), axis=1) > 1e-3
    assert ref[clear].sum() > 5 and (~ref[clear]).sum() > 5
    sel = c.selection
    np.testing.assert_array_equal(sel[clear], ref[clear])
    assert a.selection is sel and b.selection is sel  # both views show the same indices
    # the right view's own brush intersects with the left one's
    pb = window_pixels(c, b, centred(b.model, b.layer_index))
    mid_b = np.median(pb, axis=0)
    s0, s1 = mid_b - (40.0, 70.0), mid_b + (60.0, 30.0)
    key(c, "B")
    drag(c, [s0, s1])
    ref_b = np.all((pb >= s0) & (pb <= s1), axis=1)
    clear &= np.min(np.abs(np.concatenate([pb - s0, pb - s1], axis=1)), axis=1) > 1e-3
    np.testing.assert_array_equal(c.selection[clear], (ref & ref_b)[clear])
    # the unselected points fade in both views (the per-point states uploaded to each render path)
    for panel in c.panels:
        np.testing.assert_array_equal(panel.points.states > 0.5, c.selection)
    c.events.mouse_move(pos=(200, 200))
    key(c, "X")
    assert c.selection is None and all(p.brushed is None for p in c.panels)


def test_clicking_a_heatmap_cell_sets_both_layers(cmp, rng):
    c = cmp
    a, b = c.panels
    lay = c.heatmap_layout()
    i, j = int(rng.integers(1, LA)), int(rng.integers(1, LB))
    x, y = lay.cell_center(i, j)
    c.events.mouse_move(pos=(x, y))
    assert c._hover_cell == (i, j)
    c.events.mouse_press(pos=(x, y), button=1)
    c.events.mouse_release(pos=(x, y), button=1)
    assert (a.layer_index, b.layer_index) == (i, j)
    assert a.transition is not None and a.transition[1] == i  # animated
    assert b.transition is not None and b.transition[1] == j
    c.advance(1.0)
    assert a.transition is None and b.transition is None
    np.testing.assert_allclose(c.rotation, expected_rotation(c), atol=1e-8)
    # the matrix shown is the engine's similarity of every pair (stored none: computed)
    S = c.similarity
    assert S.shape == (LA, LB)
    A, B = centred(a.model, i), centred(b.model, j)
    ref = np.linalg.svd(A.T @ B, compute_uv=False).sum() / np.sqrt(
        np.linalg.svd(A.T @ A, compute_uv=False).sum() * np.linalg.svd(B.T @ B, compute_uv=False).sum())
    np.testing.assert_allclose(S[i, j], ref, rtol=1e-9)
    # t hides the panel: the same click then lands in panel B instead
    key(c, "T")
    assert not c.show_heatmap
    x2, y2 = lay.cell_center(0, 0)
    c.events.mouse_press(pos=(x2, y2), button=1)
    c.events.mouse_release(pos=(x2, y2), button=1)
    assert (a.layer_index, b.layer_index) == (i, j)


def test_difference_colouring_orders_points_by_engine_movement(cmp, rng):
    from engine.align import movement

    c = cmp
    a, b = c.panels
    c.set_layers(int(rng.integers(0, LA)), int(rng.integers(0, LB)), animate=False)
    c.set_coloring("difference")
    m = np.asarray(movement(a.layer_data(a.layer_index), b.layer_data(b.layer_index)), dtype=np.float64)
    codes = a.coloring.codes
    np.testing.assert_array_equal(codes, b.coloring.codes)
    order = np.argsort(m, kind="stable")
    assert np.all(np.diff(codes[order]) >= 0)  # monotone in the engine's values
    assert len(np.unique(codes)) > 20
    hi = np.quantile(m, 0.99)
    np.testing.assert_allclose(codes, np.round(np.clip(m / hi, 0, 1) * 255), atol=1.0)
    # per-model movement: each panel from its own previous layer
    c.set_layers(LA - 1, LB - 1, animate=False)
    c.set_coloring("movement")
    for panel in c.panels:
        i = panel.layer_index
        mv = np.asarray(movement(panel.layer_data(i - 1), panel.layer_data(i)), dtype=np.float64)
        assert np.all(np.diff(panel.coloring.codes[np.argsort(mv, kind="stable")]) >= 0)
    assert not np.array_equal(a.coloring.codes, b.coloring.codes)
    # changing a layer recomputes it
    before = a.coloring.codes.copy()
    c.set_layers(a=LA - 2, animate=False)
    assert not np.array_equal(before, a.coloring.codes)


def test_colouring_legend_filter_and_zoom_reset_are_mirrored(cmp):
    c = cmp
    a, b = c.panels
    c.set_coloring("label")
    key(c, "C")
    assert a.coloring.name == b.coloring.name == c.color_options[(c.color_options.index("label") + 1)
                                                                 % len(c.color_options)]
    c.set_coloring("label")
    lay = c.layout()  # one legend for the window, docked left of view A
    box = dict((r.code, b) for r, b in c.legend.layout(lay.legend, lay.scale).rows)[2]
    mid = (box.x + box.w / 2, box.y + box.h / 2)
    assert not any(box.intersects(p.rect) for p in c.panels)
    c.events.mouse_move(pos=mid)
    assert c.hover_legend == ("class", 2)
    c.events.mouse_press(pos=mid, button=1)
    c.events.mouse_release(pos=mid, button=1)
    np.testing.assert_array_equal(c.legend_enabled(), np.arange(len(CLASS_NAMES)) == 2)
    for panel in c.panels:
        assert np.ravel(panel.points.path.program["u_filter_on"])[0] == 1  # uploaded to both render paths
    a.zoom_at((100, 100), 3.0)
    b.zoom_at((50, 80), 0.5)
    assert a.zoom != 1.0 and b.zoom != 1.0
    key(c, "R")
    assert a.zoom == b.zoom == 1.0 and np.all(a.center == 0) and np.all(b.center == 0)
    c.tour.pause()
    key(c, "Space", " ")
    assert c.tour.playing  # one tour: play/pause is shared by construction
    F = c.tour.frame.copy()
    c.advance(0.5)
    np.testing.assert_allclose(b.frame, c.rotation @ c.tour.frame, atol=1e-12)
    assert np.linalg.norm(c.tour.frame - F) > 1e-4


def test_handles_appear_in_both_views_and_dragging_either_steers_both(cmp, rng):
    from engine import tour

    c = cmp
    a, b = c.panels
    A, B = centred(a.model, a.layer_index), centred(b.model, b.layer_index)
    members = np.sort(rng.choice(N, 25, replace=False))
    mask = np.zeros(N, bool)
    mask[members] = True
    c.set_brushed(a, mask)
    key(c, "D")
    ha = c.controls["a"].handles
    hb = c.controls["b"].handles
    assert len(ha.handles) == len(hb.handles) == 1
    np.testing.assert_array_equal(ha.handles.handles[0].members, members)
    np.testing.assert_array_equal(hb.handles.handles[0].members, members)
    ca, cb = A[members].mean(0), B[members].mean(0)  # each model's own centroid
    np.testing.assert_allclose(ha.points(a)[0], ca, atol=1e-4)
    np.testing.assert_allclose(hb.points(b)[0], cb, atol=1e-4)
    # drag A's handle toward the middle of panel A: both views follow the new tour frame
    for panel, hc, cen in ((a, ha, ca), (b, hb, cb)):
        start = hc.pixel_positions(panel)[0] + np.asarray(panel.rect[:2])
        origin = panel.data_to_pixels(np.zeros((1, 2)))[0] + np.asarray(panel.rect[:2])
        # toward the origin with a sideways part: |0.6 v + 0.1 v_perp| = 0.61 |v|, always within reach
        d = origin - start
        end = start + 0.4 * d + 0.1 * np.array([-d[1], d[0]])
        G = panel.frame
        target = panel.pixels_to_data((end - np.asarray(panel.rect[:2]))[None])[0]
        expect = tour.drag_handle(G, cen, target)
        drag(c, [start, end])
        np.testing.assert_allclose(panel.frame, expect, atol=1e-6)
        local = hc.pixel_positions(panel)[0] + np.asarray(panel.rect[:2])
        assert np.linalg.norm(local - end) < 0.5
        np.testing.assert_allclose(b.frame, c.rotation @ a.frame, atol=1e-7)  # both steered
    # Enter over a handle renames it, in both views
    c.events.mouse_move(pos=ha.pixel_positions(a)[0] + np.asarray(a.rect[:2]))
    key(c, "Enter")
    for ch in "dogs":
        key(c, ch.upper(), ch)
    key(c, "Enter")
    assert ha.handles.handles[0].label == hb.handles.handles[0].label == "1dogs"
    key(c, "Delete")
    assert len(ha.handles) == len(hb.handles) == 0


def test_hovering_an_image_in_one_view_marks_it_in_the_other(cmp):
    c = cmp
    for panel, other in c.panels, c.panels[::-1]:
        px = window_pixels(c, panel, centred(panel.model, panel.layer_index))
        x0, y0, w, h = panel.rect
        on = (px[:, 0] > x0 + 10) & (px[:, 0] < x0 + w - 10) & (px[:, 1] > y0 + 10) & (px[:, 1] < y0 + h - 10)
        d = np.linalg.norm(px[:, None] - px[None], axis=2)
        np.fill_diagonal(d, np.inf)
        k = int(np.argmax(np.where(on, d.min(axis=1), -1)))  # the most isolated point in view
        assert d[k].min() > 2 * c.controls[panel.side].hover.RADIUS_PX
        c.events.mouse_move(pos=px[k] + 0.5)
        assert c.controls[panel.side].hover.index == k
        assert c.controls[other.side].hover.index == k


def test_similarity_export_csv_equals_similarity_matrix(cmp, tmp_path):
    from engine.align import similarity_matrix
    from engine.cli import main

    c = cmp
    out = tmp_path / "S.csv"
    args = ["similarity", str(c.bundle.path), "alpha", "beta", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == [ly.id for ly in c.bundle.models["beta"].layers]
    assert [r[0] for r in rows[1:]] == [ly.id for ly in c.bundle.models["alpha"].layers]
    S = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    ref = similarity_matrix([ly.embedding for ly in c.bundle.models["alpha"].layers],
                            [ly.embedding for ly in c.bundle.models["beta"].layers])
    np.testing.assert_array_equal(S, ref)
    np.testing.assert_allclose(c.similarity, ref, rtol=1e-12)


def test_render_compare_from_the_command_line_and_bad_names(cmp, tmp_path):
    import imageio.v3 as iio

    from engine.cli import main

    out = tmp_path / "cmp.png"
    path = str(cmp.bundle.path)
    assert main(["render", path, "--compare", "beta", "alpha", "--size", "640x320", "--layer", "1",
                 "--color", "difference", "--out", str(out)]) == 0
    img = iio.imread(out)
    assert img.shape[:2] == (320, 640)
    assert img[:, :320].std() > 5 and img[:, 320:].std() > 5
    assert main(["render", path, "--compare", "alpha", "gamma", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_study_data_compare_renders_headless(study_data, tmp_path):
    import imageio.v3 as iio

    from engine.cli import main
    from engine.studyformat import import_umap_tour

    bundle = import_umap_tour([study_data / "googlenet", study_data / "resnet50"], tmp_path / "study.lt")
    out = tmp_path / "x.png"
    assert main(["render", str(bundle), "--compare", "resnet50", "googlenet", "--layer", "12",
                 "--size", "1000x520", "--out", str(out)]) == 0
    img = iio.imread(out)
    assert img.shape[:2] == (520, 1000)
    from viewer.colors import BACKGROUND

    bg = np.round(np.asarray(BACKGROUND[:3]) * 255)
    for half in (img[60:-60, 40:460, :3], img[60:-60, 540:960, :3]):
        assert (np.abs(half - bg).sum(axis=2) > 30).mean() > 0.05  # both clouds are drawn


def test_view_compare_opens_both_models_at_the_matching_layer(cmp, monkeypatch):


    from engine.cli import main

    opened = record_compare_windows(monkeypatch)
    try:
        assert main(["view", str(cmp.bundle.path), "--compare", "alpha", "beta", "--layer", "3-A"]) == 0
        (c,) = opened
        a, b = c.panels
        assert (a.model.name, b.model.name) == ("alpha", "beta")
        assert (a.layer_index, b.layer_index) == (3, LB - 1)  # B has no "3-A": A's index, clamped
        np.testing.assert_allclose(c.rotation, expected_rotation(c), atol=1e-8)
        assert c.controls["a"].brush is not c.controls["b"].brush
        assert [type(k).__name__ for k in c.panels[0].controllers] == [
            "BrushController", "HandleController", "HoverController", "ViewStateController",
            "GuidedController"]
        assert c.controls["a"].guided is c.controls["b"].guided  # one guided tour for the shared tour
        assert c.controls["a"].views is c.controls["b"].views  # v / o save and load the whole window
    finally:
        for c in opened:
            c.close()
    assert main(["view", str(cmp.bundle.path), "--compare", "alpha", "beta", "--layer", "nope"]) == 2
