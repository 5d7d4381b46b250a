"""engine.pursuit: index values against tourr's own (fixtures made by running tourr 1.2.9, see
tests/assets/tourr/make_reference.py) and against hand computations, invariants, gradients, the
optimiser on planted structure and on the study data, and NumPy/CuPy agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg as sl

from engine import pursuit as P

REF = json.loads((Path(__file__).parent / "assets" / "tourr" / "reference.json").read_text())


def close(ours, tourr, rel=1e-10, abs_=1e-12):
    """Floating-point agreement: tourr prints 17 digits; 1 - ratio cancels for indices near 0."""
    return abs(ours - tourr) <= abs_ + rel * abs(tourr)


def frame(p, d, rng):
    return np.linalg.qr(rng.standard_normal((p, d)))[0]


def rotation(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


def blobs(rng, n=600, p=6, k=4, shift=2.0):
    labels = rng.integers(0, k, n)
    X = rng.standard_normal((n, p)) + shift * rng.standard_normal((k, p))[labels]
    return X, labels


def study_layer(study_data, layer=None):
    layer = layer or REF["input"]["study"]["layer"]
    X = np.fromfile(study_data / "googlenet" / f"{layer}.bin", dtype="<f4").reshape(-1, 15)
    labels = np.fromfile(study_data / "googlenet" / "labels-coarse.bin", dtype="<u2")
    return X, labels


# ------------------------------------------------------------------------------- vs tourr


@pytest.mark.parametrize("case", REF["indices"], ids=lambda c: c["name"])
def test_indices_agree_with_tourr(case):
    inp = next(c for c in REF["input"]["indices"] if c["name"] == case["name"])
    Y = np.array(inp["Y"], dtype=np.float64).reshape(len(inp["labels"]), -1)
    labels = np.array(inp["labels"])
    assert close(P.holes(Y), case["holes"]) and close(P.cmass(Y), case["cmass"])
    assert close(P.lda(Y, labels), case["lda"])
    for lam, ref in zip(REF["input"]["lambdas"], case["pda"]):
        assert close(P.pda(Y, labels, lam), ref), (lam, P.pda(Y, labels, lam), ref)
    if Y.shape[1] == 1:  # tourr's d = 1 value is the F statistic; ours stays 1 - SSW/SST
        k, n = len(set(inp["labels"])), len(labels)
        eta = case["lda"]
        assert close(eta / (k - 1) / ((1 - eta) / (n - k)), case["lda_tourr_F"], rel=1e-9)


def test_tourr_zero_variance_case_is_reproduced():
    case = next(c for c in REF["indices"] if c["name"] == "tiny_scale_zero_variance_d2")
    assert case["pda"][0] == 0.0  # tourr prints "ZERO VARIANCE!" and returns 0
    inp = next(c for c in REF["input"]["indices"] if c["name"] == case["name"])
    assert P.pda(np.array(inp["Y"]), np.array(inp["labels"]), 0.0) == 0.0


def test_indices_agree_with_tourr_on_study_frames(study_data):
    X, labels = study_layer(study_data)
    X = X.astype(np.float64)
    Xs = (X - X.mean(0)) / X.std(0, ddof=1)  # R's scale()
    for F, ref in zip(REF["input"]["study"]["frames"], REF["frames"]):
        F = np.array(F)
        assert close(P.lda(X @ F, labels), ref["lda"], rel=1e-11)
        assert close(P.pda(X @ F, labels, 0.2), ref["pda"], rel=1e-11)
        assert close(P.holes(Xs @ F), ref["holes_scaled"], rel=1e-11)
        assert close(P.cmass(Xs @ F), ref["cmass_scaled"], rel=1e-11)
        # the O(p^2 d) path from the p x p scatter gives the same values as the O(N) one
        assert close(P.objective("lda", X, labels).value(F), ref["lda"], rel=1e-11)
        assert close(P.objective("pda", X, labels, lam=0.2).value(F), ref["pda"], rel=1e-11)


def test_optimize_beats_tourrs_guided_tour_on_the_study_data(study_data):
    X, labels = study_layer(study_data)
    g, st = REF["guided"], REF["input"]["study"]
    ls, ps = slice(0, None, st["lda_stride"]), slice(0, None, st["pda_stride"])  # R rows 1, 1 + k, ...
    lda = P.objective("lda", X[ls], labels[ls])
    assert lda.maximize(2).value >= max(r["value"] for r in g["lda_subsample"])
    pda = P.objective("pda", X[ps], labels[ps], lam=0.2)
    assert pda.maximize(2).value >= max(r["value"] for r in g["pda_subsample"])
    holes = P.objective("holes", X, sphere=True)
    assert holes.maximize(2, restarts=2, seed=1).value >= max(r["value"] for r in g["holes_sphered"])
    # tourr's final frames, scored by us, give tourr's values (same index, same data)
    for r in g["lda_subsample"]:
        assert close(lda.value(np.array(r["frame"])), r["value"], rel=1e-9)
    for r in g["pda_subsample"]:
        assert close(pda.value(np.array(r["frame"])), r["value"], rel=1e-9)


# ------------------------------------------------------------------------ hand-computed values


def test_hand_computed_values():
    Y = np.array([[0.0, 0.0], [1.0, 0.0]])
    holes = (1 - (1 + np.exp(-0.5)) / 2) / (1 - np.exp(-1.0))
    assert P.holes(Y) == pytest.approx(holes, rel=1e-15) and P.cmass(Y) == pytest.approx(1 - holes, rel=1e-15)
    # 1-D, classes {0, 1} and {3, 4}: W = 4 * 0.25 = 1, SST = 4 + 1 + 1 + 4 = 10
    y, lab = np.array([[0.0], [1.0], [3.0], [4.0]]), np.array(["a", "a", "b", "b"])
    assert P.lda(y, lab) == pytest.approx(0.9, rel=1e-15)
    # pda: (1-lam) W + lam n = 0.8 + 0.8, (1-lam) T + lam n = 8 + 0.8
    assert P.pda(y, lab, 0.2) == pytest.approx(1 - 1.6 / 8.8, rel=1e-15)
    # 2-D: classes separated along x only, spread along y -> W = diag(1, 8), B = diag(9, 0)
    Y = np.array([[0, -1], [0, 1], [2, -1], [2, 1], [3, -1], [3, 1], [5, -1], [5, 1]], dtype=float)
    lab = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    W = np.diag([8.0, 8.0])  # class means (1, 0) and (4, 0): 4 squared x-gaps of 1 per class, y = +-1
    B = np.diag([8 * 1.5**2, 0.0])  # both means 1.5 from (2.5, 0), 4 points each
    assert P.lda(Y, lab) == pytest.approx(1 - np.linalg.det(W) / np.linalg.det(W + B), rel=1e-14)
    S = P.class_scatter(Y, lab)
    np.testing.assert_allclose(S.W, W, atol=1e-13)
    np.testing.assert_allclose(S.B, B, atol=1e-13)
    np.testing.assert_array_equal(S.counts, [4, 4])


def test_purity_hand_computed():
    # two tight pairs far apart: every neighbour weight sits on the point's own class
    Y = np.array([[0.0, 0.0], [0.0, 1e-3], [10.0, 0.0], [10.0, 1e-3]])
    assert P.purity(Y, [0, 0, 1, 1]) == pytest.approx(1.0, abs=1e-12)
    assert P.purity(Y, [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # three points on a line, equal gaps g; sigma = bandwidth * s; point 0's weights e^{-g^2/2s^2}, e^{-4..}
    Y = np.array([[0.0], [1.0], [2.0]])
    s2 = np.var(Y)
    w1, w2 = np.exp(-1 / (2 * 0.5**2 * s2)), np.exp(-4 / (2 * 0.5**2 * s2))
    want = (w1 / (w1 + w2) + 0.5 + 0.0) / 3  # labels a, a, b: P0 = w1/(w1+w2), P1 = 1/2, P2 = 0
    assert P.purity(Y, ["a", "a", "b"], bandwidth=0.5) == pytest.approx(want, rel=1e-13)


# --------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("d", [1, 2, 3])
def test_indices_invariant_to_rotation_within_the_plane(rng, d):
    X, labels = blobs(rng)
    F = frame(X.shape[1], d, rng)
    Q = rotation(d, rng)
    for f in (P.holes, P.cmass):
        assert f(X @ F @ Q) == pytest.approx(f(X @ F), rel=1e-12)
    for f in (P.lda, P.pda, P.purity):
        assert f(X @ F @ Q, labels) == pytest.approx(f(X @ F, labels), rel=1e-11)
    for name in P.INDICES:
        obj = P.objective(name, X, labels)
        assert obj.value(F @ Q) == pytest.approx(obj.value(F), rel=1e-11)


def test_pda_at_lambda_zero_is_lda_and_relabelling_changes_nothing(rng):
    X, labels = blobs(rng, k=5)
    Y = X @ frame(X.shape[1], 2, rng)
    assert P.pda(Y, labels, 0.0) == pytest.approx(P.lda(Y, labels), rel=1e-12)
    names = np.array(["cat", "dog", "eel", "fox", "gnu"])[rng.permutation(5)][labels]  # strings, permuted
    shifted = labels * 7 + 100
    for f in (P.lda, P.pda, P.purity):
        assert f(Y, names) == pytest.approx(f(Y, labels), rel=1e-12)
        assert f(Y, shifted) == pytest.approx(f(Y, labels), rel=1e-12)
    for name in ("lda", "pda", "purity"):
        F = frame(X.shape[1], 2, rng)
        assert P.objective(name, X, names).value(F) == pytest.approx(P.objective(name, X, labels).value(F))


def test_scatter_objective_is_the_objective_without_another_pass(rng):
    X, labels = blobs(rng, k=5)
    S = P.class_scatter(X, labels)
    F = frame(X.shape[1], 2, rng)
    for name, kw in (("lda", {}), ("pda", {"lam": 0.3}), ("lda", {"sphere": True})):
        ours, ref = P.scatter_objective(name, S, **kw), P.objective(name, X, labels, **kw)
        assert ours.spec == ref.spec and ours.fingerprint == ref.fingerprint
        assert ours.value(F) == pytest.approx(ref.value(F), rel=1e-12)
        assert ours.maximize(2).value == pytest.approx(ref.maximize(2).value, rel=1e-12)
    with pytest.raises(ValueError, match="'lda' or 'pda'"):
        P.scatter_objective("holes", S)
    with pytest.raises(ValueError, match="at least two classes"):
        P.scatter_objective("lda", P.class_scatter(X))


def test_class_scatter_chunks_float32_and_total(rng, monkeypatch, tmp_path):
    X, labels = blobs(rng, n=1000, p=5, k=3)
    whole = P.class_scatter(X, labels)

    def close(a, b):
        """Equal to rounding: a chunked sum reorders the additions, so an entry near 0 (an
        off-diagonal term) carries the rounding of the matrix's largest terms, not its own."""
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13 * np.abs(b).max())

    monkeypatch.setattr(P, "ROW_CHUNK", 77)
    chunked = P.class_scatter(X, labels)
    close(chunked.W, whole.W)
    close(chunked.B, whole.B)
    Xc = X - X.mean(0)
    close(whole.T, Xc.T @ Xc)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    f32 = P.class_scatter(np.load(tmp_path / "x.npy", mmap_mode="r"), labels)
    close(f32.W, P.class_scatter(X.astype(np.float32).astype(np.float64), labels).W)


