"""The Grand Tour as math on small matrices: frames, geodesics, the tour itself, handles, saved views.

Everything here is float64 NumPy on the host; matrices are p x d with p <= 64 or so, d = 2 or 3.
A *frame* F is a (p, d) matrix with orthonormal columns; the picture of data X (N, p) is X @ F.
Only the frame (or one geodesic segment's parameters) crosses to the device, in ``kernels``.

- ``orthonormalize``, ``random_frame``, ``is_orthonormal``: frame basics (from :mod:`engine.frames`).
- ``geodesic(Fa, Fz) -> Geodesic``: Buja et al.'s geodesic interpolation between two planes (as
  the R package tourr does it), with principal angles from atan2 instead of acos.
- ``GrandTour``: the running tour (geodesic or torus method), pausable, scrubbable, serialisable.
- ``GuidedTour``: the same protocol, its targets found by projection pursuit (``engine.pursuit``).
- ``drag_handle``, ``drag_axis`` (from :mod:`engine.frames`): direct manipulation.
- ``view_path(Fa, Fz)``, ``smoothstep``: animated "go to saved view" that ends exactly on Fz.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.frames import (  # frame basics live there so that module stands alone
    check_dims,
    check_frame,
    complete_basis,
    drag_axis,
    drag_handle,
    is_orthonormal,
    orthonormal_columns,
    orthonormalize,
    principal_frame,
    random_frame,
)
from engine.pursuit import Objective
from engine.pursuit import objective as _objective

__all__ = [
    "ANGLE_EPS", "HISTORY_LIMIT", "MAX_SPEED", "Geodesic", "GrandTour", "GuidedTour", "Segment", "drag_axis",
    "drag_handle", "geodesic", "is_orthonormal", "orthonormalize", "principal_frame", "random_frame",
    "smoothstep", "view_path",
]

ANGLE_EPS = 1e-6        # principal angles below this are treated as 0 (tourr's epsilon)
_VIEW_EPS = 1e-13       # view_path keeps every resolvable angle so that it ends exactly on Fz
MIN_SEGMENT = 1e-3      # a random target closer than this (radians) is redrawn, up to 10 times
HISTORY_LIMIT = 128     # finished path pieces kept for rewind()
MAX_SPEED = 100.0       # radians per second: far beyond watchable; bounds the work of one step()
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


@dataclass(frozen=True, eq=False)
class Geodesic:
    """One path segment between two frames, evaluated in closed form (arrays read-only, host).

    Ga : (p, d) float64, orthonormal; the start frame's principal directions (Ga = Fa @ Va).
    H : (p, d) float64; column j is the unit direction, orthogonal to every Ga column and to the
        other H columns, towards which Ga[:, j] turns; zero where tau[j] == 0.
    Va : (d, d) float64 orthogonal, so that Fa = Ga @ Va.T.
    tau : (d,) float64 principal angles in radians, largest first (in [0, pi/2] for ``geodesic``).
    dist : ||Fa Fa^T - Fz Fz^T||_F, the projection (chordal) distance between the two planes.
    spin : (d, d) skew-symmetric, or None. None for ``geodesic``; ``view_path`` uses it to turn the
        picture in its own plane so the path ends exactly on the target frame.

    frame(f) = (Ga diag(cos(f tau)) + H diag(sin(f tau))) @ Va.T   [@ expm(f spin) if spin is set]
    Column j of G(f) turns at constant rate tau[j] in the plane (Ga_j, H_j), so the path moves on
    the Grassmannian at the constant speed ``length`` = ||tau||_2 radians per unit fraction.
    """

    Ga: np.ndarray
    H: np.ndarray
    Va: np.ndarray
    tau: np.ndarray
    dist: float
    length: float
    spin: np.ndarray | None = None

    def frame(self, fraction: float) -> np.ndarray:
        """(p, d) float64 frame at ``fraction`` (0 = start, 1 = end; values outside extrapolate)."""
        f = float(fraction)
        F = (self.Ga * np.cos(f * self.tau) + self.H * np.sin(f * self.tau)) @ self.Va.T
        if self.spin is not None:
            F = F @ _expm_skew(f * self.spin)
        return F


def _expm_skew(K: np.ndarray) -> np.ndarray:
    """expm of a skew-symmetric (d, d) K: closed forms for d <= 3 (Rodrigues), scipy beyond."""
    d = K.shape[0]
    if d == 1:
        return np.ones((1, 1))
    if d == 2:
        c, s = np.cos(K[1, 0]), np.sin(K[1, 0])
        return np.array([[c, -s], [s, c]])
    if d == 3:
        theta = np.sqrt(K[2, 1] ** 2 + K[0, 2] ** 2 + K[1, 0] ** 2)
        K2 = K @ K
        if theta < 1e-8:
            return np.eye(3) + K + 0.5 * K2
        return np.eye(3) + (np.sin(theta) / theta) * K + ((1.0 - np.cos(theta)) / theta**2) * K2
    from scipy.linalg import expm

    return expm(K)


@dataclass(frozen=True)
class Segment:
    """The tour's current geodesic and how far along it the tour is (fraction in [0, 1])."""

    geodesic: Geodesic
    fraction: float


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)


