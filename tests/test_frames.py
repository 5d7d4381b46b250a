"""engine.frames (re-exported by engine.tour): data handles and axis handles land exactly, frames
stay orthonormal, the rotation is the smallest single-plane one, and the axis mode matches an
explicit row-by-row Gram-Schmidt written here independently."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm, null_space

from engine import frames, tour

DIMS = [(p, d) for p in (3, 4, 7, 15, 40, 64) for d in (2, 3) if p > d]


def orth_err(F):
    return np.abs(F.T @ F - np.eye(F.shape[1])).max()


def inside_target(c_norm, d, rng, fraction=None):
    """A random d-vector strictly inside the reachable radius ``c_norm``."""
    v = rng.standard_normal(d)
    r = (rng.uniform(0.0, 0.99) if fraction is None else fraction) * c_norm
    return v / np.linalg.norm(v) * r


def test_reexported_from_tour():
    for name in frames.__all__:
        assert getattr(tour, name) is getattr(frames, name)


# ------------------------------------------------------------------------------------ data handle


@pytest.mark.parametrize("p,d", DIMS)
def test_drag_handle_lands_exactly(rng, p, d):
    F = tour.random_frame(p, d, rng)
    c = rng.standard_normal(p) * rng.uniform(0.1, 20.0)
    t = inside_target(np.linalg.norm(c), d, rng)
    G = tour.drag_handle(F, c, t)
    assert G.shape == (p, d) and G.dtype == np.float64
    assert orth_err(G) < 1e-12
    assert np.abs(c @ G - t).max() < 1e-10 * max(1.0, np.linalg.norm(c))


@pytest.mark.parametrize("p,d", [(4, 2), (15, 2), (15, 3), (64, 3)])
def test_drag_handle_is_the_smallest_single_plane_rotation(rng, p, d):
    F = tour.random_frame(p, d, rng)
    c = rng.standard_normal(p)
    cn = np.linalg.norm(c)
    t = inside_target(cn, d, rng)
    G = tour.drag_handle(F, c, t)
    # Independent reference. Admissible u (= R^T c) are F t + w, w outside span(F), |w| = r; the
    # rotation turning c into u needs at least angle(c, u). The closest u has w along c's part
    # outside the view plane; the plane rotation R from u to c, applied to F, must give G.
    r = np.sqrt(cn**2 - t @ t)
    C = null_space(F.T)  # complement basis from an SVD (engine code uses QR)
    c_out = C @ (C.T @ c)
    u = F @ t + c_out / np.linalg.norm(c_out) * r
    best = np.arctan2(np.linalg.norm(u - (u @ c) / cn**2 * c), u @ c / cn)
    for _ in range(20):
        w = C @ rng.standard_normal(C.shape[1])
        other = F @ t + w / np.linalg.norm(w) * r
        assert np.arccos(np.clip(other @ c / cn**2, -1, 1)) >= best - 1e-12
    a = u / cn
    b = c - (c @ a) * a
    b /= np.linalg.norm(b)
    R = expm(best * (np.outer(b, a) - np.outer(a, b)))  # turns a (= u/|u|) towards b, i.e. u to c
    assert np.abs(R @ u - c).max() < 1e-12 * max(1.0, cn)
    assert np.abs(G - R @ F).max() < 1e-10
    sv = np.linalg.svd(G - F, compute_uv=False)  # one plane: G - F has rank <= 2
    assert sv[2:].max(initial=0.0) < 1e-12


@pytest.mark.parametrize("p,d", [(3, 2), (15, 3)])
def test_drag_handle_unchanged_when_target_is_current_projection(rng, p, d):
    F = tour.random_frame(p, d, rng)
    c = rng.standard_normal(p) * 3
    assert np.abs(tour.drag_handle(F, c, c @ F) - F).max() < 1e-12


@pytest.mark.parametrize("p,d", [(3, 2), (15, 2), (15, 3)])
def test_drag_handle_clamps_to_reachable_radius(rng, p, d):
    F = tour.random_frame(p, d, rng)
    c = rng.standard_normal(p)
    cn = np.linalg.norm(c)
    v = rng.standard_normal(d)
    t = v / np.linalg.norm(v) * cn * rng.uniform(1.01, 5.0)
    G = tour.drag_handle(F, c, t)
    assert orth_err(G) < 1e-12
    assert np.abs(c @ G - t * cn / np.linalg.norm(t)).max() < 1e-10 * max(1.0, cn)


def test_drag_handle_point_in_the_view_plane_and_square_frames(rng):
    p, d = 9, 2
    F = tour.random_frame(p, d, rng)
    c = F @ rng.standard_normal(d)  # lies in the view plane: must rotate out of it to shrink
    t = inside_target(np.linalg.norm(c), d, rng, fraction=0.5)
    G = tour.drag_handle(F, c, t)
    assert orth_err(G) < 1e-12 and np.abs(c @ G - t).max() < 1e-12
    # p == d: the projection always has norm |c|; the target is rescaled to that radius
    F = tour.random_frame(3, 3, rng)
    c = rng.standard_normal(3)
    t = rng.standard_normal(3)
    G = tour.drag_handle(F, c, t)
    assert orth_err(G) < 1e-12
    assert np.abs(c @ G - t / np.linalg.norm(t) * np.linalg.norm(c)).max() < 1e-12


def test_drag_handle_bad_input_names_the_argument(rng):
    F = tour.random_frame(5, 2, rng)
    with pytest.raises(ValueError, match="point is the zero vector"):
        tour.drag_handle(F, np.zeros(5), np.ones(2))
    with pytest.raises(ValueError, match="point must have shape"):
        tour.drag_handle(F, np.ones(4), np.ones(2))
    with pytest.raises(ValueError, match="target must have shape"):
        tour.drag_handle(F, np.ones(5), np.ones(3))
    with pytest.raises(ValueError, match="target contains NaN"):
        tour.drag_handle(F, np.ones(5), np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="drag_handle: frame must be"):
        tour.drag_handle(np.ones(5), np.ones(5), np.ones(2))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(4, 64), d=st.integers(2, 3),
       scale=st.floats(1e-3, 1e3), frac=st.floats(0.0, 0.999))
def test_drag_handle_property_lands_and_stays_orthonormal(seed, p, d, scale, frac):
    rng = np.random.default_rng(seed)
    F = tour.random_frame(p, d, rng)
    c = rng.standard_normal(p) * scale
    t = inside_target(np.linalg.norm(c), d, rng, fraction=frac)
    G = tour.drag_handle(F, c, t)
    assert orth_err(G) < 1e-12
    assert np.abs(c @ G - t).max() < 1e-10 * max(1.0, np.linalg.norm(c))


def test_drag_then_tour_continues_from_the_new_frame(rng):
    p, d = 15, 2
    tr = tour.GrandTour(p, d, seed=int(rng.integers(2**32)))
    for _ in range(50):
        tr.step(1 / 60)
    c = rng.standard_normal(p)
    t = inside_target(np.linalg.norm(c), d, rng)
    tr.set_frame(tour.drag_handle(tr.frame, c, t))
    assert np.abs(c @ tr.frame - t).max() < 1e-10
    moved = c @ tr.step(1 / 60) - t
    assert 0 < np.linalg.norm(moved) <= np.linalg.norm(c) * 0.25 / 60 * 1.5


# ------------------------------------------------------------------------------------ axis handle


def reference_axis_drag(F, i, t):
    """Row Gram-Schmidt with row i first, on a completion of F from scipy's null_space (an SVD, so a
    different completion than the engine's QR): classical loops, float64."""
    p, d = F.shape
    t = np.asarray(t, float)
    if np.linalg.norm(t) > 1:
        t = t / np.linalg.norm(t)
    B = np.hstack([F, null_space(F.T)])
    tail = B[i, d:] * np.sqrt(1 - t @ t) / np.linalg.norm(B[i, d:])
    B[i] = np.r_[t, tail]
    rows = [i] + [k for k in range(p) if k != i]
    done = []
    out = np.empty_like(B)
    for k in rows:
        v = B[k].copy()
        for _ in range(2):
            for q in done:
                v -= (v @ q) * q
        v /= np.linalg.norm(v)
        done.append(v)
        out[k] = v
    return out[:, :d]


