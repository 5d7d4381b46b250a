"""Handle maths through the viewer layer, without GL: centroids per layer and during transitions,
and drags that put the handle under the cursor with the frame engine.tour predicts."""

from __future__ import annotations

import numpy as np
import pytest
from _v2_helpers import random_frame, random_map

from engine import tour
from viewer.handles import HandleError, HandleSet, axis_radius, drag_frame


def _layers(rng, n=400, p=7, count=3):
    """Random layers in which a group of points sits away from the origin (a reachable handle)."""
    members = np.sort(rng.choice(n, size=40, replace=False))
    out = []
    for _ in range(count):
        y = rng.normal(size=(n, p))
        shift = rng.normal(size=p)
        y[members] += 3.0 * shift / np.linalg.norm(shift)
        out.append(y.astype(np.float32))
    return out, members


def test_centroid_per_layer_and_blended_in_transitions(rng, xp):
    layers, members = _layers(rng)
    data = [xp.asarray(y) for y in layers]
    hs = HandleSet(7)
    h = hs.add_centroid(members[::-1])
    np.testing.assert_array_equal(h.members, members)
    for k, y in enumerate(layers):
        np.testing.assert_allclose(hs.point(h, data.__getitem__, k), y[members].astype(np.float64).mean(0),
                                   rtol=1e-5, atol=1e-5)
    s = float(rng.uniform())
    blend = ((1 - s) * layers[0].astype(np.float64) + s * layers[2])[members].mean(0)
    np.testing.assert_allclose(hs.point(h, data.__getitem__, 2, (0, 2, s)), blend, rtol=1e-5, atol=1e-5)


def _cursor_near(rng, m, point, frame, px_step=25.0):
    """A cursor a few pixels from the handle, at a data position the handle can reach: in 3-D the
    drag keeps the handle's depth, so the target with that depth must lie within its radius (else
    it is clamped and the handle lands short of the cursor)."""
    proj = point @ frame
    pos, depth = proj[:2], proj[2:]
    for k in range(100):  # nearer and nearer to the handle, whose own position is reachable
        cursor = m.data_to_pixels(pos[None])[0] + rng.normal(scale=px_step * (1 - k / 100), size=2)
        target = m.pixels_to_data(cursor[None])[0]
        if np.linalg.norm(np.concatenate([target, depth])) < 0.999 * np.linalg.norm(point):
            return cursor, target
    raise AssertionError("no reachable cursor position found")


@pytest.mark.parametrize("d", [2, 3])
def test_dragging_a_centroid_handle_lands_under_the_cursor(rng, d):
    layers, members = _layers(rng)
    m = random_map(rng)
    hs = HandleSet(7)
    h = hs.add_centroid(members)
    frame = random_frame(rng, 7, d)
    for _ in range(5):  # a drag is a sequence of moves, each from the previous frame
        point = hs.point(h, layers.__getitem__, 1)
        cursor, target = _cursor_near(rng, m, point, frame)
        new = drag_frame(h, point, frame, target, radius=1.0)
        ref_point = layers[1][members].astype(np.float64).mean(0)
        ref_target = ref_point @ frame
        ref_target[:2] = target
        np.testing.assert_allclose(new, tour.drag_handle(frame, ref_point, ref_target), atol=1e-6)
        np.testing.assert_allclose(new.T @ new, np.eye(d), atol=1e-9)
        landed = m.data_to_pixels((point @ new)[None, :2])[0]
        assert np.linalg.norm(landed - cursor) < 0.5
        frame = new


def test_dragging_an_axis_handle_lands_under_the_cursor(rng):
    layers, _ = _layers(rng)
    m = random_map(rng)
    hs = HandleSet(7)
    hs.toggle_axes()
    assert [h.axis for h in hs.handles] == list(range(7))
    frame = random_frame(rng, 7)
    r = hs.radius(layers.__getitem__, 0)
    np.testing.assert_allclose(r, np.percentile(np.linalg.norm(layers[0].astype(np.float64), axis=1), 90),
                               rtol=1e-5)
    h = hs.handles[int(rng.integers(7))]
    point = hs.point(h, layers.__getitem__, 0)
    np.testing.assert_allclose(point @ frame, r * frame[h.axis])
    cursor = m.data_to_pixels((0.5 * r * rng.normal(size=2) / np.sqrt(2))[None])[0]
    target = m.pixels_to_data(cursor[None])[0]
    if np.linalg.norm(target) >= r:
        target = 0.5 * r * target / np.linalg.norm(target)
        cursor = m.data_to_pixels(target[None])[0]
    new = drag_frame(h, point, frame, target, r)
    np.testing.assert_allclose(new, tour.drag_axis(frame, h.axis, target / r), atol=1e-9)
    landed = m.data_to_pixels((point @ new)[None])[0]
    assert np.linalg.norm(landed - cursor) < 0.5


def test_handle_set_editing():
    hs = HandleSet(4)
    a = hs.add_centroid([3, 1, 3])
    b = hs.add_centroid([0])
    assert (a.label, b.label) == ("1", "2") and a.color != b.color
    assert hs.rename(a.uid, "dogs").label == "dogs"
    assert hs.toggle_axes() and len(hs) == 6
    assert not hs.toggle_axes() and len(hs) == 2
    assert hs.remove_last().uid == b.uid and len(hs) == 1
    assert hs.handles[0].to_dict() == {"label": "dogs", "kind": "centroid", "color": list(a.color),
                                       "members": [1, 3]}
    with pytest.raises(HandleError, match="at least one member"):
        hs.add_centroid([])
    with pytest.raises(HandleError, match="axis 4 out of range"):
        hs.add_axis(4)
    with pytest.raises(HandleError, match="no handle with id"):
        hs.rename(999, "x")


def test_member_beyond_n_is_named(rng):
    hs = HandleSet(3)
    h = hs.add_centroid([2, 10])
    data = rng.normal(size=(5, 3)).astype(np.float32)
    with pytest.raises(HandleError, match="member 10 >= N = 5"):
        hs.point(h, lambda i: data, 0)


def test_axis_radius_scales_with_data(rng):
    y = rng.normal(size=(1000, 5))
    assert axis_radius(3 * y) == pytest.approx(3 * axis_radius(y), rel=1e-9)
    assert axis_radius(np.zeros((4, 5))) == 1.0


def test_invalidate_recomputes_for_another_model(rng):
    a = [rng.normal(size=(50, 4)).astype(np.float32) for _ in range(2)]
    b = [rng.normal(size=(50, 4)).astype(np.float32) for _ in range(2)]
    hs = HandleSet(4)
    h = hs.add_centroid([1, 5, 9])
    np.testing.assert_allclose(hs.point(h, a.__getitem__, 1), a[1][[1, 5, 9]].astype(np.float64).mean(0),
                               rtol=1e-6)
    hs.invalidate()
    np.testing.assert_allclose(hs.point(h, b.__getitem__, 1), b[1][[1, 5, 9]].astype(np.float64).mean(0),
                               rtol=1e-6)