def _principal(Fa: np.ndarray, Fz: np.ndarray, eps: float):
    """Ga, H, Va, tau (largest first, zeroed below eps) and sin(tau) before zeroing, for Fa -> Fz."""
    d = Fa.shape[1]
    U, lam, Wt = np.linalg.svd(Fa.T @ Fz)
    W = Wt.T
    small = lam * lam > 0.5
    if small.any():
        # Angles below 45 degrees: cosines near 1 barely separate the directions, so pair them again
        # from the SVD of the part of Fz outside span(Fa), whose singular values are the sines
        # (Knyazev & Argentati's split). Without it a tiny angle next to a zero one leaks ~1e-10.
        Rs = Fz @ W[:, small]
        Rs -= Fa @ (Fa.T @ Rs)
        W[:, small] = W[:, small] @ np.linalg.svd(Rs, full_matrices=False)[2].T
        C = Fa.T @ (Fz @ W[:, small])  # start directions: the projections, cos >= 0.7 each
        U[:, small] = C / np.linalg.norm(C, axis=0)
        U = _polar(U)
    Ga = Fa @ U
    Gz = Fz @ W
    # Part of each Gz column outside span(Fa); twice, so rounding leaves no component along Ga.
    R = Gz - Ga @ (Ga.T @ Gz)
    R -= Ga @ (Ga.T @ R)
    s = np.linalg.norm(R, axis=0)
    c = np.einsum("ij,ij->j", Ga, Gz)
    tau = np.arctan2(s, c)
    order = np.argsort(-tau, kind="stable")
    U, Ga, R, s, tau = U[:, order], Ga[:, order], R[:, order], s[order], tau[order]
    H = np.zeros_like(Ga)
    for j in range(d):
        if tau[j] < eps:
            tau[j] = 0.0
            continue
        h = R[:, j] / s[j]
        for _ in range(2):  # Gram-Schmidt against Ga and the earlier H columns, twice
            h -= Ga @ (Ga.T @ h)
            h -= H[:, :j] @ (H[:, :j].T @ h)
        n = np.linalg.norm(h)
        if n < 0.5:  # the direction was rounding noise
            tau[j] = 0.0
            continue
        H[:, j] = h / n
    return Ga, H, U, tau, s


def _make(Ga, H, Va, tau, s, spin=None) -> Geodesic:
    Va = np.ascontiguousarray(Va)
    dist = float(np.sqrt(2.0) * np.linalg.norm(s))
    arrays = (Ga, H, Va, tau) if spin is None else (Ga, H, Va, tau, spin)
    _readonly(*arrays)
    return Geodesic(Ga, H, Va, tau, dist, float(np.linalg.norm(tau)), spin)


def geodesic(Fa, Fz) -> Geodesic:
    """The geodesic from frame Fa to the plane of frame Fz (both (p, d), host arrays).

    Both are orthonormalised first (a no-op to rounding for orthonormal input). The SVD of the small
    d x d matrix Fa^T Fz = Va diag(cos tau) Vz^T pairs principal directions Ga = Fa Va and
    Gz = Fz Vz; each angle is atan2(|part of Gz_j outside span(Fa)|, Ga_j . Gz_j), which stays
    accurate for tiny angles where acos loses half the digits. Angles below ANGLE_EPS count as 0
    (that direction is shared and does not move). frame(0) == Fa to rounding; frame(1) spans Fz's
    plane but keeps Fa's in-plane orientation (it is generally not Fz itself: see ``view_path``).
    """
    A = orthonormal_columns(check_frame(Fa, "Fa", "geodesic"), "Fa", "geodesic")
    Z = orthonormal_columns(check_frame(Fz, "Fz", "geodesic", shape=A.shape), "Fz", "geodesic")
    return _make(*_principal(A, Z, ANGLE_EPS))


def _log_rotation(Q: np.ndarray) -> np.ndarray:
    """Skew K (d, d) with expm(K) == Q for a rotation Q (det +1); every angle in [0, pi]."""
    d = Q.shape[0]
    if d == 1:
        return np.zeros((1, 1))
    from scipy.linalg import schur

    T, Z = schur(Q, output="real")
    L = np.zeros((d, d))
    flips = []
    k = 0
    while k < d:
        if k + 1 < d and abs(T[k + 1, k]) > 1e-12:
            phi = np.arctan2(0.5 * (T[k + 1, k] - T[k, k + 1]), 0.5 * (T[k, k] + T[k + 1, k + 1]))
            L[k + 1, k], L[k, k + 1] = phi, -phi
            k += 2
        else:
            if T[k, k] < 0:
                flips.append(k)
            k += 1
    for a, b in zip(flips[0::2], flips[1::2]):  # eigenvalue -1 pairs: half turns
        L[b, a], L[a, b] = np.pi, -np.pi
    K = Z @ L @ Z.T
    return 0.5 * (K - K.T)


