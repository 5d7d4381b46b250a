"""``prepare`` on a Dask cluster: sharded forward passes, per-layer UMAP and alignment as tasks.

Nothing here imports Dask at module level: ``dask.distributed`` (and ``dask_cuda`` on CUDA hosts)
load only inside :func:`connect` and :func:`run`, so the single-process ``prepare`` never pays for
them. The sample-fit helpers (:func:`embed_sampled`) need no Dask either and serve both paths.

Task graph per model (futures; Dask moves the data between workers):

- ``record_shard`` (one per image range ``[a, b)``, ranges on multiples of the batch size so the
  batches equal the single-process ones): the worker rebuilds the model from a picklable
  :class:`ModelRecipe` (cached per worker process) and the inputs from an :class:`InputRecipe`,
  records every unfinished layer; returns host float32 ``(b - a, D)`` arrays per layer.
- ``_pick`` (runs where its shard lives) -> one layer's piece; ``embed_layer`` concatenates a
  layer's pieces in row order, embeds it (or fits on a sample and transforms chunks, see
  :func:`embed_sampled`) and returns a :class:`LayerEmbedding`; the client writes each layer into
  the staging directory as soon as it arrives (so a killed client resumes with ``--resume``).
- ``pair_stats`` (one per consecutive layer pair) -> centre, Procrustes rotation, residual and
  similarity; the client chains the rotations (``R_k = Q_k R_(k-1)``, equal to
  :func:`engine.align.canonical_alignment`) and computes the cross-model frame;
  ``similarity_matrix`` is one task per model pair.

Every task is submitted with ``retries``; a worker that dies mid-task is replaced by its nanny and
the scheduler reruns what was lost (lost shard data is recomputed from its recipe). Only the
client writes the bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.device import resolve, to_host
from engine.pipeline import LayerEmbedding, PrepareConfig, embed_layer

log = logging.getLogger("layertour")

TRANSFORM_CHUNK = 8192  # rows per umap `transform` call; fixed so that any cluster size gives one result
_SCHEDULER_RE = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/]+:\d+/?$")


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how to distribute ``prepare``.

    cluster : ``"local:N"``, N worker processes on loopback (one per GPU through dask-cuda's
        ``LocalCUDACluster`` when the device is CUDA and dask-cuda is installed).
    scheduler : ``"tcp://HOST:PORT"`` of a running scheduler (exclusive with ``cluster``).
    inputs : how workers rebuild their image ranges (required).
    shards_per_worker : image ranges per worker (at least one batch each).
    retries : Dask retries per task (on top of the scheduler's reruns after a lost worker).
    trace_dir : if set, every task writes an empty ``<kind>.<model>.<what>.<pid>`` file there when it
        starts (a log of where work ran; the tests use it to kill a worker mid-task).
    """

    cluster: str | None = None
    scheduler: str | None = None
    inputs: InputRecipe | None = None
    shards_per_worker: int = 2
    retries: int = 2
    trace_dir: str | None = None

    def __post_init__(self):
        if (self.cluster is None) == (self.scheduler is None):
            raise ValueError("give exactly one of --cluster local:N and --scheduler tcp://HOST:PORT")
        if self.cluster is not None:
            local_workers(self.cluster)
        if self.scheduler is not None and not _SCHEDULER_RE.match(self.scheduler):
            raise ValueError(f"--scheduler {self.scheduler!r}: expected tcp://HOST:PORT")
        if self.shards_per_worker < 1 or self.retries < 0:
            raise ValueError(f"shards_per_worker={self.shards_per_worker} must be >= 1 and "
                             f"retries={self.retries} >= 0")


def local_workers(spec: str) -> int:
    """N of ``"local:N"`` (N >= 1); ``ValueError`` naming ``--cluster`` otherwise."""
    m = re.fullmatch(r"local:(\d+)", spec or "")
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--cluster {spec!r}: expected local:N with N >= 1 worker processes")
    return int(m.group(1))


