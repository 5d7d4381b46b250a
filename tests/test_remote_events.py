"""GL-free: the notebook widget's translation of browser (jupyter_rfb) events into VisPy canvas
events, checked against what the desktop's glfw back end produces and what the viewer's own key
and brush logic reads from them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vispy.app.canvas import KeyEvent, MouseEvent
from vispy.util import keys
from vispy.util.event import EmitterGroup

from viewer.controllers import key_name
from viewer.remote_events import CanvasEvent, emit, key_of, modifiers, translate
from viewer.selection import mode_from_modifiers


def _pointer(kind, x=10.5, y=20.0, button=1, buttons=(1,), mods=()):
    return {"type": kind, "x": x, "y": y, "button": button, "buttons": list(buttons),
            "modifiers": list(mods), "ntouches": 0, "touches": {}, "timestamp": 1.0}


@pytest.mark.parametrize("dom, name, text", [
    ("j", "J", "j"), ("J", "J", "J"), ("3", "3", "3"), ("/", "/", "/"), ("?", "?", "?"),
    ("+", "+", "+"), (" ", "Space", " "), ("ArrowLeft", "Left", ""), ("Backspace", "Backspace", ""),
    ("Enter", "Enter", ""), ("Escape", "Escape", ""), ("Delete", "Delete", ""), ("Shift", "Shift", ""),
    ("F5", "F5", ""),
])
def test_keys_are_named_as_glfw_names_them(dom, name, text):
    key, got = key_of(dom)
    assert key is not None and key.name == name and got == text


@pytest.mark.parametrize("dom", ["Dead", "Unidentified", "Process", "CapsLock", "", "\x07"])
def test_keys_without_meaning_are_dropped(dom):
    assert key_of(dom) == (None, "")
    assert translate({"type": "key_down", "key": dom, "modifiers": []}) is None


def test_key_events_reach_the_viewers_key_logic():
    """What TourCanvas / common_key and the controllers read (``event.text``, ``key.name``,
    :func:`viewer.controllers.key_name`) from translated events."""
    def ev(dom, mods=()):
        e = translate({"type": "key_down", "key": dom, "modifiers": list(mods), "timestamp": 0})
        assert e.kind == "key_press"
        return SimpleNamespace(**e.kwargs)

    assert key_name(ev("b")) == "b" and ev("b").text == "b"
    assert key_name(ev("/")) == "/" and key_name(ev("?")) == "?"
    assert key_name(ev("Delete")) == "delete" and key_name(ev("Enter")) == "enter"
    assert ev(" ").key.name.lower() == "space" and ev(" ").text == " "
    assert ev("ArrowLeft").key.name.lower() == "left"
    assert ev("Backspace").key.name.lower() == "backspace"
    assert ev("J", ["Shift"]).modifiers == (keys.SHIFT,)
    up = translate({"type": "key_up", "key": "j", "modifiers": []})
    assert up.kind == "key_release" and up.kwargs["key"] == keys.Key("J")


def test_pointer_events_keep_position_button_and_modifiers():
    down = translate(_pointer("pointer_down", mods=("Shift",)))
    assert down == CanvasEvent("mouse_press", {"pos": (10.5, 20.0), "button": 1, "buttons": [1],
                                               "modifiers": (keys.SHIFT,)})
    move = translate(_pointer("pointer_move", x=30, y=40, button=0, buttons=()))
    assert move.kind == "mouse_move" and move.kwargs["button"] is None and move.kwargs["pos"] == (30.0, 40.0)
    up = translate(_pointer("pointer_up", button=2, buttons=(), mods=("Control", "Alt")))
    assert up.kind == "mouse_release" and up.kwargs["button"] == 2
    assert up.kwargs["modifiers"] == (keys.CONTROL, keys.ALT)
    assert translate(_pointer("double_click")).kind == "mouse_double_click"
    # the brush reads its combine mode from the modifiers exactly as on the desktop
    assert mode_from_modifiers(down.kwargs["modifiers"]) == "add"
    assert mode_from_modifiers(translate(_pointer("pointer_down", mods=("Control",))).kwargs["modifiers"]) \
        == "subtract"


def test_old_style_event_type_key_is_accepted():
    ev = _pointer("pointer_down")
    ev["event_type"] = ev.pop("type")
    assert translate(ev).kind == "mouse_press"


def test_wheel_notch_is_one_step_away_from_the_user():
    up = translate({"type": "wheel", "x": 5, "y": 6, "dx": 0, "dy": -100, "buttons": [], "modifiers": []})
    assert up.kind == "mouse_wheel" and up.kwargs["delta"] == (0.0, 1.0) and up.kwargs["pos"] == (5.0, 6.0)
    down = translate({"type": "wheel", "x": 5, "y": 6, "dx": 0, "dy": 250, "buttons": [], "modifiers": []})
    assert down.kwargs["delta"] == (0.0, -2.5)


def test_resize_close_and_unused_events():
    r = translate({"type": "resize", "width": 480.4, "height": 360, "pwidth": 960, "ratio": 2})
    assert r == CanvasEvent("resize", {"size": (480, 360), "ratio": 2.0})
    assert translate({"type": "close"}) == CanvasEvent("close")
    for kind in ("pointer_enter", "pointer_leave", "char", "show", "hide", "something_new"):
        assert translate({"type": kind, "x": 1, "y": 2}) is None


def test_malformed_events_are_named():
    with pytest.raises(ValueError, match="pointer_down.*x and y"):
        translate({"type": "pointer_down", "button": 1})
    with pytest.raises(ValueError, match="resize.*width and height"):
        translate({"type": "resize", "width": "wide"})


def test_modifier_names_are_case_insensitive_and_deduplicated():
    assert modifiers(["shift", "Shift", "Ctrl", "Hyper"]) == (keys.SHIFT, keys.CONTROL)
    assert modifiers(None) == ()


def test_emit_fires_vispys_own_event_objects():
    """``emit`` goes through a VisPy emitter group, so handlers receive real MouseEvent/KeyEvent
    objects (no GL needed for that)."""
    got = []
    events = EmitterGroup(source=None, mouse_press=MouseEvent, mouse_wheel=MouseEvent, key_press=KeyEvent)
    events.mouse_press.connect(got.append)
    events.mouse_wheel.connect(got.append)
    events.key_press.connect(got.append)
    target = SimpleNamespace(events=events)
    emit(target, translate(_pointer("pointer_down", mods=("Shift",))))
    emit(target, translate({"type": "wheel", "x": 1, "y": 2, "dx": 0, "dy": -100, "modifiers": []}))
    emit(target, translate({"type": "key_down", "key": "j", "modifiers": []}))
    press, wheel, key = got
    assert isinstance(press, MouseEvent) and tuple(press.pos) == (10.5, 20.0) and press.button == 1
    assert press.modifiers == (keys.SHIFT,)
    assert tuple(wheel.delta) == (0.0, 1.0)
    assert isinstance(key, KeyEvent) and key.key == keys.Key("J") and key.text == "j"
    with pytest.raises(ValueError, match="handled by the widget"):
        emit(target, CanvasEvent("resize", {"size": (1, 1)}))
