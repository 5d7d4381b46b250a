"""engine.tour: frames, geodesics, view paths and the Grand Tour, checked by invariants and against
independent float64 references (scipy's principal angles, explicit projector algebra)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import tour as T

DIMS = [(p, d) for p in (3, 4, 5, 8, 15, 33, 64) for d in (2, 3) if p >= d]


def proj(F):
    return F @ F.T


def angles(A, B):
    """Principal angles between span(A) and span(B), largest first; independent of engine.tour.

    Cosines from the singular values of A^T B, sines from those of (I - A A^T) B, each from its own
    full SVD (no pairing of directions), combined with atan2 so tiny angles stay accurate (scipy's
    subspace_angles returns ~1.5e-8 for identical planes).
    """
    cos = np.linalg.svd(A.T @ B, compute_uv=False)[::-1]
    sin = np.linalg.svd(B - A @ (A.T @ B), compute_uv=False)
    return np.arctan2(sin, cos)


def orth_err(F):
    return np.abs(F.T @ F - np.eye(F.shape[1])).max()


def random_rotation(d, rng, proper=None):
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    if proper is not None and (np.linalg.det(Q) > 0) != proper:
        Q[:, 0] = -Q[:, 0]
    return Q


# ---------------------------------------------------------------------------------------- frames


@pytest.mark.parametrize("p,d", [(3, 2), (15, 3), (64, 2)])
def test_orthonormalize_exact_and_identity_on_orthonormal(rng, p, d):
    X = rng.standard_normal((p, d)) * rng.uniform(0.1, 10.0, d)
    F = T.orthonormalize(X)
    assert orth_err(F) < 1e-14
    assert np.allclose(proj(F) @ X, X, atol=1e-12)  # same span
    Rt = F.T @ X  # triangular with a positive diagonal: orientation of each column kept
    assert np.all(np.diag(Rt) > 0) and np.abs(np.tril(Rt, -1)).max() < 1e-12
    assert np.abs(T.orthonormalize(F) - F).max() < 1e-15


def test_orthonormalize_rejects_bad_input():
    with pytest.raises(ValueError, match="F must be a"):
        T.orthonormalize(np.ones(5))
    with pytest.raises(ValueError, match="F must be a"):
        T.orthonormalize(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dependent"):
        T.orthonormalize(np.ones((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        T.orthonormalize(np.full((5, 2), np.nan))


def test_random_frame_is_orthonormal_and_uniform(rng):
    p, d, n = 5, 2, 4000
    acc = np.zeros((p, p))
    for _ in range(n):
        F = T.random_frame(p, d, rng)
        assert F.shape == (p, d) and T.is_orthonormal(F)
        acc += proj(F)
    # Haar measure: E[F F^T] = (d/p) I; each entry's standard error is below 0.3 / sqrt(n)
    assert np.abs(acc / n - d / p * np.eye(p)).max() < 0.03
    assert not T.is_orthonormal(F * 1.001)
    with pytest.raises(ValueError, match="p >= d"):
        T.random_frame(2, 3, rng)


# ------------------------------------------------------------------------------------- geodesic


def check_geodesic(Fa, Fz, g, tol=1e-12):
    p, d = Fa.shape
    assert g.Ga.shape == g.H.shape == (p, d) and g.Va.shape == (d, d) and g.tau.shape == (d,)
    assert np.abs(g.frame(0.0) - Fa).max() < tol
    assert np.abs(proj(g.frame(1.0)) - proj(Fz)).max() < 1e-10
    assert np.all(np.diff(g.tau) <= 0) and np.all(g.tau >= 0) and np.all(g.tau <= np.pi / 2 + 1e-15)
    ref = angles(Fa, Fz)
    assert np.allclose(g.tau, np.where(ref < T.ANGLE_EPS, 0.0, ref), atol=1e-9)
    assert abs(g.dist - np.linalg.norm(proj(Fa) - proj(Fz))) < 1e-12
    assert abs(g.length - np.linalg.norm(g.tau)) < 1e-15
    # segment parameters: the kernel's formula, orthogonality of the moving directions
    assert np.abs(g.Ga - Fa @ g.Va).max() < tol
    moving = g.tau > 0
    assert np.all(g.H[:, ~moving] == 0)
    assert np.abs(g.H.T @ g.Ga).max() < tol
    HtH = g.H[:, moving].T @ g.H[:, moving]
    assert np.all(np.abs(HtH - np.eye(moving.sum())) < tol)
    for f in (0.0, 0.25, 0.5, 1.0, *np.random.default_rng().uniform(0, 1, 3)):
        F = g.frame(f)
        direct = (g.Ga * np.cos(f * g.tau) + g.H * np.sin(f * g.tau)) @ g.Va.T
        assert np.array_equal(F, direct)
        assert orth_err(F) < tol
        # on the geodesic: angles from the start are f * tau, from the end (1 - f) * tau
        assert np.allclose(angles(Fa, F), f * g.tau, atol=1e-8)
        assert np.allclose(angles(F, g.frame(1.0)), (1 - f) * g.tau, atol=1e-8)


@pytest.mark.parametrize("p,d", DIMS)
def test_geodesic_random_pairs(rng, p, d):
    Fa, Fz = T.random_frame(p, d, rng), T.random_frame(p, d, rng)
    check_geodesic(Fa, Fz, T.geodesic(Fa, Fz))


@pytest.mark.parametrize("p,d", [(4, 2), (6, 3), (15, 3), (64, 3)])
def test_geodesic_shared_directions(rng, p, d):
    """Fz shares one direction with Fa (one zero angle) and has one chosen angle; rest random."""
    Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
    Fa = Q[:, :d]
    theta = rng.uniform(0.05, 1.5)
    cols = [Q[:, 0], np.cos(theta) * Q[:, 1] + np.sin(theta) * Q[:, d]]
    if d == 3:
        cols.append(Q[:, d + 1] if p > d + 1 else Q[:, 2])
    Fz = np.column_stack(cols) @ random_rotation(d, rng)
    g = T.geodesic(Fa, Fz)
    check_geodesic(Fa, Fz, g)
    assert g.tau[-1] == 0.0 and np.any(np.isclose(g.tau, theta, atol=1e-12))


@pytest.mark.parametrize("p,d", [(3, 2), (5, 3), (3, 3), (15, 2)])
@pytest.mark.parametrize("how", ["same", "rotated", "reflected", "opposite"])
def test_geodesic_identical_planes_do_not_move(rng, p, d, how):
    Fa = T.random_frame(p, d, rng)
    W = {"same": np.eye(d), "rotated": random_rotation(d, rng, True),
         "reflected": random_rotation(d, rng, False), "opposite": -np.eye(d)}[how]
    g = T.geodesic(Fa, Fa @ W)
    assert np.all(g.tau == 0) and g.dist < 1e-14 and np.all(g.H == 0)
    for f in (0.3, 1.0):
        assert np.abs(g.frame(f) - Fa).max() < 1e-14


def test_geodesic_tiny_angles_are_accurate_and_below_eps_are_zero(rng):
    p, d = 15, 2
    Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
    Fa = Q[:, :d]
    for theta in (1e-4, 3e-6, 1e-7, 1e-10):
        Fz = np.column_stack([np.cos(theta) * Q[:, 0] + np.sin(theta) * Q[:, 5], Q[:, 1]])
        g = T.geodesic(Fa, Fz)
        expect = theta if theta >= T.ANGLE_EPS else 0.0
        assert abs(g.tau[0] - expect) < 1e-14, (theta, g.tau)
        assert g.tau[1] == 0.0
        # dist keeps the true value even when the angle is treated as zero
        assert abs(g.dist - np.sqrt(2) * np.sin(theta)) < 1e-15
        assert orth_err(g.frame(0.5)) < 1e-14


def test_geodesic_tiny_angle_beside_a_shared_direction_stays_exact(rng):
    """Cosines 1 - theta^2/2 and 1 barely differ; pairing by cosines alone would leak ~1e-10 of
    the tiny angle into the shared direction (then dropped as < ANGLE_EPS), missing Fz's plane."""
    p = 15
    for _ in range(40):
        Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
        theta, big = 10 ** rng.uniform(-5.9, -4), rng.uniform(0.3, 1.5)
        Fa = Q[:, :3]
        Fz = np.column_stack([np.cos(theta) * Q[:, 0] + np.sin(theta) * Q[:, 5], Q[:, 1],
                              np.cos(big) * Q[:, 2] + np.sin(big) * Q[:, 6]]) @ random_rotation(3, rng)
        g = T.geodesic(Fa, Fz)
        assert np.abs(g.tau - [big, theta, 0.0]).max() < 1e-14
        assert np.abs(proj(g.frame(1.0)) - proj(Fz)).max() < 1e-13