@pytest.mark.parametrize("p,d", DIMS)
def test_drag_axis_row_lands_exactly_and_matches_gram_schmidt(rng, p, d):
    F = tour.random_frame(p, d, rng)
    i = int(rng.integers(p))
    t = inside_target(1.0, d, rng)
    G = tour.drag_axis(F, i, t)
    assert orth_err(G) < 1e-12
    assert np.array_equal(G[i], t)
    assert np.abs(G - reference_axis_drag(F, i, t)).max() < 1e-9


@pytest.mark.parametrize("p,d", [(3, 2), (15, 3)])
def test_drag_axis_unchanged_clamped_and_continuous(rng, p, d):
    F = tour.random_frame(p, d, rng)
    i = int(rng.integers(p))
    assert np.abs(tour.drag_axis(F, i, F[i]) - F).max() < 1e-12
    far = rng.standard_normal(d)
    far *= rng.uniform(1.01, 10.0) / np.linalg.norm(far)
    G = tour.drag_axis(F, i, far)
    assert orth_err(G) < 1e-12 and np.abs(G[i] - far / np.linalg.norm(far)).max() < 1e-15
    # continuous: the change vanishes with the drag, to first order (10x smaller drag, ~10x change)
    v = rng.standard_normal(d)
    v *= 0.5 * (1 - np.linalg.norm(F[i])) / np.linalg.norm(v)
    change = [np.linalg.norm(tour.drag_axis(F, i, F[i] + h * v) - F) for h in (1e-3, 1e-4)]
    assert change[1] < 1e-3 and 8 < change[0] / change[1] < 12