@pytest.mark.parametrize("name,sphere", [(n, s) for n in P.INDICES for s in (False, True)])
def test_gradients_match_finite_differences(rng, name, sphere):
    X, labels = blobs(rng, n=400, p=6)
    obj = P.objective(name, X + 0.5, labels, sphere=sphere, **({"sample": 300} if name == "purity" else {}))
    G = frame(6, 2, rng)
    v, E = obj._value_grad(G)
    assert v == pytest.approx(obj._value(G), rel=1e-14)
    H = rng.standard_normal((6, 2))
    H -= G @ (G.T @ H)
    h = 1e-6
    fd = (obj._value(G + h * H) - obj._value(G - h * H)) / (2 * h)
    assert np.sum(E * H) == pytest.approx(fd, rel=1e-5, abs=1e-9)


# ---------------------------------------------------------------------------------- optimiser


def gen_eig_optimum(X, labels, d, lam=0.0):
    """Independent reference: 1 - prod 1/(1 + mu_i) over the d leading eigenvalues of the pencil."""
    m = X.mean(0)
    parts = [X[labels == c] for c in np.unique(labels)]
    W = sum((A - A.mean(0)).T @ (A - A.mean(0)) for A in parts)
    B = sum(len(A) * np.outer(A.mean(0) - m, A.mean(0) - m) for A in parts)
    Wp = (1 - lam) * W + lam * len(X) * np.eye(X.shape[1])
    mu = sl.eigh((1 - lam) * B, Wp, eigvals_only=True)[::-1][:d]
    return 1.0 - np.prod(1.0 / (1.0 + mu))


