"""UMAP embedding of one layer's activations, behind one function, on cuML (GPU) or umap-learn (CPU).

``embed(X)`` returns an :class:`EmbedResult` whose ``embedding`` lives where X lives (NumPy in,
NumPy out; CuPy in, CuPy out), and whose :meth:`EmbedResult.transform` maps other rows with the
fitted model (a fit on a seeded sample, :func:`sample_indices`, then the rest in chunks). The UMAP
back end is chosen in one place, :func:`choose_backend`: ``"auto"`` is cuML when X is a CuPy array
and cuML imports, else umap-learn on the host (a CuPy X is copied down, the result copied back
up). The study's settings are the defaults: 15 components, 15 neighbours, min_dist 0.1, spectral
init, seed 42. Stochastic: test results by quality (:func:`trustworthiness`), never by coordinates.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from engine.device import array_module, is_cupy_array, like, to_host
from engine.errors import UserError

log = logging.getLogger("layertour")

BACKENDS = ("auto", "cuml", "umap-learn")
CUML_ARRAY_INIT = (26, 2)  # first cuML release whose UMAP takes an array init
INIT_SCALE = 10.0
SEED_LIMIT = 2**32  # cuML takes seeds in [0, 2**32); umap-learn's NumPy seeding does too


class BackendUnavailableError(UserError, ImportError):
    """The UMAP back end asked for (``--umap-backend``) cannot be imported here."""


@dataclass(frozen=True)
class PCABasis:
    """A fitted linear reduction: ``reduced = (X - mean) @ axes``; mean (D,), axes (D, k) float32,
    in the array module of the data it was fitted on."""

    mean: object
    axes: object

    def apply(self, X):
        """(M, D) rows (NumPy or CuPy) -> (M, k) float32 in X's array module (the basis is copied
        to where X lives if it was fitted elsewhere)."""
        xp = array_module(X)
        return (xp.asarray(X, dtype=xp.float32) - like(self.mean, X)) @ like(self.axes, X)

    @property
    def dims(self) -> int:
        return int(self.axes.shape[1])


@dataclass(frozen=True)
class EmbedResult:
    """embedding : (N, p) float32 in the input's array module; backend : "cuml" | "umap-learn";
    knn_algorithm : how the k-NN graph was built; seconds : wall time of the fit;
    params : every setting used (and any fallback or reduction applied);
    model, reducer : the fitted UMAP estimator and the PCA basis applied before it (or None),
    used by :meth:`transform`."""

    embedding: object
    backend: str
    knn_algorithm: str
    seconds: float
    params: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False, compare=False)
    reducer: PCABasis | None = field(default=None, repr=False, compare=False)

    def transform(self, X, *, reduced: bool = False):
        """Embed new rows X ((M, D) float, NumPy or CuPy) with the fitted model: (M, p) float32 in
        X's array module (the PCA reduction of the fit is applied first, unless ``reduced``: X
        then holds rows already mapped by ``reducer``, (M, k))."""
        if self.model is None:
            raise ValueError("this EmbedResult holds no fitted model")
        xp = array_module(X)
        Xr = xp.ascontiguousarray(X, dtype=xp.float32)
        if self.reducer is not None and not reduced:
            Xr = self.reducer.apply(Xr)
        if self.backend == "cuml":
            import cupy as cp

            Y = self.model.transform(cp.asarray(Xr))
        else:
            Y = self.model.transform(to_host(Xr))
        return like(Y, X).astype(xp.float32, copy=False)


def choose_backend(requested: str, on_device: bool) -> tuple[str, object, str]:
    """The one UMAP back-end rule: ``(name, cuml module or None, why)``.

    requested : "auto" | "cuml" | "umap-learn"; on_device : whether the data are CuPy arrays (the
    resolved compute back end is CUDA). "auto" is cuML when the data are on the device and cuML
    imports, else umap-learn. Raises :class:`BackendUnavailableError` (naming ``--umap-backend``)
    when the chosen library cannot be imported, so ``prepare`` can call this before recording.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend={requested!r} is not one of {', '.join(BACKENDS)}")
    cuml, why = (None, "not requested") if requested == "umap-learn" else _import_cuml()
    if requested == "cuml":
        if cuml is None:
            raise BackendUnavailableError(
                f"backend='cuml' but cuML is not importable ({why}); install the gpu extras "
                "(pip install 'layertour[gpu]') or use --umap-backend umap-learn")
        return "cuml", cuml, "requested"
    if requested == "auto" and on_device and cuml is not None:
        return "cuml", cuml, "auto: the data are on the CUDA device"
    if importlib.util.find_spec("umap") is None:
        raise BackendUnavailableError("umap-learn is not installed (pip install 'layertour[cpu]')"
                                      + ("" if requested == "umap-learn" else f"; cuML: {why}"))
    if requested == "auto" and on_device:
        return "umap-learn", None, f"cuML unavailable ({why}): umap-learn on the host"
    return "umap-learn", None, "requested" if requested == "umap-learn" else "auto: the data are on the host"


