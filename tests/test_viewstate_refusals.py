"""Saved views that would hang or break drawing are refused at load, naming the file and field:
numbers that are not finite or out of range (a tour speed of 1e300 hung ``render``; ``zoom: NaN``
drew an empty plot), labels with control characters, special files, deeply nested JSON. No GL."""

from __future__ import annotations

import copy
import json
import os
import threading

import numpy as np
import pytest

from engine.tour import MAX_SPEED, GrandTour, random_frame
from viewer import viewstate


def _state(p=6, d=2, seed=0):
    tour = GrandTour(p, d, seed=seed, speed=0.4)
    tour.step(3.0)
    return json.loads(json.dumps({
        "format": viewstate.FORMAT, "version": viewstate.VERSION, "bundle": "b.lt", "n": 50, "p": p,
        "model": "net", "layer": 1, "frame": np.asarray(tour.frame).tolist(), "tour": tour.state(),
        "view": {"zoom": 1.5, "center": [0.1, -0.2], "color": "label", "speed": 0.4, "dims": d,
                 "legend_filter": ["cat", 3], "image_mode": False, "layer_id": "1-Conv2d"},
        "handles": [{"label": "cats", "kind": "centroid", "color": [1, 0, 0, 1], "members": [1, 2, 3]},
                    {"label": "axis 2", "kind": "axis", "color": [0, 1, 0, 1], "axis": 2}],
        "selection": [4, 5],
    }))


def _set(state, path, value):
    node = state
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return state


BAD = {
    "zoom NaN": (("view", "zoom"), float("nan"), "view.zoom"),
    "zoom zero": (("view", "zoom"), 0.0, "view.zoom"),
    "zoom string": (("view", "zoom"), "2", "view.zoom"),
    "pan inf": (("view", "center"), [0.0, float("inf")], "view.center"),
    "view speed huge": (("view", "speed"), 1e300, "view.speed"),
    "dims 4": (("view", "dims"), 4, "view.dims"),
    "colour with newline": (("view", "color"), "la\nbel", "view.color"),
    "legend control": (("view", "legend_filter"), ["a\x1b[31m"], r"view.legend_filter\[0\]"),
    "tour speed huge": (("tour", "speed"), 1e300, "tour.*speed must be a number in"),
    "tour speed NaN": (("tour", "speed"), float("nan"), "tour.*speed"),
    "tour position": (("tour", "current", "end"), 1e300, "tour.*current: begin="),
    "tour begin NaN": (("tour", "current", "begin"), float("nan"), "tour.*current: begin="),
    "tour generator": (("tour", "rng", "bit_generator"), "__class__", "tour.*bit_generator"),
    "tour history": (("tour", "history"), [{}] * 500, "tour.*history"),
    "tour dims": (("tour", "p"), 7, "tour"),
    "label newline": (("handles", 0, "label"), "two\nlines", r"handles\[0\]\.label"),
    "label bidi": (("handles", 1, "label"), "x\u202ey", r"handles\[1\]\.label"),
    "colour NaN": (("handles", 0, "color"), [1, float("nan"), 0, 1], r"handles\[0\]\.color"),
    "colour range": (("handles", 0, "color"), [1, 2, 0, 1], r"handles\[0\]\.color"),
    "model control": (("model",), "n\x00et", "'model'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_saved_view_that_would_hang_or_break_drawing_is_refused(tmp_path, case):
    path, value, field = BAD[case]
    state = _set(copy.deepcopy(_state()), path, value)
    f = tmp_path / "v.json"
    f.write_text(json.dumps(state))  # NaN/Infinity as Python's json writes them
    with pytest.raises(viewstate.ViewStateError, match=field) as ei:
        viewstate.load(f)
    assert str(f) in str(ei.value)


def test_the_valid_view_loads_and_its_tour_steps_like_the_saved_one(tmp_path):
    state = _state()
    f = tmp_path / "v.json"
    f.write_text(json.dumps(state))
    back = viewstate.load(f)
    a, b = GrandTour.from_state(state["tour"]), GrandTour.from_state(back["tour"])
    for _ in range(5):
        np.testing.assert_array_equal(a.step(0.7), b.step(0.7))


def test_tour_speed_is_bounded_everywhere():
    t = GrandTour(5, 2, seed=1)
    with pytest.raises(ValueError, match="speed must be a number in"):
        t.speed = 1e300
    t.speed = MAX_SPEED
    t.step(0.05)  # the fastest allowed tour still steps in bounded work
    state = t.state()
    state["speed"] = MAX_SPEED * 2
    with pytest.raises(ValueError, match="speed"):
        GrandTour.from_state(state)


def test_torus_state_rates_must_be_finite():
    t = GrandTour(4, 2, seed=3, method="torus")
    state = json.loads(json.dumps(t.state()))
    state["rates"][2] = float("inf")
    with pytest.raises(ValueError, match="rates must be"):
        GrandTour.from_state(state)
    state["rates"] = state["rates"][:2]
    with pytest.raises(ValueError, match="rates must be"):
        GrandTour.from_state(state)


def test_a_fifo_as_a_state_file_is_refused_at_once(tmp_path):
    f = tmp_path / "v.json"
    os.mkfifo(f)
    release = threading.Timer(10, lambda: open(f, "w").close())  # unblocks a hung open(), if any
    release.daemon = True
    release.start()
    try:
        with pytest.raises(viewstate.ViewStateError, match=r"cannot read saved view .*v.json: .*FIFO"):
            viewstate.load(f)
    finally:
        release.cancel()


def test_deep_json_and_non_utf8_are_clear_errors(tmp_path):
    f = tmp_path / "v.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(viewstate.ViewStateError, match="nested too deeply"):
        viewstate.load(f)
    f.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(viewstate.ViewStateError, match="not UTF-8"):
        viewstate.load(f)


def test_a_saved_view_from_capture_round_trips(tmp_path):
    """What the viewer itself writes passes its own validation (3-D view too)."""
    for d in (2, 3):
        state = _state(p=7, d=d, seed=d)
        state["frame"] = random_frame(7, d, 5).tolist()
        viewstate.save(tmp_path / f"v{d}.json", state)
        assert viewstate.load(tmp_path / f"v{d}.json")["frame"] == state["frame"]


def test_guided_tour_state_numbers_are_checked():
    pytest.importorskip("scipy")
    from engine.tour import GuidedTour

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    X[:100, 0] += 4
    t = GuidedTour(5, 2, index="holes", data=X, seed=1)
    t.step(0.5)
    state = json.loads(json.dumps(t.state()))
    GuidedTour.from_state(state, data=X)  # the saved state itself is accepted
    for key, value in (("alpha", float("nan")), ("alpha", 5.0), ("here", float("nan")), ("tries", -1)):
        bad = copy.deepcopy(state)
        bad["guided"][key] = value
        with pytest.raises(ValueError, match="GuidedTour.from_state"):
            GuidedTour.from_state(bad, data=X)