@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_lda_pda_closed_form_and_gradient_ascent_reach_the_optimum(rng, lam):
    X, labels = blobs(rng, n=800, p=7, k=5)
    name = "pda" if lam else "lda"
    obj = P.objective(name, X, labels, lam=lam)
    best = gen_eig_optimum(X, labels, 2, lam)
    cf = obj.maximize(2)
    assert cf.method == "closed form" and cf.value == pytest.approx(best, rel=1e-12)
    assert np.allclose(cf.frame.T @ cf.frame, np.eye(2), atol=1e-12)
    cg = obj.maximize(2, closed_form=False, restarts=3, seed=rng.integers(1 << 30))
    assert cg.method == "conjugate gradient" and cg.value >= best * (1 - 1e-8)  # far inside 0.5 %
    assert cg.value <= best * (1 + 1e-12)
    F = P.optimize(X, name, labels=labels, lam=lam)
    assert obj.value(F) == pytest.approx(best, rel=1e-12)


def test_lda_with_fewer_classes_than_view_axes_fills_with_spread(rng):
    X, labels = blobs(rng, n=500, p=5, k=2)
    F = P.lda_frame(X, labels, 3)
    assert np.allclose(F.T @ F, np.eye(3), atol=1e-12)
    assert P.lda(X @ F, labels) == pytest.approx(gen_eig_optimum(X, labels, 1), rel=1e-10)