# ---------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class ModelRecipe:
    """How a worker rebuilds a model (an ``nn.Module`` is not picklable in general).

    Either ``spec`` + ``weights`` for :func:`engine.models.load_model` (paths made absolute: workers
    on other hosts need the same paths), or an importable zero-argument ``factory``; ``state`` (a
    dict of CPU tensors) then overrides the weights. Weights that are drawn at random (``none``, or
    a file model's own factory) travel as ``state``: otherwise each process would draw its own.
    ``key`` identifies the model in the per-worker cache.
    """

    key: str
    spec: str | None = None
    weights: str = "DEFAULT"
    factory: Callable | None = None
    state: dict | None = field(default=None, repr=False)

    @classmethod
    def from_spec(cls, spec: str, weights: str = "DEFAULT", module=None) -> ModelRecipe:
        """Recipe for ``load_model(spec, weights)``; ``module`` (the client's copy) supplies the
        state when the weights are random."""
        path, sep, factory = spec.rpartition(":")
        file_model = bool(sep) and path.endswith(".py")
        if file_model:
            spec = f"{Path(path).resolve()}:{factory}"
        if weights not in ("DEFAULT", "none"):
            weights = str(Path(weights).resolve())
        state = None
        if weights == "none" or (file_model and weights == "DEFAULT"):
            if module is None:
                raise ValueError(f"model {spec!r} with random weights: pass the client's module so that "
                                 "every worker gets the same weights")
            state = _state(module)
        key = f"spec:{spec}|{weights}" + ("" if state is None else f"|{_digest(state)}")
        return cls(key=key, spec=spec, weights=weights, state=state)

    @classmethod
    def from_module(cls, factory: Callable, module) -> ModelRecipe:
        """``factory()`` must build ``module``'s architecture; its state dict travels with the tasks."""
        state = _state(module)
        return cls(key=f"state:{factory.__module__}.{factory.__qualname__}:{_digest(state)}",
                   factory=factory, state=state)

    def build(self):
        """The ``nn.Module`` in eval mode (on the CPU; ``record`` moves it to the device)."""
        if self.spec is not None:
            from engine.models import load_model

            model = load_model(self.spec, weights=self.weights)[0]
        else:
            model = self.factory()
        if self.state is not None:
            model.load_state_dict(self.state, strict=True)
        return model.eval()


def _state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _digest(state: dict) -> str:
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_MODELS: OrderedDict[str, tuple] = OrderedDict()  # key -> (module, lock); per worker process
_MODELS_LOCK = threading.Lock()
_BUILDS: dict[str, int] = {}
_CACHE_SIZE = 4


def cached_model(recipe: ModelRecipe):
    """(module, lock) for ``recipe``, built once per process; hold the lock while hooks are attached."""
    with _MODELS_LOCK:
        hit = _MODELS.get(recipe.key)
        if hit is None:
            hit = (recipe.build(), threading.Lock())
            _BUILDS[recipe.key] = _BUILDS.get(recipe.key, 0) + 1
            _MODELS[recipe.key] = hit
            while len(_MODELS) > _CACHE_SIZE:
                _MODELS.popitem(last=False)
        else:
            _MODELS.move_to_end(recipe.key)
        return hit


def model_builds() -> dict[str, int]:
    """How many times this process built each model (key -> count)."""
    return dict(_BUILDS)


