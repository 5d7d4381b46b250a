"""``prepare``: activations -> UMAP -> Procrustes alignment -> bundle, with per-layer resume.

Data flow (one direction): the network runs once per batch for every layer of a memory-planned
group (:func:`engine.activations.record`); each layer's (N, D) activations are embedded to (N, p)
with UMAP (:func:`engine.embed.embed`), written to the bundle's staging directory at once (so an
interrupted run keeps every finished layer), and dropped. When every layer of every model is done,
the layers are aligned into one canonical frame (:mod:`engine.align`), the similarity matrices are
computed, and the bundle is committed atomically (:class:`engine.store.BundleWriter`).

The run's types live in :mod:`engine.jobs` and the per-layer work in :mod:`engine.layerjob`, both
shared with the Dask runner. The UMAP back end is checked before anything is recorded, and a
``--resume`` whose parameters differ from the interrupted run's is refused with the differences.

On CUDA the activations and embeddings stay on the device (torch -> CuPy by DLPack, cuML); the
only device -> host copies are the finished (N, p) embeddings (N·p·4 bytes per layer) and the
trustworthiness sample.

With ``cluster=`` (:class:`engine.distributed.ClusterOptions`) the same work runs as Dask tasks
(:mod:`engine.distributed`, imported only then); without it nothing of Dask is imported.
``fit_sample`` (both paths) fits UMAP on a seeded sample and transforms the other rows. A streaming
run (``--stream``, or a budget too small for one layer of all N inputs: :mod:`engine.stream`)
fits on the sample and transforms the rest chunk by chunk as it is recorded, in memory
independent of N.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from engine.device import Backend, resolve
from engine.jobs import LayerEmbedding, ModelJob, PrepareConfig
from engine.layerjob import embed_layer
from engine.versions import versions

__all__ = ["LayerEmbedding", "ModelJob", "PrepareConfig", "embed_layer", "prepare", "prepare_from_args",
           "run_params"]

log = logging.getLogger("layertour")


def run_params(jobs: Sequence[ModelJob], inputs, config: PrepareConfig, umap_backend: str) -> dict:
    """What decides the content of the bundle a run writes (JSON): the content parameters of
    ``config``, the resolved UMAP back end, the inputs (name, N, fingerprint) and every model
    (source, weights, a digest of its state dict, its layers in order). A ``--resume`` must match."""
    from engine.models import state_digest

    return {"config": config.content_params(), "umap_backend": umap_backend,
            "inputs": {"name": inputs.name, "n": int(inputs.n), "fingerprint": inputs.fingerprint},
            "models": {j.name: {"source": str(j.meta.get("source")), "weights": str(j.meta.get("weights")),
                                "state": state_digest(j.module),
                                "layers": [[s.id, s.name, s.kind] for s in j.layers]} for j in jobs}}


def _prepare_model(job: ModelJob, inputs, writer, config: PrepareConfig, backend: Backend,
                   progress: bool, timings: dict) -> None:
    from engine.activations import record
    from engine.align import extend_chain

    done = {spec.id for spec in job.layers if writer.has_layer(job.name, spec.id)}
    if done:
        log.info("%s: resuming, %d of %d layers already finished", job.name, len(done), len(job.layers))
    budget = None if config.memory_budget_gib is None else int(config.memory_budget_gib * 2**30)
    stream = record(job.module, inputs, job.layers, backend=backend, batch_size=config.batch_size,
                    max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                    memory_budget=budget, skip=done, progress=progress)
    from tqdm.auto import tqdm

    prev_aligned, chain_end = None, None  # host (N, p) float64, only needed for init="previous"
    t_record = time.perf_counter()
    bar = tqdm(job.layers, desc=f"{job.name}: layers", unit="layer", disable=not progress)
    for position, spec in enumerate(bar):
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
            res = embed_layer(X, config, init)
            writer.write_layer(job.name, spec.id, res.embedding, name=spec.name, source_dim=res.source_dim,
                               meta=res.meta, index=position)
            log.info("%s %s: D=%d -> %d in %.1fs (%s, %s), trustworthiness %.3f", job.name, spec.id,
                     res.source_dim, config.dim, res.seconds, res.meta["umap_backend"],
                     res.meta["knn_algorithm"], res.meta["trustworthiness"])
            timings.setdefault("umap_s", 0.0)
            timings["umap_s"] += res.seconds
            emb = res.embedding.astype(np.float64)
            del X, res
            t_record = time.perf_counter()
        if config.init == "previous":
            al, chain_end = extend_chain(chain_end, emb, name=f"{job.name}/{spec.id}")
            prev_aligned = al.apply(emb)
    # Drain the generator so its cleanup (hooks removed, memory freed) runs now.
    for _ in stream:
        raise RuntimeError("recorder yielded more layers than requested")


def _run_models(jobs, inputs, writer, config, backend, plan, hook, outputs: dict, progress, timings) -> bool:
    """Every model's layers, in memory or streamed (``plan``); ``hook`` attributes land in
    ``outputs`` (in-memory run) or are adopted from the streams. Returns whether thumbnails were
    written (a streaming run writes them on its way)."""
    from engine.stream import finish_streams, output_pass, stream_model

    for k, job in enumerate(jobs):
        writer.add_model(job.name, meta=job.meta)
        if plan is not None:
            stream_model(job, inputs, writer, config, plan, backend, progress=progress, timings=timings,
                         hook=hook, images=k == 0)
            continue
        _prepare_model(job, inputs, writer, config, backend, progress, timings)
        if hook is not None:
            specs = hook.specs()
            for name, values in output_pass(job, inputs, config, backend, hook, progress).items():
                label = name if len(jobs) == 1 else f"{job.name}.{name}"
                outputs[label] = {**specs[name], "values": values}
    if plan is None:
        return False
    return finish_streams(writer, jobs, inputs, config, progress=progress)["images"]


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


def prepare(jobs: Sequence[ModelJob], inputs, out: str | Path, config: PrepareConfig | None = None, *,
            resume: bool = False, overwrite: bool = False, progress: bool = True,
            extra_attributes: dict | None = None, provenance: dict | None = None, cluster=None,
            output_hook=None) -> Path:
    """Record, embed, align and store every layer of ``jobs`` over the same ``inputs``.

    jobs : models to record; several models share the images (same order) for comparison.
    inputs : an :class:`engine.inputs.InputSet` (labels and thumbnails go into the bundle).
    out : bundle directory; built beside it in ``.<name>.partial`` and renamed into place.
    config : the run's parameters (default ``PrepareConfig()``).
    resume : keep layers finished by an interrupted run with the same ``out``; refused (BundleError
        listing the differences) when that run had other parameters, models, layers or inputs.
    extra_attributes : name -> dict(values=(N,), kind=..., categories=..., extent=...).
    cluster : :class:`engine.distributed.ClusterOptions` to run the work on Dask (every job then
        needs a ``recipe``); the bundle equals the single-process one with the same seeds.
    output_hook : an :class:`engine.stream.OutputHook`: per-input attributes from each model's
        outputs (prediction, confidence, ...), computed chunk by chunk as the outputs pass (a
        streaming run), or in one extra forward pass (an in-memory run); named ``<model>.<name>``
        when there are several models.
    ``config.stream`` (``--stream``) or a memory budget too small for one layer of all N inputs
    makes the run stream (:mod:`engine.stream`): memory independent of N.
    Returns the bundle path. Raises ``ValueError`` for mismatched inputs or duplicate model names.
    """
    from engine.embed import choose_backend
    from engine.store import BundleWriter
    from engine.stream import plan_stream, resolve_config

    config = config if config is not None else PrepareConfig()
    if not jobs:
        raise ValueError("prepare: no models given")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"prepare: model names must be unique, got {names}")
    backend = resolve(config.device)
    # Before any recording: a UMAP back end that cannot run here fails now, not after an hour.
    umap_name, _cuml, umap_why = choose_backend(config.umap_backend, backend.is_cuda)
    log.info("prepare: %d model(s), N=%d, back end %s (%s), UMAP %s (%s)", len(jobs), inputs.n, backend.name,
             backend.device_name, umap_name, umap_why)
    t_start = time.perf_counter()
    timings: dict = {}
    plan = plan_stream(jobs, inputs, config, backend)  # None: the in-memory run
    if plan is not None and resume and not config.fit_sample:
        # The sample size chosen from the budget depends on the memory free at the time: a resume
        # keeps the interrupted run's, so that its finished layers and chunks stay usable.
        m = _staged_fit_sample(out)
        if m is not None and m != plan.fit_sample:
            plan = plan_stream(jobs, inputs, replace(config, fit_sample=m), backend, dims=plan.dims)
    if plan is not None:
        config = resolve_config(config, plan)
        log.info("prepare: streaming (%s): fit sample %d, chunks of %d rows, budget %.2f GiB", plan.why,
                 plan.fit_sample, plan.chunk, plan.budget / 2**30)
    writer = BundleWriter(Path(out), n=inputs.n, dim=config.dim, resume=resume, overwrite=overwrite,
                          params=run_params(jobs, inputs, config, umap_name))
    thumbnails, dist_info, images_done = None, None, False
    outputs: dict = {}
    try:
        if cluster is not None:
            from engine.distributed import run

            got = run(jobs, inputs, writer, config, cluster, progress=progress, timings=timings, plan=plan,
                      hook=output_hook)
            thumbnails, dist_info = got["thumbnails"], got["provenance"]
            images_done = got.get("images_done", False)
        else:
            images_done = _run_models(jobs, inputs, writer, config, backend, plan, output_hook, outputs,
                                      progress, timings)
            _align_and_compare(writer, jobs, timings)
        for job in jobs:  # meta gained consecutive similarities and residuals
            writer.add_model(job.name, meta=job.meta)
        if inputs.labels is not None:
            writer.set_attribute("label", np.asarray(inputs.labels, dtype=np.int32), "categorical",
                                 categories=list(inputs.label_names), default=True)
        for name, spec in {**getattr(inputs, "attributes", {}), **outputs}.items():
            writer.set_attribute(name, spec["values"], spec["kind"], categories=spec.get("categories"),
                                 extent=spec.get("extent"))
        for name, spec in (extra_attributes or {}).items():
            writer.set_attribute(name, spec["values"], spec["kind"], categories=spec.get("categories"),
                                 extent=spec.get("extent"))
        if thumbnails is None and not images_done:
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
            "versions": versions(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "distributed": dist_info,
            "stream": None if plan is None else plan.provenance(),
            "input_info": getattr(inputs, "info", {}) or None,
            **(provenance or {}),
        })
        return writer.commit()
    except BaseException:
        # Keep the staging directory: finished layers survive for --resume. Nothing at `out` changed.
        writer.close()
        log.warning("prepare interrupted; finished layers are kept for --resume in %s", writer.staging)
        raise


def _staged_fit_sample(out) -> int | None:
    """The fit sample of the interrupted run at ``out`` (from its staging directory), if any."""
    from engine.store import staged_params

    params = staged_params(out) or {}
    m = (params.get("config") or {}).get("fit_sample") if isinstance(params.get("config"), dict) else None
    return m if isinstance(m, int) and not isinstance(m, bool) and m > 0 else None


def prepare_from_args(args) -> Path:
    """``layertour prepare`` entry point: build the jobs and inputs from the CLI namespace."""
    from engine.inputs import digits_inputs, image_inputs, synthetic_inputs, with_coarse
    from engine.models import imagenet_categories, load_model, model_categories, resolve_layers

    config = PrepareConfig(dim=args.dim, n_neighbors=args.n_neighbors, min_dist=args.min_dist,
                           init=args.init, seed=args.seed, umap_backend=args.umap_backend,
                           pooling=args.pooling, batch_size=args.batch_size,
                           memory_budget_gib=args.memory_budget, device=args.device,
                           fit_sample=getattr(args, "fit_sample", None),
                           stream=True if getattr(args, "stream", False) else None,
                           reduce_dims=getattr(args, "reduce_dims", 256),
                           transform_chunk=getattr(args, "transform_chunk", 8192))
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
    coarse = getattr(args, "coarse", None)
    synthetic = getattr(args, "synthetic", None)
    if synthetic is not None:
        side = 32 if _all_custom(args.model) else 224
        inputs = synthetic_inputs(synthetic, size=side, seed=args.seed)
        if coarse is not None:
            with_coarse(inputs, coarse)
    elif args.digits:
        # torchvision models expect 3x224x224; FILE.py:factory models get the raw 1x8x8 digits.
        size, channels = (8, 1) if _all_custom(args.model) else (224, 3)
        inputs = digits_inputs(n=args.n, size=size, channels=channels)
        if coarse is not None:
            with_coarse(inputs, coarse)
    else:
        strict = getattr(args, "strict", False)
        cats = next((c for c in (model_categories(spec, job.module) for spec, job in zip(args.model, jobs))
                     if c), None)
        inputs = image_inputs(args.images, n=args.n, workers=getattr(args, "workers", None), strict=strict,
                              categories=cats, imagenet_names=imagenet_categories(), coarse=coarse,
                              progress=True)
    if cluster is not None:
        from engine.distributed import InputRecipe

        if synthetic is not None:
            recipe = InputRecipe.synthetic_of(synthetic, size=side, seed=args.seed)
        elif args.digits:
            recipe = InputRecipe.digits(inputs.n, size=size, channels=channels)
        else:
            recipe = InputRecipe.from_images(args.images, inputs, chosen=args.n, categories=cats)
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
