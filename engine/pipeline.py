"""``prepare``: activations -> UMAP -> Procrustes alignment -> bundle, with per-layer resume.

Data flow (one direction): the network runs once per batch for every layer of a memory-planned
group (:func:`engine.activations.record`); each layer's (N, D) activations are embedded to (N, p)
with UMAP (:func:`engine.embed.embed`), written to the bundle's staging directory at once (so an
interrupted run keeps every finished layer), and dropped. When every layer of every model is done,
the layers are aligned into one canonical frame (:mod:`engine.align`), the similarity matrices are
computed, and the bundle is committed atomically (:class:`engine.store.BundleWriter`).

On CUDA the activations and embeddings stay on the device (torch -> CuPy by DLPack, cuML); the
only device -> host copies are the finished (N, p) embeddings (N·p·4 bytes per layer) and the
trustworthiness sample.

With ``cluster=`` (:class:`engine.distributed.ClusterOptions`) the same work runs as Dask tasks
(:mod:`engine.distributed`, imported only then); without it nothing of Dask is imported.
``fit_sample`` (both paths) fits UMAP on a seeded sample and ``transform`` s the other rows.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.device import Backend, resolve, to_host

log = logging.getLogger("layertour")


@dataclass(frozen=True)
class PrepareConfig:
    """Parameters of a ``prepare`` run (all recorded in the bundle's provenance)."""

    dim: int = 15
    n_neighbors: int = 15
    min_dist: float = 0.1
    init: str = "spectral"  # "spectral" (the study's) or "previous" (previous layer's aligned embedding)
    seed: int = 42
    umap_backend: str = "auto"
    pooling: str = "avg"
    max_dim: int = 51_200
    max_width: int = 16
    batch_size: int = 64
    memory_budget_gib: float | None = None
    device: str = "auto"
    trust_sample: int = 5_000
    fit_sample: int | None = None  # fit UMAP on this many seeded rows, transform the rest

    def __post_init__(self):
        if self.init not in ("spectral", "previous"):
            raise ValueError(f"init={self.init!r}: expected 'spectral' or 'previous'")
        if self.dim < 2:
            raise ValueError(f"dim={self.dim}: the tour needs at least 2 dimensions")
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"pooling={self.pooling!r}: expected 'avg' or 'max'")
        if self.fit_sample is not None and self.fit_sample <= 2 * self.n_neighbors:
            raise ValueError(f"fit_sample={self.fit_sample}: must exceed 2 * n_neighbors "
                             f"= {2 * self.n_neighbors}")


@dataclass
class ModelJob:
    """One model to record: a name for the bundle, the module (eval mode) and its layers in order."""

    name: str
    module: object  # torch.nn.Module (typed loosely so importing this module needs no torch)
    layers: list  # list[engine.models.LayerSpec]
    meta: dict = field(default_factory=dict)
    recipe: object = None  # engine.distributed.ModelRecipe: how Dask workers rebuild the module


@dataclass(frozen=True)
class LayerEmbedding:
    """One embedded layer: ``embedding`` (N, p) float32 host array, ``meta`` (JSON: trustworthiness,
    back end, seconds, parameters), ``source_dim`` (D of the activations), ``seconds`` (UMAP fit)."""

    embedding: np.ndarray
    meta: dict
    source_dim: int
    seconds: float


def _library_versions() -> dict[str, str]:
    from engine.info import versions

    return {k: v for k, v in versions().items() if v}


def embed_layer(X, config: PrepareConfig, init, backend: Backend) -> LayerEmbedding:
    """Embed one layer's activations X ((N, D) float32 in ``backend.xp``) and measure it.

    init : "spectral" or an (N, p) array in ``backend.xp``. With ``config.fit_sample`` the fit runs
    on a seeded sample and the rest is transformed (:func:`engine.distributed.embed_sampled`).
    Only the finished (N, p) embedding and the trustworthiness sample are copied to the host.
    """
    from engine.embed import embed, trustworthiness

    if config.fit_sample:
        from engine.distributed import embed_sampled

        return embed_sampled(X, config, None if isinstance(init, str) else init)
    res = embed(X, n_components=config.dim, n_neighbors=config.n_neighbors, min_dist=config.min_dist,
                init=init, seed=config.seed, backend=config.umap_backend)
    t0 = time.perf_counter()
    tw = trustworthiness(X, res.embedding, k=config.n_neighbors, n_sample=config.trust_sample,
                         seed=config.seed)
    meta = {"trustworthiness": round(float(tw), 6), "umap_backend": res.backend,
            "knn_algorithm": res.knn_algorithm, "umap_seconds": round(res.seconds, 3),
            "trustworthiness_seconds": round(time.perf_counter() - t0, 3), "umap_params": res.params}
    return LayerEmbedding(to_host(res.embedding).astype(np.float32, copy=False), meta, int(X.shape[1]),
                          res.seconds)