@dataclass(frozen=True)
class InputRecipe:
    """How a worker rebuilds rows ``[start, stop)`` of an input set.

    kind : ``"digits"`` (:func:`engine.inputs.digits_inputs` with ``size``, ``channels``),
        ``"images"`` (an image folder at ``path``, ``total`` files seen by the client) or
        ``"tensor"`` (``array``: float32 (rows, C, H, W) host data shipped with the task).
    n : rows of the whole input set (for ``"tensor"``: of ``array``).
    """

    kind: str
    n: int
    start: int = 0
    stop: int | None = None
    size: int = 8
    channels: int = 1
    path: str | None = None
    total: int | None = None
    array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in ("digits", "images", "tensor"):
            raise ValueError(f"InputRecipe kind={self.kind!r}: expected digits, images or tensor")

    @classmethod
    def digits(cls, n: int, size: int = 8, channels: int = 1) -> InputRecipe:
        return cls("digits", int(n), size=size, channels=channels)

    @classmethod
    def images(cls, path, n: int) -> InputRecipe:
        root = Path(path).resolve()
        return cls("images", int(n), path=str(root), total=len(_folder_samples(root)))

    @classmethod
    def tensor(cls, x) -> InputRecipe:
        a = np.ascontiguousarray(to_host(x.numpy() if hasattr(x, "numpy") else x), dtype=np.float32)
        return cls("tensor", int(a.shape[0]), array=a)

    @property
    def rows(self) -> tuple[int, int]:
        return self.start, self.n if self.stop is None else self.stop

    def shard(self, start: int, stop: int) -> InputRecipe:
        """Rows ``[start, stop)`` of this recipe's rows, as a recipe (a tensor recipe keeps only them)."""
        a, b = self.rows
        if not 0 <= start < stop <= b - a:
            raise ValueError(f"shard [{start}, {stop}) outside the {b - a} rows of {self.kind} inputs")
        if self.kind == "tensor":
            rows = self.array[a + start:a + stop].copy()
            return replace(self, n=stop - start, start=0, stop=None, array=rows)
        return replace(self, start=a + start, stop=a + stop)

    def build(self):
        """The :class:`engine.inputs.InputSet` of this recipe's rows (batches in order)."""
        from engine.inputs import digits_inputs, tensor_inputs

        a, b = self.rows
        if self.kind == "tensor":
            return _slice_inputs(tensor_inputs(self.array), a, b)
        if self.kind == "digits":
            return _slice_inputs(digits_inputs(n=self.n, size=self.size, channels=self.channels), a, b)
        return _folder_rows(self, a, b)


def _slice_inputs(full, a: int, b: int):
    """Rows [a, b) of an in-memory InputSet, with the same tensors, labels and thumbnails."""
    from engine.inputs import InputSet

    if (a, b) == (0, full.n):
        return full
    x = next(iter(full.batches(full.n)))[a:b]

    def batch_fn(batch_size):
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], None

    return InputSet(name=full.name, description=f"{full.description} [rows {a}:{b}]", labels=full.labels[a:b],
                    label_names=full.label_names, batch_fn=batch_fn, thumbnails=full.thumbnails[a:b].copy())


def _folder_samples(root: Path) -> list:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found on this host")
    return ImageFolder(str(root), loader=lambda p: p).samples


def _folder_rows(recipe: InputRecipe, a: int, b: int):
    """Rows [a, b) of ``image_folder_inputs(path, n)``: the same evenly spaced files, decoded here
    in this process (Dask workers are daemons and may not start DataLoader processes)."""
    import torch

    from engine.inputs import InputSet, _FolderImages

    root = Path(recipe.path)
    samples = _folder_samples(root)
    if len(samples) != recipe.total:
        raise ValueError(f"image folder {root} holds {len(samples)} images on this worker, the client saw "
                         f"{recipe.total}")
    idx = (np.arange(recipe.n, dtype=np.int64) * len(samples)) // recipe.n
    chosen = [samples[i] for i in idx[a:b]]
    data = _FolderImages(chosen)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())

    def batch_fn(batch_size):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
        for x, thumbs in loader:
            yield x, thumbs.numpy()

    return InputSet(name=root.name, description=f"{root} rows {a}:{b}", labels=[s[1] for s in chosen],
                    label_names=classes, batch_fn=batch_fn)


