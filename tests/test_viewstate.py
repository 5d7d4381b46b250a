"""Saved views without GL: JSON round trip, validation errors that name file and field, handle
restoration and the animated go-to-view path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _v2_helpers import random_frame

from engine.tour import GrandTour
from viewer import viewstate
from viewer.handles import HandleSet


def _state(rng, n=100, p=6, d=2):
    hs = HandleSet(p)
    hs.add_centroid(rng.choice(n, size=9, replace=False), label="cats")
    hs.add_axis(int(rng.integers(p)))
    return {
        "format": viewstate.FORMAT, "version": viewstate.VERSION, "bundle": "b.lt", "n": n, "p": p,
        "model": "net", "layer": 2, "frame": random_frame(rng, p, d).tolist(),
        "tour": json.loads(json.dumps(GrandTour(p, d, seed=int(rng.integers(1 << 30)),
                                                speed=float(rng.uniform(0.1, 2))).state())),
        "view": {"zoom": float(rng.uniform(0.5, 3)), "pan": rng.normal(size=2).tolist(), "color": "label"},
        "handles": [h.to_dict() for h in hs.handles],
        "selection": sorted(rng.choice(n, size=13, replace=False).tolist()),
    }


@pytest.mark.parametrize("d", [2, 3])
def test_round_trip(tmp_path, rng, d):
    s = _state(rng, d=d)
    path = viewstate.save(tmp_path / "v.json", s)
    back = viewstate.load(path)
    assert back == json.loads(json.dumps(s))
    np.testing.assert_array_equal(np.asarray(back["frame"]), np.asarray(s["frame"]))
    assert [q.name for q in tmp_path.iterdir()] == ["v.json"]


def test_restore_handles(rng):
    s = _state(rng)
    hs = HandleSet(6)
    hs.add_centroid([1, 2])
    viewstate.restore_handles(hs, s["handles"])
    assert [h.to_dict() for h in hs.handles] == s["handles"]


def test_bad_json_names_the_file_and_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"format": "layertour-view",\n "version": 1,,}')
    with pytest.raises(viewstate.ViewStateError, match=r"broken\.json is not valid JSON \(line 2"):
        viewstate.load(p)
    with pytest.raises(viewstate.ViewStateError, match=r"cannot read saved view .*missing\.json"):
        viewstate.load(tmp_path / "missing.json")


@pytest.mark.parametrize("field,value,message", [
    ("format", "other", "'format' must be"),
    ("version", 7, "'version' must be 1"),
    ("layer", -1, "'layer' must be a non-negative integer"),
    ("frame", [[1.0, 0.0]], "'frame' must be a 6 x d list"),
    ("frame", "x", "'frame'"),
    ("selection", [0, 100], r"'selection' has indices outside \[0, 100\)"),
    ("selection", [0.5], "'selection' must be null or a list"),
    ("view", [], "'view' must be an object"),
])
def test_invalid_fields_are_named(tmp_path, rng, field, value, message):
    s = _state(rng)
    s[field] = value
    p = tmp_path / "v.json"
    p.write_text(json.dumps(s))
    with pytest.raises(viewstate.ViewStateError, match=message) as info:
        viewstate.load(p)
    assert "v.json" in str(info.value)


def test_non_orthonormal_frame_and_bad_handles(rng):
    s = _state(rng)
    s["frame"] = (2 * np.asarray(s["frame"])).tolist()
    with pytest.raises(viewstate.ViewStateError, match="not orthonormal"):
        viewstate.validate(s)
    s = _state(rng)
    s["handles"][0]["members"] = [5, 100]
    with pytest.raises(viewstate.ViewStateError, match=r"handles\[0\]\.members"):
        viewstate.validate(s)
    s = _state(rng)
    s["handles"][1]["axis"] = 6
    with pytest.raises(viewstate.ViewStateError, match=r"handles\[1\]\.axis"):
        viewstate.validate(s)
    s = _state(rng)
    s["handles"][1]["kind"] = "star"
    with pytest.raises(viewstate.ViewStateError, match=r"handles\[1\]\.kind"):
        viewstate.validate(s)


def test_go_to_follows_the_view_path(rng):
    from engine import tour
    a, z = random_frame(rng, 6), random_frame(rng, 6)
    g = viewstate.GoTo(a, z, duration=1.0)
    path = tour.view_path(a, z)
    f, done = g.step(0.25)
    assert not done
    np.testing.assert_allclose(f, path.frame(viewstate.smoothstep(0.25)), atol=1e-12)
    np.testing.assert_allclose(f.T @ f, np.eye(2), atol=1e-9)
    f, done = g.step(0.8)
    assert done
    np.testing.assert_array_equal(f, z)


def test_default_and_latest_paths(tmp_path):
    class B:
        path = tmp_path / "study.lt"

    first = viewstate.default_path(B, tmp_path)
    assert first.name.startswith("study.lt-view-") and first.suffix == ".json"
    assert viewstate.latest_path(B, tmp_path) is None
    first.write_text("{}")
    second = viewstate.default_path(B, tmp_path)
    assert second != first
    second.write_text("{}")
    assert viewstate.latest_path(B, tmp_path) in (first, second)
