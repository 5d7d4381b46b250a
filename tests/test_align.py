"""engine.align: Procrustes, canonical frame, similarity, movement, export.

References are independent float64 NumPy/SciPy computations (scipy.linalg.orthogonal_procrustes,
the cosine after optimal alignment); every numeric case runs on NumPy and, where a GPU exists, on
CuPy through the ``xp`` fixture.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.linalg import expm, orthogonal_procrustes

import engine.align as align
import engine.export as export
from engine.align import (
    Alignment,
    canonical_alignment,
    center,
    consecutive_similarity,
    cross_model_rotation,
    movement,
    procrustes,
    similarity,
    similarity_matrix,
)
from engine.device import is_cupy_array, to_host

P = 15


def orthogonal(rng, p=P, det=1.0):
    """Haar-random orthogonal (p, p) float64 with the requested determinant sign."""
    Q, R = np.linalg.qr(rng.standard_normal((p, p)))
    Q = Q * np.sign(np.diag(R))
    if np.sign(np.linalg.det(Q)) != det:
        Q[:, 0] = -Q[:, 0]
    return Q


def cloud(rng, n=600, p=P, dtype=np.float64):
    """Anisotropic, off-centre random cloud (distinct singular values, like a UMAP embedding)."""
    scales = np.linspace(3.0, 0.3, p)
    return (rng.standard_normal((n, p)) * scales + rng.uniform(-5, 5, p)).astype(dtype)


def same_type(result, xp):
    assert (xp is not np) == is_cupy_array(result)


def ref_similarity(A, B):
    """Cosine of the centred embeddings after the best orthogonal alignment (float64, SciPy)."""
    A = np.asarray(A, np.float64) - np.asarray(A, np.float64).mean(0)
    B = np.asarray(B, np.float64) - np.asarray(B, np.float64).mean(0)
    p = max(A.shape[1], B.shape[1])
    A = np.pad(A, ((0, 0), (0, p - A.shape[1])))
    B = np.pad(B, ((0, 0), (0, p - B.shape[1])))
    Q, _ = orthogonal_procrustes(A, B)
    return float(np.sum((A @ Q) * B) / (np.linalg.norm(A) * np.linalg.norm(B)))


# ---------------------------------------------------------------------------------------- procrustes


@pytest.mark.parametrize("det", [1.0, -1.0], ids=["rotation", "reflection"])
def test_procrustes_recovers_known_orthogonal_map(xp, rng, det):
    A = cloud(rng)
    R = orthogonal(rng, det=det)
    B = A @ R + 1e-3 * rng.standard_normal(A.shape)
    Q = procrustes(xp.asarray(A), xp.asarray(B))
    same_type(Q, xp)
    Q = to_host(Q)
    assert Q.dtype == np.float64 and Q.shape == (P, P)
    np.testing.assert_allclose(Q.T @ Q, np.eye(P), atol=1e-12)
    np.testing.assert_allclose(Q, R, atol=1e-3)
    assert np.sign(np.linalg.det(Q)) == det
    np.testing.assert_allclose(Q, orthogonal_procrustes(A, B)[0], atol=1e-10)


def test_procrustes_rotation_only_gives_best_proper_rotation(xp, rng):
    A = cloud(rng)
    B = A @ orthogonal(rng, det=-1.0) + 0.05 * rng.standard_normal(A.shape)
    Qf = to_host(procrustes(xp.asarray(A), xp.asarray(B)))
    Qr = to_host(procrustes(xp.asarray(A), xp.asarray(B), rotation_only=True))
    assert np.linalg.det(Qr) == pytest.approx(1.0)
    np.testing.assert_allclose(Qr.T @ Qr, np.eye(P), atol=1e-12)
    res_f, res_r = np.linalg.norm(A @ Qf - B), np.linalg.norm(A @ Qr - B)
    assert res_f < res_r
    # No random proper rotation near Qr does better (local optimality).
    for _ in range(20):
        K = rng.standard_normal((P, P)) * 1e-3
        step = expm(K - K.T)  # a proper rotation close to the identity
        assert np.linalg.norm(A @ (Qr @ step) - B) >= res_r - 1e-9


def test_procrustes_float32_memmap(tmp_path, rng):
    A = cloud(rng, dtype=np.float32)
    R = orthogonal(rng)
    path = tmp_path / "a.npy"
    np.save(path, A)
    Am = np.load(path, mmap_mode="r")
    Q = procrustes(Am, (A.astype(np.float64) @ R).astype(np.float32))
    assert isinstance(Q, np.ndarray) and Q.dtype == np.float64
    np.testing.assert_allclose(Q, R, atol=1e-5)


def test_procrustes_bad_input_names_argument(rng):
    A = cloud(rng)
    with pytest.raises(ValueError, match="A has 600 rows but B has 599"):
        procrustes(A, A[:-1])
    with pytest.raises(ValueError, match="same p"):
        procrustes(A, A[:, :5])
    with pytest.raises(ValueError, match="A must be a 2-D"):
        procrustes(A[0], A)
    bad = A.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        procrustes(bad, A)


# ------------------------------------------------------------------------------- canonical alignment


def test_center(xp, rng):
    A = cloud(rng, dtype=np.float32)
    Ac, mu = center(xp.asarray(A))
    same_type(Ac, xp)
    assert Ac.dtype == np.float32 and mu.dtype == np.float64
    np.testing.assert_allclose(to_host(mu), A.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(to_host(Ac).mean(0), 0.0, atol=1e-5)


def test_canonical_alignment_makes_rotated_shifted_copy_identical(xp, rng):
    E0 = cloud(rng)
    E1 = E0 @ orthogonal(rng, det=-1.0) + rng.uniform(-10, 10, P)
    E2 = cloud(rng)  # unrelated layer: still gets an orthogonal rotation
    als = canonical_alignment([xp.asarray(E) for E in (E0, E1, E2)])
    assert len(als) == 3 and all(isinstance(a, Alignment) for a in als)
    for a, E in zip(als, (E0, E1, E2)):
        same_type(a.rotation, xp)
        R, c = to_host(a.rotation), to_host(a.center)
        np.testing.assert_allclose(R.T @ R, np.eye(P), atol=1e-12)
        np.testing.assert_allclose(c, E.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(to_host(als[0].rotation), np.eye(P))
    aligned = [to_host(a.apply(xp.asarray(E))) for a, E in zip(als, (E0, E1, E2))]
    np.testing.assert_allclose(aligned[1], aligned[0], atol=1e-5)
    np.testing.assert_allclose(aligned[0], E0 - E0.mean(0), atol=1e-12)
    assert als[0].residual == 0.0 and als[1].residual < 1e-12 and als[2].residual > 0.5


def test_canonical_alignment_chains_onto_aligned_predecessor(rng):
    base = cloud(rng)
    layers = [base]
    for _ in range(4):  # each layer: the previous one, rotated, shifted and deformed a little
        layers.append(layers[-1] @ orthogonal(rng) + rng.uniform(-3, 3, P)
                      + 0.3 * rng.standard_normal(base.shape))
    als = canonical_alignment(layers)
    prev = layers[0] - layers[0].mean(0)
    for k in range(1, len(layers)):
        Ec = layers[k] - layers[k].mean(0)
        Q_ref, _ = orthogonal_procrustes(Ec, prev)
        np.testing.assert_allclose(als[k].rotation, Q_ref, atol=1e-9)
        s = ref_similarity(layers[k], layers[k - 1])
        assert als[k].residual == pytest.approx(2 * (1 - s), abs=1e-9)
        prev = Ec @ Q_ref
    # chain=False rotates every layer straight onto layer 0.
    direct = canonical_alignment(layers, chain=False)
    for k in range(1, len(layers)):
        Q_ref, _ = orthogonal_procrustes(layers[k] - layers[k].mean(0), layers[0] - layers[0].mean(0))
        np.testing.assert_allclose(direct[k].rotation, Q_ref, atol=1e-9)


def test_canonical_alignment_accepts_generator_and_callable(rng):
    layers = [cloud(rng, n=300) for _ in range(4)]
    ref = canonical_alignment(layers)
    seen = []

    def gen():
        for L in layers:
            seen.append(1)
            yield L

    for got in (canonical_alignment(gen()), canonical_alignment(gen)):
        assert len(got) == 4
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a.rotation, b.rotation)
            assert a.residual == b.residual
    assert len(seen) == 8


def test_canonical_alignment_errors(rng):
    with pytest.raises(ValueError, match="empty"):
        canonical_alignment([])
    with pytest.raises(ValueError, match=r"embeddings\[1\]"):
        canonical_alignment([cloud(rng, n=100), cloud(rng, n=90)])
    with pytest.raises(TypeError, match="sequence of"):
        canonical_alignment(5)


def test_cross_model_rotation_expresses_b_in_a_frame(xp, rng):
    model_a = [cloud(rng, n=400) for _ in range(3)]
    R_b, t_b = orthogonal(rng, det=-1.0), rng.uniform(-4, 4, P)
    model_b = [L @ R_b + t_b for L in model_a]  # same points, another frame
    al_a = canonical_alignment([xp.asarray(L) for L in model_a])
    al_b = canonical_alignment([xp.asarray(L) for L in model_b])
    ref_a = al_a[0].apply(xp.asarray(model_a[0]))
    ref_b = al_b[0].apply(xp.asarray(model_b[0]))
    Q = cross_model_rotation(ref_a, ref_b)
    same_type(Q, xp)
    for k in range(3):
        rot = to_host(al_b[k].rotation) @ to_host(Q)  # rotation_b' = rotation_b @ Q
        in_a = (model_b[k] - to_host(al_b[k].center)) @ rot
        np.testing.assert_allclose(in_a, to_host(al_a[k].apply(xp.asarray(model_a[k]))), atol=1e-9)


# ------------------------------------------------------------------------------------------ similarity


def test_similarity_of_rotated_copy_is_one(xp, rng):
    A = cloud(rng)
    B = A @ orthogonal(rng, det=-1.0)
    assert similarity(xp.asarray(A), xp.asarray(B)) == pytest.approx(1.0, abs=1e-12)


def test_similarity_matches_reference_symmetric_and_invariant(xp, rng):
    A = cloud(rng)
    B = A[:, ::-1] ** 2 * 0.1 + 0.5 * cloud(rng)  # related but not rigidly
    s = similarity(xp.asarray(A), xp.asarray(B))
    assert isinstance(s, float) and 0.0 < s < 1.0
    assert s == pytest.approx(ref_similarity(A, B), abs=1e-12)
    assert similarity(xp.asarray(B), xp.asarray(A)) == pytest.approx(s, abs=1e-13)
    shift, scale = rng.uniform(-100, 100, P), rng.uniform(0.01, 100)
    assert similarity(xp.asarray(A + shift), xp.asarray(B)) == pytest.approx(s, abs=1e-10)
    assert similarity(xp.asarray(A), xp.asarray(scale * B - shift)) == pytest.approx(s, abs=1e-10)
    # Procrustes residual identity: min_Q ||A^ Q - B^||^2 = 2 (1 - S) for unit-norm centred inputs.
    Ah = (A - A.mean(0)) / np.linalg.norm(A - A.mean(0))
    Bh = (B - B.mean(0)) / np.linalg.norm(B - B.mean(0))
    Q = to_host(procrustes(xp.asarray(Ah), xp.asarray(Bh)))
    assert np.linalg.norm(Ah @ Q - Bh) ** 2 == pytest.approx(2 * (1 - s), abs=1e-10)


def test_similarity_errors(rng):
    A = cloud(rng)
    with pytest.raises(ValueError, match="zero variance"):
        similarity(A, np.ones_like(A))
    with pytest.raises(ValueError, match="but B has 10"):
        similarity(A, A[:10])


def test_similarity_matrix_equals_pairwise(xp, rng, monkeypatch):
    monkeypatch.setattr(align, "CHUNK_BYTES", 1)  # force several row chunks (1024 rows each)
    n = 2600
    la = [cloud(rng, n=n, p=6, dtype=np.float32) for _ in range(4)]
    lb = [cloud(rng, n=n, p=4) for _ in range(3)]
    lb.append(la[1][:, :4] * 3.0 + 1.0)  # a layer related to one of A's
    S = similarity_matrix([xp.asarray(L) for L in la], [xp.asarray(L) for L in lb])
    same_type(S, xp)
    S = to_host(S)
    assert S.shape == (4, 4) and S.dtype == np.float64
    ref = np.array([[ref_similarity(a, b) for b in lb] for a in la])
    np.testing.assert_allclose(S, ref, atol=1e-10)
    assert S[1, 3] > 0.8 and S[1, 3] > S[0, 3]


def test_consecutive_similarity(xp, rng):
    layers = [cloud(rng, n=500) for _ in range(5)]
    layers[3] = layers[2] @ orthogonal(rng) + 7.0
    c = consecutive_similarity(xp.asarray(L) for L in layers)
    same_type(c, xp)
    c = to_host(c)
    assert c.shape == (4,)
    np.testing.assert_allclose(c, [ref_similarity(layers[k], layers[k + 1]) for k in range(4)], atol=1e-12)
    assert c[2] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"layers\[2\] has zero variance"):
        consecutive_similarity([layers[0], layers[1], np.full_like(layers[0], 3.0)])
    with pytest.raises(ValueError, match="layers is empty"):
        consecutive_similarity([])


def test_moments_survive_large_offsets(rng):
    A = cloud(rng, n=2000)
    B = cloud(rng, n=2000)
    s = ref_similarity(A, B)
    assert similarity(A + 1e6, B - 3e5) == pytest.approx(s, abs=1e-9)
    np.testing.assert_allclose(similarity_matrix([A + 1e6], [B - 3e5]), [[s]], atol=1e-9)
    np.testing.assert_allclose(canonical_alignment([A, A + 1e6])[1].center, A.mean(0) + 1e6, rtol=1e-14)


def test_similarity_matrix_on_memmaps_and_errors(tmp_path, rng):
    layers = [cloud(rng, n=800, dtype=np.float32) for _ in range(3)]
    maps = []
    for i, L in enumerate(layers):
        np.save(tmp_path / f"{i}.npy", L)
        maps.append(np.load(tmp_path / f"{i}.npy", mmap_mode="r"))
    np.testing.assert_allclose(similarity_matrix(maps, maps[:2]), similarity_matrix(layers, layers[:2]),
                               atol=1e-14)
    with pytest.raises(ValueError, match=r"layers_b\[1\] has shape"):
        similarity_matrix(layers, [layers[0], layers[1][:-1]])
    with pytest.raises(ValueError, match=r"layers_a\[2\] has zero variance"):
        similarity_matrix([layers[0], layers[1], np.ones_like(layers[0])], layers)
    with pytest.raises(ValueError, match="layers_a is empty"):
        similarity_matrix([], layers)


def _study_layers(root, model):
    ids = [d["id"] for d in json.loads((root / model / "schema.json").read_text())["layers"]]
    return ids, [np.fromfile(root / model / f"{i}.bin", dtype="<f4").reshape(-1, P) for i in ids]


@pytest.mark.slow
def test_study_similarity_matrix_matches_pairwise_and_published(study_data):
    ids_r, resnet = _study_layers(study_data, "resnet50")
    ids_g, googlenet = _study_layers(study_data, "googlenet")
    assert (len(resnet), len(googlenet)) == (25, 21) and resnet[0].shape == (50000, P)
    S = similarity_matrix(resnet, googlenet)
    assert S.shape == (25, 21)
    pairwise = np.array([[similarity(a, b) for b in googlenet] for a in resnet])
    np.testing.assert_allclose(S, pairwise, atol=1e-6, rtol=0)
    # Values published with the original study (checked independently to 4 decimals).
    assert round(S[0, 0], 4) == 0.9973
    assert round(S[1, 1], 4) == 0.8585
    assert round(S[24, 20], 4) == 0.8856
    assert (round(S.min(), 4), round(S.max(), 4)) == (0.0746, 0.9973)


# -------------------------------------------------------------------------------------------- movement


def test_movement_zero_for_rigid_scaled_copy(xp, rng):
    A = cloud(rng, n=1000, dtype=np.float32)
    B = (2.5 * A.astype(np.float64) @ orthogonal(rng, det=-1.0) + rng.uniform(-9, 9, P)).astype(np.float32)
    d = movement(xp.asarray(A), xp.asarray(B), sample=300, seed=1)
    same_type(d, xp)
    d = to_host(d)
    assert d.shape == (1000,) and d.dtype == np.float32
    assert np.all(d < 1e-5)


def test_movement_orders_points_by_displacement(xp, rng):
    n = 3000
    A = cloud(rng, n=n)
    R, t = orthogonal(rng), rng.uniform(-5, 5, P)
    moved = rng.choice(n, size=12, replace=False)
    sizes = np.linspace(0.5, 6.0, 12)
    dirs = rng.standard_normal((12, P))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    A2 = A.copy()
    A2[moved] += sizes[:, None] * dirs
    B = A2 @ R + t
    d = to_host(movement(xp.asarray(A), xp.asarray(B)))
    assert d.dtype == np.float64
    still = np.setdiff1d(np.arange(n), moved)
    assert d[moved].min() > 3 * d[still].max()
    np.testing.assert_array_equal(np.argsort(d[moved]), np.arange(12))
    # Displacement in units of A's mean row norm (B has the same scale up to the tiny shift of the mean).
    scale = np.linalg.norm(A - A.mean(0), axis=1).mean()
    np.testing.assert_allclose(d[moved], sizes / scale, rtol=0.05)
    # Same seed, same answer; the sample changes the fit only slightly.
    np.testing.assert_array_equal(d, to_host(movement(xp.asarray(A), xp.asarray(B))))


def test_movement_errors(rng):
    A = cloud(rng, n=50)
    with pytest.raises(ValueError, match="sample=3"):
        movement(A, A, sample=3)
    with pytest.raises(ValueError, match="B has zero spread"):
        movement(A, np.zeros_like(A) + 2.0)


# ---------------------------------------------------------------------------------------------- export


def test_viridis_ramp():
    rgb = export.viridis(np.linspace(0, 1, 101))
    assert rgb.dtype == np.uint8 and rgb.shape == (101, 3)
    np.testing.assert_array_equal(rgb[0], [68, 1, 84])
    np.testing.assert_array_equal(rgb[-1], [253, 231, 37])
    luma = rgb.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(luma) > 0)
    np.testing.assert_array_equal(export.viridis([-3.0, np.nan, 7.0]), rgb[[0, 0, 100]])


def _bundle(tmp_path, rng, store_matrix=False):
    from engine.store import BundleWriter

    n = 400
    w = BundleWriter(tmp_path / "b.bundle", n=n, dim=P)
    layers = {"alpha": [cloud(rng, n=n, dtype=np.float32) for _ in range(3)],
              "beta": [cloud(rng, n=n, dtype=np.float32) for _ in range(2)]}
    layers["beta"].append(layers["alpha"][0] * 2 + 1)
    for model, ls in layers.items():
        w.add_model(model)
        for i, L in enumerate(ls):
            w.write_layer(model, f"{i}-Layer{model}", L)
    if store_matrix:
        w.set_similarity("alpha", "beta", rng.uniform(0, 1, (3, 3)))
    return w.commit(), layers


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def test_export_similarity_csv_round_trip(tmp_path, rng):
    path, layers = _bundle(tmp_path, rng)
    out = export.export_similarity(path, "alpha", "beta", tmp_path / "out" / "S.csv", device="cpu")
    header, row_ids, S = _read_csv(out)
    assert header[1:] == ["0-Layerbeta", "1-Layerbeta", "2-Layerbeta"]
    assert row_ids == ["0-Layeralpha", "1-Layeralpha", "2-Layeralpha"]
    ref = np.array([[ref_similarity(a, b) for b in layers["beta"]] for a in layers["alpha"]])
    np.testing.assert_allclose(S, ref, atol=1e-10)
    np.testing.assert_array_equal(S, similarity_matrix(layers["alpha"], layers["beta"]))
    assert S[0, 2] == pytest.approx(1.0, abs=1e-9)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["S.csv"]  # no temp file left


def test_export_similarity_uses_stored_matrix_and_transposes(tmp_path, rng):
    path, _ = _bundle(tmp_path, rng, store_matrix=True)
    from engine.store import load_bundle

    stored = np.asarray(load_bundle(path).similarity("alpha", "beta"), dtype=np.float64)
    _, _, S = _read_csv(export.export_similarity(path, "alpha", "beta", tmp_path / "S.csv"))
    np.testing.assert_array_equal(S, stored)
    _, _, St = _read_csv(export.export_similarity(path, "beta", "alpha", tmp_path / "St.csv"))
    np.testing.assert_array_equal(St, stored.T)


def test_export_similarity_png_heat_map(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    path, layers = _bundle(tmp_path, rng)
    out = export.export_similarity(path, "beta", "alpha", tmp_path / "S.png", device="cpu", cell_px=9)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (3 * 9, 3 * 9, 3)
    S = similarity_matrix(layers["beta"], layers["alpha"])
    for i in range(3):
        for j in range(3):
            cell = img[i * 9 : (i + 1) * 9, j * 9 : (j + 1) * 9]
            assert np.all(cell == export.viridis(S[i, j]))


def test_export_similarity_errors(tmp_path, rng):
    path, _ = _bundle(tmp_path, rng)
    from engine.store import BundleError

    with pytest.raises(BundleError, match="its models are: alpha, beta"):
        export.export_similarity(path, "alpha", "gamma", tmp_path / "S.csv")
    with pytest.raises(ValueError, match="use .csv or .png"):
        export.export_similarity(path, "alpha", "beta", tmp_path / "S.txt")
    with pytest.raises(ValueError, match="at least 8 pixels"):
        export.export_similarity(path, "alpha", "beta", tmp_path / "S.png", cell_px=4)
    assert not (tmp_path / "S.csv").exists()


def test_align_models_joins_models_and_derives_consecutive_similarity(rng):
    """align_models: every model in the first model's frame; consecutive similarities taken from the
    chain's residuals equal the direct formula; the pair matrix equals similarity_matrix."""
    from engine.align import align_models

    n, p = 400, 6
    base = rng.standard_normal((n, p))
    a_layers = [base + 0.3 * rng.standard_normal((n, p)) for _ in range(3)]
    Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
    b_layers = [(x + 0.2 * rng.standard_normal((n, p))) @ Q + rng.uniform(-5, 5, p) for x in a_layers[:2]]
    res = align_models({"a": a_layers, "b": b_layers})
    for name, layers in (("a", a_layers), ("b", b_layers)):
        np.testing.assert_allclose(res.consecutive[name], consecutive_similarity(layers), atol=1e-12)
    np.testing.assert_allclose(res.similarity[("a", "b")], similarity_matrix(a_layers, b_layers), atol=1e-12)
    # B's first layer, in the joint frame, lies on A's first layer (up to the added noise)
    a0 = res.alignments["a"][0].apply(a_layers[0])
    b0 = res.alignments["b"][0].apply(b_layers[0])
    raw = np.linalg.norm((b_layers[0] - b_layers[0].mean(0)) - a0)
    assert np.linalg.norm(b0 - a0) < 0.5 * raw
    for al in res.alignments["b"]:
        np.testing.assert_allclose(al.rotation.T @ al.rotation, np.eye(p), atol=1e-12)