def test_geodesic_orthogonal_planes(rng):
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    g = T.geodesic(Q[:, :3], Q[:, 3:])
    assert np.allclose(g.tau, np.pi / 2, atol=1e-15)
    check_geodesic(Q[:, :3], Q[:, 3:], g)


def test_geodesic_is_frozen_and_read_only(rng):
    g = T.geodesic(T.random_frame(5, 2, rng), T.random_frame(5, 2, rng))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.tau = np.zeros(2)
    with pytest.raises(ValueError):
        g.Ga[0, 0] = 1.0


def test_geodesic_rejects_bad_shapes(rng):
    F = T.random_frame(5, 2, rng)
    with pytest.raises(ValueError, match="geodesic: Fa"):
        T.geodesic(np.ones(5), F)
    with pytest.raises(ValueError, match="geodesic: Fz has shape"):
        T.geodesic(F, T.random_frame(6, 2, rng))
    with pytest.raises(ValueError, match="geodesic: Fz contains NaN"):
        T.geodesic(F, np.full((5, 2), np.inf))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(3, 64), d=st.integers(2, 3),
       f=st.floats(0.0, 1.0))
def test_geodesic_property_exact_ends_and_orthonormal(seed, p, d, f):
    rng = np.random.default_rng(seed)
    Fa, Fz = T.random_frame(p, d, rng), T.random_frame(p, d, rng)
    g = T.geodesic(Fa, Fz)
    assert np.abs(g.frame(0) - Fa).max() < 1e-12
    assert np.abs(proj(g.frame(1)) - proj(Fz)).max() < 1e-12
    assert orth_err(g.frame(f)) < 1e-12
    assert np.allclose(angles(Fa, g.frame(f)), f * g.tau, atol=1e-8)


