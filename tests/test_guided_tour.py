"""engine.tour.GuidedTour: it climbs to the pursuit's optimum along the grand tour's exact geodesics at
its speed, rests there, stays orthonormal, serialises, and hands frames to and from GrandTour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import pursuit as P
from engine import tour as T


def classes(rng, n=1500, p=8, k=4):
    labels = rng.integers(0, k, n)
    return rng.standard_normal((n, p)) + 2.0 * rng.standard_normal((k, p))[labels], labels


def run(tour, dt=0.1, limit=20000):
    """Step until the tour rests on its best view; the values at every piece end, and the frames."""
    ends, frames, last = [], [], tour.segment.geodesic
    for _ in range(limit):
        F = tour.step(dt)
        frames.append(F)
        if tour.segment.geodesic is not last:
            ends.append(tour.objective.value(tour.segment.geodesic.frame(0.0)))
            last = tour.segment.geodesic
        if tour.status == "finished":
            return ends, frames
    raise AssertionError(f"the guided tour did not finish in {limit} steps ({tour.status})")


def angle_between(A, B):
    s = np.clip(np.linalg.svd(A.T @ B, compute_uv=False), -1.0, 1.0)
    return float(np.linalg.norm(np.arccos(s)))


@pytest.mark.parametrize("index", ["lda", "pda"])
def test_guided_tour_climbs_to_the_closed_form_optimum_and_rests(rng, index):
    X, labels = classes(rng)
    tour = T.GuidedTour(8, 2, index=index, data=X, labels=labels, seed=int(rng.integers(1 << 30)))
    assert tour.status == "climbing" and tour.index == index
    v0 = tour.value
    ends, _ = run(tour)
    best = P.objective(index, X, labels).maximize(2).value
    assert tour.value == pytest.approx(best, rel=1e-9) and tour.value > v0
    assert tour.best[0] == pytest.approx(best, rel=1e-9)
    assert all(b >= a - 1e-9 for a, b in zip(ends, ends[1:])), ends  # each target is higher
    F = tour.frame
    assert tour.step(0.5) is F and tour.status == "finished"  # resting costs nothing


def test_guided_holes_on_sphered_data_matches_optimize(rng):
    p, n = 6, 2000
    plane = np.linalg.qr(rng.standard_normal((p, 2)))[0]
    t = rng.uniform(0, 2 * np.pi, n)
    X = rng.standard_normal((n, p))
    X += (np.c_[np.cos(t), np.sin(t)] * 2.0 - X @ plane) @ plane.T
    tour = T.GuidedTour(p, 2, index="holes", data=X, sphere=True, seed=5, max_tries=8)
    run(tour, dt=0.2)
    opt = P.objective("holes", X, sphere=True).maximize(2, restarts=6, seed=1).value
    assert tour.value >= opt - 1e-3


def test_guided_tour_moves_at_the_set_speed_along_exact_geodesics(rng):
    X, labels = classes(rng)
    tour = T.GuidedTour(8, 2, index="lda", data=X, labels=labels, speed=0.3, seed=1)
    prev, seg = tour.frame, tour.segment.geodesic
    checked = 0
    for _ in range(200):
        F = tour.step(0.05)
        if tour.segment.geodesic is seg and tour.status == "climbing":
            assert angle_between(prev, F) == pytest.approx(0.3 * 0.05, rel=1e-6)
            checked += 1
        prev, seg = F, tour.segment.geodesic
    assert checked > 50


def test_guided_tour_stays_orthonormal_over_1e5_steps(rng):
    X, labels = classes(rng, n=600, p=6)
    obj = P.objective("lda", X, labels)
    tour = T.GuidedTour(6, 2, index=obj, seed=3, speed=0.05, max_tries=2, restarts=0)
    worst, restarts = 0.0, 0
    for _ in range(100_000):
        F = tour.step(0.02)
        worst = max(worst, np.abs(F.T @ F - np.eye(2)).max())
        if tour.status == "finished":  # keep it moving: a drag elsewhere starts a new climb
            tour.set_frame(T.random_frame(6, 2, rng))
            restarts += 1
    assert worst < 1e-13 and restarts > 10


def test_state_round_trip_replays_the_same_frames(rng):
    X, labels = classes(rng)
    tour = T.GuidedTour(8, 2, index="purity", data=X, labels=labels, seed=11, sample=150, max_tries=3,
                        restarts=1)
    for _ in range(7):
        tour.step(0.3)
    state = json.loads(json.dumps(tour.state()))
    twin = T.GuidedTour.from_state(state, data=X, labels=labels)
    for _ in range(40):
        np.testing.assert_array_equal(tour.step(0.3), twin.step(0.3))
    assert twin.status == tour.status and twin.best[0] == tour.best[0]
    with pytest.raises(ValueError, match="differ"):
        T.GuidedTour.from_state(state, data=X + 1.0, labels=labels)
    with pytest.raises(ValueError, match="needs data"):
        T.GuidedTour.from_state(state)
    with pytest.raises(ValueError, match="not a guided tour state"):
        T.GuidedTour.from_state(T.GrandTour(8).state(), data=X, labels=labels)
    # a guided state still loads as a grand tour at the same point (no data needed)
    again = T.GuidedTour.from_state(state, data=X, labels=labels)
    np.testing.assert_array_equal(T.GrandTour.from_state(state).frame, again.frame)


def test_switching_between_grand_and_guided_keeps_the_frame(rng):
    X, labels = classes(rng)
    grand = T.GrandTour(8, 2, seed=4)
    for _ in range(30):
        grand.step(0.1)
    guided = T.GuidedTour(8, 2, index="lda", data=X, labels=labels, start=grand.frame)
    np.testing.assert_allclose(guided.frame, grand.frame, atol=1e-15)
    guided.step(0.5)
    back = T.GrandTour(8, 2, seed=5, start=guided.frame)
    np.testing.assert_allclose(back.frame, guided.frame, atol=1e-15)
    grand.set_frame(guided.frame)
    np.testing.assert_allclose(grand.frame, guided.frame, atol=1e-15)


def test_set_frame_and_rewind_restart_the_climb(rng):
    X, labels = classes(rng)
    tour = T.GuidedTour(8, 2, index="lda", data=X, labels=labels, seed=2)
    run(tour)
    top = tour.value
    F = T.random_frame(8, 2, rng)
    tour.set_frame(F)
    assert tour.status == "climbing" and tour.value < top
    run(tour)
    assert tour.value == pytest.approx(top, rel=1e-9)
    tour.rewind(2.0)
    assert tour.status == "climbing"
    run(tour)
    assert tour.value == pytest.approx(top, rel=1e-9)


def test_set_frame_plans_nothing_until_the_tour_moves(rng):
    """A handle drag sets a frame per mouse move with the tour paused: no climb may run then."""
    X, labels = classes(rng)
    obj = P.objective("lda", X, labels)
    climbs = []
    real = obj.climb
    obj.climb = lambda F, **kw: climbs.append(1) or real(F, **kw)
    tour = T.GuidedTour(8, 2, index=obj, seed=2)
    climbs.clear()
    tour.pause()
    for _ in range(20):
        F = T.random_frame(8, 2, rng)
        tour.set_frame(F)
        np.testing.assert_allclose(tour.frame, F, atol=1e-15)
        assert tour.status == "climbing" and tour.step(0.1) is tour.frame
    assert climbs == []
    tour.play()
    tour.step(0.05)
    assert climbs and tour.value > obj.value(F)


def test_a_short_climb_per_step_still_reaches_the_top(rng):
    """climb=5: no step runs more than 5 CG iterations of ascent, and the tour climbs on, piece by
    piece, to the same optimum (a viewer's frames stay short)."""
    X, labels = classes(rng)
    obj = P.objective("lda", X, labels)
    asked = []
    real = obj.climb
    obj.climb = lambda F, maxiter=200, **kw: asked.append(maxiter) or real(F, maxiter=maxiter, **kw)
    tour = T.GuidedTour(8, 2, index=obj, seed=4, climb=5, polish=7)
    run(tour)
    assert asked and max(asked) <= 7 and asked.count(5) >= 2  # several short climbs in a row
    assert tour.value == pytest.approx(obj.maximize(2).value, rel=1e-9)
    state = json.loads(json.dumps(tour.state()))
    assert state["guided"]["options"]["climb"] == 5
    del state["guided"]["options"]["climb"]  # a state saved before the option existed
    assert T.GuidedTour.from_state(state, objective=obj)._opts["climb"] == 200


def test_guided_tour_rejects_bad_arguments(rng):
    X, labels = classes(rng, p=5)
    with pytest.raises(ValueError, match="needs data"):
        T.GuidedTour(5, 2, index="lda")
    with pytest.raises(ValueError, match="5 columns but p = 6"):
        T.GuidedTour(6, 2, index="holes", data=X)
    with pytest.raises(ValueError, match="cooling"):
        T.GuidedTour(5, 2, index="holes", data=X, cooling=1.5)
    with pytest.raises(ValueError, match="either an Objective"):
        T.GuidedTour(5, 2, index=P.objective("holes", X), data=X)
    with pytest.raises(ValueError, match="start has shape"):
        T.GuidedTour(5, 2, index="holes", data=X, start=np.eye(4, 2))
    with pytest.raises(ValueError, match="dt must be"):
        T.GuidedTour(5, 2, index="lda", data=X, labels=labels).step(-1.0)
