"""Browser events of a remote frame buffer -> VisPy canvas events. GL-free (no context needed).

The notebook widget (:mod:`viewer.notebook`) receives the events of `jupyter_rfb
<https://github.com/vispy/jupyter_rfb>`_ as dicts (its "renderview" event spec):
``pointer_down`` / ``pointer_move`` / ``pointer_up`` and ``double_click`` (``x``, ``y`` in CSS
pixels of the image, origin top-left; ``button`` 1 left, 2 right, 3 middle, 0 none; ``buttons``;
``modifiers`` such as ``("Shift",)``), ``wheel`` (``dx``, ``dy`` in pixels, 100 per notch in
Chromium, positive = scroll down), ``key_down`` / ``key_up`` (``key`` = the DOM ``KeyboardEvent.key``:
``"j"``, ``"J"``, ``" "``, ``"ArrowLeft"``, ``"Enter"``...), ``resize`` (``width``, ``height``,
``ratio``) and ``close``.

:func:`translate` turns one into a :class:`CanvasEvent` whose ``kind`` names a VisPy canvas
emitter (``mouse_press``, ``mouse_move``, ``mouse_release``, ``mouse_double_click``,
``mouse_wheel``, ``key_press``, ``key_release``) or one of the widget's own kinds (``resize``,
``close``), with the keyword arguments that emitter takes. :func:`emit` calls
``canvas.events.<kind>(**kwargs)``: the same emitters a desktop back end (glfw) fires, with the
same conventions (keys as ``vispy.util.keys.Key`` objects named as glfw names them, an upper-case
letter with the typed character as ``text``; wheel ``delta`` of +1 per notch away from the user),
so the window's own handlers and interaction controllers run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vispy.util import keys

#: DOM ``KeyboardEvent.key`` names -> VisPy key names (the ones glfw's back end produces)
NAMED_KEYS = {
    "ArrowLeft": "Left", "ArrowRight": "Right", "ArrowUp": "Up", "ArrowDown": "Down",
    "Enter": "Enter", "Escape": "Escape", "Backspace": "Backspace", "Delete": "Delete",
    "Tab": "Tab", "Home": "Home", "End": "End", "PageUp": "PageUp", "PageDown": "PageDown",
    "Insert": "Insert", "Shift": "Shift", "Control": "Control", "Alt": "Alt", "Meta": "Meta",
    **{f"F{i}": f"F{i}" for i in range(1, 13)},
}
#: pixels of browser wheel travel per notch (Chromium, deltaMode pixel; jupyter_rfb scales line
#: and page modes to pixels)
WHEEL_NOTCH_PX = 100.0
MOUSE_KINDS = {"pointer_down": "mouse_press", "pointer_move": "mouse_move", "pointer_up": "mouse_release",
               "double_click": "mouse_double_click"}
_MODIFIERS = {"shift": keys.SHIFT, "control": keys.CONTROL, "ctrl": keys.CONTROL, "alt": keys.ALT,
              "meta": keys.META}


@dataclass(frozen=True)
class CanvasEvent:
    """One event for the window: ``kind`` (a VisPy canvas emitter name, or ``resize`` /
    ``close``) and the keyword arguments for it."""

    kind: str
    kwargs: dict = field(default_factory=dict)


def modifiers(names) -> tuple:
    """Browser modifier names ("Shift", "Control", "Alt", "Meta") -> tuple of VisPy ``Key``
    objects, unknown names dropped, in the order given."""
    out = []
    for n in names or ():
        k = _MODIFIERS.get(str(n).lower())
        if k is not None and k not in out:
            out.append(k)
    return tuple(out)


def key_of(dom_key: str) -> tuple[keys.Key | None, str]:
    """A DOM ``KeyboardEvent.key`` -> (VisPy ``Key`` or None when it has no meaning here, text).

    A printable character gives a key named as glfw names it (letters upper-case, space
    "Space") and the character itself as text; a named key ("ArrowLeft", "Enter") gives its VisPy
    name and no text; dead keys, "Unidentified", "Process", IME composition and the like give
    (None, "")."""
    dom_key = str(dom_key or "")
    if len(dom_key) == 1:
        if dom_key == " ":
            return keys.SPACE, " "
        if not dom_key.isprintable():
            return None, ""
        return keys.Key(dom_key.upper() if dom_key.isalpha() else dom_key), dom_key
    name = NAMED_KEYS.get(dom_key)
    if name is None:
        return None, ""
    return getattr(keys, name.upper(), None) or keys.Key(name), ""


def _xy(ev: dict) -> tuple[float, float]:
    try:
        return float(ev["x"]), float(ev["y"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"browser event {ev.get('type')!r} lacks numeric x and y: {ev!r}") from None


def translate(ev: dict) -> CanvasEvent | None:
    """One jupyter_rfb event dict -> :class:`CanvasEvent`, or None for events the viewer does not
    use (pointer enter/leave, ``char`` input, unknown keys). Raises ValueError for a pointer
    event without coordinates or a resize without a size."""
    kind = ev.get("type") or ev.get("event_type")
    if kind in MOUSE_KINDS:
        button = int(ev.get("button") or 0)
        return CanvasEvent(MOUSE_KINDS[kind], {
            "pos": _xy(ev), "button": button if button > 0 else None,
            "buttons": [int(b) for b in ev.get("buttons", ())],
            "modifiers": modifiers(ev.get("modifiers"))})
    if kind == "wheel":
        dx, dy = float(ev.get("dx", 0.0)), float(ev.get("dy", 0.0))
        return CanvasEvent("mouse_wheel", {
            "pos": _xy(ev), "delta": (dx / WHEEL_NOTCH_PX, -dy / WHEEL_NOTCH_PX),
            "buttons": [int(b) for b in ev.get("buttons", ())],
            "modifiers": modifiers(ev.get("modifiers"))})
    if kind in ("key_down", "key_up"):
        key, text = key_of(ev.get("key", ""))
        if key is None:
            return None
        return CanvasEvent("key_press" if kind == "key_down" else "key_release",
                           {"key": key, "text": text, "modifiers": modifiers(ev.get("modifiers"))})
    if kind == "resize":
        try:
            w, h = int(round(float(ev["width"]))), int(round(float(ev["height"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"browser resize event lacks width and height: {ev!r}") from None
        return CanvasEvent("resize", {"size": (w, h), "ratio": float(ev.get("ratio", 1.0) or 1.0)})
    if kind == "close":
        return CanvasEvent("close")
    return None


def emit(canvas, event: CanvasEvent) -> None:
    """Fire ``event`` on a VisPy canvas through its own emitter (``canvas.events.<kind>``).
    ``resize`` and ``close`` are the widget's to handle; passing them here is an error."""
    if event.kind in ("resize", "close"):
        raise ValueError(f"{event.kind!r} is handled by the widget, not emitted on the canvas")
    getattr(canvas.events, event.kind)(**event.kwargs)