# ------------------------------------------------------------------------------------ view path


def check_view(Fa, Fz, v):
    assert np.abs(v.frame(0.0) - Fa).max() < 1e-12
    assert np.abs(v.frame(1.0) - Fz).max() < 1e-12
    fs = np.linspace(0, 1, 201)
    frames = [v.frame(f) for f in fs]
    assert max(orth_err(F) for F in frames) < 1e-12
    # Lipschitz in f: ||dF/df||_F <= ||tau|| + ||spin||_F, so no jumps anywhere
    bound = (np.linalg.norm(v.tau) + np.linalg.norm(v.spin)) * (fs[1] - fs[0]) * (1 + 1e-9) + 1e-14
    assert max(np.linalg.norm(b - a) for a, b in zip(frames, frames[1:])) <= bound


@pytest.mark.parametrize("p,d", DIMS)
def test_view_path_ends_exactly_on_target(rng, p, d):
    Fa, Fz = T.random_frame(p, d, rng), T.random_frame(p, d, rng)
    if p == d and np.linalg.det(Fa.T @ Fz) < 0:  # a mirror image is unreachable when p == d
        Fz[:, 0] = -Fz[:, 0]
    v = T.view_path(Fa, Fz)
    check_view(Fa, Fz, v)
    if np.linalg.det(Fz.T @ T.geodesic(Fa, Fz).frame(1)) > 0:  # no reflection: the plane follows
        g = T.geodesic(Fa, Fz)  # the geodesic while the picture turns in its own plane
        for f in (0.2, 0.5, 0.9):
            assert np.abs(proj(v.frame(f)) - proj(g.frame(f))).max() < 1e-12


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("how", ["same", "rotated", "reflected", "opposite", "swapped", "shared"])
def test_view_path_degenerate_cases(rng, d, how):
    p = 7
    Fa = T.random_frame(p, d, rng)
    if how == "shared":  # one direction in common (reversed), the others orthogonal to Fa
        C = np.linalg.qr(Fa, mode="complete")[0][:, d:]
        Fz = np.column_stack([-Fa[:, 0], C[:, : d - 1]])
    else:
        W = {"same": np.eye(d), "rotated": random_rotation(d, rng, True),
             "reflected": random_rotation(d, rng, False), "opposite": -np.eye(d),
             "swapped": np.eye(d)[:, ::-1]}[how]
        Fz = Fa @ W
    v = T.view_path(Fa, Fz)
    check_view(Fa, Fz, v)
    if how == "same":
        assert all(np.abs(v.frame(f) - Fa).max() < 1e-14 for f in (0.3, 0.7))
    if how in ("rotated", "same") or (how == "opposite" and d == 2):
        # same plane, same handedness: the picture only turns in its plane
        assert all(np.abs(proj(v.frame(f)) - proj(Fa)).max() < 1e-12 for f in (0.3, 0.7))