def shard_ranges(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Split rows [0, n) into at most ``shards`` ranges whose starts are multiples of ``batch_size``."""
    if n < 1 or batch_size < 1 or shards < 1:
        raise ValueError(f"shard_ranges: n={n}, batch_size={batch_size}, shards={shards} must be >= 1")
    batches = -(-n // batch_size)
    per = -(-batches // min(shards, batches)) * batch_size
    return [(a, min(a + per, n)) for a in range(0, n, per)]


# ------------------------------------------------------------------------------------------ tasks


def _trace(trace_dir: str | None, kind: str, model: str, what: str) -> None:
    if trace_dir:
        Path(trace_dir, f"{kind}.{model}.{what}.{os.getpid()}").touch()


def record_shard(recipe: ModelRecipe, shard: InputRecipe, layers: Sequence, config: PrepareConfig,
                 skip: Sequence[str], want_thumbs: bool, trace_dir: str | None, model_name: str,
                 threads: int | None = None) -> dict:
    """Task: record the unfinished layers over one image range.

    ``threads``: torch's intra-op thread count for the forward passes, the client's own. On the CPU
    a GEMM's result depends in its last bits on how many threads split it (measured: 4e-7 on a
    128->64 linear layer, 1 vs 2 threads), and UMAP magnifies such differences, so workers (which
    Dask starts with ``OMP_NUM_THREADS=1``) must use the client's count to record what one process
    records.

    Returns ``{"layers": {id: (rows, D) float32 host array}, "thumbs": (rows, 32, 32, 3) uint8 or
    None}`` (on CUDA the activations are copied to the host here, rows·D·4 bytes per layer).
    """
    from engine.activations import record

    a, b = shard.rows
    _trace(trace_dir, "record", model_name, f"{a}-{b}")
    model, lock = cached_model(recipe)
    budget = None if config.memory_budget_gib is None else int(config.memory_budget_gib * 2**30)
    with lock, _intra_op_threads(threads):
        inputs = shard.build()
        out = {spec.id: np.ascontiguousarray(to_host(X), dtype=np.float32)
               for spec, X in record(model, inputs, list(layers), backend=resolve(config.device),
                                     batch_size=config.batch_size, max_dim=config.max_dim,
                                     max_width=config.max_width, pooling=config.pooling,
                                     memory_budget=budget, skip=set(skip), progress=False)}
        thumbs = np.array(inputs.thumbnails) if want_thumbs else None
    return {"layers": out, "thumbs": thumbs}


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` for the block (nothing when ``n`` is None)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pick(shard_result: dict, layer_id: str) -> np.ndarray:
    return shard_result["layers"][layer_id]


def _thumbs(shard_result: dict) -> np.ndarray:
    return shard_result["thumbs"]


def embed_task(config: PrepareConfig, init, trace_dir: str | None, model_name: str, layer_id: str,
               *pieces: np.ndarray) -> LayerEmbedding:
    """Task: one layer's pieces (in row order) -> :func:`engine.pipeline.embed_layer`."""
    _trace(trace_dir, "embed", model_name, layer_id)
    backend = resolve(config.device)
    X = backend.xp.asarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
    if init is not None:
        init = backend.xp.asarray(init, dtype=backend.xp.float32)
    return embed_layer(X, config, "spectral" if init is None else init, backend)


def _embedding(res: LayerEmbedding) -> np.ndarray:
    return res.embedding


