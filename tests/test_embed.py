"""engine.embed: init scaling, randomised PCA, trustworthiness, UMAP quality (umap-learn; cuML if present).

UMAP is stochastic: results are judged by trustworthiness, never by coordinates. umap-learn's
numba JIT costs ~30-60 s once per process, so every test that fits UMAP is marked ``slow``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from engine.embed import EmbedResult, embed, pca_reduce, scale_init, trustworthiness

HAVE_CUML = importlib.util.find_spec("cuml") is not None


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_scale_init(xp, rng):
    Y = rng.standard_normal((200, 15)) * rng.uniform(0.01, 100.0) + rng.uniform(-50, 50, size=15)
    got = scale_init(xp.asarray(Y))
    assert isinstance(got, xp.ndarray) and got.dtype == xp.float32
    g = _host(got).astype(np.float64)
    ref = (Y - Y.mean(0)) * (10.0 / np.abs(Y - Y.mean(0)).max())
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5)
    assert np.isclose(np.abs(g).max(), 10.0, rtol=1e-6)
    np.testing.assert_allclose(g.mean(0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="constant"):
        scale_init(xp.full((5, 3), 2.5))
    with pytest.raises(ValueError, match="NaN"):
        scale_init(xp.asarray(np.where(Y > 2, np.nan, Y)))


def test_pca_reduce_matches_float64_svd(xp, rng):
    n, d, r, k = 400, 120, 10, 8
    scales = np.geomspace(20.0, 2.0, r)
    X = (rng.standard_normal((n, r)) * scales) @ np.linalg.qr(rng.standard_normal((d, r)))[0].T
    X += 0.01 * rng.standard_normal((n, d)) + rng.uniform(-5, 5, size=d)
    scores, var = pca_reduce(xp.asarray(X.astype(np.float32)), k, seed=3)
    assert isinstance(scores, xp.ndarray) and scores.shape == (n, k) and scores.dtype == xp.float32
    Xc = X - X.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    ref = U[:, :k] * S[:k]
    np.testing.assert_allclose(_host(var), S[:k] ** 2 / (n - 1), rtol=1e-3)
    got = _host(scores).astype(np.float64)
    got *= np.sign((got * ref).sum(0))  # principal axes are defined up to sign
    np.testing.assert_allclose(got, ref, atol=1e-3 * S[0])


def _ref_trustworthiness(X, Y, k):
    """The definition (Venna & Kaski), float64 and dense, for small N."""
    n = X.shape[0]

    def sqdist(A):
        D = ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(D, np.inf)
        return D

    dX, dY = sqdist(X.astype(np.float64)), sqdist(Y.astype(np.float64))
    rank = np.empty_like(dX, dtype=np.int64)
    order = np.argsort(dX, axis=1)
    rank[np.arange(n)[:, None], order] = np.arange(1, n + 1)[None, :]
    nn_y = np.argsort(dY, axis=1)[:, :k]
    penalty = sum(max(0, rank[i, j] - k) for i in range(n) for j in nn_y[i])
    return 1.0 - 2.0 / (n * k * (2 * n - 3 * k - 1)) * penalty


def test_trustworthiness_against_definition(rng):
    X = rng.standard_normal((90, 12))
    Y = X[:, :3] + 0.3 * rng.standard_normal((90, 3))
    assert np.isclose(trustworthiness(X, Y, k=5), _ref_trustworthiness(X, Y, 5), atol=1e-12)
    assert trustworthiness(X, X, k=5) == pytest.approx(1.0)
    noise = rng.standard_normal((90, 3))
    assert trustworthiness(X, noise, k=5) < trustworthiness(X, Y, k=5)
    # Sampling: the same rows of X and Y are kept (an exact copy stays perfectly trustworthy).
    big = rng.standard_normal((700, 6))
    assert trustworthiness(big, big * 3.0, k=10, n_sample=200, seed=4) == pytest.approx(1.0)
    idx = np.sort(np.random.default_rng(4).choice(700, 200, replace=False))
    Yb = big[:, :2]
    assert np.isclose(trustworthiness(big, Yb, k=10, n_sample=200, seed=4),
                      _ref_trustworthiness(big[idx], Yb[idx], 10), atol=1e-12)
    with pytest.raises(ValueError, match="rows"):
        trustworthiness(X, Y[:10])
    with pytest.raises(ValueError, match="k=50"):
        trustworthiness(X, Y, k=50)


def test_embed_rejects_bad_input(rng):
    X = rng.standard_normal((40, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"init array has shape \(40, 3\), expected \(40, 15\)"):
        embed(X, init=rng.standard_normal((40, 3)))
    with pytest.raises(ValueError, match="init='pca'"):
        embed(X, init="pca")
    with pytest.raises(ValueError, match="backend='gpu'"):
        embed(X, backend="gpu")
    with pytest.raises(ValueError, match="NaN"):
        embed(np.where(X > 1.5, np.nan, X))
    with pytest.raises(ValueError, match="too few"):
        embed(X[:10])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        embed(X[0])


@pytest.mark.skipif(HAVE_CUML, reason="cuML is installed")
def test_embed_cuml_requested_but_missing(rng):
    with pytest.raises(ImportError, match="backend='cuml' but cuML is not importable"):
        embed(rng.standard_normal((40, 6)).astype(np.float32), backend="cuml")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


@pytest.mark.slow
def test_umap_learn_digits_quality(digits):
    res = embed(digits)  # the study's settings: 15-D, spectral, seed 42
    assert isinstance(res, EmbedResult) and res.backend == "umap-learn"
    assert isinstance(res.embedding, np.ndarray) and res.embedding.shape == (1797, 15)
    assert res.embedding.dtype == np.float32 and np.isfinite(res.embedding).all()
    assert res.knn_algorithm == "exact" and res.seconds > 0  # < 4,096 rows: umap-learn's exact k-NN
    assert res.params["init"] == "spectral" and res.params["n_components"] == 15 and "pca" not in res.params
    assert trustworthiness(digits, res.embedding) >= 0.9


def _similarity(A, B):
    """Procrustes similarity of centred A, B (1 = equal up to rotation and scale)."""
    A, B = A - A.mean(0), B - B.mean(0)
    nuc = lambda M: np.linalg.svd(M, compute_uv=False).sum()  # noqa: E731
    return nuc(A.T @ B) / np.sqrt(nuc(A.T @ A) * nuc(B.T @ B))


@pytest.mark.slow
def test_umap_learn_array_init_is_used(digits, rng):
    """After a few epochs the layout still resembles its own (random) init and not another one."""
    A, B = rng.standard_normal((2, 1797, 15)) * rng.uniform(0.1, 100.0)
    res = embed(digits, init=A, seed=1, n_epochs=5)
    assert res.params["init"] == "array" and res.params["n_epochs"] == 5
    e = res.embedding.astype(np.float64)
    assert np.abs(e).max() < 12  # the init was rescaled to ±10 and moved a little
    assert _similarity(e, A) > 0.4 and _similarity(e, B) < 0.2


@pytest.mark.slow
def test_wide_input_is_pca_reduced_first(digits):
    res = embed(digits, reduce_bytes=digits.nbytes - 1, reduce_dims=32, n_components=5)
    assert res.params["pca"]["dims"] == 32 and res.params["pca"]["from_dim"] == 64
    assert res.embedding.shape == (1797, 5)
    assert trustworthiness(digits, res.embedding) >= 0.9


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(HAVE_CUML, reason="cuML is installed: the fallback does not apply")
def test_cupy_input_without_cuml_falls_back_to_host(digits):
    import cupy

    pytest.importorskip("umap")
    res = embed(cupy.asarray(digits[:400]), n_components=4)
    assert res.backend == "umap-learn" and "cuML unavailable" in res.params["fallback"]
    assert isinstance(res.embedding, cupy.ndarray) and res.embedding.dtype == cupy.float32
    assert trustworthiness(digits[:400], res.embedding, k=10) >= 0.9


@pytest.mark.gpu
def test_cuml_digits_quality(digits, rng):
    cuml = pytest.importorskip("cuml")
    import cupy

    res = embed(cupy.asarray(digits))
    assert res.backend == "cuml" and res.knn_algorithm == "brute_force_knn"
    assert isinstance(res.embedding, cupy.ndarray) and res.embedding.shape == (1797, 15)
    assert trustworthiness(digits, res.embedding) >= 0.9
    nnd = embed(cupy.asarray(digits), max_brute_force=1000, init=rng.standard_normal((1797, 15)))
    assert nnd.knn_algorithm == "nn_descent"
    if tuple(int(p) for p in cuml.__version__.split(".")[:2]) < (26, 2):
        assert "init_fallback" in nnd.params
    assert trustworthiness(digits, nnd.embedding) >= 0.85