def planted(rng, p=15, n=3000, noise=0.3):
    """Four classes at the corners of a square in a hidden 2-plane of R^p; isotropic noise elsewhere."""
    plane = frame(p, 2, rng)
    labels = rng.integers(0, 4, n)
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float) * 1.5
    X = rng.standard_normal((n, p)) * 1.0 + (corners[labels] + noise * rng.standard_normal((n, 2))) @ plane.T
    return X, labels, plane


def plane_gap(A, B):
    return np.linalg.norm(A @ A.T - B @ B.T) / np.sqrt(2)


@pytest.mark.parametrize("name", ["lda", "pda"])
def test_optimize_recovers_a_planted_plane(rng, name):
    X, labels, plane = planted(rng)
    F = P.optimize(X, name, labels=labels, seed=3)
    assert plane_gap(F, plane) < 0.15, plane_gap(F, plane)


def test_purity_optimum_separates_the_planted_classes_at_least_as_well_as_the_plane(rng):
    # purity rewards any view whose neighbours share a class, and on a 400-row sample in 15-D some
    # tilt of the plane always scores a little higher: the test asks for a view at least as good as
    # the plane on the sample that still separates the classes of all rows (held-out LDA)
    X, labels, plane = planted(rng, n=1200)
    obj = P.objective("purity", X, labels, sample=400, seed=1)
    F = obj.maximize(2, restarts=2, seed=3, start=None).frame
    assert obj.value(F) >= obj.value(plane) - 1e-9
    assert P.lda(X @ F, labels) > 0.8 * P.lda(X @ plane, labels)


def test_optimize_holes_finds_a_planted_ring(rng):
    p, n = 8, 4000
    plane = frame(p, 2, rng)
    t = rng.uniform(0, 2 * np.pi, n)
    ring = np.c_[np.cos(t), np.sin(t)] * (2 + 0.1 * rng.standard_normal(n))[:, None]
    N = rng.standard_normal((n, p))
    X = N - (N @ plane) @ plane.T + ring @ plane.T  # the ring alone in the plane, Gaussian elsewhere
    F = P.optimize(X, "holes", sphere=True, seed=2, restarts=6)
    assert plane_gap(F, plane) < 0.1
    obj = P.objective("holes", X, sphere=True)
    # as good as the planted plane, and far above a typical view (the median of 20 random frames:
    # one random frame can catch part of the ring and score 0.92)
    typical = np.median([obj.value(frame(p, 2, rng)) for _ in range(20)])
    assert obj.value(F) >= obj.value(plane) - 1e-3 and obj.value(F) > typical + 0.1


