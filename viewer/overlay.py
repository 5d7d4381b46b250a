"""Immediate-mode 2-D drawing over the points, in logical window pixels (origin top-left, as VisPy
mouse events report them).

:class:`Overlay` draws each call at once with the GL context current (inside the window's draw):
``circles``, ``lines``, ``rect``, ``quads``, ``text`` (:mod:`viewer.text` rasterises the string,
made safe first, into a cached texture) and ``image`` (an RGBA thumbnail). ``origin`` shifts
everything (controllers draw in their plot area's own pixels), and every string drawn is recorded
in ``drawn`` for the current frame (what tests check). Colours are RGBA tuples in [0, 1] (or
3-tuples, alpha 1). The HUD panels built on it are :mod:`viewer.hud`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
from vispy import gloo

from viewer.text import rasterize, safe_text

SHADER_DIR = Path(__file__).resolve().parent / "shaders"
TEXT = (0.86, 0.88, 0.92, 1.0)
DIM = (0.55, 0.58, 0.64, 1.0)
ACCENT = (1.0, 0.78, 0.35, 1.0)
PANEL = (0.03, 0.035, 0.045, 0.78)
TEXT_CACHE = 256  # rasterised strings kept as textures (least recently used are deleted)


def _rgba(color) -> tuple[float, float, float, float]:
    c = tuple(float(x) for x in color)
    if len(c) == 3:
        return (*c, 1.0)
    if len(c) != 4:
        raise ValueError(f"colour must have 3 or 4 components, got {color!r}")
    return c


class Overlay:
    """Pixel-space drawing for the current frame (see module docstring)."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.origin = (0.0, 0.0)
        self.drawn: list[tuple[str, tuple[float, float, float, float]]] = []  # (text, box) this frame
        vert = (SHADER_DIR / "overlay.vert.glsl").read_text()
        frag = (SHADER_DIR / "overlay.frag.glsl").read_text()
        self._prog = gloo.Program(vert, frag)
        self._vbo = gloo.VertexBuffer(np.zeros(4, [("a_pos", np.float32, 2), ("a_color", np.float32, 4),
                                                   ("a_uv", np.float32, 2)]))
        self._prog.bind(self._vbo)
        self._prog["u_tex"] = gloo.Texture2D(np.zeros((1, 1, 4), np.uint8))
        self._text_cache: OrderedDict = OrderedDict()
        self._image_tex = None

    # -- internals --
    def _draw(self, mode: str, px, colors, uv=None, texture=None) -> None:
        px = np.asarray(px, np.float32).reshape(-1, 2)
        if len(px) == 0:
            return
        px = px + np.asarray(self.origin, np.float32)
        v = np.zeros(len(px), self._vbo.dtype)
        v["a_pos"] = px
        v["a_color"] = colors
        if uv is not None:
            v["a_uv"] = uv
        self._vbo.set_data(v)
        self._prog.bind(self._vbo)  # re-bind: the attribute views must see the new vertex count
        w, h = self.canvas.size
        self._prog["u_size"] = (float(w), float(h))
        self._prog["u_textured"] = 0 if texture is None else 1
        if texture is not None:
            self._prog["u_tex"] = texture
        self._prog.draw(mode)

    def _quad(self, x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y0], [x0, y1], [x0, y1], [x1, y0], [x1, y1]], np.float32)

    # -- public primitives --
    def circles(self, px, radius, color, fill=None, segments: int = 28) -> None:
        """Outlined circles of ``radius`` px at centres px (k, 2); ``fill`` colour optional."""
        px = np.asarray(px, np.float32).reshape(-1, 2)
        t = np.linspace(0, 2 * np.pi, segments + 1)
        ring = np.stack([np.cos(t), np.sin(t)], 1) * float(radius)
        for c in px:
            pts = c + ring
            if fill is not None:
                hub = np.repeat(c[None], segments, 0)[:, None]
                tri = np.concatenate([hub, pts[:-1, None], pts[1:, None]], axis=1).reshape(-1, 2)
                self._draw("triangles", tri, _rgba(fill))
            self._draw("line_strip", pts, _rgba(color))

    def lines(self, px, color, closed: bool = False) -> None:
        """A polyline through px (k, 2); ``closed`` joins the last point to the first."""
        px = np.asarray(px, np.float32).reshape(-1, 2)
        if len(px) >= 2:
            self._draw("line_loop" if closed else "line_strip", px, _rgba(color))

    def rect(self, x0, y0, x1, y1, color, fill=None) -> None:
        """Axis-aligned rectangle outline (and optional fill) between two corners."""
        if fill is not None:
            self._draw("triangles", self._quad(x0, y0, x1, y1), _rgba(fill))
        if color is not None:
            self._draw("line_loop", [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], _rgba(color))

    def quads(self, boxes, colors) -> None:
        """Many filled rectangles in one draw: boxes (k, 4) as x0, y0, x1, y1; colors (k, 4) RGBA."""
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(b) == 0:
            return
        x0, y0, x1, y1 = b.T
        order = ((x0, y0), (x1, y0), (x0, y1), (x0, y1), (x1, y0), (x1, y1))
        corners = np.stack([np.stack(c, 1) for c in order], axis=1)
        cols = np.repeat(np.asarray(colors, np.float32).reshape(-1, 4), 6, axis=0)
        self._draw("triangles", corners.reshape(-1, 2), cols)

    def text_size(self, s: str, size: int = 13) -> tuple[int, int]:
        """(width, height) in pixels of ``s`` (made safe) at font ``size``."""
        _, (h, w) = self._text_texture(safe_text(s), size)
        return w, h

    def _text_texture(self, s: str, size: int):
        key = (s, int(round(size)))
        hit = self._text_cache.get(key)
        if hit is None:
            img = rasterize(s, size)
            hit = (gloo.Texture2D(img, interpolation="nearest"), img.shape[:2])
            self._text_cache[key] = hit
            while len(self._text_cache) > TEXT_CACHE:
                _, (tex, _) = self._text_cache.popitem(last=False)
                tex.delete()
        else:
            self._text_cache.move_to_end(key)
        return hit

    def text(self, s: str, px, color=TEXT, size: int = 13, anchor: str = "left") -> tuple[float, float]:
        """Draw ``s`` with its anchor at px = (x, y); anchor is one or two of left/center/right and
        top/middle/bottom (vertical default: middle; e.g. "left", "center", "right top").
        Returns (width, height)."""
        s = safe_text(s)
        tex, (h, w) = self._text_texture(s, size)
        x, y = float(px[0]), float(px[1])
        words = anchor.split()
        if "center" in words:
            x -= w / 2
        elif "right" in words:
            x -= w
        if "bottom" in words:
            y -= h
        elif "top" not in words:
            y -= h / 2
        x, y = round(x), round(y)
        uv = np.array([[0, 0], [1, 0], [0, 1], [0, 1], [1, 0], [1, 1]], np.float32)
        self._draw("triangles", self._quad(x, y, x + w, y + h), _rgba(color), uv, tex)
        ox, oy = self.origin
        self.drawn.append((s, (x + ox, y + oy, x + ox + w, y + oy + h)))
        return w, h

    def image(self, rgba, px, scale: float = 1.0) -> None:
        """Draw an (h, w, 3|4) uint8 image with its top-left corner at px, scaled by ``scale``."""
        img = np.ascontiguousarray(rgba, dtype=np.uint8)
        if img.ndim != 3 or img.shape[2] not in (3, 4):
            raise ValueError(f"overlay.image: expected (h, w, 3|4) uint8, got shape {img.shape}")
        if self._image_tex is None:
            self._image_tex = gloo.Texture2D(img, interpolation="nearest")
        else:
            self._image_tex.set_data(img)
        h, w = img.shape[:2]
        x, y = float(px[0]), float(px[1])
        uv = np.array([[0, 0], [1, 0], [0, 1], [0, 1], [1, 0], [1, 1]], np.float32)
        self._draw("triangles", self._quad(x, y, x + w * scale, y + h * scale), (1, 1, 1, 1), uv,
                   self._image_tex)
