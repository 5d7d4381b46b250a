"""The training axis of a view, GL-free: where it stands between checkpoints, its play clock, and the
checkpoint slider's geometry and hit tests.

A training run of K checkpoints is scrubbed along a *position* in [0, K - 1]: an integer is a
checkpoint, a fraction f between checkpoints k and k + 1 shows ``(1 - f) A_k + f A_(k+1)`` of
their aligned embeddings, the same blend a layer transition uses (the view hands the render path
the two layers and f). :class:`CheckpointClock` moves the position: set at once (a drag), glided to
a neighbour (``[`` / ``]``, smoothstep over :data:`STEP_SECONDS`), or played through training at
:data:`PLAY_SPEED` checkpoints per second up to the last one. :class:`SliderGeometry` lays the
slider out in the rectangle the window's layout gives it (a play button, a track with one tick
per checkpoint, the accuracy of each checkpoint as a small curve above the track) and maps between
positions and pixels, so the window, the HUD and tests agree on where everything is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.tour import smoothstep
from viewer.layout import Rect

PLAY_SPEED = 0.8     # checkpoints per second while playing through training
STEP_SECONDS = 0.7   # glide of one [ / ] step (the layer transition's duration)
MAX_SPEED = 50.0


class CheckpointClock:
    """The position on a training axis of ``k`` checkpoints (see the module docstring).

    position : start (default the last checkpoint, the trained model); speed : checkpoints per
    second while playing.
    """

    def __init__(self, k: int, position: float | None = None, speed: float = PLAY_SPEED):
        if int(k) < 1:
            raise ValueError(f"a training axis needs at least one checkpoint, got {k}")
        self.k = int(k)
        self._pos = float(self.k - 1 if position is None else position)
        self._pos = self._clamp(self._pos)
        self.speed = float(speed)
        self.playing = False
        self._glide: tuple[float, float, float] | None = None  # from, to, elapsed seconds

    def _clamp(self, x: float) -> float:
        x = float(x)
        if not np.isfinite(x):
            raise ValueError(f"checkpoint position must be a finite number, got {x}")
        return float(min(max(x, 0.0), self.k - 1))

    @property
    def position(self) -> float:
        return self._pos

    @property
    def index(self) -> int:
        """The checkpoint nearest the position (what the HUD names and colourings use)."""
        return int(np.floor(self._pos + 0.5))

    @property
    def pair(self) -> tuple[int, int, float]:
        """(k, k + 1, f): the checkpoints the position lies between and the weight of k + 1
        (k + 1 = k and f = 0 on a checkpoint)."""
        lo = int(np.floor(self._pos + 1e-12))
        f = self._pos - lo
        if f <= 1e-9 or lo >= self.k - 1:
            lo = min(lo, self.k - 1)
            return lo, lo, 0.0
        return lo, lo + 1, float(f)

    @property
    def moving(self) -> bool:
        return self.playing or self._glide is not None

    def set(self, position: float) -> bool:
        """Jump to ``position`` (clamped to [0, K - 1]); stops a glide. True when it changed."""
        self._glide = None
        new = self._clamp(position)
        changed = new != self._pos
        self._pos = new
        return changed

    def snap(self) -> None:
        """Stop between checkpoints: settle on the nearest one at once (a layer change does this)."""
        self.set(self.index)

    def step(self, delta: int, animate: bool = True) -> bool:
        """Go ``delta`` checkpoints from the nearest one (gliding when ``animate``); stops playing.
        False when already at that end."""
        self.playing = False
        base = self.index if self._glide is None else int(round(self._glide[1]))
        target = int(min(max(base + int(delta), 0), self.k - 1))
        if target == base and self._glide is None and self._pos == target:
            return False
        if animate and target != self._pos:
            self._glide = (self._pos, float(target), 0.0)
        else:
            self.set(target)
        return True

    def play(self) -> None:
        """Play through training from here (from the first checkpoint when at the last)."""
        if self.k < 2:
            return
        self._glide = None
        if self._pos >= self.k - 1:
            self._pos = 0.0
        self.playing = True

    def pause(self) -> None:
        self.playing = False

    def toggle(self) -> None:
        self.pause() if self.playing else self.play()

    def advance(self, dt: float) -> bool:
        """Move on by ``dt`` seconds; True when the position changed."""
        dt = max(float(dt), 0.0)
        before = self._pos
        if self._glide is not None:
            a, b, t = self._glide
            t += dt
            if t >= STEP_SECONDS:
                self._pos, self._glide = b, None
            else:
                self._pos = a + (b - a) * smoothstep(t / STEP_SECONDS)
                self._glide = (a, b, t)
        elif self.playing:
            self._pos = min(self._pos + self.speed * dt, float(self.k - 1))
            if self._pos >= self.k - 1:
                self.playing = False
        return self._pos != before


def checkpoint_label(names, position: float) -> str:
    """"step-40" on a checkpoint, "step-20 → step-40 (35%)" between two (the blend shown)."""
    lo = int(np.floor(position + 1e-12))
    f = position - lo
    if f <= 1e-9 or lo >= len(names) - 1:
        return str(names[min(int(round(position)), len(names) - 1)])
    return f"{names[lo]} → {names[lo + 1]} ({100 * f:.0f}%)"


def accuracy_label(view) -> str:
    """"accuracy 85.5%" at a checkpoint of ``view`` (a :class:`viewer.view.ModelView`), "accuracy
    85.5% → 94.8%" between two (both ends: a blend has no accuracy of its own); "" without one."""
    lo, hi, f = view.clock.pair
    accs = [view.model_at(k).checkpoint_meta.get("accuracy") for k in ((lo, hi) if f > 0 else (lo,))]
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in accs):
        return ""
    return "accuracy " + " → ".join(f"{100 * a:.1f}%" for a in accs)