def _prepare_model(job: ModelJob, inputs, writer, config: PrepareConfig, backend: Backend,
                   progress: bool, timings: dict) -> None:
    from engine.activations import record
    from engine.align import procrustes

    done = {spec.id for spec in job.layers if writer.has_layer(job.name, spec.id)}
    if done:
        log.info("%s: resuming, %d of %d layers already finished", job.name, len(done), len(job.layers))
    budget = None if config.memory_budget_gib is None else int(config.memory_budget_gib * 2**30)
    stream = record(job.module, inputs, job.layers, backend=backend, batch_size=config.batch_size,
                    max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                    memory_budget=budget, skip=done, progress=progress)
    from tqdm.auto import tqdm

    prev_aligned = None  # host (N, p) float64, only needed for init="previous"
    t_record = time.perf_counter()
    bar = tqdm(job.layers, desc=f"{job.name}: layers", unit="layer", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.id)
        if spec.id in done:
            emb = np.asarray(writer.read_layer(job.name, spec.id), dtype=np.float64)
        else:
            got_spec, X = next(stream)
            if got_spec.id != spec.id:
                raise RuntimeError(f"recorder yielded layer {got_spec.id!r} where {spec.id!r} was expected")
            timings.setdefault("record_s", 0.0)
            timings["record_s"] += time.perf_counter() - t_record
            init = "spectral"
            if config.init == "previous" and prev_aligned is not None:
                init = backend.xp.asarray(prev_aligned, dtype=backend.xp.float32)
            res = embed_layer(X, config, init, backend)
            writer.write_layer(job.name, spec.id, res.embedding, name=spec.name, source_dim=res.source_dim,
                               meta=res.meta)
            log.info("%s %s: D=%d -> %d in %.1fs (%s, %s), trustworthiness %.3f", job.name, spec.id,
                     res.source_dim, config.dim, res.seconds, res.meta["umap_backend"],
                     res.meta["knn_algorithm"], res.meta["trustworthiness"])
            timings.setdefault("umap_s", 0.0)
            timings["umap_s"] += res.seconds
            emb = res.embedding.astype(np.float64)
            del X, res
            t_record = time.perf_counter()
        if config.init == "previous":
            centred = emb - emb.mean(axis=0)
            prev_aligned = centred if prev_aligned is None else centred @ procrustes(centred, prev_aligned)
    # Drain the generator so its cleanup (hooks removed, memory freed) runs now.
    for _ in stream:
        raise RuntimeError("recorder yielded more layers than requested")


def _align_and_compare(writer, jobs: Sequence[ModelJob], timings: dict) -> None:
    """Canonical alignment of every model's layers, cross-model frames, similarity matrices."""
    from engine.align import align_models

    t0 = time.perf_counter()
    result = align_models({job.name: [writer.read_layer(job.name, s.id) for s in job.layers] for job in jobs})
    for job in jobs:
        alignments = result.alignments[job.name]
        for spec, a in zip(job.layers, alignments):
            writer.set_alignment(job.name, spec.id, a.rotation, a.center)
        job.meta["consecutive_similarity"] = [round(float(v), 6) for v in result.consecutive[job.name]]
        job.meta["alignment_residuals"] = [round(float(a.residual), 6) for a in alignments]
    for (a, b), S in result.similarity.items():
        writer.set_similarity(a, b, np.asarray(S, dtype=np.float32))
    timings["align_s"] = round(time.perf_counter() - t0, 3)