def test_view_path_square_frames(rng):
    d = 3
    Fa = random_rotation(d, rng, True)
    Fz = Fa @ random_rotation(d, rng, True)
    check_view(Fa, Fz, T.view_path(Fa, Fz))
    with pytest.raises(ValueError, match="mirror image"):
        T.view_path(Fa, random_rotation(d, rng, False))
    with pytest.raises(ValueError, match="view_path: Fz has shape"):
        T.view_path(Fa, np.eye(4, 3))


def test_smoothstep():
    t = np.linspace(-0.5, 1.5, 401)
    s = T.smoothstep(t)
    assert T.smoothstep(0.0) == 0.0 and T.smoothstep(1.0) == 1.0 and T.smoothstep(0.5) == 0.5
    assert np.all(s[t <= 0] == 0) and np.all(s[t >= 1] == 1) and np.all(np.diff(s) >= 0)
    h = 1e-6
    assert abs(T.smoothstep(h) / h) < 1e-5 and abs((1 - T.smoothstep(1 - h)) / h) < 1e-5
    assert isinstance(T.smoothstep(0.25), float)


# ----------------------------------------------------------------------------------- Grand Tour


@pytest.mark.parametrize("p,d", [(3, 2), (15, 2), (15, 3), (64, 3)])
def test_tour_constant_angular_speed(rng, p, d):
    speed, dt = rng.uniform(1.0, 2.0), 1 / 60  # 600 steps cover 10-20 rad: several segments
    tour = T.GrandTour(p, d, seed=int(rng.integers(2**32)), speed=speed)
    prev, prev_seg = tour.frame.copy(), tour.segment.geodesic
    within = across = 0
    for _ in range(600):
        F = tour.step(dt)
        seg = tour.segment
        step = np.linalg.norm(angles(prev, F))
        assert np.abs(seg.geodesic.frame(seg.fraction) - F).max() < 1e-15
        if seg.geodesic is prev_seg:
            assert abs(step - speed * dt) < 1e-9 * speed * dt + 1e-12
            within += 1
        else:  # the step crossed to a new segment: two geodesic pieces, no jump
            assert step <= speed * dt * (1 + 1e-9)
            assert np.abs(seg.geodesic.frame(0) - prev_seg.frame(1)).max() < 1e-14
            across += 1
        prev, prev_seg = F.copy(), seg.geodesic
    assert within > 400 and across >= 1


@pytest.mark.parametrize("method,p,d", [("geodesic", 15, 2), ("torus", 6, 3)])
def test_tour_no_drift_over_200k_steps(rng, method, p, d):
    seed, n, dt = int(rng.integers(2**32)), 200_000, 1 / 60
    tour = T.GrandTour(p, d, seed=seed, speed=0.25, method=method)
    start = tour.frame.copy()
    for _ in range(n):
        F = tour.step(dt)
    assert orth_err(F) < 1e-12
    assert np.abs(F - start).max() > 0.1
    # stepping 200k times lands where one step of the same total time lands (same segments,
    # closed-form positions): only the rounding of the summed clock differs
    once = T.GrandTour(p, d, seed=seed, speed=0.25, method=method)
    assert np.abs(once.step(n * dt) - F).max() < 1e-6