def sample_indices(n: int, m: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of the ``m`` rows (of ``n``) a sample fit uses; seeded, host."""
    if not 0 < m < n:
        raise ValueError(f"--fit-sample {m}: must lie between 1 and N-1 = {n - 1}")
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False)).astype(np.int64)


def scale_init(Y, max_coord: float = INIT_SCALE):
    """Centre ``Y`` ((N, p), NumPy or CuPy) and scale it so that max |coordinate| = ``max_coord``.

    Returns float32 in Y's array module. UMAP's own inits span about ±10; an init of another
    scale makes the first epochs' steps too large or too small. Raises ``ValueError`` for a
    constant or non-finite Y.
    """
    xp = array_module(Y)
    Y = xp.asarray(Y, dtype=xp.float64)
    if Y.ndim != 2:
        raise ValueError(f"init must be (N, p), got shape {Y.shape}")
    if not bool(xp.isfinite(Y).all()):
        raise ValueError("init contains NaN or Inf")
    Yc = Y - Y.mean(axis=0)
    m = float(xp.abs(Yc).max())
    if m == 0.0:
        raise ValueError("init is constant: cannot scale it")
    return (Yc * (max_coord / m)).astype(xp.float32)


def pca_reduce(X, k: int = 256, seed: int = 0, n_iter: int = 4, *, basis: bool = False):
    """Randomised PCA of X ((N, D) float32, NumPy or CuPy) to k dims, computed in X's array module.

    Centring is implicit (X is never copied whole): X̄M = XM − 1(μM). A Gaussian sketch of width
    k + 10 with ``n_iter`` power iterations finds the range; returns the (N, k) float32 scores
    (projections of the centred rows on the top k principal axes) and the explained variance (k,);
    with ``basis=True`` also the :class:`PCABasis` (mean, axes) that maps new rows the same way.
    """
    xp = array_module(X)
    n, d = X.shape
    k = min(k, n, d)
    mu = X.mean(axis=0, dtype=xp.float64).astype(xp.float32)
    rs = xp.random.RandomState(seed)
    width = min(k + 10, n, d)
    omega = rs.standard_normal((d, width)).astype(xp.float32)

    def xc_dot(M):  # (X - mu) @ M, M (D, w)
        return X @ M - (mu @ M)[None, :]

    def xct_dot(Q):  # (X - mu).T @ Q, Q (N, w)
        return X.T @ Q - mu[:, None] * Q.sum(axis=0)[None, :]

    Q, _ = xp.linalg.qr(xc_dot(omega))
    for _ in range(n_iter):
        Z, _ = xp.linalg.qr(xct_dot(Q))
        Q, _ = xp.linalg.qr(xc_dot(Z))
    B = xct_dot(Q).T.astype(xp.float64)  # (w, D) = Q^T X̄
    Ub, s, vt = xp.linalg.svd(B, full_matrices=False)
    scores = (Q.astype(xp.float64) @ Ub[:, :k]) * s[:k]
    var = (s[:k] ** 2) / max(n - 1, 1)
    if basis:  # X̄ vt[:k].T = Q Ub s (to the sketch's accuracy): the axes map new rows alike
        return scores.astype(xp.float32), var, PCABasis(mu, vt[:k].T.astype(xp.float32))
    return scores.astype(xp.float32), var


def _cuml_version(cuml) -> tuple[int, int]:
    parts = str(cuml.__version__).split(".")
    return int(parts[0]), int(parts[1])


def _import_cuml():
    try:
        import cuml  # noqa: F401
        from cuml.manifold import UMAP  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA stack that fails at import
        return None, f"{type(exc).__name__}: {exc}"
    return cuml, None


def embed(X, *, n_components: int = 15, n_neighbors: int = 15, min_dist: float = 0.1, init="spectral",
          seed: int | None = 42, backend: str = "auto", max_brute_force: int = 50_000,
          n_epochs: int | None = None,
          reduce_bytes: int = 16 * 2**30, reduce_dims: int = 256) -> EmbedResult:
    """UMAP-embed X ((N, D) float, NumPy or CuPy) to (N, n_components) float32 in X's array module.

    init : "spectral" (the study's), "random", or an (N, n_components) array (rescaled by
        :func:`scale_init` to ±10). cuML older than 26.02 cannot take an array: it falls back to
        spectral, logs a warning and records it in ``params["init_fallback"]``.
    backend : "auto" (cuML for a CuPy X when cuML imports, else umap-learn), "cuml", "umap-learn"
        (:func:`choose_backend`).
    seed : None or an int in [0, 2**32).
    max_brute_force : on cuML, up to this many rows the k-NN graph is exact (``brute_force_knn``,
        reproducible, X stays on the device); above it ``nn_descent``. umap-learn builds it exactly
        below 4,096 rows, else with NN-descent. ``knn_algorithm`` says which.
    n_epochs : optimisation epochs (default: the library's, 500 below 10,000 rows else 200).
    reduce_bytes, reduce_dims : an X of more than reduce_bytes (N·D·4) is first reduced by
        :func:`pca_reduce` (in X's array module) to reduce_dims, recorded in ``params["pca"]``.
    """
    name, cuml, why = choose_backend(backend, is_cupy_array(X))
    xp = array_module(X)
    if X.ndim != 2:
        raise ValueError(f"embed: X must be (N, D), got shape {X.shape}")
    n, d = X.shape
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed < SEED_LIMIT):
        raise ValueError(f"seed={seed!r}: must be an integer in [0, 2**32)")
    if n <= n_neighbors:
        raise ValueError(f"embed: {n} rows is too few for n_neighbors={n_neighbors}")
    X = xp.ascontiguousarray(X, dtype=xp.float32)
    if not bool(xp.isfinite(X).all()):
        raise ValueError("embed: X contains NaN or Inf")
    params: dict = {"n_components": n_components, "n_neighbors": n_neighbors, "min_dist": min_dist,
                    "seed": seed, "n": int(n), "dim": int(d), "n_epochs": n_epochs,
                    "init": "array" if not isinstance(init, str) else init}
    if isinstance(init, str):
        if init not in ("spectral", "random"):
            raise ValueError(f"init={init!r}: give 'spectral', 'random' or an (N, n_components) array")
    else:
        if tuple(init.shape) != (n, n_components):
            raise ValueError(f"init array has shape {tuple(init.shape)}, expected ({n}, {n_components})")
        init = scale_init(init)
    reducer = None
    if n * d * 4 > reduce_bytes and d > reduce_dims:
        t0 = time.perf_counter()
        X, var, reducer = pca_reduce(X, reduce_dims, seed=0 if seed is None else seed, basis=True)
        params["pca"] = {"dims": int(X.shape[1]), "from_dim": int(d), "seconds": time.perf_counter() - t0,
                         "explained_variance_sum": float(var.sum())}
        log.info("embed: X is %.1f GB; randomised PCA %d -> %d dims", n * d * 4 / 1e9, d, X.shape[1])

    if name == "cuml":
        model, Y, knn, seconds = _fit_cuml(cuml, X, init, n_components, n_neighbors, min_dist, seed,
                                           n_epochs, max_brute_force, params)
        params["cuml_version"] = str(cuml.__version__)
    else:
        if is_cupy_array(X) and backend == "auto":
            params["fallback"] = why
            log.info("embed: %s", why)
        model, Y, knn, seconds = _fit_umap_learn(X, init, n_components, n_neighbors, min_dist, seed,
                                                 n_epochs, params)
    return EmbedResult(like(Y, X).astype(xp.float32, copy=False), name, knn, seconds, params, model, reducer)


def _fit_cuml(cuml, X, init, n_components, n_neighbors, min_dist, seed, n_epochs, max_brute_force, params):
    import cupy as cp
    from cuml.manifold import UMAP

    if not isinstance(init, str):
        if _cuml_version(cuml) < CUML_ARRAY_INIT:
            msg = f"cuML {cuml.__version__} < 26.02 cannot take an array init: used spectral instead"
            log.warning("embed: %s", msg)
            params["init_fallback"] = msg
            init = "spectral"
        else:
            init = cp.asarray(init, dtype=cp.float32)
    knn = "brute_force_knn" if X.shape[0] <= max_brute_force else "nn_descent"
    model = UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, init=init,
                 n_epochs=n_epochs, random_state=seed, build_algo=knn, output_type="cupy")
    Xd = cp.asarray(X)
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    Y = model.fit_transform(Xd)
    cp.cuda.Device().synchronize()
    return model, Y, knn, time.perf_counter() - t0


def _fit_umap_learn(X, init, n_components, n_neighbors, min_dist, seed, n_epochs, params):
    import umap

    Xh = to_host(X)
    init_h = init if isinstance(init, str) else to_host(init)
    model = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, init=init_h,
                      n_epochs=n_epochs, random_state=seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # A seed is what makes layers reproducible (and resumable); umap-learn warns that it runs
        # single-threaded because of it. That is the intended trade, so keep the warning out of logs.
        warnings.filterwarnings("ignore", message=r"n_jobs value .* overridden", category=UserWarning)
        Y = model.fit_transform(Xh)
    seconds = time.perf_counter() - t0
    params["umap_learn_version"] = str(umap.__version__)
    knn = "exact" if getattr(model, "_small_data", False) else "nn_descent"
    return model, np.asarray(Y, dtype=np.float32), knn, seconds


def trustworthiness(X, Y, k: int = 15, n_sample: int = 5000, seed: int = 0) -> float:
    """scikit-learn's trustworthiness of Y (N, p) for X (N, D) on a seeded sample of rows.

    Rows are sampled without replacement (the same rows of X and Y) when N > n_sample, on the
    device where X and Y live; only the sampled rows are copied to the host (for a 50,000 × 51,200
    CUDA layer that is 1 GB instead of 10 GB). Returns a float in [0, 1]; 1 means every k-NN of Y
    is a k-NN in X.
    """
    from sklearn.manifold import trustworthiness as sk_trust

    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"trustworthiness: X has {X.shape[0]} rows, Y has {Y.shape[0]}")
    n = X.shape[0]
    if n > n_sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, n_sample, replace=False))
        Xh, Yh = to_host(X[array_module(X).asarray(idx)]), to_host(Y[array_module(Y).asarray(idx)])
    else:
        Xh, Yh = to_host(X), to_host(Y)
    if k >= Xh.shape[0] / 2:
        raise ValueError(f"trustworthiness: k={k} must be below half the {Xh.shape[0]} sampled rows")
    return float(sk_trust(Xh.reshape(Xh.shape[0], -1), Yh, n_neighbors=k))