def _polar(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    return U @ Vt


def view_path(Fa, Fz) -> Geodesic:
    """A smooth path from frame Fa to exactly frame Fz (both (p, d) host arrays), for saved views.

    The plane follows the geodesic from span(Fa) to span(Fz) while the picture turns in its own
    plane at a constant rate (``spin``), so frame(0) == Fa and frame(1) == Fz to rounding. Drive it
    with ``path.frame(smoothstep(t))``.

    Reflections: if Fz's in-plane orientation is a mirror image of the one the geodesic arrives with
    (no in-plane rotation can fix that), the principal pair with the largest angle turns the long
    way, by pi - tau instead of tau (its H column negated): the picture flips over smoothly through
    a neighbouring dimension rather than jumping to its mirror image. When the planes coincide
    (all tau = 0) the flip turns through the first direction orthogonal to the plane. This needs
    p > d: with p == d a reflected Fz is unreachable and ValueError is raised.
    """
    A = orthonormal_columns(check_frame(Fa, "Fa", "view_path"), "Fa", "view_path")
    Z = orthonormal_columns(check_frame(Fz, "Fz", "view_path", shape=A.shape), "Fz", "view_path")
    p, d = A.shape
    Ga, H, Va, tau, s = _principal(A, Z, _VIEW_EPS)

    def end(H, tau):
        return (Ga * np.cos(tau) + H * np.sin(tau)) @ Va.T

    Q = _polar(end(H, tau).T @ Z)
    if np.linalg.det(Q) < 0:
        if p == d:
            raise ValueError("view_path: Fz is a mirror image of Fa and p == d leaves no room to turn")
        if tau[0] == 0.0:
            H[:, 0] = np.linalg.qr(A, mode="complete")[0][:, d]
        else:
            H[:, 0] = -H[:, 0]
        tau[0] = np.pi - tau[0]
        Q = _polar(end(H, tau).T @ Z)
    return _make(Ga, H, Va, tau, s, spin=_log_rotation(Q))


def smoothstep(t):
    """3t^2 - 2t^3 on t clipped to [0, 1]: eases a saved-view animation in and out (float or array)."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    out = t * t * (3.0 - 2.0 * t)
    return float(out) if out.ndim == 0 else out



class _GeoPath:
    """A geodesic piece of the tour from frame ``start`` to the plane of ``target``; pos in radians."""

    def __init__(self, start: np.ndarray, target: np.ndarray):
        self.start, self.target = start, target
        self.seg = _make(*_principal(start, target, ANGLE_EPS))
        self.length = self.seg.length
        self._VaT = np.ascontiguousarray(self.seg.Va.T)

    def frame_at(self, pos: float) -> np.ndarray:
        if self.length == 0.0 or pos == 0.0:
            return self.start.copy()
        ft = (pos / self.length) * self.seg.tau
        return (self.seg.Ga * np.cos(ft) + self.seg.H * np.sin(ft)) @ self._VaT

    def to_json(self) -> dict:
        return {"start": self.start.tolist(), "target": self.target.tolist()}


class _Torus:
    """The torus method's rotation T(clock), a fixed ordered product of all p(p-1)/2 Givens rotations.

    The pairs are scheduled in rounds of disjoint pairs (round-robin), so each round is one sparse
    p x p matrix built in a single vectorised write; then the rounds are multiplied. T is rebuilt
    from the identity at every call, so nothing accumulates over time.
    """

    def __init__(self, p: int, rates: np.ndarray):
        n = p + (p % 2)
        ring = list(range(n))
        rounds = []
        for _ in range(n - 1):
            pairs = [(ring[k], ring[n - 1 - k]) for k in range(n // 2)]
            rounds.append([pr for pr in pairs if max(pr) < p])
            ring = [ring[0], ring[-1], *ring[1:-1]]
        pair_id = {pr: k for k, pr in enumerate((i, j) for i in range(p) for j in range(i + 1, p))}
        ab = np.array([[sorted(pr) for pr in rd] for rd in rounds])  # (R, m, 2)
        r = np.broadcast_to(np.arange(len(rounds))[:, None], ab.shape[:2])
        a, b = ab[..., 0], ab[..., 1]
        w = rates[np.vectorize(lambda i, j: pair_id[(i, j)])(a, b)].ravel()
        # exp(i w t) for +w gives (cos, sin) for entries (a, a), (b, a); for -w, (cos, -sin) for
        # (b, b), (a, b). cos and sin come from one angle, so each block is orthogonal to rounding.
        self.iw = 1j * np.concatenate([w, -w])
        flat = lambda i, j: ((r * p + i) * p + j).ravel()  # noqa: E731
        self.idx = np.stack([np.r_[flat(a, a), flat(b, b)], np.r_[flat(b, a), flat(a, b)]], 1).ravel()
        self.rounds = len(rounds)
        size = 1 << max(len(rounds) - 1, 0).bit_length()  # padded with identities to a power of 2
        self.M = np.broadcast_to(np.eye(p), (size, p, p)).copy()  # entries off the pairs stay I

    def columns(self, clock: float, d: int) -> np.ndarray:
        """(p, d) float64: the first d columns of T(clock).

        Up to p = 16 the rounds are multiplied as a balanced tree of batched p x p products (few
        NumPy calls, O(p^4) flops); beyond, right to left onto the d columns (one call per round,
        O(p^3 d) flops), which is cheaper there (bench_tour_math.py measures both regimes)."""
        M = self.M
        np.put(M, self.idx, np.exp(self.iw * clock).view(np.float64))
        if self.rounds > 16:
            X = M[self.rounds - 1][:, :d]
            for r in range(self.rounds - 2, -1, -1):
                X = M[r] @ X
            return X
        while len(M) > 1:  # order kept: (M0 M1)(M2 M3)...
            M = M[0::2] @ M[1::2]
        return M[0][:, :d]


class _TorusPath:
    """A torus piece: frame(clock) = base @ T(clock)[:, :d]; ``base`` (p, p) orthogonal, fixed."""

    length = np.inf

    def __init__(self, base: np.ndarray, torus: _Torus, d: int):
        self.base, self.torus, self.d = base, torus, d

    def frame_at(self, clock: float) -> np.ndarray:
        return self.base @ self.torus.columns(clock, self.d)

    def to_json(self) -> dict:
        return {"base": self.base.tolist()}


class GrandTour:
    """The running Grand Tour: an endless smooth path of (p, d) frames (float64, host).

    p, d : data dimension and view dimension, p > d >= 1 (d = 2 or 3 in the viewer).
    seed : int, None (fresh entropy) or a numpy Generator; the whole path follows from it.
    speed : radians per second. Geodesic method: arc length on the Grassmannian (||tau|| per
        segment), so the view moves at exactly this angular speed. Torus method: the rate of the
        torus clock; the p(p-1)/2 plane rates w are drawn in +-[0.5, 1.5] and scaled so that the
        one-parameter rotation exp(t A), A the skew matrix of the rates, moves a uniformly random
        d-plane at an RMS Grassmann speed of ``speed`` (E|v|^2 = 2 d (p-d) / (p (p-1)) sum w^2).
        The torus has no exact speed control; its long-run mean speed is close to ``speed``
        (tests/test_tour.py checks it lies within a factor 1.5).
    method : "geodesic" (tourr's: geodesics between random targets, each new segment starting from
        the frame actually reached) or "torus" (Asimov's: product of Givens rotations, rebuilt from
        the identity every step).

    The tour starts on the first d coordinate axes, playing. ``set_frame(F)`` (after a handle drag)
    starts a new piece at F. The last HISTORY_LIMIT (128) finished pieces are kept for
    ``rewind``: with the default speed a geodesic piece lasts several seconds, so that is
    several minutes of path; for the torus a piece ends only at ``set_frame``.
    """

    def __init__(self, p: int, d: int = 2, seed=None, speed: float = 0.25, method: str = "geodesic",
                 start=None):
        self.p, self.d = check_dims(p, d, "GrandTour", strict=True)
        if method not in ("geodesic", "torus"):
            raise ValueError(f"GrandTour: method must be 'geodesic' or 'torus', got {method!r}")
        self.method = method
        self.speed = speed
        self._playing = True
        self._rng = np.random.default_rng(seed)
        self._history: deque = deque(maxlen=HISTORY_LIMIT)
        self._torus = None
        if method == "torus":
            k = self.p * (self.p - 1) // 2
            u = self._rng.uniform(0.5, 1.5, k) * self._rng.choice([-1.0, 1.0], k)
            self._set_rates(u / np.sqrt(2.0 * self.d * (self.p - self.d) / (self.p * (self.p - 1)) * (u @ u)))
        if start is None:
            self._start_piece(np.eye(self.p, self.d))
        else:  # e.g. the frame another tour was showing: switching tours keeps the picture
            F = check_frame(start, "start", type(self).__name__, shape=(self.p, self.d))
            self._start_piece(orthonormal_columns(F, "start", type(self).__name__))

    def _set_rates(self, rates: np.ndarray) -> None:
        self._rates = rates
        self._torus = _Torus(self.p, rates)

    def _start_piece(self, F: np.ndarray) -> None:
        """New piece from orthonormal F: a geodesic to a fresh random target, or a torus at base F."""
        if self._torus is not None:
            self._path = _TorusPath(complete_basis(F), self._torus, self.d)
        else:
            self._path = self._geodesic_piece(F)
        self._begin = self._pos = 0.0
        self._update()

    def _geodesic_piece(self, F: np.ndarray) -> _GeoPath:
        """The next geodesic piece from F: to a random target (GuidedTour overrides this; a
        zero-length piece there means "rest at F")."""
        for _ in range(10):
            path = _GeoPath(F, random_frame(self.p, self.d, self._rng))
            if path.length >= MIN_SEGMENT:
                break
        return path

    def _update(self) -> np.ndarray:
        F = self._path.frame_at(self._pos)
        F.setflags(write=False)
        self._frame = F
        return F

    @property
    def frame(self) -> np.ndarray:
        """The current (p, d) float64 frame (read-only host array)."""
        return self._frame

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        v = float(value)
        if not np.isfinite(v) or not 0 <= v <= MAX_SPEED:
            raise ValueError(f"GrandTour: speed must be a number in [0, {MAX_SPEED:g}] (radians/s), "
                             f"got {value!r}")
        self._speed = v

    @property
    def playing(self) -> bool:
        return self._playing

    def play(self) -> None:
        self._playing = True

    def pause(self) -> None:
        self._playing = False

    @property
    def segment(self) -> Segment | None:
        """Current geodesic and fraction (geodesic method; the kernel builds frames from its
        Ga, H, Va, tau). None for the torus method, which has no segments."""
        if self._torus is not None:
            return None
        L = self._path.length
        return Segment(self._path.seg, self._pos / L if L > 0 else 0.0)

    def step(self, dt: float) -> np.ndarray:
        """Advance by ``dt`` seconds (only while playing) and return the frame (read-only)."""
        dt = float(dt)
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f"GrandTour.step: dt must be a finite number of seconds >= 0, got {dt!r}")
        if not self._playing or dt == 0.0 or self._speed == 0.0:
            return self._frame
        adv = self._speed * dt
        path = self._path
        while self._pos + adv >= path.length:
            adv -= path.length - self._pos
            if path.length > 0.0:
                self._history.append((path, self._begin, path.length))
            self._start_piece(orthonormal_columns(path.frame_at(path.length), "frame", "GrandTour.step"))
            path = self._path
            if path.length == 0.0:  # resting (guided tour): stay at the frame until the next step
                adv = 0.0
                break
        self._pos += adv
        return self._update()

    def set_frame(self, F) -> None:
        """Jump to frame F ((p, d), orthonormalised); the tour continues from there."""
        F = check_frame(F, "F", "GrandTour.set_frame", shape=(self.p, self.d))
        F = orthonormal_columns(F, "F", "GrandTour.set_frame")
        if self._pos > self._begin:
            self._history.append((self._path, self._begin, self._pos))
        self._start_piece(F)

    def rewind(self, seconds: float) -> np.ndarray:
        """Go back along the travelled path by the distance covered in ``seconds`` at the current
        speed, across at most HISTORY_LIMIT finished pieces (stopping at the oldest kept point).
        Playing on from there continues along that piece, then draws new targets: the path that
        had followed it is dropped. Returns the frame."""
        seconds = float(seconds)
        if not np.isfinite(seconds) or seconds < 0:
            raise ValueError(f"GrandTour.rewind: seconds must be a finite number >= 0, got {seconds!r}")
        back = self._speed * seconds
        while back > 0.0:
            room = self._pos - self._begin
            if back <= room:
                self._pos -= back
                break
            back -= room
            self._pos = self._begin
            if not self._history:
                break
            self._path, self._begin, self._pos = self._history.pop()
        return self._update()

    def state(self) -> dict:
        """JSON-able dict of everything needed to resume the identical path (RNG state included)."""
        piece = lambda path, b, e: {**path.to_json(), "begin": b, "end": e}  # noqa: E731
        return {
            "format": "layertour-tour", "version": 1, "p": self.p, "d": self.d, "method": self.method,
            "speed": self._speed, "playing": self._playing, "rng": self._rng.bit_generator.state,
            "rates": None if self._torus is None else self._rates.tolist(),
            "current": piece(self._path, self._begin, self._pos),
            "history": [piece(*h) for h in self._history],
        }

    @classmethod
    def from_state(cls, state: dict) -> GrandTour:
        """Rebuild a tour from ``state()`` output; stepping it gives the same frames bit for bit.

        The state is data from a file: every number must be finite and in range (speed in
        [0, MAX_SPEED], 0 <= begin <= end <= the piece's length, finite rates, at most
        HISTORY_LIMIT pieces, a known bit generator), else ValueError naming the field.
        """
        fn = "GrandTour.from_state"
        if not isinstance(state, dict) or state.get("format") != "layertour-tour":
            raise ValueError(f"{fn}: state is not a layertour-tour dict")
        try:
            tour = cls.__new__(cls)
            tour.p, tour.d = check_dims(state["p"], state["d"], fn, strict=True)
            if tour.p > 4096:
                raise ValueError(f"{fn}: p={tour.p} is larger than any bundle's dimension")
            tour.method = state["method"]
            tour.speed = state["speed"]
            tour._playing = bool(state["playing"])
            rs = state["rng"]
            if not isinstance(rs, dict) or rs.get("bit_generator") not in _BIT_GENERATORS:
                raise ValueError(f"{fn}: rng.bit_generator must be one of {', '.join(_BIT_GENERATORS)}")
            tour._rng = np.random.Generator(getattr(np.random, rs["bit_generator"])())
            tour._rng.bit_generator.state = rs
            tour._history = deque(maxlen=HISTORY_LIMIT)
            tour._torus = None
            if tour.method == "torus":
                rates = np.asarray(state["rates"], dtype=np.float64)
                if rates.shape != (tour.p * (tour.p - 1) // 2,) or not np.isfinite(rates).all():
                    raise ValueError(f"{fn}: rates must be p(p-1)/2 = {tour.p * (tour.p - 1) // 2} finite "
                                     f"numbers, got shape {rates.shape}")
                tour._set_rates(rates)
            elif tour.method != "geodesic":
                raise ValueError(f"unknown method {tour.method!r}")
            shape = (tour.p, tour.d)

            def path_of(js, where):
                if tour._torus is not None:
                    base = check_frame(js["base"], f"{where}.base", fn, shape=(tour.p, tour.p))
                    path = _TorusPath(base, tour._torus, tour.d)
                else:
                    path = _GeoPath(check_frame(js["start"], f"{where}.start", fn, shape=shape),
                                    check_frame(js["target"], f"{where}.target", fn, shape=shape))
                begin, end = float(js["begin"]), float(js["end"])
                length = path.length if np.isfinite(path.length) else np.inf
                if not (np.isfinite(begin) and np.isfinite(end) and 0.0 <= begin <= end <= length * (1 + 1e-9)
                        and end < 1e12):
                    raise ValueError(f"{fn}: {where}: begin={begin!r}, end={end!r} must satisfy "
                                     f"0 <= begin <= end <= the piece's length")
                return path, begin, end

            history = state["history"]
            if not isinstance(history, list) or len(history) > HISTORY_LIMIT:
                raise ValueError(f"{fn}: history must be a list of at most {HISTORY_LIMIT} pieces")
            for k, js in enumerate(history):
                tour._history.append(path_of(js, f"history[{k}]"))
            tour._path, tour._begin, tour._pos = path_of(state["current"], "current")
        except (KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
            raise ValueError(f"{fn}: malformed state ({type(exc).__name__}: {exc})") from exc
        tour._update()
        return tour


GUIDED_REL_GAIN = 1e-3   # a restart must beat the current index by 0.1 % (tourr's search_geodesic)
CLIMB_REL_GAIN = 1e-6    # a climb gaining less than this (relative) means the tour is at the top
GUIDED_MIN_MOVE = 1e-2   # ... and lie this far away (projection distance; tourr's new_geodesic_path)


def _plane_distance(A: np.ndarray, B: np.ndarray) -> float:
    """||A A^T - B B^T||_F for orthonormal (p, d) A, B (tourr's proj_dist)."""
    d = A.shape[1]
    return float(np.sqrt(max(2.0 * (d - np.sum((A.T @ B) ** 2)), 0.0)))


class GuidedTour(GrandTour):
    """A guided tour: the same exact geodesics and speed control as ``GrandTour``, but each target
    comes from projection pursuit (:mod:`engine.pursuit`) instead of at random.

    p, d : data and view dimension (p > d >= 1). index : a name from ``engine.pursuit.INDICES``
        ("holes", "cmass", "lda", "pda", "purity") with ``data`` (N, p) NumPy or CuPy and, for
        the class indices, ``labels`` (N,); or an ``engine.pursuit.Objective`` already bound to
        the data (build one once and share it). Only p x p / p x d matrices leave the device.
    sphere, sample, lam, bandwidth : passed to ``engine.pursuit.objective`` (sphere=True evaluates
        holes/cmass on the sphered data, as tourr's ``animate(..., sphere = TRUE)``; the view
        still shows the data through an orthonormal frame of their own space).
    start : the frame to start from (e.g. ``grand.frame``: switching tours keeps the picture);
        default the first d axes. seed, speed : as for ``GrandTour``.
    Search, tourr-like (``guided_tour(alpha = 0.5, cooling = 0.99, max.tries = 25)``):
    1. *climb*: local Riemannian conjugate-gradient ascent from the current frame; the tour follows
       its iterates through waypoints about ``waypoint`` radians apart, so the index rises as
       the picture turns. A climb runs at most ``climb`` iterations inside one step; when it is cut
       short while still gaining, the tour climbs on from its end once it gets there (a viewer
       gives a small ``climb`` so no single frame pays for a whole ascent); 2. at the top,
       *restarts*: one candidate per frame step, each polished by a local climb of at most
       ``polish`` iterations - first the closed-form optimum where one exists (lda, pda), then
       ``restarts`` Haar-random frames, then frames ``alpha`` radians away in a random direction,
       ``alpha`` shrinking by ``cooling`` after each try (annealing). A candidate better by 0.1 %
       and at least 0.01 away becomes the next target; 3. after ``max_tries`` failed candidates in
       a row the tour rests on the best view (``status == "finished"``). ``set_frame`` (a handle
       drag) and ``rewind`` start climbing again from there (``set_frame`` only records the frame:
       the next step that moves plans the climb).
    ``value`` is the index at the current frame; ``best`` the best (value, frame) so far.
    Cost: a climb (at most ``climb`` CG iterations) or a candidate (at most ``polish``) runs inside
    the ``step`` that reaches a piece's end: ~40-150 index evaluations with gradients by default,
    i.e. milliseconds for lda/pda (p x p), N-row passes for holes/cmass (on a CPU give ``sample=``
    ~1e5 rows), O(sample^2) per evaluation for purity.
    ``state()`` extends GrandTour's dict with a "guided" entry; ``GuidedTour.from_state(state,
    data=..., labels=...)`` needs the same data back (checked against a fingerprint).
    """

    def __init__(self, p: int, d: int = 2, *, index, data=None, labels=None, start=None, seed=None,
                 speed: float = 0.25, sphere: bool = False, sample: int | None = None,
                 restarts: int = 4, max_tries: int = 25, alpha: float = 0.5, cooling: float = 0.99,
                 waypoint: float = 0.5, polish: int = 60, climb: int = 200, **index_options):
        p, d = check_dims(p, d, "GuidedTour", strict=True)
        if isinstance(index, Objective):
            if data is not None or labels is not None or index_options or sphere or sample is not None:
                raise ValueError("GuidedTour: give either an Objective as index, or a name with data/options")
            obj = index
        else:
            if data is None:
                raise ValueError(f"GuidedTour: index {index!r} needs data=(N, p) (and labels for classes)")
            obj = _objective(index, data, labels, sphere=sphere, sample=sample, **index_options)
        if obj.p != p:
            raise ValueError(f"GuidedTour: the data have {obj.p} columns but p = {p}")
        self.objective = obj
        self._opts = _guided_options(restarts, max_tries, alpha, cooling, waypoint, polish, climb)
        self._best = None
        self._reset_search()
        super().__init__(p, d, seed=seed, speed=speed, method="geodesic", start=start)

    # search state ------------------------------------------------------------------------------
    def _reset_search(self) -> None:
        self._plan: list[np.ndarray] = []
        self._phase = "climb"           # climb | search | done
        self._tries = 0                 # failed candidates in a row
        self._candidates = 0            # candidates drawn since the last climb
        self._alpha = self._opts["alpha"]
        self._here = -np.inf            # index at the top the tour rests on / heads for
        self._value_cache = None

    def _note(self, F: np.ndarray, v: float) -> None:
        if self._best is None or v > self._best[0]:
            self._best = (v, F.copy())

    def _candidate(self, F: np.ndarray) -> np.ndarray:
        """The next restart point: closed form, then Haar-random, then annealed nearby frames."""
        k = self._candidates
        self._candidates += 1
        has_cf = self.objective.name in ("lda", "pda")
        if has_cf and k == 0:
            return self.objective.maximize(self.d).frame
        if k < self._opts["restarts"] + has_cf:
            return random_frame(self.p, self.d, self._rng)
        H = self._rng.standard_normal((self.p, self.d))
        H -= F @ (F.T @ H)
        H /= np.linalg.norm(H)
        U, s, Vt = np.linalg.svd(H, full_matrices=False)
        a = self._alpha
        self._alpha *= self._opts["cooling"]
        return orthonormal_columns(((F @ Vt.T) * np.cos(a * s)) @ Vt + (U * np.sin(a * s)) @ Vt, "frame",
                                   "GuidedTour")

    def _waypoints(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        plan, run = [], 0.0
        for a, b in zip(frames[:-1], frames[1:]):
            run += float(np.linalg.norm(np.arccos(np.clip(np.linalg.svd(a.T @ b, compute_uv=False), -1, 1))))
            if run >= self._opts["waypoint"]:
                plan.append(b)
                run = 0.0
        if not plan or plan[-1] is not frames[-1]:
            plan.append(frames[-1])
        return plan

    def _geodesic_piece(self, F: np.ndarray) -> _GeoPath:
        obj = self.objective
        while True:
            while self._plan:
                path = _GeoPath(F, self._plan.pop(0))
                if path.length > 0.0:
                    return path
            if self._phase == "done":
                return _GeoPath(F, F)
            if self._phase == "climb":
                self._phase = "search"
                v0 = obj.value(F)
                self._note(F, v0)
                frames = obj.climb(F, maxiter=self._opts["climb"])
                self._here = obj.value(frames[-1])
                self._note(frames[-1], self._here)
                if self._here - v0 > CLIMB_REL_GAIN * max(abs(v0), 1e-12):
                    self._plan = self._waypoints(frames)
                    if len(frames) - 1 >= self._opts["climb"]:  # cut short while still gaining: the
                        self._phase = "climb"                   # piece end after this plan climbs on
                    continue
            # search: one candidate per call, resting at F in between
            exact = self._candidates == 0 and obj.name in ("lda", "pda")  # the closed-form optimum
            top = obj.climb(self._candidate(F), maxiter=self._opts["polish"])[-1]
            v = obj.value(top)
            self._note(top, v)
            if exact and v > self._here and _plane_distance(top, F) > 1e-6:
                self._here, self._tries, self._plan = v, 0, [top]  # end exactly on it, however close
                continue
            if v - self._here > GUIDED_REL_GAIN * max(abs(self._here), 1e-12) and (
                    _plane_distance(top, F) > GUIDED_MIN_MOVE):
                self._here, self._tries, self._plan = v, 0, [top]
                continue
            self._tries += 1
            if self._tries >= self._opts["max_tries"]:
                self._phase = "done"
                best, B = self._best
                if best - self._here > GUIDED_REL_GAIN * max(abs(self._here), 1e-12):
                    self._here, self._plan = best, [B.copy()]  # end on the best view ever seen
                    continue
            return _GeoPath(F, F)

    # protocol ----------------------------------------------------------------------------------
    def step(self, dt: float) -> np.ndarray:
        """Advance by ``dt`` seconds along the climb; while searching, one candidate per call."""
        if self._phase == "done" and not self._plan and self._path.length == 0.0:
            if not np.isfinite(float(dt)) or float(dt) < 0:
                raise ValueError(f"GuidedTour.step: dt must be a finite number of seconds >= 0, got {dt!r}")
            return self._frame
        return super().step(dt)

    def set_frame(self, F) -> None:
        """Jump to F; the search starts again, climbing from there at the next ``step`` that moves.

        Nothing is computed here: a handle drag sets a frame on every mouse move with the tour
        paused, and each would otherwise pay for a whole climb it never follows."""
        F = check_frame(F, "F", "GuidedTour.set_frame", shape=(self.p, self.d))
        F = orthonormal_columns(F, "F", "GuidedTour.set_frame")
        self._reset_search()
        if self._pos > self._begin:
            self._history.append((self._path, self._begin, self._pos))
        self._path = _GeoPath(F, F)  # rest at F; the next step that moves plans the climb
        self._begin = self._pos = 0.0
        self._update()

    def rewind(self, seconds: float) -> np.ndarray:
        """As ``GrandTour.rewind``; the planned climb is dropped and recomputed from where the
        rewound piece ends."""
        F = super().rewind(seconds)
        self._reset_search()
        return F

    @property
    def index(self) -> str:
        return self.objective.name

    @property
    def value(self) -> float:
        """The index at the current frame (computed once per frame)."""
        if self._value_cache is None or self._value_cache[0] is not self._frame:
            self._value_cache = (self._frame, self.objective.value(self._frame))
        return self._value_cache[1]

    @property
    def best(self) -> tuple[float, np.ndarray]:
        """(value, frame) of the best view found so far."""
        return self._best[0], self._best[1].copy()

    @property
    def status(self) -> str:
        """"climbing" (moving to a planned target, or about to climb from a frame just set),
        "searching" (resting while trying restart candidates, one per step) or "finished" (resting
        on the best view found)."""
        if self._path.length > 0.0 or self._plan or self._phase == "climb":
            return "climbing"
        return "finished" if self._phase == "done" else "searching"

    def state(self) -> dict:
        s = super().state()
        s["guided"] = {
            "objective": self.objective.spec, "fingerprint": self.objective.fingerprint,
            "options": self._opts,
            "plan": [F.tolist() for F in self._plan], "phase": self._phase, "tries": self._tries,
            "candidates": self._candidates, "alpha": self._alpha, "here": self._here,
            "best": None if self._best is None else [self._best[0], self._best[1].tolist()],
        }
        return s

    @classmethod
    def from_state(cls, state: dict, *, data=None, labels=None,
                   objective: Objective | None = None) -> GuidedTour:
        """Rebuild from ``state()`` with the same data (``data``/``labels``, or an ``objective``
        bound to them); stepping it gives the same frames. ValueError if the data differ."""
        try:
            g = state["guided"]
            spec = dict(g["objective"])
        except (KeyError, TypeError) as exc:
            raise ValueError("GuidedTour.from_state: not a guided tour state (no 'guided' entry)") from exc
        if objective is None:
            if data is None:
                raise ValueError("GuidedTour.from_state: needs data= (and labels=) to rebuild the index")
            obj = _objective(spec.pop("index"), data, labels, **spec)
        else:
            obj = objective
        fp = np.asarray(g["fingerprint"], dtype=np.float64)
        if obj.spec != g["objective"] or fp.shape != np.shape(obj.fingerprint) or not np.allclose(
                obj.fingerprint, fp, rtol=1e-9, atol=1e-12):
            raise ValueError("GuidedTour.from_state: the data (or index options) differ from the saved ones")
        tour = super().from_state(state)
        try:
            tour.objective = obj
            tour._opts = _guided_options(**g["options"])
            tour._reset_search()
            shape = (tour.p, tour.d)
            tour._plan = [check_frame(F, "plan", "GuidedTour.from_state", shape=shape) for F in g["plan"]]
            if g["phase"] not in ("climb", "search", "done"):
                raise ValueError(f"unknown phase {g['phase']!r}")
            tour._phase, tour._tries = g["phase"], int(g["tries"])
            tour._candidates, tour._alpha = int(g["candidates"]), float(g["alpha"])
            tour._here = float(g["here"])
            b = g["best"]
            tour._best = None if b is None else (
                float(b[0]), check_frame(b[1], "best", "GuidedTour.from_state", shape=shape))
            # Numbers from a file: finite and in range, or a saved view could stall the search.
            if tour._tries < 0 or tour._candidates < 0 or len(tour._plan) > 10_000:
                raise ValueError("GuidedTour.from_state: tries, candidates must be >= 0 and the plan at most "
                                 "10,000 frames")
            if not (np.isfinite(tour._alpha) and 0.0 < tour._alpha <= np.pi / 2):
                raise ValueError(f"GuidedTour.from_state: alpha={tour._alpha!r} must lie in (0, pi/2]")
            if np.isnan(tour._here) or tour._here == np.inf or (
                    tour._best is not None and not np.isfinite(tour._best[0])):
                raise ValueError("GuidedTour.from_state: the index values 'here' (or -inf before the "
                                 "first) and 'best' must be finite")
        except (KeyError, TypeError, IndexError, OverflowError) as exc:
            raise ValueError(f"GuidedTour.from_state: malformed state ({type(exc).__name__}: {exc})") from exc
        return tour


def _guided_options(restarts, max_tries, alpha, cooling, waypoint, polish, climb=200) -> dict:
    def count(name, v, lo):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"GuidedTour: {name} must be an integer >= {lo}, got {v!r}")
        return int(v)

    def real(name, v, lo, hi):
        x = float(v)
        if not lo < x <= hi:
            raise ValueError(f"GuidedTour: {name} must lie in ({lo}, {hi}], got {v!r}")
        return x

    return {"restarts": count("restarts", restarts, 0), "max_tries": count("max_tries", max_tries, 1),
            "alpha": real("alpha", alpha, 0.0, np.pi / 2), "cooling": real("cooling", cooling, 0.0, 1.0),
            "waypoint": real("waypoint", waypoint, 0.0, np.pi), "polish": count("polish", polish, 1),
            "climb": count("climb", climb, 1)}