def test_torus_moves_with_the_documented_rates_and_speed(rng):
    p, d = 6, 2
    tour = T.GrandTour(p, d, seed=int(rng.integers(2**32)), speed=1.0, method="torus")
    assert tour.segment is None
    rates = np.asarray(tour.state()["rates"])
    assert rates.shape == (p * (p - 1) // 2,)
    A = np.zeros((p, p))
    iu = np.triu_indices(p, 1)
    A[iu[1], iu[0]] = rates  # generator: sum of rate * (e_j e_i^T - e_i e_j^T), i < j
    A -= A.T
    h = 1e-7
    deriv = (tour.step(h) - np.eye(p, d)) / h  # d/dt of a product of Givens rotations at 0
    assert np.abs(deriv - A[:, :d]).max() < 1e-5
    # normalisation: exp(tA) moves a uniformly random plane at RMS Grassmann speed 1 (Monte Carlo)
    v2 = []
    for _ in range(4000):
        F = T.random_frame(p, d, rng)
        V = A @ F
        v2.append(np.sum((V - F @ (F.T @ V)) ** 2))
    assert abs(np.mean(v2) - 1.0) < 0.05
    # average Grassmann speed over a long run is near the nominal speed (no exact control)
    tour = T.GrandTour(15, 2, seed=int(rng.integers(2**32)), speed=1.0, method="torus")
    prev, total = tour.frame.copy(), 0.0
    for _ in range(2000):
        F = tour.step(0.05)
        total += np.linalg.norm(angles(prev, F))
        prev = F.copy()
    assert 0.5 < total / 100.0 < 1.5


@pytest.mark.parametrize("method", ["geodesic", "torus"])
def test_tour_state_round_trip_gives_identical_sequence(rng, method):
    tour = T.GrandTour(8, 3, seed=int(rng.integers(2**32)), speed=0.7, method=method)
    dts = rng.uniform(0, 0.2, 700)
    for dt in dts[:300]:
        tour.step(dt)
    tour.set_frame(T.random_frame(8, 3, rng))
    for dt in dts[300:400]:
        tour.step(dt)
    tour.pause()
    state = json.loads(json.dumps(tour.state()))
    copy = T.GrandTour.from_state(state)
    assert np.array_equal(copy.frame, tour.frame) and not copy.playing and copy.speed == 0.7
    copy.play()
    tour.play()
    for dt in dts[400:]:
        assert np.array_equal(copy.step(dt), tour.step(dt))
    assert np.array_equal(copy.rewind(30.0), tour.rewind(30.0))
    with pytest.raises(ValueError, match="from_state"):
        T.GrandTour.from_state({"format": "layertour-tour", "p": 8})
    with pytest.raises(ValueError, match="from_state"):
        T.GrandTour.from_state({"frame": []})


@pytest.mark.parametrize("method", ["geodesic", "torus"])
def test_tour_play_pause_speed_set_frame(rng, method):
    tour = T.GrandTour(10, 2, seed=int(rng.integers(2**32)), method=method)
    assert tour.playing and np.array_equal(tour.frame, np.eye(10, 2))
    moved = tour.step(0.5).copy()
    tour.pause()
    assert np.array_equal(tour.step(1.0), moved)
    tour.play()
    tour.speed = 0.0
    assert np.array_equal(tour.step(1.0), moved)
    tour.speed = 0.5
    F = T.random_frame(10, 2, rng)
    tour.set_frame(F)
    assert np.abs(tour.frame - F).max() < 1e-14
    G = tour.step(1 / 60)
    moved_by = np.linalg.norm(angles(F, G))
    if method == "geodesic":
        assert abs(moved_by - 0.5 / 60) < 1e-12
    else:  # the torus has no exact speed, but it moves on continuously from F
        assert 0 < moved_by < 10 * 0.5 / 60
    with pytest.raises(ValueError, match="speed"):
        tour.speed = -1
    with pytest.raises(ValueError, match="dt"):
        tour.step(-0.1)
    with pytest.raises(ValueError, match="set_frame: F has shape"):
        tour.set_frame(np.eye(9, 2))
    with pytest.raises(ValueError, match="read-only"):
        tour.frame[0, 0] = 2.0


@pytest.mark.parametrize("method", ["geodesic", "torus"])
def test_tour_rewind_retraces_the_path(rng, method):
    dt = 1 / 30
    tour = T.GrandTour(5, 2, seed=int(rng.integers(2**32)), speed=1.5, method=method)
    frames = [tour.frame.copy()]
    for k in range(400):
        if k == 200:
            tour.set_frame(T.random_frame(5, 2, rng))  # a handle drag: rewind jumps back over it
            frames.append(tour.frame.copy())
        frames.append(tour.step(dt).copy())
    back = 150
    assert np.abs(tour.rewind(back * dt) - frames[-1 - back]).max() < 1e-9
    assert np.abs(tour.rewind(10 * dt) - frames[-1 - back - 10]).max() < 1e-9
    assert np.abs(tour.rewind(1e6) - np.eye(5, 2)).max() < 1e-12  # stops at the oldest point
    assert np.abs(tour.step(dt) - frames[1]).max() < 1e-12  # plays the same path forward again
    with pytest.raises(ValueError, match="seconds"):
        tour.rewind(-1)


def test_tour_history_is_bounded(rng):
    tour = T.GrandTour(4, 2, seed=int(rng.integers(2**32)), speed=50.0)
    for _ in range(400):
        tour.step(0.1)
    assert len(tour.state()["history"]) == T.HISTORY_LIMIT
    oldest = tour.state()["history"][0]
    assert np.abs(tour.rewind(1e9) - np.asarray(oldest["start"])).max() < 1e-14


def test_tour_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p > d"):
        T.GrandTour(2, 2)
    with pytest.raises(ValueError, match="method"):
        T.GrandTour(5, 2, method="spiral")
    with pytest.raises(ValueError, match="d must be"):
        T.GrandTour(5, 0)


@pytest.mark.parametrize("p,d", [(5, 4), (9, 5), (6, 1)])
def test_geodesic_and_view_path_beyond_three_dimensions(rng, p, d):
    Fa, Fz = T.random_frame(p, d, rng), T.random_frame(p, d, rng)
    check_geodesic(Fa, Fz, T.geodesic(Fa, Fz))
    check_view(Fa, Fz, T.view_path(Fa, Fz))
    check_view(Fa, -Fa, T.view_path(Fa, -Fa))


def givens_product_columns(p, d, rates, clock):
    """Reference T(clock)[:, :d]: plain loops over the round-robin rounds (circle method), each
    Givens rotation R_ij(w t) acting on rows i < j as [[c, -s], [s, c]], rounds multiplied left to
    right. Rotations inside a round touch disjoint rows, so their order there does not matter."""
    n = p + p % 2
    ring = list(range(n))
    pair_rate = dict(zip(zip(*np.triu_indices(p, 1)), rates))
    T_ = np.eye(p)
    for _ in range(n - 1):
        Mr = np.eye(p)
        for k in range(n // 2):
            i, j = sorted((ring[k], ring[n - 1 - k]))
            if j < p:
                c, s = np.cos(pair_rate[(i, j)] * clock), np.sin(pair_rate[(i, j)] * clock)
                Mr[i, i], Mr[i, j], Mr[j, i], Mr[j, j] = c, -s, s, c
        T_ = T_ @ Mr
        ring = [ring[0], ring[-1], *ring[1:-1]]
    return T_[:, :d]


@pytest.mark.parametrize("p,d", [(3, 2), (6, 3), (15, 2), (17, 2), (18, 3), (40, 2)])
def test_torus_frame_is_the_givens_product(rng, p, d):
    """Both evaluation strategies (product tree up to p = 16, right-to-left beyond) against loops."""
    tour = T.GrandTour(p, d, seed=int(rng.integers(2**32)), speed=1.0, method="torus")
    rates = np.asarray(tour.state()["rates"])
    clock = 0.0
    for dt in rng.uniform(0, 30, 5):
        clock += dt
        F = tour.step(dt)
        assert np.abs(F - givens_product_columns(p, d, rates, clock)).max() < 1e-12
        assert orth_err(F) < 1e-13
