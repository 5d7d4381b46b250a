"""Brushing without GL: rectangle and lasso gestures in pixels -> masks, modes, export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _v2_helpers import CLASS_NAMES, PixelMap, edge_distance, even_odd, make_bundle, random_map

from viewer.selection import (
    Selection,
    SelectionError,
    brush_lasso,
    brush_rect,
    mode_from_modifiers,
    rect_in_data,
)


def test_rect_selects_points_inside_the_pixel_rectangle(rng, xp):
    m = random_map(rng)
    xy = rng.normal(size=(4000, 2)).astype(np.float32) * 2
    px = m.data_to_pixels(xy)
    c0 = rng.uniform(100, 300, 2)
    c1 = c0 + rng.uniform(40, 250, 2)
    # drag from the bottom-right corner to the top-left one: order must not matter
    mask = brush_rect(xp.asarray(xy), c1, c0, m.pixels_to_data)
    assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (4000,)
    ref = np.all((px >= c0) & (px <= c1), axis=1)
    clear = np.min(np.abs(np.concatenate([px - c0, px - c1], axis=1)), axis=1) > 1e-3
    assert ref[clear].any() and (~ref[clear]).any()
    np.testing.assert_array_equal(mask[clear], ref[clear])


def test_rect_in_data_orders_corners_and_flips_y():
    m = PixelMap(10.0, (0.0, 0.0), (100.0, 100.0))
    assert rect_in_data((120, 80), (90, 130), m.pixels_to_data) == pytest.approx((-1.0, -3.0, 2.0, 2.0))


def test_rect_uses_x_y_of_3d_positions(rng):
    m = random_map(rng)
    xyz = rng.normal(size=(500, 3)).astype(np.float32)
    c0, c1 = np.array([150.0, 150.0]), np.array([450.0, 420.0])
    np.testing.assert_array_equal(brush_rect(xyz, c0, c1, m.pixels_to_data),
                                  brush_rect(np.ascontiguousarray(xyz[:, :2]), c0, c1, m.pixels_to_data))


U_SHAPE = np.array([[100, 100], [200, 100], [200, 400], [400, 400], [400, 100], [500, 100],
                    [500, 500], [100, 500]], dtype=np.float64)


def test_concave_lasso_excludes_the_notch(rng, xp):
    m = random_map(rng)
    known_px = np.array([[300, 250], [150, 300], [300, 450], [450, 200], [600, 300], [300, 90]], float)
    expected = np.array([False, True, True, True, False, False])
    known = m.pixels_to_data(known_px).astype(np.float32)
    mask = brush_lasso(xp.asarray(known), U_SHAPE, m.pixels_to_data)
    np.testing.assert_array_equal(mask, expected)
    # random points against the independent pixel-space reference
    px = rng.uniform(50, 550, size=(5000, 2))
    xy = m.pixels_to_data(px).astype(np.float32)
    px32 = m.data_to_pixels(xy)
    mask = brush_lasso(xp.asarray(xy), U_SHAPE, m.pixels_to_data)
    clear = edge_distance(px32, U_SHAPE) > 1e-2
    ref = even_odd(px32, U_SHAPE)
    assert ref[clear].sum() > 100 and (~ref[clear]).sum() > 100
    np.testing.assert_array_equal(mask[clear], ref[clear])


def test_self_crossing_lasso_followseven_odd(rng):
    m = random_map(rng)
    ang = np.pi / 2 + np.arange(5) * 4 * np.pi / 5       # pentagram: the centre is covered twice
    star = np.stack([300 + 200 * np.cos(ang), 300 + 200 * np.sin(ang)], axis=1)
    tip = [300 + 150 * np.cos(ang[0]), 300 + 150 * np.sin(ang[0])]
    pts = m.pixels_to_data(np.array([[300.0, 300.0], tip]))
    mask = brush_lasso(pts.astype(np.float32), star, m.pixels_to_data)
    np.testing.assert_array_equal(mask, [False, True])


def test_lasso_needs_three_vertices(rng):
    m = random_map(rng)
    with pytest.raises(SelectionError, match="lasso path"):
        brush_lasso(rng.normal(size=(10, 2)).astype(np.float32), [[0, 0], [5, 5]], m.pixels_to_data)


def test_modes_are_set_operations(rng):
    n = 200
    a, b = rng.random(n) < 0.4, rng.random(n) < 0.4
    s = Selection(n)
    assert s.mask is None and s.count == 0 and s.indices.size == 0
    np.testing.assert_array_equal(s.combine(a, "replace"), a)
    np.testing.assert_array_equal(s.combine(b, "add"), a | b)
    np.testing.assert_array_equal(s.combine(a, "subtract"), b & ~a)
    np.testing.assert_array_equal(s.indices, np.flatnonzero(b & ~a))
    s.clear()
    assert s.mask is None
    np.testing.assert_array_equal(s.combine(b, "subtract"), np.zeros(n, bool))
    assert s.active and s.count == 0


def test_modes_from_modifiers():
    from vispy.util import keys

    assert mode_from_modifiers(()) == "replace"
    assert mode_from_modifiers((keys.SHIFT,)) == "add"
    assert mode_from_modifiers((keys.CONTROL,)) == "subtract"
    assert mode_from_modifiers(("Shift", "Control")) == "add"


def test_bad_masks_and_indices_are_named(rng):
    s = Selection(50)
    with pytest.raises(SelectionError, match=r"mask must be \(50,\) bool"):
        s.combine(np.ones(49, bool))
    with pytest.raises(SelectionError, match="mode must be"):
        s.combine(np.ones(50, bool), "xor")
    with pytest.raises(SelectionError, match="out of range"):
        s.set_indices([3, 50])
    with pytest.raises(SelectionError, match="positive"):
        Selection(0)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_writes_indices_and_labels_atomically(tmp_path, rng, suffix):
    bundle = make_bundle(tmp_path / "b.lt", rng, n=120, images=False)
    idx = np.sort(rng.choice(120, size=17, replace=False))
    s = Selection(120)
    s.set_indices(idx[::-1])
    out = s.export(tmp_path / f"sel{suffix}", bundle)
    labels = np.asarray(bundle.attributes["label"].values)
    conf = np.asarray(bundle.attributes["confidence"].values)
    if suffix == ".json":
        doc = json.loads(out.read_text())
        assert doc["indices"] == idx.tolist() and doc["count"] == 17 and doc["n"] == 120
        assert doc["attributes"]["label"] == [CLASS_NAMES[labels[i]] for i in idx]
        np.testing.assert_allclose(doc["attributes"]["confidence"], conf[idx], rtol=1e-6)
    else:
        rows = list(csv.reader(out.open()))
        assert rows[0] == ["index", "label", "confidence"]
        assert [int(r[0]) for r in rows[1:]] == idx.tolist()
        assert [r[1] for r in rows[1:]] == [CLASS_NAMES[labels[i]] for i in idx]
        np.testing.assert_allclose([float(r[2]) for r in rows[1:]], conf[idx], rtol=1e-6)
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["b.lt", f"sel{suffix}"])


def test_export_rejects_bad_paths(tmp_path):
    s = Selection(5)
    s.set_indices([1])
    with pytest.raises(SelectionError, match=r"sel\.txt must end in \.csv or \.json"):
        s.export(tmp_path / "sel.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        s.export(tmp_path / "missing" / "sel.csv")