# ------------------------------------------------------------------------------ the slider

PLAY_BOX = 26.0  # the play button's side, logical px at scale 1


@dataclass(frozen=True)
class SliderGeometry:
    """Where the slider's parts are in its ``rect`` (logical window pixels) for ``k`` checkpoints."""

    rect: Rect
    k: int
    scale: float = 1.0

    @property
    def play(self) -> Rect:
        s = self.scale
        side = min(PLAY_BOX * s, self.rect.h)
        return Rect(self.rect.x + 4 * s, self.rect.y + (self.rect.h - side) / 2, side, side)

    @property
    def track(self) -> tuple[float, float, float]:
        """(x0, x1, y): the track's ends and its height in the rect."""
        s = self.scale
        x0 = self.play.x1 + 14 * s
        x1 = self.rect.x1 - 14 * s
        return x0, max(x1, x0 + 1.0), self.rect.y + 0.64 * self.rect.h

    def x_of(self, position: float) -> float:
        x0, x1, _ = self.track
        return x0 if self.k < 2 else x0 + (x1 - x0) * float(position) / (self.k - 1)

    def position_at(self, x: float) -> float:
        """The (fractional) position under x, clamped to the track."""
        x0, x1, _ = self.track
        if self.k < 2:
            return 0.0
        return float(np.clip((float(x) - x0) / (x1 - x0), 0.0, 1.0) * (self.k - 1))

    def ticks(self) -> np.ndarray:
        return np.array([self.x_of(i) for i in range(self.k)], dtype=np.float64)

    def curve(self, values) -> np.ndarray | None:
        """(k, 2) pixel points of per-checkpoint values in [0, 1] (accuracy) drawn above the track,
        or None when any is missing."""
        if values is None or len(values) != self.k or any(v is None for v in values):
            return None
        _, _, y = self.track
        top, bottom = self.rect.y + 6 * self.scale, y - 8 * self.scale
        v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        return np.stack([self.ticks(), bottom - v * (bottom - top)], axis=1)

    def hit(self, x: float, y: float):
        """("play", None) on the play button, ("track", position) on the rest of the slider, or None
        outside it."""
        if not self.rect.contains(x, y):
            return None
        if self.play.contains(x, y):
            return ("play", None)
        return ("track", self.position_at(x))

    def nearest_tick(self, x: float) -> int:
        return int(np.argmin(np.abs(self.ticks() - float(x))))
