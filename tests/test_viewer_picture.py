"""What a researcher sees, rendered for real (Xvfb + Mesa): layers fill their plot area, the legend
names its classes inside its panel, no panel covers the points in the compare window, text with
control characters draws, and the render options (--no-hud, --size, --speed) do what they say."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gl
pytest.importorskip("vispy")


def _lit(img):
    from viewer.colors import BACKGROUND

    bg = np.round(np.asarray(BACKGROUND[:3]) * 255).astype(np.int16)
    return np.abs(img[..., :3].astype(np.int16) - bg).sum(axis=2) > 24


def _bundle(tmp_path, rng, k=67, n=3000, p=6, names=None, layer_names=None):
    from engine.store import BundleWriter, load_bundle

    w = BundleWriter(tmp_path / "b.lt", n=n, dim=p)
    w.add_model("net")
    centers = rng.normal(size=(k, p)) * 4
    labels = rng.integers(0, k, n)
    for i, name in enumerate(layer_names or ["0-A", "1-B"]):
        e = (centers[labels] + rng.normal(size=(n, p))).astype(np.float32)
        w.write_layer("net", f"{i}-L", e, name=name)
    w.set_attribute("label", labels.astype(np.int32), "categorical",
                    categories=names or [f"category {j:02d}" for j in range(k)], default=True)
    w.set_attribute("score", rng.random(n).astype(np.float32), "continuous")
    w.commit()
    return load_bundle(tmp_path / "b.lt")


def _canvas(bundle, size, **kw):
    import vispy

    vispy.use("glfw")
    from viewer.canvas import TourCanvas

    c = TourCanvas(bundle, size=size, show=False, animate=False, device="cpu", **kw)
    c.pause_tour()
    return c


def test_a_legend_of_67_classes_draws_their_names_inside_its_panel(tmp_path, rng):
    bundle = _bundle(tmp_path, rng)
    c = _canvas(bundle, (900, 700))
    try:
        img = c.render()
        lay = c.layout()
        leg = lay.legend
        shown = {t: box for t, box in c.overlay.drawn}
        names = [r.label for r, _ in c.legend.layout(leg, lay.scale).rows]
        assert len(names) >= 30  # as many rows as fit, the rest scroll
        for name in names:
            assert name in shown, f"{name!r} was not drawn"
            x0, y0, x1, y1 = shown[name]
            assert leg.x <= x0 and x1 <= leg.x1 and leg.y <= y0 and y1 <= leg.y1
        # and the glyphs are really there: the legend panel has lit text pixels, the plot has points
        lit = _lit(img)
        assert lit[int(leg.y):int(leg.y1), int(leg.x):int(leg.x1)].mean() > 0.05
        plot = lay.plots[0]
        assert not any(plot.intersects(r) for _, r in lay.panel_rects())
        # scrolling with the wheel over the legend shows later classes
        c.events.mouse_wheel(pos=(leg.x + 20, leg.y + 100), delta=(0, -3))
        c.render()
        assert "category 66" in {t for t, _ in c.overlay.drawn} or c.legend.scroll > 0
        # the filter box: typing narrows the rows to matching names
        c.events.key_press(key=__import__("vispy").util.keys.Key("F"), text="f")
        for ch in "category 6":
            name = ch.upper() if ch != " " else "Space"
            c.events.key_press(key=__import__("vispy").util.keys.Key(name), text=ch)
        assert [r.code for r in c.legend.rows()] == list(range(60, 67))  # "category 06" does not match
        c.render()
        assert "category 61" in {t for t, _ in c.overlay.drawn}
    finally:
        c.close()


def test_continuous_colouring_shows_a_colour_bar_with_ticks(tmp_path, rng):
    bundle = _bundle(tmp_path, rng, k=5)
    c = _canvas(bundle, (700, 500), color="score")
    try:
        c.render()
        drawn = [t for t, _ in c.overlay.drawn]
        assert "score" in drawn
        lo, hi = c.coloring.extent
        assert f"{lo:.3g}" in drawn and f"{hi:.3g}" in drawn
        assert len([t for t in drawn if t[:1].isdigit()]) >= 5
    finally:
        c.close()


def test_names_with_control_characters_never_break_a_draw(tmp_path, rng):
    from dataclasses import replace

    from engine.store import BundleError

    nasty = ["line\nbreak", "tab\tcat", "nul\x00x", "\x1b[31mred", "x" * 500, "bidi\u202eevil", "ok"]
    with pytest.raises(BundleError):  # the store refuses such names where they enter (issue 11) ...
        _bundle(tmp_path / "refused", rng, k=len(nasty), n=400, names=nasty, layer_names=["a\nb", "c\rd"])
    # ... and drawing must stay safe for a bundle built in memory with them all the same.
    clean = _bundle(tmp_path, rng, k=len(nasty), n=400)
    model = clean.models["net"]
    layers = [replace(lay, name=nm) for lay, nm in zip(model.layers, ["a\nb", "c\rd"])]
    attrs = dict(clean.attributes, label=replace(clean.attributes["label"], categories=nasty))
    bundle = replace(clean, models={"net": replace(model, layers=layers)}, attributes=attrs)
    c = _canvas(bundle, (600, 480))
    try:
        c.status_message("file\nwith\nnewlines")
        img = c.render()
        assert img.shape[:2] == (480, 600)
        drawn = [t for t, _ in c.overlay.drawn]
        assert all("\n" not in t and "\x00" not in t and "\x1b" not in t for t in drawn)
        assert any("⏎" in t for t in drawn)  # the newline is shown, not swallowed
    finally:
        c.close()


def test_compare_at_1200x600_keeps_panels_off_both_plots(tmp_path, rng):
    import vispy

    vispy.use("glfw")
    from engine.store import BundleWriter, load_bundle
    from viewer.compare import CompareCanvas

    n, p = 2000, 6
    w = BundleWriter(tmp_path / "pair.lt", n=n, dim=p)
    labels = rng.integers(0, 20, n)
    centers = rng.normal(size=(20, p)) * 4
    for m, L in (("a", 25), ("b", 21)):
        w.add_model(m)
        for i in range(L):
            w.write_layer(m, f"{i}-Layer{i}", (centers[labels] + rng.normal(size=(n, p))).astype(np.float32))
    w.set_attribute("label", labels.astype(np.int32), "categorical", categories=[f"c{j}" for j in range(20)])
    w.commit()
    c = CompareCanvas(load_bundle(tmp_path / "pair.lt"), "a", "b", size=(1200, 600), show=False,
                      animate=False, device="cpu")
    try:
        c.tour.pause()
        img = c.render()
        lay = c.layout()
        assert lay.heatmap is not None and all(s is not None for s in lay.strips)
        for plot in lay.plots:
            for name, r in lay.panel_rects():
                assert not plot.intersects(r), f"{name} covers a plot"
        hm = c.heatmap_layout()
        assert lay.heatmap.x <= hm.x0 and hm.x1 <= lay.heatmap.x1 and lay.heatmap.y <= hm.y0
        # every drawn string lies outside both plot areas (the HUD never writes over the points)
        for text, (x0, y0, x1, y1) in c.overlay.drawn:
            for plot in lay.plots:
                inside = min(x1, plot.x1) - max(x0, plot.x) > 1 and min(y1, plot.y1) - max(y0, plot.y) > 1
                assert not inside, f"{text!r} drawn over a plot"
        lit = _lit(img)
        for plot in lay.plots:  # both clouds drawn, filling their own plot
            sub = lit[int(plot.y):int(plot.y1), int(plot.x):int(plot.x1)]
            ys, xs = np.nonzero(sub)
            span = max(np.ptp(np.quantile(xs, [0.02, 0.98])) / plot.w,
                       np.ptp(np.quantile(ys, [0.02, 0.98])) / plot.h)
            assert span > 0.5
    finally:
        c.close()


def test_study_layers_rendered_fill_the_plot(study_data, tmp_path):
    """A few study layers of each model at 800x600 without the HUD: the 2-98 % box of drawn
    pixels spans at least 0.6 of the window in its longer direction (every layer: test_viewer_layout)."""
    import vispy

    vispy.use("glfw")
    from engine.store import load_bundle
    from engine.studyformat import import_umap_tour
    from viewer.canvas import TourCanvas

    b = load_bundle(import_umap_tour([study_data / "googlenet", study_data / "resnet50"], tmp_path / "s.lt"))
    for model, layers in (("googlenet", (12, 18, 20)), ("resnet50", (0, 24))):
        c = TourCanvas(b, model=model, size=(800, 600), show=False, animate=False, device="cpu")
        try:
            c.show_hud = False
            for i in layers:
                c.set_layer(i, animate=False)
                c.reset_view()
                ys, xs = np.nonzero(_lit(c.render()))
                fx = np.ptp(np.quantile(xs, [0.02, 0.98])) / 800
                fy = np.ptp(np.quantile(ys, [0.02, 0.98])) / 600
                assert max(fx, fy) >= 0.6, f"{model} layer {i}: {fx:.2f} x {fy:.2f}"
        finally:
            c.close()


def test_render_no_hud_size_and_speed_from_the_command_line(tmp_path, rng, capsys):
    import imageio.v3 as iio

    from engine.cli import main

    bundle = _bundle(tmp_path, rng, k=8, n=1500)
    path = str(bundle.path)
    assert main(["render", path, "--no-hud", "--size", "3840x2160", "--out", str(tmp_path / "4k.png")]) == 0
    big = iio.imread(tmp_path / "4k.png")
    assert big.shape == (2160, 3840, 3)
    assert main(["render", path, "--size", "640x480", "--out", str(tmp_path / "hud.png")]) == 0
    assert main(["render", path, "--size", "640x480", "--no-hud", "--out", str(tmp_path / "bare.png")]) == 0
    hud, bare = (_lit(iio.imread(tmp_path / f)) for f in ("hud.png", "bare.png"))
    assert not np.array_equal(hud[:30], bare[:30])
    ys, xs = np.nonzero(bare)  # without the HUD the points fill the whole window
    assert max(np.ptp(np.quantile(xs, [0.02, 0.98])) / 640,
               np.ptp(np.quantile(ys, [0.02, 0.98])) / 480) >= 0.6
    # the default speed visibly moves a 4-second clip; --speed 0 holds it still
    for speed, name in ((None, "move.gif"), ("0", "still.gif")):
        extra = [] if speed is None else ["--speed", speed]
        assert main(["render", path, "--size", "240x200", "--no-hud", "--frames", "40", "--fps", "10",
                     *extra, "--out", str(tmp_path / name)]) == 0
    move = iio.imread(tmp_path / "move.gif", index=None).astype(float)
    still = iio.imread(tmp_path / "still.gif", index=None).astype(float)
    assert np.abs(move[-1] - move[0]).mean() > 5 * max(np.abs(still[-1] - still[0]).mean(), 0.2)
    with pytest.raises(SystemExit) as bad:  # argparse refuses it, exit status 2, naming the option
        main(["render", path, "--speed", "fast", "--out", str(tmp_path / "x.png")])
    assert bad.value.code == 2 and "--speed" in capsys.readouterr().err
    from viewer import cli, window

    assert cli.DEFAULT_SPEED == window.DEFAULT_SPEED
