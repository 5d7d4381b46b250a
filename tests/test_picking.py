"""Picking, tooltips and search without GL."""

from __future__ import annotations

import numpy as np
import pytest
from _v2_helpers import CLASS_NAMES, make_bundle, random_map

from viewer.picking import affine_of, describe, nearest, nearest_within, search


def test_affine_of_recovers_the_pixel_map(rng):
    m = random_map(rng)
    a = affine_of(m.data_to_pixels)
    x = rng.normal(size=(50, 2))
    np.testing.assert_allclose(a(x), m.data_to_pixels(x), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(a.inverse()(a(x)), x, rtol=1e-10, atol=1e-10)


def test_affine_of_rejects_non_affine_and_degenerate_maps():
    with pytest.raises(ValueError, match="not affine"):
        affine_of(lambda x: np.asarray(x) ** 2)
    with pytest.raises(ValueError, match="degenerate"):
        affine_of(lambda x: np.zeros_like(np.asarray(x, dtype=float)))


def test_nearest_matches_brute_force(rng, xp):
    m = random_map(rng)
    xy = rng.normal(size=(20000, 3)).astype(np.float32)
    px = m.data_to_pixels(xy[:, :2].astype(np.float64))
    to_px = affine_of(m.data_to_pixels)
    for _ in range(20):
        cursor = px[rng.integers(len(px))] + rng.normal(scale=3, size=2)
        d = np.linalg.norm(px - cursor, axis=1)
        got = nearest(xp.asarray(xy), cursor, to_px, radius_px=8.0)
        if d.min() <= 8.0 - 1e-6:
            assert got is not None and d[got] == pytest.approx(d.min(), abs=1e-6)
        elif d.min() > 8.0 + 1e-6:
            assert got is None


def test_nearest_is_none_far_from_every_point(rng):
    m = random_map(rng)
    xy = rng.normal(size=(100, 2)).astype(np.float32)
    far = m.data_to_pixels(np.array([[1e3, 1e3]]))[0]
    assert nearest(xy, far, affine_of(m.data_to_pixels), 10.0) is None
    assert nearest(xy[:0], far, affine_of(m.data_to_pixels), 10.0) is None


def test_nearest_within_small_sets():
    px = np.array([[10.0, 10.0], [30.0, 10.0]])
    assert nearest_within(px, (28, 12), 5) == 1
    assert nearest_within(px, (20, 30), 5) is None
    assert nearest_within(np.zeros((0, 2)), (0, 0), 5) is None


def test_describe_lists_every_attribute_and_the_thumbnail(tmp_path, rng):
    b = make_bundle(tmp_path / "b.lt", rng, n=80)
    i = int(rng.integers(80))
    tip = describe(b, i)
    code = int(b.attributes["label"].values[i])
    assert tip.rows[0] == ("index", str(i))
    assert tip.rows[1] == ("label", f"{CLASS_NAMES[code]} ({code})")
    assert tip.rows[2][0] == "confidence"
    assert float(tip.rows[2][1]) == pytest.approx(float(b.attributes["confidence"].values[i]), rel=1e-3)
    np.testing.assert_array_equal(tip.thumbnail, b.images[i])
    with pytest.raises(IndexError, match="80 out of range"):
        describe(b, 80)


def test_describe_without_images(tmp_path, rng):
    b = make_bundle(tmp_path / "b.lt", rng, n=40, images=False)
    assert describe(b, 3).thumbnail is None


def test_search_by_label_substring_case_insensitive(tmp_path, rng):
    b = make_bundle(tmp_path / "b.lt", rng, n=400)
    codes = np.asarray(b.attributes["label"].values)
    res = search(b, "RETRIEVER")
    want = np.flatnonzero(np.isin(codes, [0, 1]))
    np.testing.assert_array_equal(res.indices, want)
    assert set(res.matches) == {"label: golden retriever", "label: Labrador retriever"}
    assert str(want.size) in res.message
    res = search(b, " cat")
    np.testing.assert_array_equal(res.indices, np.flatnonzero(np.isin(codes, [2, 3, 6])))


def test_search_by_index_and_failures(tmp_path, rng):
    b = make_bundle(tmp_path / "b.lt", rng, n=50, images=False)
    assert search(b, "17").indices.tolist() == [17]
    assert search(b, "#0").indices.tolist() == [0]
    r = search(b, "#50")
    assert r.indices.size == 0 and "out of range" in r.message
    r = search(b, "zebra")
    assert r.indices.size == 0 and "zebra" in r.message
    assert search(b, "   ").indices.size == 0


def test_nearest_under_a_sheared_rotated_map(rng):
    """The data-space candidate box must cover the pixel disc for any affine map, not only zoom/pan."""
    from viewer.picking import Affine2

    A = rng.normal(size=(2, 2)) * 60
    to_px = Affine2(A, rng.uniform(100, 300, 2))
    xy = rng.normal(size=(5000, 2)).astype(np.float32)
    px = to_px(xy)
    for _ in range(30):
        cursor = px[rng.integers(len(px))] + rng.normal(scale=4, size=2)
        d = np.linalg.norm(px - cursor, axis=1)
        got = nearest(xy, cursor, to_px, radius_px=6.0)
        if d.min() <= 6.0 - 1e-6:
            assert got is not None and d[got] == pytest.approx(d.min(), abs=1e-6)
        elif d.min() > 6.0 + 1e-6:
            assert got is None


def test_search_on_the_study_labels(tmp_path, study_data):
    """Real ImageNet labels: five retriever breeds, 50 validation images each."""
    from engine.store import load_bundle
    from engine.studyformat import import_umap_tour

    b = load_bundle(import_umap_tour([study_data / "googlenet"], tmp_path / "g.lt"))
    res = search(b, "retriever")
    assert res.indices.size == 250 and len(res.matches) == 5
    fine = b.attributes["label"]
    names = [fine.categories[int(c)].lower() for c in np.asarray(fine.values)[res.indices]]
    assert all("retriever" in s for s in names)
    assert search(b, "#49999").indices.tolist() == [49999]
