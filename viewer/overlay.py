"""Immediate-mode 2-D drawing over the points, in window pixels (origin top-left, logical pixels as
VisPy mouse events report them), plus the viewer's HUD widgets built on it.

:class:`Overlay` draws each call at once with the GL context current (inside the canvas's draw):
``circles``, ``lines``, ``rect``, ``text`` (PIL rasterises DejaVu/Pillow's default font into
cached textures) and ``image`` (an RGBA thumbnail). Controllers receive it in
``draw(canvas, overlay)``. Colours are RGBA tuples in [0, 1] (or 3-tuples, alpha 1).

HUD widgets (pure layout + drawing; hit tests are GL-free so tests can check them):
:class:`LayerStrip` (clickable layer names), :class:`Legend` (categorical swatches or a colour
bar; click filters, hover names and counts) and :func:`draw_help`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vispy import gloo

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


def _font(size: int):
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 "/usr/share/fonts/TTF/DejaVuSans.ttf"):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def rasterize_text(s: str, size: int) -> np.ndarray:
    """(h, w, 4) uint8: white glyphs with coverage in alpha (host)."""
    from PIL import Image, ImageDraw

    font = _font(int(size))
    x0, y0, x1, y1 = font.getbbox(s or " ")
    ascent, descent = font.getmetrics()
    w, h = max(1, x1 - min(x0, 0) + 2), ascent + descent + 2
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((1 - min(x0, 0), 1), s, font=font, fill=255)
    a = np.asarray(img, dtype=np.uint8)
    out = np.full((h, w, 4), 255, np.uint8)
    out[..., 3] = a
    return out


class Overlay:
    """Pixel-space drawing for the current frame (see module docstring)."""

    def __init__(self, canvas):
        self.canvas = canvas
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
        """(width, height) in pixels of ``s`` at font ``size``."""
        _, (h, w) = self._text_texture(s, size)
        return w, h

    def _text_texture(self, s: str, size: int):
        key = (s, int(size))
        hit = self._text_cache.get(key)
        if hit is None:
            img = rasterize_text(s, size)
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
        tex, (h, w) = self._text_texture(str(s), size)
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


# --- HUD widgets -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, x, y) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


def layer_strip_boxes(names, width: int, height: int, row: float = 17.0) -> list[Box]:
    """Hit boxes of the layer names, right-aligned down the window's right edge."""
    n = len(names)
    row = min(row, max(8.0, (height - 60) / max(n, 1)))
    top = max(40.0, (height - n * row) / 2)
    x1 = width - 10.0
    x0 = x1 - 190.0
    return [Box(x0, top + i * row, x1, top + (i + 1) * row) for i in range(n)]


def draw_layer_strip(ov: Overlay, names, current: int, hover: int | None, width, height,
                     target: int | None = None) -> None:
    boxes = layer_strip_boxes(names, width, height)
    size = 12 if boxes and boxes[0].y1 - boxes[0].y0 >= 14 else 10
    for i, (name, b) in enumerate(zip(names, boxes)):
        cy = (b.y0 + b.y1) / 2
        on = i == current
        color = ACCENT if on else (TEXT if i == hover else DIM)
        ov.text(_shorten(name, 26), (b.x1 - 14, cy), color, size, "right middle")
        r = 4.0 if on else 2.5
        ov.circles([[b.x1 - 5, cy]], r, color, fill=color if on or i == target else None, segments=12)


def _shorten(s: str, n: int) -> str:
    return s if len(s) <= n else "…" + s[-(n - 1):]


@dataclass(frozen=True)
class LegendLayout:
    """Swatch boxes of a categorical legend (bottom-left), one per class, and the title box."""

    boxes: tuple[Box, ...]
    title: Box
    labelled: bool


