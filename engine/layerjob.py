"""One layer of a ``prepare`` job: activations -> :class:`engine.jobs.LayerEmbedding`.

Written once for both runners. :func:`embed_layer` fits UMAP on all rows (or, with
``config.fit_sample``, on a seeded sample and transforms the rest, :func:`embed_sampled`) and
measures trustworthiness. The sample-fit path is a small task graph, :func:`sampled_layer`, over a
``submit(fn, *args)`` that either calls ``fn`` at once (single process) or returns a Dask future
(:mod:`engine.distributed`); its pieces are rows of the layer held in consecutive blocks (Dask
shards), which is also the shape a streaming ``prepare`` (record the fit sample first, then
transform chunks as they are recorded) needs.

The UMAP maths and the back-end choice live in :mod:`engine.embed`; nothing here imports Dask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from engine.device import array_module, to_host
from engine.embed import embed, sample_indices, trustworthiness
from engine.jobs import TRANSFORM_CHUNK, LayerEmbedding, PrepareConfig

__all__ = ["TRANSFORM_CHUNK", "embed_layer", "embed_sampled", "finish_sampled", "fit_on_sample",
           "reduce_blocks", "sampled_layer", "sampled_meta", "sampled_plan", "take_rows", "transform_rows"]



def _umap_kwargs(config: PrepareConfig) -> dict:
    return dict(n_components=config.dim, n_neighbors=config.n_neighbors, min_dist=config.min_dist,
                seed=config.seed, backend=config.umap_backend)


def embed_layer(X, config: PrepareConfig, init="spectral") -> LayerEmbedding:
    """Embed one layer's activations X ((N, D) float32, NumPy or CuPy) and measure it.

    init : "spectral" or an (N, p) array in X's array module (``--init previous``). With
    ``config.fit_sample`` the fit runs on a seeded sample and the rest is transformed
    (:func:`embed_sampled`). Only the finished (N, p) embedding and the trustworthiness sample are
    copied to the host.
    """
    if config.sampled:
        return embed_sampled(X, config, None if isinstance(init, str) else init)
    res = embed(X, init=init, **_umap_kwargs(config))
    t0 = time.perf_counter()
    tw = trustworthiness(X, res.embedding, k=config.n_neighbors, n_sample=config.trust_sample,
                         seed=config.seed)
    meta = {"trustworthiness": round(float(tw), 6), "umap_backend": res.backend,
            "knn_algorithm": res.knn_algorithm, "umap_seconds": round(res.seconds, 3),
            "trustworthiness_seconds": round(time.perf_counter() - t0, 3), "umap_params": res.params}
    return LayerEmbedding(to_host(res.embedding).astype(np.float32, copy=False), meta, int(X.shape[1]),
                          res.seconds)


def take_rows(idx: np.ndarray, starts: Sequence[int], *pieces) -> np.ndarray:
    """Rows ``idx`` (sorted, global) out of consecutive pieces starting at ``starts``: (len(idx), D)
    float32 host."""
    out = []
    for a, piece in zip(starts, pieces):
        sel = idx[(idx >= a) & (idx < a + piece.shape[0])] - a
        out.append(np.asarray(to_host(piece))[sel])
    return np.concatenate(out).astype(np.float32, copy=False)


def fit_on_sample(Xs, config: PrepareConfig, init=None):
    """Fit UMAP on the sample Xs ((m, D) float32, host or the run's device) with the run's settings:
    the :class:`engine.embed.EmbedResult` (its ``transform`` embeds the other rows). On a CUDA run
    the sample is moved to the device first, so :func:`engine.embed.choose_backend` picks as it does
    for a full fit. ``init`` : (m, p) array or None (spectral).

    When D > ``config.reduce_dims`` (> 0), a randomised-PCA basis of that many dimensions is fitted
    on the sample first, in the sample's array module (:func:`engine.embed.pca_reduce`), and UMAP
    is fitted on the sample mapped by it; ``reducer`` holds the basis, so every transformed row is
    mapped the same way, and ``params["reduction"]`` records it (dims, explained variance)."""
    from dataclasses import replace

    from engine.device import resolve
    from engine.embed import pca_reduce

    backend = resolve(config.device)
    xp = backend.xp
    X = xp.asarray(Xs)
    init_v = "spectral" if init is None else xp.asarray(to_host(init), dtype=xp.float32)
    k = config.reduce_dims
    if not k or X.shape[1] <= k:
        res = embed(X, init=init_v, **_umap_kwargs(config))
        return replace(res, params={**res.params, "reduction": None})
    t0 = time.perf_counter()
    _scores, var, basis = pca_reduce(X, k, seed=config.seed, basis=True)
    step = max(1, (16 << 20) // (4 * X.shape[1]))  # (X - mean) is a copy: map 16 MB of rows at a time
    Xr = xp.concatenate([basis.apply(X[s:s + step]) for s in range(0, X.shape[0], step)])
    total = _total_variance(X)
    seconds = time.perf_counter() - t0
    res = embed(Xr, init=init_v, **_umap_kwargs(config))
    ratio = round(float(to_host(var).sum()) / total, 6) if total > 0 else None
    reduction = {"method": "randomised PCA", "dims": int(basis.dims), "from_dim": int(X.shape[1]),
                 "explained_variance_ratio": ratio, "fitted_on": int(X.shape[0]),
                 "seconds": round(seconds, 3)}
    return replace(res, reducer=basis, params={**res.params, "dim": int(X.shape[1]), "reduction": reduction})


def _total_variance(X) -> float:
    """Sum of the column variances of X ((m, D), NumPy or CuPy), in float64, in row blocks (no copy
    of X)."""
    xp = array_module(X)
    n = X.shape[0]
    mu = X.mean(axis=0, dtype=xp.float64)
    step = max(1, (16 << 20) // (8 * max(1, X.shape[1])))
    total = 0.0
    for s in range(0, n, step):
        d = X[s:s + step].astype(xp.float64) - mu
        total += float((d * d).sum())
    return total / max(n - 1, 1)


def reduce_blocks(fit, X, a: int, block: int):
    """X ((r, D), rows [a, a + r) of a layer) mapped by ``fit.reducer`` in row blocks cut at every
    multiple of ``block`` (the batch size), as a streaming run maps each batch as it is recorded:
    the same matrix products on the same rows, so both give the same bits. X itself without a
    reducer."""
    if fit.reducer is None:
        return X
    xp = array_module(X)
    cuts = [a, *range((a // block + 1) * block, a + X.shape[0], block), a + X.shape[0]]
    return xp.concatenate([fit.reducer.apply(X[s - a:e - a]) for s, e in zip(cuts[:-1], cuts[1:])])


def transform_rows(fit, a: int, b: int, block: int, starts: Sequence[int], *pieces) -> dict:
    """Rows [a, b) transformed by the fitted model (reduced in blocks of ``block`` rows,
    :func:`reduce_blocks`): ``{"Y": (b - a, p) float32 host, "seconds"}``."""
    X = take_rows(np.arange(a, b, dtype=np.int64), starts, *pieces)
    t0 = time.perf_counter()
    Y = np.asarray(to_host(fit.transform(reduce_blocks(fit, X, a, block), reduced=True)), dtype=np.float32)
    return {"Y": Y, "seconds": time.perf_counter() - t0}


def finish_sampled(config: PrepareConfig, n: int, fit, idx: np.ndarray, trust_idx: np.ndarray,
                   held_idx: np.ndarray, X_trust: np.ndarray, X_held: np.ndarray, Xs: np.ndarray,
                   *chunks: dict) -> LayerEmbedding:
    """Assemble the (n, p) embedding (the sample's own fit rows, transformed rows elsewhere) and its
    trustworthiness: overall (same rows as the full path), on fitted rows, on held-out rows."""
    Y = np.concatenate([c["Y"] for c in chunks])
    fitted = np.asarray(to_host(fit.embedding), dtype=np.float32)
    Y[idx] = fitted
    t0 = time.perf_counter()
    k = config.n_neighbors
    tw_all = trustworthiness(X_trust, Y[trust_idx], k=k, n_sample=len(trust_idx))
    tw_fit = trustworthiness(Xs, fitted, k=k, n_sample=config.trust_sample, seed=config.seed)
    tw_held = trustworthiness(X_held, Y[held_idx], k=k, n_sample=len(held_idx))
    meta = sampled_meta(config, n, fit, tw_all, tw_fit, tw_held, len(held_idx),
                        sum(c["seconds"] for c in chunks), time.perf_counter() - t0)
    return LayerEmbedding(Y, meta, int(Xs.shape[1]), fit.seconds)


def sampled_meta(config: PrepareConfig, n: int, fit, tw_all: float, tw_fit: float, tw_held: float,
                 held_rows: int, transform_seconds: float, trust_seconds: float) -> dict:
    """A sample-fitted layer's meta (JSON), the same for the in-memory and the streaming runs:
    trustworthiness overall (the full path's rows), on the fitted sample and on held-out
    transformed rows, the reduction basis and the fit's settings."""
    params = {k: v for k, v in fit.params.items() if k != "reduction"}
    return {"trustworthiness": round(float(tw_all), 6), "umap_backend": fit.backend,
            "knn_algorithm": fit.knn_algorithm, "umap_seconds": round(fit.seconds, 3),
            "trustworthiness_seconds": round(trust_seconds, 3),
            "umap_params": {**params, "n": int(n)},
            "reduction": fit.params.get("reduction"),
            "fit_sample": {"n": int(fit.embedding.shape[0]), "seed": config.seed,
                           "transform_chunk": config.transform_chunk,
                           "transform_seconds": round(transform_seconds, 3),
                           "trustworthiness_fit_rows": round(float(tw_fit), 6),
                           "trustworthiness_transformed_rows": round(float(tw_held), 6),
                           "trustworthiness_cost": round(float(tw_fit) - float(tw_held), 6),
                           "held_out_rows": int(held_rows)}}


def sampled_plan(n: int, config: PrepareConfig) -> dict:
    """Row sets of the sample-fit path: fit sample, trust sample (as the full path's), held-out sample."""
    idx = sample_indices(n, config.fit_sample, config.seed)
    m = min(config.trust_sample, n)
    trust_idx = np.sort(np.random.default_rng(config.seed).choice(n, m, replace=False)) if n > m \
        else np.arange(n)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), idx)
    held = np.sort(np.random.default_rng(config.seed + 1).choice(rest, min(len(rest), config.trust_sample),
                                                                 replace=False))
    if len(held) <= 2 * config.n_neighbors:
        raise ValueError(f"--fit-sample {config.fit_sample}: only {len(rest)} rows are left to transform; "
                         f"need more than {2 * config.n_neighbors} to measure the trustworthiness cost")
    c = config.transform_chunk
    chunks = [(a, min(a + c, n)) for a in range(0, n, c)]
    return {"idx": idx, "trust_idx": trust_idx.astype(np.int64), "held_idx": held.astype(np.int64),
            "chunks": chunks}


def sampled_layer(submit: Callable, config: PrepareConfig, n: int, starts: Sequence[int], pieces: Sequence,
                  init=None):
    """Sample fit + chunked transform of one layer, written once for both runners.

    ``submit(fn, *args)`` either calls ``fn`` (single process) or returns a Dask future; ``pieces``
    (values or futures) hold consecutive rows from ``starts``. Returns the
    :class:`engine.jobs.LayerEmbedding` (or its future).
    """
    plan = sampled_plan(n, config)
    ends = [*starts[1:], n]

    def over(a, b):  # the pieces overlapping rows [a, b)
        sel = [i for i, (s, e) in enumerate(zip(starts, ends)) if s < b and e > a]
        return [starts[i] for i in sel], [pieces[i] for i in sel]

    def rows(ix):
        st, ps = over(int(ix.min()), int(ix.max()) + 1)
        return submit(take_rows, ix, st, *ps)

    Xs = rows(plan["idx"])
    init_s = None if init is None else submit(take_rows, plan["idx"], [0], init)
    fit = submit(fit_on_sample, Xs, config, init_s)
    chunks = []
    for a, b in plan["chunks"]:
        st, ps = over(a, b)
        chunks.append(submit(transform_rows, fit, a, b, config.batch_size, st, *ps))
    return submit(finish_sampled, config, n, fit, plan["idx"], plan["trust_idx"], plan["held_idx"],
                  rows(plan["trust_idx"]), rows(plan["held_idx"]), Xs, *chunks)


def embed_sampled(X, config: PrepareConfig, init=None) -> LayerEmbedding:
    """Single-process sample fit + transform of X ((N, D), NumPy or CuPy): no Dask involved."""
    Xh = np.asarray(to_host(X), dtype=np.float32)
    init_h = None if init is None or isinstance(init, str) else np.asarray(to_host(init), dtype=np.float32)
    return sampled_layer(lambda fn, *args: fn(*args), config, Xh.shape[0], [0], [Xh], init_h)