def next_aligned(emb: np.ndarray, prev_aligned: np.ndarray | None) -> np.ndarray:
    """The layer centred and rotated onto the previous aligned layer ((N, p) float64), as the
    single-process ``init="previous"`` chain does."""
    from engine.align import procrustes

    centred = np.asarray(emb, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    return centred if prev_aligned is None else centred @ procrustes(centred, prev_aligned)


def pair_stats(E, T) -> dict:
    """Task: centre of E, Procrustes Q of centred E onto centred T, residual and similarity.

    E, T : (N, p) float32 host arrays (layer k and k-1). With ``R_(k-1)`` the previous layer's
    rotation, ``R_k = Q @ R_(k-1)`` is exactly the chained canonical alignment.
    """
    from engine.align import procrustes

    e = np.asarray(E, dtype=np.float64)
    t = np.asarray(T, dtype=np.float64)
    mu = e.mean(axis=0)
    ec, tc = e - mu, t - t.mean(axis=0)
    Q = np.asarray(procrustes(ec, tc))
    M = ec.T @ tc
    sq_e, sq_t = float((ec * ec).sum()), float((tc * tc).sum())
    if not (sq_e > 0.0 and sq_t > 0.0):
        raise ValueError("a layer has zero variance (a constant embedding): it cannot be aligned")
    norm = np.sqrt(sq_e * sq_t)
    residual = max(0.0, 2.0 - 2.0 * float(np.trace(Q.T @ M)) / norm)
    sim = float(np.linalg.svd(M, compute_uv=False).sum()) / norm
    return {"center": mu, "Q": Q, "residual": residual, "similarity": sim}


def _mean64(E) -> np.ndarray:
    return np.asarray(E, dtype=np.float64).mean(axis=0)


def _similarity_matrix(layers_a: list, layers_b: list) -> np.ndarray:
    from engine.align import similarity_matrix

    return np.asarray(similarity_matrix(layers_a, layers_b), dtype=np.float32)


# --------------------------------------------------------------- sample fit + transform (no Dask)


def sample_indices(n: int, m: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of the ``m`` rows (of ``n``) that UMAP is fitted on; seeded."""
    if not 0 < m < n:
        raise ValueError(f"--fit-sample {m}: must lie between 1 and N-1 = {n - 1}")
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False)).astype(np.int64)


def take_rows(idx: np.ndarray, starts: Sequence[int], *pieces) -> np.ndarray:
    """Rows ``idx`` (sorted, global) out of consecutive pieces starting at ``starts``."""
    out = []
    for a, piece in zip(starts, pieces):
        sel = idx[(idx >= a) & (idx < a + piece.shape[0])] - a
        out.append(np.asarray(to_host(piece))[sel])
    return np.concatenate(out).astype(np.float32, copy=False)


def fit_sample(Xs: np.ndarray, config: PrepareConfig, init=None) -> dict:
    """Fit UMAP on the sample Xs ((m, D) float32): ``{"model", "embedding" (m, p) float32, ...}``.

    umap-learn on the host, or cuML (model on the device) when the back end is CUDA and
    ``umap_backend`` allows it. ``init`` : (m, p) array or None (spectral).
    """
    from engine.embed import _import_cuml, scale_init

    backend = resolve(config.device)
    cuml, _why = (None, "") if config.umap_backend == "umap-learn" else _import_cuml()
    use_cuml = config.umap_backend == "cuml" or (backend.is_cuda and cuml is not None)
    if config.umap_backend == "cuml" and cuml is None:
        raise ImportError("umap_backend='cuml' but cuML is not importable")
    init_v = "spectral" if init is None else to_host(scale_init(np.asarray(to_host(init))))
    kw = dict(n_components=config.dim, n_neighbors=config.n_neighbors, min_dist=config.min_dist,
              init=init_v, random_state=config.seed)
    t0 = time.perf_counter()
    if use_cuml:
        from cuml.manifold import UMAP

        model = UMAP(output_type="numpy", **kw)
        emb = model.fit_transform(backend.xp.asarray(Xs))
        name, knn = "cuml", "brute_force_knn"
    else:
        import umap

        model = umap.UMAP(**kw)
        emb = model.fit_transform(np.asarray(Xs))
        name, knn = "umap-learn", "exact" if getattr(model, "_small_data", False) else "nn_descent"
    return {"model": model, "embedding": np.asarray(to_host(emb), dtype=np.float32), "backend": name,
            "knn_algorithm": knn, "seconds": time.perf_counter() - t0}


def transform_rows(fit: dict, a: int, b: int, starts: Sequence[int], *pieces) -> dict:
    """Rows [a, b) transformed by the fitted model: ``{"Y": (b - a, p) float32 host, "seconds"}``."""
    X = take_rows(np.arange(a, b, dtype=np.int64), starts, *pieces)
    t0 = time.perf_counter()
    Y = np.asarray(to_host(fit["model"].transform(X)), dtype=np.float32)
    return {"Y": Y, "seconds": time.perf_counter() - t0}


def finish_sampled(config: PrepareConfig, n: int, fit: dict, idx: np.ndarray, trust_idx: np.ndarray,
                   held_idx: np.ndarray, X_trust: np.ndarray, X_held: np.ndarray, Xs: np.ndarray,
                   *chunks: dict) -> LayerEmbedding:
    """Assemble the (n, p) embedding (the sample's own fit rows, transformed rows elsewhere) and its
    trustworthiness: overall (same rows as the full path), on fitted rows, on held-out rows."""
    from engine.embed import trustworthiness

    Y = np.concatenate([c["Y"] for c in chunks])
    Y[idx] = fit["embedding"]
    t0 = time.perf_counter()
    k = config.n_neighbors
    tw_all = trustworthiness(X_trust, Y[trust_idx], k=k, n_sample=len(trust_idx))
    tw_fit = trustworthiness(Xs, fit["embedding"], k=k, n_sample=config.trust_sample, seed=config.seed)
    tw_held = trustworthiness(X_held, Y[held_idx], k=k, n_sample=len(held_idx))
    meta = {"trustworthiness": round(tw_all, 6), "umap_backend": fit["backend"],
            "knn_algorithm": fit["knn_algorithm"], "umap_seconds": round(fit["seconds"], 3),
            "trustworthiness_seconds": round(time.perf_counter() - t0, 3),
            "umap_params": {"n_components": config.dim, "n_neighbors": k, "min_dist": config.min_dist,
                            "seed": config.seed, "n": int(n), "dim": int(Xs.shape[1])},
            "fit_sample": {"n": int(len(idx)), "seed": config.seed, "transform_chunk": TRANSFORM_CHUNK,
                           "transform_seconds": round(sum(c["seconds"] for c in chunks), 3),
                           "trustworthiness_fit_rows": round(tw_fit, 6),
                           "trustworthiness_transformed_rows": round(tw_held, 6),
                           "trustworthiness_cost": round(tw_fit - tw_held, 6),
                           "held_out_rows": int(len(held_idx))}}
    return LayerEmbedding(Y, meta, int(Xs.shape[1]), fit["seconds"])


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
    chunks = [(a, min(a + TRANSFORM_CHUNK, n)) for a in range(0, n, TRANSFORM_CHUNK)]
    return {"idx": idx, "trust_idx": trust_idx.astype(np.int64), "held_idx": held.astype(np.int64),
            "chunks": chunks}


def sampled_layer(submit: Callable, config: PrepareConfig, n: int, starts: Sequence[int], pieces: Sequence,
                  init=None):
    """Sample fit + chunked transform of one layer, written once for both paths.

    ``submit(fn, *args)`` either calls ``fn`` (single process) or returns a Dask future; ``pieces``
    (values or futures) hold consecutive rows from ``starts``. Returns the
    :class:`engine.pipeline.LayerEmbedding` (or its future).
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
    fit = submit(fit_sample, Xs, config, init_s)
    chunks = []
    for a, b in plan["chunks"]:
        st, ps = over(a, b)
        chunks.append(submit(transform_rows, fit, a, b, st, *ps))
    return submit(finish_sampled, config, n, fit, plan["idx"], plan["trust_idx"], plan["held_idx"],
                  rows(plan["trust_idx"]), rows(plan["held_idx"]), Xs, *chunks)


def embed_sampled(X, config: PrepareConfig, init=None) -> LayerEmbedding:
    """Single-process sample fit + transform of X ((N, D), NumPy or CuPy): no Dask involved."""
    Xh = np.asarray(to_host(X), dtype=np.float32)
    init_h = None if init is None or isinstance(init, str) else np.asarray(to_host(init), dtype=np.float32)
    return sampled_layer(lambda fn, *args: fn(*args), config, Xh.shape[0], [0], [Xh], init_h)


# ------------------------------------------------------------------------------------------ client


def connect(options: ClusterOptions, device: str = "auto"):
    """``(client, cluster or None, description)``; the caller closes both.

    ``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes on 127.0.0.1 (no
    dashboard), or dask-cuda's ``LocalCUDACluster`` (one worker per GPU, N of them) when the back
    end is CUDA and dask-cuda imports. A scheduler address connects to that cluster.
    """
    from dask.distributed import Client, LocalCluster

    if not log.isEnabledFor(logging.INFO):  # Dask's own INFO chatter only with -v; warnings stay
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if options.scheduler is not None:
        client = Client(options.scheduler, timeout="30s")
        client.wait_for_workers(1, timeout=60)
        return client, None, f"scheduler {options.scheduler}"
    n = local_workers(options.cluster)
    backend = resolve(device)
    if backend.is_cuda:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.warning("dask-cuda is not installed: %d CPU-pinned workers will share the first GPU", n)
        else:
            cluster = LocalCUDACluster(n_workers=n, threads_per_worker=1, dashboard_address=None)
            return Client(cluster), cluster, f"LocalCUDACluster, {n} workers"
    cluster = LocalCluster(n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None,
                           host="127.0.0.1", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster, f"LocalCluster, {n} worker processes"


def run(jobs, inputs, writer, config: PrepareConfig, options: ClusterOptions, *, progress: bool,
        timings: dict) -> dict:
    """Distributed body of :func:`engine.pipeline.prepare`: every layer written, aligned and compared
    in ``writer``; models' ``meta`` updated. Returns ``{"thumbnails": (N,32,32,3) uint8 or None,
    "provenance": {...}}``."""
    if options.inputs is None:
        raise ValueError("distributed prepare needs an InputRecipe (how workers rebuild the images)")
    if options.inputs.rows[1] - options.inputs.rows[0] != inputs.n:
        raise ValueError(f"InputRecipe has {options.inputs.n} rows but the inputs have {inputs.n}")
    missing = [j.name for j in jobs if getattr(j, "recipe", None) is None]
    if missing:
        raise ValueError(f"distributed prepare: models {missing} have no ModelRecipe "
                         "(how workers rebuild them)")
    t0 = time.perf_counter()
    client, cluster, desc = connect(options, config.device)
    try:
        timings["cluster_start_s"] = time.perf_counter() - t0
        n_workers = len(client.scheduler_info()["workers"])
        log.info("prepare: distributing over %s (%d workers)", desc, n_workers)
        thumbs = _run(client, jobs, inputs, writer, config, options, n_workers, progress, timings)
        return {"thumbnails": thumbs,
                "provenance": {"cluster": desc, "workers": n_workers, "retries": options.retries}}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run(client, jobs, inputs, writer, config, options, n_workers, progress, timings):
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    trace = options.trace_dir
    n = inputs.n

    def submit(fn, *args, **kw):
        return client.submit(fn, *args, retries=options.retries, pure=False, **kw)

    ranges = shard_ranges(n, config.batch_size, max(1, n_workers * options.shards_per_worker))
    import torch

    threads = torch.get_num_threads()  # workers record with the client's count: see record_shard
    starts = [a for a, _ in ranges]
    t_start = time.perf_counter()
    layer_futs: dict = {}  # future -> (job, index, spec)
    emb: dict[str, list] = {}  # model -> per layer: future or host array of the (N, p) embedding
    thumbs_f = None
    for k, job in enumerate(jobs):
        writer.add_model(job.name, meta=job.meta)
        done = {s.id for s in job.layers if writer.has_layer(job.name, s.id)}
        todo = [s for s in job.layers if s.id not in done]
        shards = []
        if todo:
            shards = [submit(record_shard, job.recipe, options.inputs.shard(a, b), job.layers, config,
                             sorted(done), k == 0, trace, job.name, threads,
                             key=f"record-{job.name}-{a}-{uuid()}")
                      for a, b in ranges]
            if k == 0:
                thumbs_f = [submit(_thumbs, s) for s in shards]
        prev = None
        emb[job.name] = []
        for i, spec in enumerate(job.layers):
            if spec.id in done:
                e = np.asarray(writer.read_layer(job.name, spec.id), dtype=np.float32)
                emb[job.name].append(e)
            else:
                pieces = [submit(_pick, s, spec.id) for s in shards]
                if config.fit_sample:
                    res = sampled_layer(submit, config, n, starts, pieces, prev)
                else:
                    res = submit(embed_task, config, prev, trace, job.name, spec.id, *pieces,
                                 key=f"embed-{job.name}-{spec.id}-{uuid()}")
                layer_futs[res] = (job, i, spec)
                e = submit(_embedding, res)
                emb[job.name].append(e)
            if config.init == "previous":
                prev = submit(next_aligned, emb[job.name][-1], prev)
    bar = tqdm(total=len(layer_futs), desc="layers", unit="layer", disable=not progress, leave=False)
    for fut in as_completed(list(layer_futs)):
        job, i, spec = layer_futs[fut]
        res = fut.result()
        writer.write_layer(job.name, spec.id, res.embedding, name=spec.name, source_dim=res.source_dim,
                           meta=res.meta, index=i)
        log.info("%s %s: D=%d -> %d in %.1fs, trustworthiness %.3f", job.name, spec.id, res.source_dim,
                 config.dim, res.seconds, res.meta["trustworthiness"])
        timings["umap_s"] = timings.get("umap_s", 0.0) + res.seconds
        bar.update()
    bar.close()
    timings["layers_s"] = time.perf_counter() - t_start
    _align(client, submit, jobs, writer, emb, timings)
    if thumbs_f is None:
        return None
    return np.concatenate(client.gather(thumbs_f))


def _align(client, submit, jobs, writer, emb, timings) -> None:
    """Per-layer Procrustes as tasks, chained on the client; cross-model frames; similarity tasks."""
    from engine.align import cross_model_rotation

    t0 = time.perf_counter()
    ref_a = None
    for k, job in enumerate(jobs):
        layers = emb[job.name]
        mu0 = submit(_mean64, layers[0])
        stats = client.gather([mu0] + [submit(pair_stats, layers[i], layers[i - 1])
                                       for i in range(1, len(layers))])
        rotations, centers = [np.eye(writer.dim)], [np.asarray(stats[0])]
        for s in stats[1:]:
            rotations.append(s["Q"] @ rotations[-1])
            centers.append(s["center"])
        first = np.asarray(writer.read_layer(job.name, job.layers[0].id), dtype=np.float64) - centers[0]
        if k == 0:
            ref_a = first
        else:
            Q = np.asarray(cross_model_rotation(ref_a, first))
            rotations = [R @ Q for R in rotations]
        for spec, R, c in zip(job.layers, rotations, centers):
            writer.set_alignment(job.name, spec.id, R, c)
        job.meta["consecutive_similarity"] = [round(s["similarity"], 6) for s in stats[1:]]
        job.meta["alignment_residuals"] = [0.0] + [round(s["residual"], 6) for s in stats[1:]]
    timings["align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]]
    mats = client.gather([submit(_similarity_matrix, emb[a.name], emb[b.name]) for a, b in pairs])
    for (a, b), S in zip(pairs, mats):
        writer.set_similarity(a.name, b.name, S)
    timings["similarity_s"] = time.perf_counter() - t0


def uuid() -> str:
    return os.urandom(4).hex()
