"""``prepare`` on a Dask cluster: sharded forward passes, per-layer UMAP and alignment as tasks.

Nothing here imports Dask at module level: ``dask.distributed`` (and ``dask_cuda`` on CUDA hosts)
load only inside :func:`connect` and :func:`run`, so the single-process ``prepare`` never pays for
them. The run's types (:mod:`engine.jobs`), the per-layer work and the sample-fit task graph
(:mod:`engine.layerjob`) and the alignment chain (:mod:`engine.align`) are the single-process
runner's own: this module only distributes them.

Task graph per model (futures; Dask moves the data between workers):

- ``record_shard`` (one per image range ``[a, b)``, ranges on multiples of the batch size so the
  batches equal the single-process ones): the worker rebuilds the model from a picklable
  :class:`ModelRecipe` (cached per worker process) and the inputs from an :class:`InputRecipe`,
  records every unfinished layer; returns host float32 ``(b - a, D)`` arrays per layer.
- ``_pick`` (runs where its shard lives) -> one layer's piece; ``embed_layer`` concatenates a
  layer's pieces in row order, embeds it (or fits on a sample and transforms chunks, see
  :func:`engine.layerjob.sampled_layer`) and returns a :class:`engine.jobs.LayerEmbedding`; the
  client writes each layer into the staging directory as soon as it arrives (so a killed client
  resumes with ``--resume``).
- :func:`engine.align.pair_stats` (one task per consecutive layer pair) -> small moments; the
  client chains them with :func:`engine.align.chain` (equal to ``canonical_alignment``) and joins
  the models with :func:`engine.align.join_frames`; ``similarity_matrix`` is one task per model pair.

A training run (a job with checkpoints) is the same graph once per checkpoint, in training order:
each checkpoint gets its own :class:`ModelRecipe` (:meth:`ModelRecipe.at`: the checkpoint's weights
loaded after the model is built, one cached module per worker and checkpoint); with ``--init
previous-checkpoint`` an embedding task depends on the same layer's embedding at the previous
checkpoint; the input layer is embedded once and copied by the client; a classifier's logits come
back from the shards and become per-checkpoint attributes; the client aligns the whole grid from
the written files (:func:`engine.checkpoints.align_bundle`, as the single-process runner does).

Every task is submitted with ``retries``; a worker that dies mid-task is replaced by its nanny and
the scheduler reruns what was lost (lost shard data is recomputed from its recipe). Only the
client writes the bundle.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
from engine.jobs import Checkpoint, LayerEmbedding, PrepareConfig
from engine.layerjob import embed_layer, sampled_layer

log = logging.getLogger("layertour")

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
    checkpoint: Checkpoint | None = field(default=None, repr=False)  # loaded over the weights
    trust: bool = False  # the checkpoint may be a pickled module

    def at(self, checkpoint: Checkpoint, trust: bool = False) -> ModelRecipe:
        """This model with ``checkpoint``'s weights loaded (:func:`engine.checkpoints.load_checkpoint`)
        after it is built: one recipe (and one cached module per worker) per checkpoint."""
        from engine.checkpoints import checkpoint_digest

        key = f"{self.key}|checkpoint:{checkpoint.name}:{checkpoint_digest(checkpoint)}"
        return replace(self, key=key, checkpoint=checkpoint, trust=trust)

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
        key = f"spec:{spec}|{weights}" + ("" if state is None else f"|{_digest(module)}")
        return cls(key=key, spec=spec, weights=weights, state=state)

    @classmethod
    def from_module(cls, factory: Callable, module) -> ModelRecipe:
        """``factory()`` must build ``module``'s architecture; its state dict travels with the tasks."""
        state = _state(module)
        return cls(key=f"state:{factory.__module__}.{factory.__qualname__}:{_digest(module)}",
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
        if self.checkpoint is not None:
            from engine.checkpoints import load_checkpoint

            load_checkpoint(model, self.checkpoint, trust=self.trust)
        return model.eval()


def _state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _digest(module) -> str:
    from engine.models import state_digest

    return state_digest(module)


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
    skip_unreadable: bool = False
    chosen: int | None = None
    array: np.ndarray | None = field(default=None, repr=False, compare=False)
    drop: tuple | None = None  # images: positions among the chosen files the client found unreadable
    categories: tuple | None = None  # images: the model's classes (names and targets as the client's)
    imagenet_names: tuple | None = None
    synthetic: dict | None = None  # synthetic: the keyword arguments of engine.inputs.synthetic_inputs

    def __post_init__(self):
        if self.kind not in ("digits", "images", "tensor", "synthetic"):
            raise ValueError(f"InputRecipe kind={self.kind!r}: expected digits, images, tensor or synthetic")

    @classmethod
    def digits(cls, n: int, size: int = 8, channels: int = 1) -> InputRecipe:
        return cls("digits", int(n), size=size, channels=channels)

    @classmethod
    def images(cls, path, n: int, skip_unreadable: bool = False, chosen: int | None = None) -> InputRecipe:
        """An image folder: ``n`` rows of the client's input set, made from ``chosen`` (default n)
        evenly spaced files less the unreadable ones when ``skip_unreadable``."""
        from engine.inputs import folder_samples

        root = Path(path).resolve()
        return cls("images", int(n), path=str(root), total=len(folder_samples(root)[0]),
                   skip_unreadable=skip_unreadable, chosen=None if chosen is None else int(chosen))

    @classmethod
    def from_images(cls, source, inputs, chosen: int | None = None, categories=None) -> InputRecipe:
        """The client's :func:`engine.inputs.image_inputs` set ``inputs`` of folder or list
        ``source``: workers read the same files, leave out the ones the client found unreadable
        (``inputs.dropped``: no second check) and name the classes alike."""
        from engine.inputs import image_samples
        from engine.models import imagenet_categories

        root = Path(source).resolve()
        drop = tuple(int(i) for i in getattr(inputs, "dropped", ()))
        names = imagenet_categories()
        return cls("images", int(inputs.n), path=str(root), total=len(image_samples(root)[0]),
                   chosen=None if chosen is None else int(chosen), drop=drop,
                   categories=None if categories is None else tuple(categories),
                   imagenet_names=None if names is None else tuple(names))

    @classmethod
    def synthetic_of(cls, n: int, **kwargs) -> InputRecipe:
        """:func:`engine.inputs.synthetic_inputs` ``(n, **kwargs)``: nothing but the arguments travels."""
        return cls("synthetic", int(n), synthetic=dict(kwargs))

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
        if self.kind == "synthetic":
            from engine.inputs import synthetic_inputs

            return synthetic_inputs(self.n, **(self.synthetic or {})).rows(a, b)
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


def _folder_rows(recipe: InputRecipe, a: int, b: int):
    """Rows [a, b) of the client's ``image_folder_inputs``: the same evenly spaced files, decoded
    here in this process (Dask workers are daemons and may not start DataLoader processes)."""
    from engine.inputs import image_folder_inputs, image_inputs, image_samples

    root = Path(recipe.path)
    total = len(image_samples(root)[0])
    if total != recipe.total:
        raise ValueError(f"images {root}: {total} images on this worker, the client saw {recipe.total}")
    if recipe.drop is not None:
        chosen = recipe.chosen or (recipe.n + len(recipe.drop))
        inputs = image_inputs(root, chosen, workers=0, rows=(a, b), drop=recipe.drop,
                              categories=recipe.categories, imagenet_names=recipe.imagenet_names)
    else:
        inputs = image_folder_inputs(root, recipe.chosen or recipe.n, workers=0, rows=(a, b),
                                     skip_unreadable=recipe.skip_unreadable)
    if inputs.n != b - a:
        raise ValueError(f"image folder {root}: this worker reads {inputs.n} rows for [{a}, {b})")
    return inputs


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
def _intra_op_threads(n):
    """torch's intra-op thread count set to ``n`` for the block (nothing when ``n`` is None); a pair
    ``(torch, blas)`` also sets NumPy's BLAS (threadpoolctl): the PCA basis and its products on a
    worker then sum in the client's order."""
    if n is None:
        yield
        return
    import torch

    n_torch, n_blas = (n, None) if isinstance(n, int) else n
    before = torch.get_num_threads()
    torch.set_num_threads(n_torch)
    try:
        if n_blas is None:
            yield
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=n_blas, user_api="blas"):
                yield
    finally:
        torch.set_num_threads(before)


