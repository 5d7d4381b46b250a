"""Frames and their direct manipulation: orthonormalisation, random frames, and dragging a data
handle or an axis handle under the cursor.

Pure float64 NumPy on small matrices (host). A *frame* is a (p, d) matrix with orthonormal columns;
the picture of data X (N, p) is X @ frame, so the projection of a p-vector ``point`` is
``point @ frame`` (a d-vector) and the projection of the basis vector e_i is row i of the frame.

The drags return a new orthonormal (p, d) float64 frame and leave their inputs untouched; the tour
continues from it through ``GrandTour.set_frame``. The frame operations are re-exported by
:mod:`engine.tour`; the argument checks (``check_frame``, ``check_dims``) and the QR helpers
(``orthonormal_columns``, ``complete_basis``) are public so that the tour and the projection
pursuit share them. This module imports nothing from the rest of the engine. (Not to be confused
with ``viewer.handles``, the viewer's set of on-screen handles.)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_dims", "check_frame", "complete_basis", "drag_axis", "drag_handle", "is_orthonormal",
    "orthonormal_columns", "orthonormalize", "principal_frame", "random_frame",
]


def check_frame(F, name: str, func: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``F`` as a (p, d) float64 host array with p >= d >= 1 (and ``shape`` when given), finite.

    Raises ValueError naming ``func`` and the argument ``name``; does not orthonormalise.
    """
    a = np.asarray(F, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 1 or a.shape[0] < a.shape[1]:
        raise ValueError(f"{func}: {name} must be a (p, d) array with p >= d >= 1, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{func}: {name} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{func}: {name} contains NaN or infinite values")
    return a


def orthonormal_columns(F: np.ndarray, name: str, func: str) -> np.ndarray:
    """Orthonormal (p, d) float64 basis of span(F) by QR, signs fixed so that R's diagonal is
    positive; ValueError naming ``func``/``name`` when F's columns are linearly dependent."""
    Q, R = np.linalg.qr(F)
    diag = R.diagonal()
    if np.min(np.abs(diag)) <= 1e-12 * max(np.max(np.abs(diag)), 1e-300):
        raise ValueError(f"{func}: {name} has linearly dependent columns (shape {F.shape})")
    return Q * np.where(diag < 0, -1.0, 1.0)


def orthonormalize(F) -> np.ndarray:
    """Orthonormal basis of span(F) with the same orientation: F (p, d) -> (p, d) float64, host.

    Householder QR with signs fixed so that R has a positive diagonal: this is Gram-Schmidt in
    exact arithmetic, orthonormal to rounding (~1e-16) in floating point, and it returns an already
    orthonormal F unchanged to rounding. Raises ValueError for a bad shape, NaN/inf, or dependent
    columns.
    """
    return orthonormal_columns(check_frame(F, "F", "orthonormalize"), "F", "orthonormalize")


def is_orthonormal(F, tol: float = 1e-12) -> bool:
    """True when the (p, d) array F has max |F^T F - I| <= tol."""
    F = check_frame(F, "F", "is_orthonormal")
    return bool(np.max(np.abs(F.T @ F - np.eye(F.shape[1]))) <= tol)


def check_dims(p, d, func: str, strict: bool = False) -> tuple[int, int]:
    """(p, d) as ints after checking both are positive integers with p >= d (p > d if ``strict``)."""
    for name, v in (("p", p), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{func}: {name} must be a positive integer, got {v!r}")
    if p < d or (strict and p == d):
        rel = ">" if strict else ">="
        raise ValueError(f"{func}: need p {rel} d, got p={p}, d={d}")
    return int(p), int(d)


def random_frame(p: int, d: int, rng=None) -> np.ndarray:
    """A uniformly random (Haar) orthonormal (p, d) float64 frame; ``rng``: Generator, seed or None."""
    p, d = check_dims(p, d, "random_frame")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return orthonormal_columns(gen.standard_normal((p, d)), "F", "random_frame")


def _frame(frame, func: str) -> np.ndarray:
    """``frame`` as a (p, d) float64 array with orthonormal columns (QR with a sign fix)."""
    return orthonormal_columns(check_frame(frame, "frame", func), "frame", func)


def _vector(v, n: int, name: str, func: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"{func}: {name} must have shape ({n},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{func}: {name} contains NaN or infinite values")
    return a


def complete_basis(F: np.ndarray) -> np.ndarray:
    """(p, p) orthogonal B whose first d columns are F (F orthonormal); the rest span F's complement."""
    p, d = F.shape
    Q, R = np.linalg.qr(F, mode="complete")
    Q[:, :d] *= np.where(R.diagonal() < 0, -1.0, 1.0)
    Q[:, :d] = F
    return Q


def drag_handle(frame, point, target) -> np.ndarray:
    """The frame after dragging the projection of ``point`` onto ``target``.

    frame : (p, d) float64 host array, orthonormal columns (re-orthonormalised if slightly off).
    point : (p,) the dragged handle in data space (e.g. a class centroid), not zero.
    target : (d,) where its projection ``point @ frame`` should land (the cursor, in data units).
    Returns the (p, d) float64 orthonormal frame F' = R @ frame, where R is the smallest rotation
    of R^p, turning in a single plane, for which ``point @ F' == target``.

    Derivation. Let c = point, F = frame, y = F^T c (the current projection, a d-vector).
    Any rotation R of the data space acts on the frame as F' = R F, which keeps F' orthonormal.
    The projection becomes F'^T c = F^T (R^T c) = F^T u with u = R^T c, a vector of norm ||c||.
    So we need a u with ||u|| = ||c|| and F^T u = t (t = target): u = F t + w with w orthogonal to
    span(F) and ||w||^2 = ||c||^2 - ||t||^2. Such u exists iff ||t|| <= ||c||; otherwise t is
    clamped to the reachable radius ||c|| keeping its direction. Among these u, the rotation angle
    needed to turn c into u is at least angle(c, u), and the rotation in the plane span(c, u)
    attains it; the angle is smallest when u.c = t.y + w.c_perp is largest, i.e. when w points
    along c_perp = c - F y (the part of c outside the view plane). When c lies in the view plane
    (c_perp = 0) every admissible w gives the same angle; we take w along the first basis vector
    of the plane's orthogonal complement (from a complete QR of F), so the result is
    deterministic. With a = c/||c|| and b the unit part of u orthogonal to a, theta = angle(c, u),
    R^T is the rotation by theta from a towards b in span(a, b) and identity on its complement:
        R = I + (cos theta - 1)(a a^T + b b^T) + sin theta (a b^T - b a^T),
    so F' = R F costs O(p d), and point @ F' = u^T F = t + w^T F = t. When target equals the current
    projection, u = c, theta = 0 and F' = F. If p == d the view plane is all of R^p, w must be 0 and
    the only reachable radius is ||c||: t is rescaled to that norm.
    """
    F = _frame(frame, "drag_handle")
    p, d = F.shape
    c = _vector(point, p, "point", "drag_handle")
    t = _vector(target, d, "target", "drag_handle")
    cn = float(np.linalg.norm(c))
    if cn == 0.0:
        raise ValueError("drag_handle: point is the zero vector; its projection cannot be moved")
    tn = float(np.linalg.norm(t))
    if tn > cn or (p == d and tn != cn):
        if tn == 0.0:
            raise ValueError("drag_handle: p == d, so the target must have the norm of point, not 0")
        t = t * (cn / tn)
        tn = cn
    y = F.T @ c
    c_perp = c - F @ y
    c_perp -= F @ (F.T @ c_perp)
    r = np.sqrt(max(cn * cn - tn * tn, 0.0))
    pn = float(np.linalg.norm(c_perp))
    if r == 0.0:
        w = np.zeros(p)
    elif pn > 1e-14 * cn:
        w = c_perp * (r / pn)
    else:
        w = complete_basis(F)[:, d] * r
    u = F @ t + w
    a = c / cn
    v = u - a * (a @ u)
    s = float(np.linalg.norm(v))
    theta = float(np.arctan2(s, a @ u))
    if s == 0.0 or theta == 0.0:
        return F
    b = v / s
    aF = a @ F
    bF = b @ F
    cos_m1 = np.cos(theta) - 1.0
    sin_t = np.sin(theta)
    return F + np.outer(a, cos_m1 * aF + sin_t * bF) + np.outer(b, cos_m1 * bF - sin_t * aF)


def drag_axis(frame, i: int, target) -> np.ndarray:
    """The frame after dragging axis handle ``i`` (the projection of e_i, row i of the frame).

    frame : (p, d) float64 host array, orthonormal columns.
    i : index of the data axis, 0 <= i < p.
    target : (d,) the wanted position of row i; clamped to norm 1 (keeping its direction) because
        a row of an orthonormal frame has norm <= 1. (If p == d every row has norm exactly 1, so
        the target is rescaled to norm 1.)
    Returns a (p, d) float64 orthonormal frame whose row i equals ``target`` (after clamping).

    Method (the Distill Grand Tour's axis mode, with row i kept first): complete the frame to a
    p x p orthogonal B = [F | C]. Row i of B is the unit vector (F[i], C[i]); replace it by
    (t, C[i] * sqrt(1 - ||t||^2) / ||C[i]||), still a unit vector, whose first d entries are t.
    Then orthonormalise the rows of B by Gram-Schmidt with row i first and the others in index
    order (done as a Householder QR of the reordered B^T with a sign fix, which is the same
    Gram-Schmidt exactly in exact arithmetic and orthonormal to rounding), and keep the first d
    columns. Row i stays exactly as set, so row i of the result is t. The result does not depend on
    which completion C is used (every step only uses inner products of rows, unchanged by a
    rotation of C's columns), except when ||F[i]|| == 1 (e_i lies in the view plane, C[i] = 0):
    then the new tail points along the first complement column. When target equals row i the
    frame comes back unchanged. One configuration is singular: ||target|| == 1 exactly and target
    orthogonal to the old row i; the new row then lies in the span of the others, Gram-Schmidt
    meets a zero vector there, and Householder QR still supplies an orthonormal direction for
    it, so the result stays orthonormal with row i == target.
    """
    F = _frame(frame, "drag_axis")
    p, d = F.shape
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < p:
        raise ValueError(f"drag_axis: i must be an integer axis index in [0, {p}), got {i!r}")
    i = int(i)
    t = _vector(target, d, "target", "drag_axis")
    tn = float(np.linalg.norm(t))
    if tn > 1.0 or (p == d and tn != 1.0):
        if tn == 0.0:
            raise ValueError("drag_axis: p == d, so every row has norm 1 and the target cannot be 0")
        t = t / tn
        tn = 1.0
    B = complete_basis(F)
    tail = B[i, d:].copy()
    room = np.sqrt(max(1.0 - tn * tn, 0.0))
    if tail.size:
        tnorm = float(np.linalg.norm(tail))
        if tnorm > 1e-14:
            tail *= room / tnorm
        else:
            tail = np.zeros(p - d)
            tail[0] = room
    B[i, :d] = t
    B[i, d:] = tail
    order = np.r_[i, np.arange(i), np.arange(i + 1, p)]
    Q, R = np.linalg.qr(B[order].T)
    Q *= np.where(R.diagonal() < 0, -1.0, 1.0)
    out = np.empty((p, d))
    out[order] = Q.T[:, :d]
    out[i] = t
    return out


def principal_frame(X, d: int = 2, sample: int = 20_000, seed: int = 0) -> np.ndarray:
    """The (p, d) float64 frame of X's top ``d`` principal axes: the projection that spreads X
    ((N, p) host array, read on a seeded sample of at most ``sample`` rows) the most. Signs are
    fixed (each axis's largest loading positive), so the same data give the same frame. Raises
    ValueError when p < d or X has fewer than 2 rows."""
    X = np.asarray(X)
    n = int(X.shape[0])
    if X.ndim != 2 or n < 2 or X.shape[1] < d:
        raise ValueError(f"principal_frame: X must be (N >= 2, p >= {d}), got shape {tuple(X.shape)}")
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample else None
    A = np.asarray(X if rows is None else X[rows], dtype=np.float64)
    A = A - A.mean(axis=0)
    _, _, vt = np.linalg.svd(A, full_matrices=False)
    F = vt[:d].T.copy()
    F *= np.where(F[np.abs(F).argmax(axis=0), np.arange(d)] < 0, -1.0, 1.0)
    return orthonormalize(F)
