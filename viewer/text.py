"""Text for the HUD, GL-free: making any string safe to draw, measuring it and rasterising it.

Everything the viewer draws as text (layer names, class names, handle labels, file paths in
status messages) goes through :func:`safe_text` first, so a name read from a bundle can never make
a draw raise: control characters (newlines, tabs, NUL, escape sequences) become visible symbols
or spaces, lone surrogates are replaced, and very long strings are cut with an ellipsis.
Rasterising is PIL's FreeType renderer with DejaVu Sans (Pillow's bundled font where DejaVu is
missing); :func:`text_width` measures with the same font, so layouts computed without GL match
what is drawn.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

import numpy as np

MAX_CHARS = 160
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf",
              "/usr/share/fonts/dejavu/DejaVuSans.ttf")
_VISIBLE = {"\n": "⏎", "\r": "⏎", "\t": " ", "\x00": "␀"}


def safe_text(s, max_chars: int = MAX_CHARS) -> str:
    """``s`` (any object) as a one-line, printable string of at most ``max_chars`` characters.

    Newlines and carriage returns show as "⏎", tabs as a space, other control and format
    characters (C0/C1, bidi overrides) as "�"; a string longer than ``max_chars`` keeps its start
    and ends in "…".
    """
    text = s if isinstance(s, str) else str(s)
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")  # lone surrogates -> "?"
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append("�")
        else:
            out.append(ch)
    text = "".join(out)
    if len(text) > max_chars:
        text = text[: max(1, max_chars - 1)] + "…"
    return text


@functools.lru_cache(maxsize=32)
def font(size: int):
    """PIL FreeType font of ``size`` pixels (DejaVu Sans, else Pillow's default)."""
    from PIL import ImageFont

    size = max(1, int(round(size)))
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def text_width(s: str, size: float) -> float:
    """Width in pixels of ``safe_text(s)`` at font ``size`` (as :func:`rasterize` draws it)."""
    f = font(int(round(size)))
    return float(f.getlength(safe_text(s))) + 2.0


def fit_text(s: str, size: float, width: float) -> str:
    """``safe_text(s)``, shortened in the middle with "…" until it is at most ``width`` px wide.

    Keeps the start (a layer's index, a class's first word) and the end (its kind), e.g.
    "12-inception4d.branch3" -> "12-incep…branch3".
    """
    t = safe_text(s)
    if text_width(t, size) <= width or len(t) <= 2:
        return t
    lo, hi = 0, len(t)
    best = t[:1] + "…"
    while lo < hi:  # the longest middle cut that fits
        keep = (lo + hi + 1) // 2
        head = (keep + 1) // 2
        cand = t[:head] + "…" + (t[len(t) - (keep - head):] if keep - head else "")
        if text_width(cand, size) <= width:
            best, lo = cand, keep
        else:
            hi = keep - 1
    return best


def rasterize(s: str, size: float) -> np.ndarray:
    """(h, w, 4) uint8 host image of ``safe_text(s)``: white glyphs, coverage in alpha."""
    from PIL import Image, ImageDraw

    t = safe_text(s) or " "
    f = font(int(round(size)))
    x0, _, x1, _ = f.getbbox(t)
    ascent, descent = f.getmetrics()
    w, h = max(1, int(np.ceil(max(x1, f.getlength(t)))) - min(x0, 0) + 2), ascent + descent + 2
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((1 - min(x0, 0), 1), t, font=f, fill=255)
    out = np.full((h, w, 4), 255, np.uint8)
    out[..., 3] = np.asarray(img, dtype=np.uint8)
    return out


def _unit(v) -> float | None:
    """``v`` as a float in [0, 1], or None (a value read from a bundle is never trusted)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if 0.0 <= f <= 1.0 else None


def _count(v) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def quality_text(meta) -> str:
    """How well a layer's embedding keeps its neighbourhoods, from its meta, for the HUD: the
    trustworthiness, and for a layer fitted on a sample the figures on the fitted and on the
    transformed rows, the sample size and the reduction (``""`` when the meta says nothing)::

        trust 0.981 · fitted 0.988 / transformed 0.980 (sample 20,000) · PCA 51,200→256
    """
    if not isinstance(meta, dict):
        return ""
    parts = []
    tw = _unit(meta.get("trustworthiness"))
    if tw is not None:
        parts.append(f"trust {tw:.3f}")
    fs = meta.get("fit_sample")
    if isinstance(fs, dict):
        fit = _unit(fs.get("trustworthiness_fit_rows"))
        held = _unit(fs.get("trustworthiness_transformed_rows"))
        n = _count(fs.get("n"))
        if fit is not None and held is not None:
            parts.append(f"fitted {fit:.3f} / transformed {held:.3f}" + (f" (sample {n:,})" if n else ""))
        elif n:
            parts.append(f"fit sample {n:,}")
    red = meta.get("reduction")
    if isinstance(red, dict):
        k, d = _count(red.get("dims")), _count(red.get("from_dim"))
        if k and d:
            parts.append(f"PCA {d:,}→{k:,}")
    return "  ·  ".join(parts)


def tour_state_text(tour) -> str:
    """What the title bar says the tour does: ``tour playing 0.25 rad/s`` / ``tour paused ...``, or
    for a guided tour (:class:`engine.tour.GuidedTour`) ``guided tour (lda) climbing 0.25 rad/s``."""
    playing = bool(getattr(tour, "playing", False))
    speed = f"{float(getattr(tour, 'speed', 0.0)):.2g} rad/s"
    objective = getattr(tour, "objective", None)
    if objective is not None:
        return f"guided tour ({safe_text(objective.name, 24)}) {'climbing' if playing else 'paused'} {speed}"
    return f"tour {'playing' if playing else 'paused'} {speed}"