def client_threads() -> tuple[int, int | None]:
    """(torch intra-op threads, NumPy BLAS threads) of this process: what workers should use."""
    import torch

    try:
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        blas = []
    return torch.get_num_threads(), (blas[0] if blas else None)


def _pick(shard_result: dict, layer_id: str) -> np.ndarray:
    return shard_result["layers"][layer_id]


def _thumbs(shard_result: dict) -> np.ndarray:
    return shard_result["thumbs"]


def embed_task(config: PrepareConfig, init, trace_dir: str | None, model_name: str, layer_id: str,
               *pieces: np.ndarray) -> LayerEmbedding:
    """Task: one layer's pieces (in row order) -> :func:`engine.layerjob.embed_layer`.

    init : None (spectral), the previous layer's step of the ``--init previous`` chain
    (:func:`next_aligned`), or the same layer's (N, p) embedding at the previous checkpoint
    (``--init previous-checkpoint``)."""
    _trace(trace_dir, "embed", model_name, layer_id)
    backend = resolve(config.device)
    X = backend.xp.asarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
    if init is not None:
        init = backend.xp.asarray(init["aligned"] if isinstance(init, dict) else init,
                                  dtype=backend.xp.float32)
    return embed_layer(X, config, "spectral" if init is None else init)


def _embedding(res: LayerEmbedding) -> np.ndarray:
    return res.embedding


