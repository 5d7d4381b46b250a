"""GL-free: the window layout, the framing (fit) and its smoothness, the legend's rows and clicks,
and text safety. Study-data tests skip without ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from viewer import fit as vfit
from viewer import layout as vlayout
from viewer import legend as vlegend
from viewer.text import fit_text, safe_text, text_width

SIZES = [(480, 480), (600, 600), (800, 600), (1100, 820), (1200, 600), (1920, 1080), (3840, 2160),
         (2000, 400)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("panes, legend, heat, help_", [
    (1, 160.0, None, 0.0), (1, 0.0, None, 0.0), (1, 240.0, None, 380.0), (2, 160.0, (180.0, 230.0), 0.0),
    (2, 112.0, (320.0, 260.0), 380.0), (2, 0.0, None, 0.0)])
def test_no_panel_covers_a_plot_area(size, panes, legend, heat, help_):
    specs = [vlayout.PaneSpec(170.0), vlayout.PaneSpec(120.0)][:panes]
    lay = vlayout.compute(size, specs, legend_width=legend, heatmap_size=heat, help_width=help_)
    W, H = size
    assert len(lay.plots) == panes
    for r in lay.plots:
        assert r.w > 0.25 * W / panes and r.h > 0.5 * H  # the plots keep most of the window
        assert 0 <= r.x and r.x1 <= W + 1e-9 and 0 <= r.y and r.y1 <= H + 1e-9
        for name, p in lay.panel_rects():
            assert not r.intersects(p), f"{name} {p} covers plot {r} at {size}"
    if panes == 2:
        assert not lay.plots[0].intersects(lay.plots[1])
    for _, p in lay.panel_rects():
        assert p.x >= -1e-9 and p.x1 <= W + 1e-9 and p.y >= -1e-9 and p.y1 <= H + 1e-9
    assert (lay.heatmap is not None) == (heat is not None)
    if heat is not None:  # docked in the last pane's column, under its strip
        assert lay.heatmap.y >= lay.strips[-1].y1 - 1e-9
    without = vlayout.compute(size, specs, hud=False)
    assert sum(r.w for r in without.plots) == pytest.approx(W) and without.legend is None


def test_rect_intersection_is_strict():
    a = vlayout.Rect(0, 0, 10, 10)
    assert a.intersects(vlayout.Rect(9, 9, 5, 5))
    assert not a.intersects(vlayout.Rect(10, 0, 5, 5))  # touching edges share no area
    assert vlayout.ui_scale(800, 600) == 1.0 and vlayout.ui_scale(3840, 2160) > 2.0


def test_a_long_layer_strip_scrolls_and_keeps_the_current_layer_visible():
    rect = vlayout.Rect(0, 0, 100, 170)
    rows = vlayout.strip_rows(60, rect, 1.0, current=40)
    assert len(rows.boxes) == 10 and rows.first <= 40 < rows.first + 10
    assert rows.more_above and rows.more_below
    assert rows.hit(50, rows.boxes[3].y + 1) == rows.first + 3
    assert all(rect.y <= b.y and b.y1 <= rect.y1 + 1e-9 for b in rows.boxes)
    short = vlayout.strip_rows(5, rect, 1.0, current=0)
    assert short.first == 0 and len(short.boxes) == 5 and not short.more_below


def _gauss_cloud(rng, n=20000):
    A = rng.normal(size=(2, 2))
    return rng.normal(size=(n, 2)) @ A + rng.normal(size=2) * 3


def _fill(px, size):
    lo, hi = np.quantile(px, [0.02, 0.98], axis=0)
    return float(np.max((hi - lo) / np.asarray(size)))


@pytest.mark.parametrize("size", [(800, 600), (480, 480), (600, 900)])
def test_fit_target_frames_what_is_drawn(rng, size):
    xy = _gauss_cloud(rng)
    xy[:50] *= 40  # a few outliers must not set the frame
    c, r = vfit.target(xy, size)
    w, h = size
    k = min(w, h) / (2 * r * vfit.MARGIN)
    px = np.stack([w / 2 + (xy[:, 0] - c[0]) * k, h / 2 - (xy[:, 1] - c[1]) * k], 1)
    outside = np.mean((px[:, 0] < 0) | (px[:, 0] > w) | (px[:, 1] < 0) | (px[:, 1] > h))
    assert outside < 0.01
    assert _fill(px, size) >= 0.6


def test_fit_follows_smoothly_and_snaps(rng):
    f = vfit.Fit.at((0, 0), 1.0)
    f.follow((1.0, 0.0), 4.0, 1 / 60)
    assert 1.0 < f.radius < 1.1 and 0 < f.center[0] < 0.05  # a small step toward the target
    for _ in range(600):
        f.follow((1.0, 0.0), 4.0, 1 / 60)
    assert f.radius == pytest.approx(4.0, rel=1e-6)
    f.snap((2.0, 2.0), 0.5)
    assert f.radius == 0.5 and np.all(f.center == 2.0)
    assert vfit.sample_rows(10).tolist() == list(range(10))
    rows = vfit.sample_rows(50_000)
    assert len(rows) == vfit.SAMPLE and rows[0] == 0 and rows[-1] == 49_999


def test_framing_while_touring_changes_by_small_steps(rng):
    """A running tour: the framing radius changes by a bounded fraction per frame (no jumps) and
    never oscillates frame to frame (no jitter)."""
    from engine.tour import GrandTour
    from viewer.view import ModelView

    bundle = _bundle(rng, n=5000, p=8)
    v = ModelView(bundle, "net")
    v.size = (800, 600)
    tour = GrandTour(8, 2, seed=1, speed=0.8)
    v.refit(tour.frame)
    radii = []
    for _ in range(240):
        tour.step(1 / 30)
        v.advance(1 / 30, tour.frame)
        radii.append(v.fit.radius)
    steps = np.diff(np.log(radii))
    assert np.max(np.abs(steps)) < 0.03
    flips = np.sum(np.sign(steps[1:]) * np.sign(steps[:-1]) < 0)
    assert flips < 0.1 * len(steps)


def _bundle(rng, n, p):
    from pathlib import Path

    from engine.store import Attribute, Bundle, Layer, Model

    layers = []
    for i in range(2):
        e = (rng.standard_normal((n, p)) * np.linspace(3, 0.5, p)).astype(np.float32)
        layers.append(Layer(f"{i}-L", f"l{i}", i, None, e, np.eye(p), np.zeros(p)))
    attrs = {"label": Attribute("label", "categorical", rng.integers(0, 5, n).astype(np.int32),
                                [f"c{j}" for j in range(5)])}
    return Bundle(Path("mem"), {}, n, p, {"net": Model("net", layers)}, attrs, "label", None, {})


def test_point_size_and_alpha_adapt_to_n_and_zoom(rng):
    from viewer.view import MIN_ALPHA, POINT_ALPHA, ModelView

    looks = {}
    for n in (100, 50_000, 20_000_000):
        v = ModelView.__new__(ModelView)  # only the look needs N, the plot size, zoom and framing
        v.n, v.size, v.zoom, v.fit = n, (800.0, 800.0), 1.0, vfit.Fit.at((0, 0), 1.0)
        looks[n] = (v.point_size(), v.point_alpha())
        v.zoom = 4.0
        assert v.point_size() >= looks[n][0] and v.point_alpha() >= looks[n][1]  # zoomed in: sparser
    sizes = [s for s, _ in looks.values()]
    alphas = [a for _, a in looks.values()]
    assert sizes == sorted(sizes, reverse=True) and alphas == sorted(alphas, reverse=True)
    assert looks[100][1] == POINT_ALPHA and looks[20_000_000][1] == MIN_ALPHA
    assert 0.15 < looks[50_000][1] < 0.7  # 50k overlapping points: density, not a blob


def _coloring(k, groups=None, names=None, rng=None):
    from viewer.colors import categorical_coloring

    rng = rng or np.random.default_rng(0)
    values = rng.integers(0, k, 5000)
    return categorical_coloring("label", values, [f"class {i}" for i in range(k)], groups, names)


def test_legend_names_every_class_and_scrolls():
    leg = vlegend.Legend(_coloring(67))
    assert not leg.grouped and leg.has_filter_box()
    rect = vlayout.Rect(0, 40, 180, 400)
    lay = leg.layout(rect, 1.0)
    assert lay.total == 67 and 0 < len(lay.rows) < 67
    assert all(rect.contains(b.x, b.y) and b.y1 <= rect.y1 + 1e-9 for _, b in lay.rows)
    assert [r.label for r, _ in lay.rows[:2]] == ["class 0", "class 1"]
    leg.scroll_by(100)
    lay = leg.layout(rect, 1.0)
    assert lay.rows[-1][0].label == "class 66"  # clamped at the end
    leg.query = "class 6"
    assert [r.code for r in leg.rows()] == [6] + list(range(60, 67))


def test_legend_groups_hundreds_of_classes_and_filters(rng):
    k, g = 300, 12
    groups = np.arange(k) % g
    leg = vlegend.Legend(_coloring(k, groups, [f"group {j}" for j in range(g)], rng))
    assert leg.grouped
    rows = leg.rows()
    assert len(rows) == g and all(r.kind == "group" for r in rows)
    assert sum(len(r.members) for r in rows) == k
    leg.toggle_group(3)
    rows = leg.rows()
    at = next(i for i, r in enumerate(rows) if r.kind == "group" and r.code == 3)
    assert len(rows) == g + 25 and rows[at + 1].kind == "class" and rows[at + 1].indent
    assert {r.code for r in rows[at + 1: at + 26]} == set(range(3, k, g))
    leg.query = "class 29"  # opens the groups that hold a match
    rows = leg.rows()
    classes = [r.code for r in rows if r.kind == "class"]
    assert set(classes) == {29} | set(range(290, 300))
    rect = vlayout.Rect(0, 0, 200, 500)
    lay = leg.layout(rect, 1.0)
    grp, box = next((r, b) for r, b in lay.rows if r.kind == "group")
    assert leg.hit(rect, 1.0, box.x + 3, box.y + 2) == ("toggle", grp.code)
    assert leg.hit(rect, 1.0, box.x + 60, box.y + 2) == ("group", grp.members)
    assert leg.hit(rect, 1.0, lay.title.x + 5, lay.title.y + 5) == ("title",)


def test_legend_clicks_filter_and_shift_click_adds():
    assert vlegend.apply_click(None, [3], 10, additive=False) == {3}
    assert vlegend.apply_click({3}, [3], 10, additive=False) is None  # clicking it again: all
    assert vlegend.apply_click({3}, [5], 10, additive=True) == {3, 5}
    assert vlegend.apply_click({3, 5}, [5], 10, additive=True) == {3}
    assert vlegend.apply_click({3}, [0, 1, 2], 10, additive=False) == {0, 1, 2}
    assert vlegend.apply_click({1}, range(10), 10, additive=True) is None  # everything: no filter


@pytest.mark.parametrize("raw", ["a\nb", "tab\there", "nul\x00", "esc\x1b[31mred", "bidi\u202eevil",
                                 "\ud800x", "x" * 1000, 12345, "", "line\r\nend"])
def test_any_text_is_made_safe_to_draw(raw):
    s = safe_text(raw)
    assert isinstance(s, str) and "\n" not in s and "\r" not in s and "\x00" not in s and "\x1b" not in s
    assert len(s) <= 160
    assert all(ch.isprintable() for ch in s)
    from viewer.text import rasterize

    img = rasterize(raw, 12)
    assert img.ndim == 3 and img.shape[2] == 4
    assert text_width(raw, 11) > 0
    short = fit_text(raw, 11, 60)
    assert text_width(short, 11) <= 60 or len(short) <= 2


def test_fit_text_keeps_both_ends():
    t = fit_text("12-inception4d.branch3.conv", 11, 90)
    assert t.startswith("12") and t.endswith("conv") and "…" in t and text_width(t, 11) <= 90


def test_study_layers_fill_the_plot_with_few_points_outside(study_data, tmp_path):
    """Every layer of both study models at 800x600 without the HUD: the 2-98 % box of the drawn
    positions spans >= 0.6 of the plot in its longer direction and < 1 % of the points are outside."""
    from engine.store import load_bundle
    from engine.studyformat import import_umap_tour
    from engine.tour import GrandTour
    from viewer.view import ModelView

    b = load_bundle(import_umap_tour([study_data / "googlenet", study_data / "resnet50"], tmp_path / "s.lt"))
    tour = GrandTour(15, 2, seed=0)
    F = tour.frame
    worst = []
    for name, model in b.models.items():
        v = ModelView(b, name)
        v.size = (800.0, 600.0)
        for i in range(len(model.layers)):
            v.set_layer(i, animate=False)
            v.refit(F)
            px = v.data_to_pixels(np.asarray(v.project_current(F))[:, :2])
            out = np.mean((px[:, 0] < 0) | (px[:, 0] > 800) | (px[:, 1] < 0) | (px[:, 1] > 600))
            fill = _fill(px, (800, 600))
            worst.append((fill, out, name, model.layers[i].id))
            assert out < 0.01, f"{name} {model.layers[i].id}: {out:.3%} outside"
            assert fill >= 0.6, f"{name} {model.layers[i].id}: fill {fill:.2f}"
    assert len(worst) == 46
