"""viewer.colors: palettes stay distinct past 10 classes, colourings map values faithfully (no GL)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vispy")

from viewer import colors  # noqa: E402


def _min_dist(palette: np.ndarray) -> float:
    lab = colors.srgb_to_oklab(palette[:, :3])
    d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
    d[np.eye(len(lab), dtype=bool)] = np.inf
    return float(d.min())


def test_oklab_round_trip_and_white_point(rng):
    rgb = rng.random((200, 3))
    back = colors.oklab_to_srgb(colors.srgb_to_oklab(rgb))
    np.testing.assert_allclose(back, rgb, atol=1e-5)  # published 10-digit matrices invert to ~1e-6
    white = colors.srgb_to_oklab(np.ones((1, 3)))[0]
    np.testing.assert_allclose(white, [1.0, 0.0, 0.0], atol=1e-4)


@pytest.mark.parametrize("k", [2, 3, 7, 10, 13, 20])
def test_small_palettes_are_well_separated(k):
    pal = colors.categorical_palette(k)
    assert pal.shape == (k, 4) and pal.dtype == np.float32
    assert np.all((pal >= 0) & (pal <= 1)) and np.all(pal[:, 3] == 1)
    # 0.06 in OKLab is clearly distinguishable side by side (a just-noticeable step is ~0.02)
    assert _min_dist(pal) > 0.06
    # readable on the dark background: lightness well above it
    assert colors.srgb_to_oklab(pal[:, :3])[:, 0].min() > 0.5


@pytest.mark.parametrize("k", [21, 67, 1000])
def test_many_classes_never_cycle(k):
    pal = colors.categorical_palette(k)
    as8 = np.round(pal[:, :3] * 255).astype(int)
    assert len(np.unique(as8, axis=0)) == k
    assert _min_dist(pal) > 0.0


def test_coarse_to_fine_palette_keeps_groups_together(rng):
    k, g = 300, 12
    groups = rng.integers(0, g, k)
    groups[:g] = np.arange(g)
    pal = colors.categorical_palette(k, groups)
    lab = colors.srgb_to_oklab(pal[:, :3])
    hue = np.arctan2(lab[:, 2], lab[:, 1])
    vec = np.stack([np.cos(hue), np.sin(hue)], 1)
    same = groups[:, None] == groups[None]
    off = ~np.eye(k, dtype=bool)
    sim = vec @ vec.T
    # members of a coarse group share a hue family: far more alike than members of other groups
    assert sim[same & off].mean() > sim[~same].mean() + 0.5
    assert len(np.unique(np.round(pal[:, :3] * 255).astype(int), axis=0)) == k


def test_coarse_groups_recovers_nesting_and_rejects_crossings(rng):
    kf, kc, n = 40, 6, 4000
    fine_to_coarse = rng.integers(0, kc, kf)
    fine = rng.integers(0, kf, n)
    coarse = fine_to_coarse[fine]
    got = colors.coarse_groups(fine, coarse, kf)
    seen = np.unique(fine)
    np.testing.assert_array_equal(got[seen], fine_to_coarse[seen])
    assert colors.coarse_groups(fine, rng.integers(0, kc, n), kf) is None


def test_categorical_coloring_codes_and_counts(rng):
    n, k = 500, 9
    v = rng.integers(0, k, n)
    c = colors.categorical_coloring("label", v, [f"c{i}" for i in range(k)])
    np.testing.assert_array_equal(c.codes, v.astype(np.float32))
    np.testing.assert_array_equal(c.counts, np.bincount(v, minlength=k))
    assert c.categories == tuple(f"c{i}" for i in range(k)) and c.kind == "categorical"
    with pytest.raises(ValueError, match="'label'.*negative"):
        colors.categorical_coloring("label", np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="'label'.*integers"):
        colors.categorical_coloring("label", np.array([0.0, 1.5]))


def test_continuous_coloring_is_monotone_over_extent(rng):
    v = rng.normal(size=1000)
    c = colors.continuous_coloring("conf", v)
    order = np.argsort(v)
    assert np.all(np.diff(c.codes[order]) >= 0)
    assert c.codes[order[0]] == 0 and c.codes[order[-1]] == colors.N_CONTINUOUS - 1
    ref = np.round((v - v.min()) / (v.max() - v.min()) * (colors.N_CONTINUOUS - 1))
    np.testing.assert_array_equal(c.codes, ref.astype(np.float32))
    assert c.palette.shape == (colors.N_CONTINUOUS, 4)


def test_movement_coloring_matches_float64_procrustes_distance(rng):
    pytest.importorskip("engine.align")
    n, p = 400, 6
    a = rng.normal(size=(n, p)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    b = (a @ q * 2.0 + 0.3 + rng.normal(scale=0.2, size=(n, p))).astype(np.float32)
    c = colors.movement_coloring(a, b)

    # independent reference: centre, scale by the mean row norm, Procrustes by SVD, distances
    def norm(x):
        x = x.astype(np.float64) - x.mean(0)
        return x / np.linalg.norm(x, axis=1).mean()

    an, bn = norm(a), norm(b)
    u, _, vt = np.linalg.svd(an.T @ bn)
    d = np.linalg.norm(an @ (u @ vt) - bn, axis=1)
    hi = np.quantile(d, 0.99)
    ref = np.round(np.clip(d / hi, 0, 1) * (colors.N_CONTINUOUS - 1))
    assert np.mean(np.abs(c.codes - ref) <= 1) > 0.99
    assert c.extent[0] == 0.0 and abs(c.extent[1] - hi) < 1e-3 * hi