def _aligned_of(step: dict) -> np.ndarray:
    return step["aligned"]


def next_aligned(emb: np.ndarray, prev_step: dict | None) -> dict:
    """Task: one step of the ``--init previous`` chain (:func:`engine.align.extend_chain`, as the
    single-process runner does it): ``{"aligned": (N, p) float64, "end": ChainEnd}``."""
    from engine.align import extend_chain

    e = np.asarray(emb, dtype=np.float64)
    al, end = extend_chain(None if prev_step is None else prev_step["end"], e)
    return {"aligned": al.apply(e), "end": end}


def _similarity_matrix(layers_a: list, layers_b: list) -> np.ndarray:
    from engine.align import similarity_matrix

    return np.asarray(similarity_matrix(layers_a, layers_b), dtype=np.float32)


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
        timings: dict, plan=None, hook=None, hooks: dict | None = None,
        collectors: dict | None = None) -> dict:
    """Distributed body of :func:`engine.pipeline.prepare`: every layer (of every checkpoint of a
    training run) written, aligned and compared in ``writer``; models' ``meta`` updated.
    In memory: the logits of classifiers go to their ``collectors`` (model name ->
    :class:`engine.checkpoints.OutputCollector` or None); ``hook`` (the caller's
    :class:`engine.stream.OutputHook`) needs a stream. ``plan`` (:class:`engine.stream.StreamPlan`)
    streams (:func:`_run_stream`) with ``hooks`` (model name -> a picklable OutputHook or None:
    model-output attributes). Returns ``{"thumbnails": (N,32,32,3) uint8 or None, "streamed":
    :func:`engine.stream.finish_streams`'s result or None, "provenance": {...}}``."""
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
        prov = {"cluster": desc, "workers": n_workers, "retries": options.retries}
        if plan is not None:
            got = _run_stream(client, jobs, inputs, writer, config, options, plan, hooks or {}, progress,
                              timings)
            return {"thumbnails": None, "streamed": got, "provenance": prov}
        if hook is not None:
            raise ValueError("an output hook on a Dask cluster needs a streaming run (--stream)")
        thumbs = _run(client, jobs, inputs, writer, config, options, n_workers, progress, timings,
                      collectors or {})
        return {"thumbnails": thumbs, "streamed": None, "provenance": prov}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run(client, jobs, inputs, writer, config, options, n_workers, progress, timings, collectors):
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    from engine.checkpoints import align_bundle, load_checkpoint, plan, static_layers

    trace = options.trace_dir
    n = inputs.n

    def submit(fn, *args, **kw):
        return client.submit(fn, *args, retries=options.retries, pure=False, **kw)

    ranges = shard_ranges(n, config.batch_size, max(1, n_workers * options.shards_per_worker))
    import torch

    threads = torch.get_num_threads()  # workers record with the client's count: see record_shard
    starts = [a for a, _ in ranges]
    t_start = time.perf_counter()
    layer_futs: dict = {}  # future -> (job, index, spec, checkpoint name)
    logit_futs: dict = {}  # (model, checkpoint) -> list of futures of the logits' pieces
    copies: list = []  # (job, index, spec, checkpoint, first checkpoint): layers that do not change
    emb: dict[str, list] = {}  # model -> per layer: future or host array (its last checkpoint's)
    thumbs_f = None
    for k, job in enumerate(jobs):
        writer.add_model(job.name, meta=job.meta)
        steps = plan(job)
        col = collectors.get(job.name)
        prev_embs: list | None = None
        for ki, ck in enumerate(steps):
            c = None if ck is None else ck.name
            recipe = job.recipe
            if ck is not None:  # the client loads each checkpoint too: it fails early, and gives the meta
                meta = {**ck.meta, **load_checkpoint(job.module, ck, trust=config.trust_checkpoints)}
                writer.add_checkpoint(job.name, c, meta=meta)
                recipe = recipe.at(ck, config.trust_checkpoints)
            done = {s.id for s in job.layers if writer.has_layer(job.name, s.id, c)}
            static = static_layers(job, ki) - done
            todo = [s for s in job.layers if s.id not in done | static]
            record_specs = list(job.layers) + ([col.spec] if col is not None else [])
            first_shards = k == 0 and ki == 0
            shards = []
            if todo or col is not None:
                shards = [submit(record_shard, recipe, options.inputs.shard(a, b), record_specs, config,
                                 sorted(done | static), first_shards, trace, job.name, threads,
                                 key=f"record-{job.name}-{c}-{a}-{uuid()}")
                          for a, b in ranges]
                if first_shards:
                    thumbs_f = [submit(_thumbs, sh) for sh in shards]
                if col is not None:
                    logit_futs[(job.name, c)] = [submit(_pick, sh, col.spec.id) for sh in shards]
            prev = None
            row: list = []
            for i, spec in enumerate(job.layers):
                if spec.id in done:
                    e = np.asarray(writer.read_layer(job.name, spec.id, c), dtype=np.float32)
                elif spec.id in static:
                    copies.append((job, i, spec, c, steps[0].name))
                    e = prev_embs[i]
                else:
                    pieces = [submit(_pick, sh, spec.id) for sh in shards]
                    init = prev
                    if config.init == "previous-checkpoint" and prev_embs is not None:
                        init = prev_embs[i]
                    if config.fit_sample:
                        if config.init == "previous" and prev is not None:
                            init = submit(_aligned_of, prev)
                        res = sampled_layer(submit, config, n, starts, pieces, init)
                    else:
                        res = submit(embed_task, config, init, trace, job.name, spec.id, *pieces,
                                     key=f"embed-{job.name}-{c}-{spec.id}-{uuid()}")
                    layer_futs[res] = (job, i, spec, c)
                    e = submit(_embedding, res)
                row.append(e)
                if config.init == "previous":
                    prev = submit(next_aligned, row[-1], prev)
            prev_embs = row
        emb[job.name] = prev_embs
    bar = tqdm(total=len(layer_futs), desc="layers", unit="layer", disable=not progress, leave=False)
    for fut in as_completed(list(layer_futs)):
        job, i, spec, c = layer_futs[fut]
        res = fut.result()
        writer.write_layer(job.name, spec.id, res.embedding, name=spec.name, source_dim=res.source_dim,
                           meta=res.meta, index=i, checkpoint=c)
        log.info("%s %s: D=%d -> %d in %.1fs, trustworthiness %.3f",
                 job.name if c is None else f"{job.name}@{c}", spec.id, res.source_dim, config.dim,
                 res.seconds, res.meta["trustworthiness"])
        timings["umap_s"] = timings.get("umap_s", 0.0) + res.seconds
        bar.update()
    bar.close()
    for job, i, spec, c, first in copies:
        rec = writer.layer_record(job.name, spec.id, first)
        writer.write_layer(job.name, spec.id, writer.read_layer(job.name, spec.id, first), name=spec.name,
                           source_dim=rec["source_dim"], index=i, checkpoint=c,
                           meta={**rec["meta"], "copied_from_checkpoint": first})
    for (model, c), futs in logit_futs.items():
        collectors[model].add((model, c), np.concatenate(client.gather(futs)))
    timings["layers_s"] = time.perf_counter() - t_start
    if any(job.checkpoints for job in jobs):  # training runs: aligned on the client, from the files
        align_bundle(writer, jobs, timings)
    else:
        _align(client, submit, jobs, writer, emb, timings)
    if thumbs_f is None:
        return None
    return np.concatenate(client.gather(thumbs_f))