def legend_layout(k: int, height: int, labelled_max: int = 24) -> LegendLayout:
    x0, bottom = 12.0, height - 12.0
    if k <= labelled_max:
        row = 16.0
        top = bottom - k * row
        boxes = tuple(Box(x0, top + i * row, x0 + 170, top + (i + 1) * row) for i in range(k))
        return LegendLayout(boxes, Box(x0, top - 20, x0 + 170, top), True)
    cols = int(min(50, max(10, np.ceil(np.sqrt(k * 2)))))
    cell = 11.0 if k <= 200 else 7.0
    rows = int(np.ceil(k / cols))
    top = bottom - rows * cell
    boxes = tuple(Box(x0 + (i % cols) * cell, top + (i // cols) * cell, x0 + (i % cols + 1) * cell,
                      top + (i // cols + 1) * cell) for i in range(k))
    return LegendLayout(boxes, Box(x0, top - 20, x0 + cols * cell, top), False)


def draw_legend(ov: Overlay, coloring, enabled, hover: int | None, height: int) -> None:
    """Categorical: swatches (+ names and counts when few), filtered-out classes dimmed, hovered
    class named. Continuous: a colour bar with its extent. ``enabled``: (K,) bool or None."""
    if coloring.kind == "none":
        return
    if coloring.kind == "continuous":
        x0, y1 = 14.0, height - 14.0
        bar = np.asarray(coloring.palette)
        n = len(bar)
        w = 180.0
        j = np.arange(n)
        lo_x, hi_x = x0 + w * j / n, x0 + w * (j + 1) / n + 0.5
        ov.quads(np.stack([lo_x, np.full(n, y1 - 12), hi_x, np.full(n, y1)], 1), bar)
        ov.rect(x0, y1 - 12, x0 + w, y1, DIM)
        lo, hi = coloring.extent
        ov.text(f"{lo:.3g}", (x0, y1 - 16), DIM, 11, "left bottom")
        ov.text(f"{hi:.3g}", (x0 + w, y1 - 16), DIM, 11, "right bottom")
        ov.text(coloring.name, (x0 + w / 2, y1 - 16), TEXT, 12, "center bottom")
        return
    k = len(coloring.palette)
    lay = legend_layout(k, height)
    ov.rect(lay.title.x0 - 6, lay.title.y0 - 4, max(b.x1 for b in lay.boxes) + 6, lay.boxes[-1].y1 + 6,
            None, fill=PANEL)
    title = coloring.name + ("  (click: filter; click title: all)" if enabled is not None else "")
    ov.text(title, (lay.title.x0, (lay.title.y0 + lay.title.y1) / 2), TEXT, 12, "left middle")
    pal = np.asarray(coloring.palette, np.float32).copy()
    on = np.ones(k, bool) if enabled is None else np.asarray(enabled, bool)
    pal[~on, :3] *= 0.35
    if lay.labelled:
        for i, b in enumerate(lay.boxes):
            cy = (b.y0 + b.y1) / 2
            ov.circles([[b.x0 + 6, cy]], 4.5, tuple(pal[i]), fill=tuple(pal[i]), segments=14)
            label = f"{_shorten(coloring.categories[i], 18)}  {int(coloring.counts[i]):,}"
            ov.text(label, (b.x0 + 16, cy), TEXT if on[i] else DIM, 11, "left middle")
    else:
        ov.quads([(b.x0 + 1, b.y0 + 1, b.x1 - 1, b.y1 - 1) for b in lay.boxes], pal)
    if hover is not None and 0 <= hover < k:
        b = lay.boxes[hover]
        ov.rect(b.x0, b.y0, b.x1, b.y1, (1, 1, 1, 0.9))
        if not lay.labelled:
            msg = f"{coloring.categories[hover]}: {int(coloring.counts[hover]):,}"
            tw, th = ov.text_size(msg, 12)
            ov.rect(b.x1 + 4, b.y0 - th - 4, b.x1 + tw + 12, b.y0, None, fill=PANEL)
            ov.text(msg, (b.x1 + 8, b.y0 - 2), TEXT, 12, "left bottom")


def legend_hit(coloring, x, y, height) -> int | str | None:
    """Class index under (x, y), "title" on the legend title, or None."""
    if coloring is None or coloring.kind != "categorical":
        return None
    lay = legend_layout(len(coloring.palette), height)
    if lay.title.contains(x, y):
        return "title"
    for i, b in enumerate(lay.boxes):
        if b.contains(x, y):
            return i
    return None


def draw_help(ov: Overlay, entries, width, height) -> None:
    """Centered panel listing every (key, description) pair."""
    row = 17.0
    h = row * len(entries) + 46
    w = 460.0
    x0, y0 = (width - w) / 2, max(10.0, (height - h) / 2)
    ov.rect(x0, y0, x0 + w, y0 + h, DIM, fill=(0.02, 0.025, 0.035, 0.92))
    ov.text("keys and mouse", (x0 + 16, y0 + 20), ACCENT, 14, "left middle")
    for i, (key, desc) in enumerate(entries):
        y = y0 + 40 + i * row + row / 2
        ov.text(str(key), (x0 + 110, y), ACCENT, 12, "right middle")
        ov.text(str(desc), (x0 + 124, y), TEXT, 12, "left middle")