def test_sampled_search_is_polished_on_all_rows(rng, monkeypatch):
    monkeypatch.setattr(P, "SEARCH_SAMPLE", 500)
    X, _, plane = planted(rng, p=6, n=3000)
    F = P.optimize(X, "cmass", seed=0, restarts=2, polish=200)
    full = P.objective("cmass", X)
    local = full.climb(F, maxiter=50)
    assert full.value(local[-1]) - full.value(F) < 1e-7  # the polish ended on the full data's top
    raw = P.objective("cmass", X).subsample(500).maximize(2, seed=0, restarts=2).frame
    assert full.value(F) > full.value(raw)  # ... which the 500-row search alone had missed


def test_selection_view_separates_and_points_right(rng):
    X, labels = blobs(rng, n=800, p=6, k=3, shift=3.0)
    mask = labels == 1
    F = P.selection_view(X, mask)
    assert np.allclose(F.T @ F, np.eye(2), atol=1e-12)
    Y = X @ F
    assert Y[mask, 0].mean() > Y[~mask, 0].mean()
    assert P.lda(Y, mask) == pytest.approx(gen_eig_optimum(X, mask, 1), rel=1e-10)
    with pytest.raises(ValueError, match="selects 0 of 800"):
        P.selection_view(X, np.zeros(800, bool))
    with pytest.raises(ValueError, match="boolean"):
        P.selection_view(X, labels)


def test_errors_name_the_problem(rng):
    X, labels = blobs(rng, n=50, p=4)
    with pytest.raises(ValueError, match="unknown index 'nope'"):
        P.objective("nope", X)
    with pytest.raises(ValueError, match=r"labels must have shape \(50,\)"):
        P.lda(X[:, :2], labels[:10])
    with pytest.raises(ValueError, match="at least two classes"):
        P.lda(X[:, :2], np.zeros(50))
    with pytest.raises(ValueError, match="needs class labels"):
        P.objective("lda", X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        P.objective("lda", bad, labels)
    with pytest.raises(ValueError, match="NaN"):
        P.objective("holes", bad)
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        P.pda(X[:, :2], labels, 1.5)
    with pytest.raises(ValueError, match="sample must be an integer in"):
        P.purity(X[:, :2], labels, sample=10**6)
    with pytest.raises(TypeError, match="unknown option.*restart"):
        P.optimize(X, "holes", restart=3)
    with pytest.raises(ValueError, match="1 <= d < p"):
        P.objective("holes", X).maximize(4)
    with pytest.raises(ValueError, match="no total scatter"):
        P.lda(np.ones((6, 2)), [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="full rank"):
        P.objective("holes", np.c_[X[:, :3], X[:, 0]], sphere=True)


# ----------------------------------------------------------------------------- NumPy and CuPy


def test_indices_agree_on_numpy_and_cupy(xp, rng):
    X, labels = blobs(rng, n=700, p=6)
    F = frame(6, 2, rng)
    Xd, Ld = xp.asarray(X), xp.asarray(labels)
    Y, Yd = X @ F, Xd @ xp.asarray(F)
    for f in (P.holes, P.cmass):
        assert f(Yd) == pytest.approx(f(Y), rel=1e-12)
    for f in (P.lda, P.pda, P.purity):
        assert f(Yd, Ld) == pytest.approx(f(Y, labels), rel=1e-11)
    for name in P.INDICES:
        host, dev = P.objective(name, X, labels), P.objective(name, Xd, Ld)
        vh, gh = host._value_grad(F)
        vd, gd = dev._value_grad(F)
        assert isinstance(gd, np.ndarray)  # only the p x d gradient crosses to the host
        assert vd == pytest.approx(vh, rel=1e-11)
        np.testing.assert_allclose(gd, gh, rtol=1e-9, atol=1e-12)
    Sd, Sh = P.class_scatter(Xd.astype(xp.float32), Ld), P.class_scatter(X.astype(np.float32), labels)
    np.testing.assert_allclose(Sd.W, Sh.W, rtol=1e-10)
    np.testing.assert_allclose(P.selection_view(Xd, Ld == 1), P.selection_view(X, labels == 1), atol=1e-9)