def test_drag_axis_any_row_of_norm_up_to_one_is_reachable(rng):
    p, d = 6, 3
    F = tour.random_frame(p, d, rng)
    unit_back = -F[2] / np.linalg.norm(F[2])
    for target in (np.zeros(d), np.array([1.0, 0, 0]), np.array([0.6, -0.8, 0.0]), unit_back):
        G = tour.drag_axis(F, 2, target)
        # a unit vector computed in floating point may have norm 1 + 1 ulp; it is then clamped
        tn = np.linalg.norm(target)
        assert orth_err(G) < 1e-12 and np.array_equal(G[2], target / tn if tn > 1.0 else target)
    E = np.eye(p, d)  # e_0 lies in the view plane: its row has norm 1 and no tail to shorten
    G = tour.drag_axis(E, 0, np.array([0.3, 0.4, 0.0]))
    assert orth_err(G) < 1e-12 and np.array_equal(G[0], [0.3, 0.4, 0.0])


def test_drag_axis_bad_input_names_the_argument(rng):
    F = tour.random_frame(5, 2, rng)
    with pytest.raises(ValueError, match="drag_axis: i must be"):
        tour.drag_axis(F, 5, np.zeros(2))
    with pytest.raises(ValueError, match="drag_axis: i must be"):
        tour.drag_axis(F, True, np.zeros(2))
    with pytest.raises(ValueError, match="drag_axis: target must have shape"):
        tour.drag_axis(F, 1, np.zeros(3))
    with pytest.raises(ValueError, match="drag_axis: frame must be"):
        tour.drag_axis(np.ones((2, 5)), 1, np.zeros(2))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(3, 64), d=st.integers(2, 3),
       norm=st.one_of(st.floats(0.0, 1.0), st.just(1.0), st.floats(1.0, 1e3)))
def test_drag_axis_property_row_lands_and_orthonormal(seed, p, d, norm):
    rng = np.random.default_rng(seed)
    if p <= d:
        p = d + 1
    F = tour.random_frame(p, d, rng)
    i = int(rng.integers(p))
    v = rng.standard_normal(d)
    t = v / np.linalg.norm(v) * norm
    G = tour.drag_axis(F, i, t)
    assert orth_err(G) < 1e-12
    assert np.abs(G[i] - t / max(1.0, norm)).max() < 1e-15