def _align(client, submit, jobs, writer, emb, timings) -> None:
    """:func:`engine.align.pair_stats` as tasks, chained and joined on the client (the same chain
    as ``align_models``); similarity matrices as tasks."""
    from engine.align import chain, chain_similarities, join_frames, pair_stats

    t0 = time.perf_counter()
    chains = {}
    for job in jobs:
        layers = emb[job.name]
        stats = client.gather([submit(pair_stats, layers[0], layers[0])]
                              + [submit(pair_stats, layers[i], layers[i - 1]) for i in range(1, len(layers))])
        chains[job.name] = chain(stats)
    firsts = {job.name: np.asarray(writer.read_layer(job.name, job.layers[0].id)) for job in jobs}
    alignments = join_frames(chains, firsts)
    for job in jobs:
        for spec, a in zip(job.layers, alignments[job.name]):
            writer.set_alignment(job.name, spec.id, a.rotation, a.center)
        sims = chain_similarities(alignments[job.name])
        job.meta["consecutive_similarity"] = [round(float(v), 6) for v in sims]
        job.meta["alignment_residuals"] = [round(float(a.residual), 6) for a in alignments[job.name]]
    timings["align_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = [(a, b) for i, a in enumerate(jobs) for b in jobs[i + 1:]]
    mats = client.gather([submit(_similarity_matrix, emb[a.name], emb[b.name]) for a, b in pairs])
    for (a, b), S in zip(pairs, mats):
        writer.set_similarity(a.name, b.name, S)
    timings["similarity_s"] = time.perf_counter() - t0


def uuid() -> str:
    return os.urandom(4).hex()


# ---------------------------------------------------------------------------------------- stream

#: A stream task's image range, in transform chunks (rounded up to a multiple of the batch size):
#: fixed, so a resumed run may use another number of workers.
STREAM_RANGE_CHUNKS = 4


def stream_ranges(n: int, chunk: int, batch_size: int) -> list[tuple[int, int]]:
    """Image ranges of the stream tasks: starts on multiples of both the transform chunk and the
    batch size (so every task's chunks, batches and reduction blocks are the single-process run's)."""
    step = math.lcm(chunk, batch_size)
    span = step * max(1, -(-STREAM_RANGE_CHUNKS * chunk // step))
    return [(a, min(a + span, n)) for a in range(0, n, span)]


def record_rows(recipe: ModelRecipe, shard: InputRecipe, rows: np.ndarray, layers: Sequence,
                config: PrepareConfig, trace_dir: str | None, model_name: str, threads: int | None) -> dict:
    """Task: the activations of the rows ``rows`` (local to the image range ``shard``) of
    ``layers``: ``{layer id: (len(rows), D) float32 host}`` (a part of a fit sample or of the
    quality rows; only these rows are decoded)."""
    from engine.activations import record

    a, b = shard.rows
    _trace(trace_dir, "sample", model_name, f"{a}-{b}")
    model, lock = cached_model(recipe)
    with lock, _intra_op_threads(threads):
        inputs = shard.build().subset(rows)
        return {spec.id: np.ascontiguousarray(to_host(X), dtype=np.float32)
                for spec, X in record(model, inputs, list(layers), backend=resolve(config.device),
                                      batch_size=config.batch_size, max_dim=config.max_dim,
                                      max_width=config.max_width, pooling=config.pooling, progress=False)}


def fit_task(config: PrepareConfig, init, trace_dir: str | None, model_name: str, layer_id: str, threads,
             *pieces: np.ndarray) -> dict:
    """Task: one layer's fit on its sample (pieces in row order): :func:`engine.stream.fit_one`."""
    from engine.stream import fit_one

    _trace(trace_dir, "fit", model_name, layer_id)
    backend = resolve(config.device)
    X = backend.xp.asarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
    with _intra_op_threads(threads):
        return fit_one(X, config, None if init is None else init["aligned"])


def _fit_embedding(fit: dict) -> np.ndarray:
    return np.asarray(to_host(fit["fit"].embedding), dtype=np.float64)


def stream_task(recipe: ModelRecipe, shard: InputRecipe, layers: Sequence, fits: dict, config: PrepareConfig,
                hook, want_thumbs: bool, fitted_local: np.ndarray, fitted_from: int, trace_dir: str | None,
                model_name: str, threads: int | None) -> list:
    """Task: stream the image range ``shard`` through ``layers`` with the fitted models ``fits``
    (layer id -> :func:`engine.stream.fit_one` result): the list of its chunk results
    (:func:`engine.stream.stream_rows`, rows of the whole input set). Only (rows, p) embeddings,
    thumbnails and output attributes leave the worker."""
    from engine.jobs import ModelJob
    from engine.stream import stream_rows

    a, b = shard.rows
    _trace(trace_dir, "stream", model_name, f"{a}-{b}")
    model, lock = cached_model(recipe)
    with lock, _intra_op_threads(threads):
        inputs = shard.build()
        job = ModelJob(model_name, model, list(layers))
        return list(stream_rows(job, inputs, config, resolve(config.device), fits, list(layers), 0, hook=hook,
                                want_thumbs=want_thumbs, fitted_rows=fitted_local, fitted_from=fitted_from,
                                offset=a))


def quality_task(config: PrepareConfig, n: int, fit: dict, y_trust: np.ndarray, y_held: np.ndarray,
                 pos_t: np.ndarray, pos_h: np.ndarray, transform_s: float, *pieces: np.ndarray) -> dict:
    """Task: a streamed layer's meta (:func:`engine.layerjob.sampled_meta`) from its quality rows
    (pieces in row order) and their embedding rows, sent by the client."""
    from engine.embed import trustworthiness
    from engine.layerjob import sampled_meta

    t0 = time.perf_counter()
    X = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    k = config.n_neighbors
    tw_all = trustworthiness(X[pos_t], y_trust, k=k, n_sample=len(pos_t))
    tw_held = trustworthiness(X[pos_h], y_held, k=k, n_sample=len(pos_h))
    return sampled_meta(config, n, fit["fit"], tw_all, fit["tw_fit"], tw_held, len(pos_h), transform_s,
                        time.perf_counter() - t0)


def _rows_by_range(rows: np.ndarray, ranges) -> list:
    """(range start, range end, rows local to it) for every range holding some of ``rows``."""
    out = []
    for a, b in ranges:
        local = rows[(rows >= a) & (rows < b)] - a
        if local.size:
            out.append((a, b, local))
    return out


def _record_parts(submit, job, options, rows, specs, dims, budget, ranges, config, trace, threads, what):
    """Futures of the activations of ``rows`` per layer: layer id -> [piece future per range], each
    range's layers in groups whose pieces fit ``budget``."""
    from engine.activations import plan_groups

    parts = _rows_by_range(rows, ranges)
    most = max(len(local) for _, _, local in parts)
    groups = plan_groups({s.id: dims[s.id] for s in specs}, most, budget)
    by_id = {s.id: s for s in specs}
    pieces: dict = {s.id: [] for s in specs}
    for a, b, local in parts:
        for g in groups:
            fut = submit(record_rows, job.recipe, options.inputs.shard(a, b), local, [by_id[i] for i in g],
                         config, trace, job.name, threads, key=f"{what}-{job.name}-{a}-{uuid()}")
            for lid in g:
                pieces[lid].append(submit(_pick_layer, fut, lid))
    return pieces


def _pick_layer(res: dict, layer_id: str) -> np.ndarray:
    return res[layer_id]


def _run_stream(client, jobs, inputs, writer, config, options, plan, hooks: dict, progress, timings) -> dict:
    """The streaming run on Dask (:mod:`engine.stream`'s steps as tasks): the fit sample is recorded
    where its rows lie (each range decodes only its sample rows), one fit task per layer, one stream
    task per image range (:func:`stream_ranges`) that records, reduces and transforms its chunks and
    returns only embeddings; the client writes each chunk as it arrives (the progress file records
    it: ``--resume`` submits only the ranges left), then measures quality with tasks and adopts the
    layers. No task ever holds a whole layer. Returns whether thumbnails were written."""
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    from engine.layerjob import sampled_plan
    from engine.stream import add_rows, check_refit, covered, finish_streams, open_stream, write_chunk

    def submit(fn, *args, **kw):
        return client.submit(fn, *args, retries=options.retries, pure=False, **kw)

    n = inputs.n
    trace = options.trace_dir
    threads = client_threads()
    ranges = stream_ranges(n, config.transform_chunk, config.batch_size)
    sp = sampled_plan(n, config)
    idx, trust_idx, held_idx = sp["idx"], sp["trust_idx"], sp["held_idx"]
    for k, job in enumerate(jobs):
        writer.add_model(job.name, meta=job.meta)
        hook = hooks.get(job.name)
        stream = open_stream(job, inputs, writer, config, plan, hook=hook, images=k == 0, mode="dask")
        if stream["done"]:
            continue
        todo, groups, rows, files, extra = (stream[x] for x in ("todo", "groups", "rows", "files", "extra"))
        specs = {s.id: s for s in job.layers}
        position = {s.id: i for i, s in enumerate(job.layers)}
        dims = plan.dims[job.name]
        t0 = time.perf_counter()
        pieces = _record_parts(submit, job, options, idx, todo, dims, plan.sample_budget, ranges, config,
                               trace, threads, "sample")
        fits, prev = {}, None
        if todo and config.init == "previous" and position[todo[0].id] > 0:
            first = np.asarray(writer.read_layer(job.name, job.layers[position[todo[0].id] - 1].id)[idx])
            prev = submit(next_aligned, first.astype(np.float64), None)
        for spec in todo:
            init = prev if config.init == "previous" else None
            fits[spec.id] = submit(fit_task, config, init, trace, job.name, spec.id, threads,
                                   *pieces[spec.id], key=f"fit-{job.name}-{spec.id}-{uuid()}")
            if config.init == "previous":
                prev = submit(next_aligned, submit(_fit_embedding, fits[spec.id]), prev)
        crcs = dict(zip(fits, client.gather([submit(_crc_of, f) for f in fits.values()])))
        timings["fit_s"] = timings.get("fit_s", 0.0) + time.perf_counter() - t0
        check_refit(job, stream, crcs, n)
        state = stream["state"]
        writer.set_stream_state(job.name, state)
        t0 = time.perf_counter()
        futs = {}
        transform_s = {s.id: 0.0 for s in todo}
        for g, ids in enumerate(groups):
            for a, b in ranges:
                if covered(rows[g], a, b):
                    continue
                lo, hi = np.searchsorted(idx, [a, b])
                fut = submit(stream_task, job.recipe, options.inputs.shard(a, b), [specs[i] for i in ids],
                             {i: fits[i] for i in ids}, config, hook if g == 0 else None, k == 0 and g == 0,
                             idx[lo:hi] - a, int(lo), trace, job.name, threads,
                             key=f"stream-{job.name}-{g}-{a}-{uuid()}")
                futs[fut] = g
        bar = tqdm(total=len(futs), desc=f"{job.name}: streaming", unit="range", disable=not progress,
                   leave=False)
        for fut in as_completed(list(futs)):
            g = futs[fut]
            for res in fut.result():
                write_chunk(res, files, extra if g == 0 else {}, groups[g], transform_s)
                rows[g] = add_rows(rows[g], res["a"], res["b"])
                state["thumbs_written"] |= res["thumbs"] is not None
            writer.set_stream_state(job.name, state)
            bar.update()
            fut.release()
        bar.close()
        timings["stream_s"] = timings.get("stream_s", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        qrows = np.union1d(trust_idx, held_idx)
        pos_t, pos_h = np.searchsorted(qrows, trust_idx), np.searchsorted(qrows, held_idx)
        qpieces = _record_parts(submit, job, options, qrows, todo, dims, plan.sample_budget, ranges, config,
                                trace, threads, "quality")
        metas = {s.id: submit(quality_task, config, n, fits[s.id], files[s.id].take(trust_idx),
                              files[s.id].take(held_idx), pos_t, pos_h, transform_s[s.id], *qpieces[s.id])
                 for s in todo}
        for spec in todo:
            meta = metas[spec.id].result()
            meta["stream"] = {"passes": len(groups), "budget_bytes": int(plan.budget),
                              "trust_sample": int(config.trust_sample), "ranges": len(ranges)}
            writer.adopt_layer(job.name, spec.id, files[spec.id], name=spec.name,
                               source_dim=int(dims[spec.id]), meta=meta, index=position[spec.id])
        timings["quality_s"] = timings.get("quality_s", 0.0) + time.perf_counter() - t0
        for f in extra.values():
            f.close()
        writer.set_stream_state(job.name, {**state, "done": True, "attribute_specs": stream["hook_specs"]})
        del fits, pieces, qpieces
    streamed = finish_streams(writer, jobs, inputs, config, progress=progress)
    _align_files(client, submit, jobs, writer, timings)
    return streamed


def _crc_of(fit: dict) -> str:
    return fit["crc"]


def _align_files(client, submit, jobs, writer, timings) -> None:
    """Alignment and similarity of streamed layers: the client computes the chain from the layer
    files (N x p each, read in row chunks) as the single-process run does."""
    from engine.align import align_models

    t0 = time.perf_counter()
    result = align_models({job.name: [writer.read_layer(job.name, s.id) for s in job.layers] for job in jobs})
    for job in jobs:
        for spec, a in zip(job.layers, result.alignments[job.name]):
            writer.set_alignment(job.name, spec.id, a.rotation, a.center)
        job.meta["consecutive_similarity"] = [round(float(v), 6) for v in result.consecutive[job.name]]
        job.meta["alignment_residuals"] = [round(float(a.residual), 6) for a in result.alignments[job.name]]
    for (a, b), S in result.similarity.items():
        writer.set_similarity(a, b, np.asarray(S, dtype=np.float32))
    timings["align_s"] = time.perf_counter() - t0