def prepare(jobs: Sequence[ModelJob], inputs, out: str | Path, config: PrepareConfig = PrepareConfig(), *,
            resume: bool = False, overwrite: bool = False, progress: bool = True,
            extra_attributes: dict | None = None, provenance: dict | None = None, cluster=None) -> Path:
    """Record, embed, align and store every layer of ``jobs`` over the same ``inputs``.

    jobs : models to record; several models share the images (same order) for comparison.
    inputs : an :class:`engine.inputs.InputSet` (labels and thumbnails go into the bundle).
    out : bundle directory; built beside it in ``.<name>.partial`` and renamed into place.
    resume : keep layers finished by an interrupted run with the same ``out``.
    extra_attributes : name -> dict(values=(N,), kind=..., categories=..., extent=...).
    cluster : :class:`engine.distributed.ClusterOptions` to run the work on Dask (every job then
        needs a ``recipe``); the bundle equals the single-process one with the same seeds.
    Returns the bundle path. Raises ``ValueError`` for mismatched inputs or duplicate model names.
    """
    from engine.store import BundleWriter

    if not jobs:
        raise ValueError("prepare: no models given")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"prepare: model names must be unique, got {names}")
    backend = resolve(config.device)
    log.info("prepare: %d model(s), N=%d, back end %s (%s)", len(jobs), inputs.n, backend.name,
             backend.device_name)
    t_start = time.perf_counter()
    timings: dict = {}
    writer = BundleWriter(Path(out), n=inputs.n, dim=config.dim, resume=resume, overwrite=overwrite)
    thumbnails, dist_info = None, None
    try:
        if cluster is not None:
            from engine.distributed import run

            got = run(jobs, inputs, writer, config, cluster, progress=progress, timings=timings)
            thumbnails, dist_info = got["thumbnails"], got["provenance"]
        else:
            for job in jobs:
                writer.add_model(job.name, meta=job.meta)
                _prepare_model(job, inputs, writer, config, backend, progress, timings)
            _align_and_compare(writer, jobs, timings)
        for job in jobs:  # meta gained consecutive similarities and residuals
            writer.add_model(job.name, meta=job.meta)
        if inputs.labels is not None:
            writer.set_attribute("label", np.asarray(inputs.labels, dtype=np.int32), "categorical",
                                 categories=list(inputs.label_names), default=True)
        for name, spec in (extra_attributes or {}).items():
            writer.set_attribute(name, spec["values"], spec["kind"], categories=spec.get("categories"),
                                 extent=spec.get("extent"))
        if thumbnails is None:
            thumbnails = inputs.thumbnails
        if thumbnails is not None:
            writer.set_images(np.asarray(thumbnails, dtype=np.uint8))
        timings["total_s"] = round(time.perf_counter() - t_start, 3)
        writer.update_provenance({
            "tool": "layertour prepare",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": {"name": inputs.name, "n": inputs.n, "description": inputs.description},
            "models": {j.name: {"layers": [s.id for s in j.layers]} for j in jobs},
            "parameters": asdict(config),
            "backend": {"name": backend.name, "device": backend.device_name, "reason": backend.reason},
            "host": platform.node(), "python": platform.python_version(),
            "versions": _library_versions(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "distributed": dist_info,
            **(provenance or {}),
        })
        return writer.commit()
    except BaseException:
        # Keep the staging directory: finished layers survive for --resume. Nothing at `out` changed.
        log.warning("prepare interrupted; finished layers are kept for --resume in %s", out)
        raise


def prepare_from_args(args) -> Path:
    """``layertour prepare`` entry point: build the jobs and inputs from the CLI namespace."""
    from engine.inputs import digits_inputs, image_folder_inputs
    from engine.models import load_model, resolve_layers

    config = PrepareConfig(dim=args.dim, n_neighbors=args.n_neighbors, min_dist=args.min_dist,
                           init=args.init, seed=args.seed, umap_backend=args.umap_backend,
                           pooling=args.pooling, batch_size=args.batch_size,
                           memory_budget_gib=args.memory_budget, device=args.device,
                           fit_sample=getattr(args, "fit_sample", None))
    cluster = _cluster_options(args)  # checks --cluster/--scheduler before any model is loaded
    jobs = []
    for spec in args.model:
        if args.weights == "none" or (args.weights == "DEFAULT" and _custom(spec)):
            import torch

            torch.manual_seed(args.seed)  # random weights: the same in every run with this --seed
        module, name = load_model(spec, weights=args.weights)
        layers = resolve_layers(module, args.layers, name)
        recipe = None
        if cluster is not None:
            from engine.distributed import ModelRecipe

            recipe = ModelRecipe.from_spec(spec, args.weights, module)
        jobs.append(ModelJob(name=name, module=module, layers=layers, recipe=recipe,
                             meta={"source": spec, "weights": str(args.weights), "layers_spec": args.layers}))
    if args.digits:
        # torchvision models expect 3x224x224; FILE.py:factory models get the raw 1x8x8 digits.
        size, channels = (8, 1) if _all_custom(args.model) else (224, 3)
        inputs = digits_inputs(n=args.n, size=size, channels=channels)
    else:
        inputs = image_folder_inputs(args.images, n=args.n)
    if cluster is not None:
        from dataclasses import replace

        from engine.distributed import InputRecipe

        recipe = (InputRecipe.digits(inputs.n, size=size, channels=channels) if args.digits
                  else InputRecipe.images(args.images, inputs.n))
        cluster = replace(cluster, inputs=recipe)
    return prepare(jobs, inputs, args.out, config, resume=args.resume,
                   overwrite=getattr(args, "force", False), cluster=cluster)


def _cluster_options(args):
    """ClusterOptions from ``--cluster`` / ``--scheduler`` (None when neither is given: no Dask)."""
    cl, sch = getattr(args, "cluster", None), getattr(args, "scheduler", None)
    if cl is None and sch is None:
        return None
    from engine.distributed import ClusterOptions

    return ClusterOptions(cluster=cl, scheduler=sch)


def _custom(spec: str) -> bool:
    return ":" in spec


def _all_custom(specs: Sequence[str]) -> bool:
    return all(_custom(s) for s in specs)
