"""``prepare``: activations -> UMAP -> Procrustes alignment -> bundle, with per-layer resume.

Data flow (one direction): the network runs once per batch for every layer of a memory-planned
group (:func:`engine.activations.record`); each layer's (N, D) activations are embedded to (N, p)
with UMAP (:func:`engine.embed.embed`), written to the bundle's staging directory at once (so an
interrupted run keeps every finished layer), and dropped. When every layer of every model is done,
the layers are aligned into one canonical frame (:mod:`engine.align`), the similarity matrices are
computed, and the bundle is committed atomically (:class:`engine.store.BundleWriter`).

A job with checkpoints (a training run, ``--checkpoints``) goes through the same per-layer work
once per checkpoint, in training order, its weights loaded into the module first
(:mod:`engine.checkpoints`: finding, ordering, loading, the input layer embedded once, the logits of
a classifier recorded in the same pass and turned into per-checkpoint attributes by
:mod:`engine.outputs`); the alignment then puts every (checkpoint, layer) into one frame. A plain
job is the one-checkpoint case.

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
    from engine.checkpoints import checkpoint_digest
    from engine.models import state_digest

    def model(j):
        d = {"source": str(j.meta.get("source")), "weights": str(j.meta.get("weights")),
             "state": state_digest(j.module), "layers": [[s.id, s.name, s.kind] for s in j.layers]}
        if j.checkpoints:  # a training run: which checkpoints, in which order, with which weights
            d["checkpoints"] = [[c.name, checkpoint_digest(c)] for c in j.checkpoints]
        return d

    return {"config": config.content_params(), "umap_backend": umap_backend,
            "inputs": {"name": inputs.name, "n": int(inputs.n), "fingerprint": inputs.fingerprint},
            "models": {j.name: model(j) for j in jobs}}


def _prepare_model(job: ModelJob, inputs, writer, config: PrepareConfig, backend: Backend,
                   progress: bool, timings: dict, k: int = 0, outputs=None) -> None:
    """Record and embed every layer of ``job`` in its state now: checkpoint ``k`` of its training run
    (:func:`engine.checkpoints.plan`; its weights already loaded), or its only state. ``outputs``:
    an :class:`engine.checkpoints.OutputCollector` that gets the logits, recorded in the same pass."""
    from engine.activations import record
    from engine.align import extend_chain
    from engine.checkpoints import plan, static_layers

    steps = plan(job)
    ck = None if steps[k] is None else steps[k].name
    first = None if steps[0] is None else steps[0].name
    prev_ck = None if k == 0 or steps[k - 1] is None else steps[k - 1].name
    label = job.name if ck is None else f"{job.name}@{ck}"
    done = {spec.id for spec in job.layers if writer.has_layer(job.name, spec.id, ck)}
    if done:
        log.info("%s: resuming, %d of %d layers already finished", label, len(done), len(job.layers))
    static = static_layers(job, k) - done  # copied from the first checkpoint: they do not change
    budget = None if config.memory_budget_gib is None else int(config.memory_budget_gib * 2**30)
    specs = list(job.layers) + ([outputs.spec] if outputs is not None else [])
    stream = record(job.module, inputs, specs, backend=backend, batch_size=config.batch_size,
                    max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                    memory_budget=budget, skip=done | static, progress=progress)
    if outputs is not None:
        stream = outputs.take(stream, (job.name, ck))
    from tqdm.auto import tqdm

    prev_aligned, chain_end = None, None  # host (N, p) float64, only needed for init="previous"
    t_record = time.perf_counter()
    bar = tqdm(job.layers, desc=f"{label}: layers", unit="layer", disable=not progress)
    for position, spec in enumerate(bar):
        bar.set_postfix_str(spec.id)
        if spec.id in done:
            emb = np.asarray(writer.read_layer(job.name, spec.id, ck), dtype=np.float64)
        elif spec.id in static:
            src = writer.read_layer(job.name, spec.id, first)
            rec = writer.layer_record(job.name, spec.id, first)
            writer.write_layer(job.name, spec.id, src, name=spec.name, source_dim=rec["source_dim"],
                               meta={**rec["meta"], "copied_from_checkpoint": first}, index=position,
                               checkpoint=ck)
            emb = np.asarray(src, dtype=np.float64)
        else:
            got_spec, X = next(stream)
            if got_spec.id != spec.id:
                raise RuntimeError(f"recorder yielded layer {got_spec.id!r} where {spec.id!r} was expected")
            timings.setdefault("record_s", 0.0)
            timings["record_s"] += time.perf_counter() - t_record
            init = "spectral"
            if config.init == "previous" and prev_aligned is not None:
                init = backend.xp.asarray(prev_aligned, dtype=backend.xp.float32)
            elif config.init == "previous-checkpoint" and prev_ck is not None:
                init = backend.xp.asarray(writer.read_layer(job.name, spec.id, prev_ck),
                                          dtype=backend.xp.float32)
            res = embed_layer(X, config, init)
            writer.write_layer(job.name, spec.id, res.embedding, name=spec.name, source_dim=res.source_dim,
                               meta=res.meta, index=position, checkpoint=ck)
            log.info("%s %s: D=%d -> %d in %.1fs (%s, %s), trustworthiness %.3f", label, spec.id,
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


def _run_models(jobs, inputs, writer, config, backend, plan, hook, hooks, collectors: dict, outputs: dict,
                progress, timings) -> dict:
    """Every model's layers, in memory (:func:`_prepare_run`, classifier logits to ``collectors``)
    or streamed (``plan``, each model with ``hooks[name]``: a classifier's outputs through its
    :class:`engine.outputs.ClassifierHook`, and ``hook``). ``hook`` (the caller's) attributes land in
    ``outputs`` (in-memory run) or are adopted from the streams. Returns None (in memory), or
    :func:`engine.stream.finish_streams`'s ``{"images": bool, "attributes": {...}}`` (a streaming run
    writes thumbnails and output attributes on its way)."""
    from engine.stream import finish_streams, output_pass, stream_model

    for k, job in enumerate(jobs):
        writer.add_model(job.name, meta=job.meta)
        if plan is not None:
            stream_model(job, inputs, writer, config, plan, backend, progress=progress, timings=timings,
                         hook=hooks[job.name], images=k == 0)
            continue
        _prepare_run(job, inputs, writer, config, backend, progress, timings, collectors.get(job.name))
        if hook is not None:
            specs = hook.specs()
            for name, values in output_pass(job, inputs, config, backend, hook, progress).items():
                label = name if len(jobs) == 1 else f"{job.name}.{name}"
                outputs[label] = {**specs[name], "values": values}
    if plan is None:
        return None
    return finish_streams(writer, jobs, inputs, config, progress=progress)


def _classifier_hook(collector):
    from engine.outputs import ClassifierHook

    return None if collector is None else ClassifierHook(tuple(collector.class_names), collector.uses_targets)


def _prepare_run(job: ModelJob, inputs, writer, config: PrepareConfig, backend: Backend, progress: bool,
                 timings: dict, outputs) -> None:
    """Every state of ``job``: each checkpoint's weights loaded into its module in turn (training
    order), then :func:`_prepare_model`; or its one state."""
    from engine.checkpoints import load_checkpoint, plan

    steps = plan(job)
    if steps == [None]:
        _prepare_model(job, inputs, writer, config, backend, progress, timings, 0, outputs)
        return
    from tqdm.auto import tqdm

    bar = tqdm(steps, desc=f"{job.name}: checkpoints", unit="checkpoint", disable=not progress)
    for k, ck in enumerate(bar):
        meta = {**ck.meta, **load_checkpoint(job.module, ck, trust=config.trust_checkpoints)}
        writer.add_checkpoint(job.name, ck.name, meta=meta)
        _prepare_model(job, inputs, writer, config, backend, progress, timings, k, outputs)


def prepare(jobs: Sequence[ModelJob], inputs, out: str | Path, config: PrepareConfig | None = None, *,
            resume: bool = False, overwrite: bool = False, progress: bool = True,
            extra_attributes: dict | None = None, provenance: dict | None = None, cluster=None,
            output_hook=None, checkpoints=None) -> Path:
    """Record, embed, align and store every layer of ``jobs`` over the same ``inputs``.

    jobs : models to record; several models share the images (same order) for comparison. A job
        with ``checkpoints`` is a training run: every layer is recorded at every checkpoint.
    inputs : an :class:`engine.inputs.InputSet` (labels and thumbnails go into the bundle).
    checkpoints : a training run for the jobs given here instead of on each job: model name ->
        checkpoints, or (one job) the checkpoints themselves; each a :class:`engine.jobs.Checkpoint`
        or a path (a state-dict file or saved module, a folder of them, a glob; see
        :mod:`engine.checkpoints`), in training order.
    out : bundle directory; built beside it in ``.<name>.partial`` and renamed into place.
    config : the run's parameters (default ``PrepareConfig()``).
    resume : keep layers finished by an interrupted run with the same ``out``; refused (BundleError
        listing the differences) when that run had other parameters, models, layers or inputs.
    extra_attributes : name -> dict(values=(N,), kind=..., categories=..., extent=...).
    cluster : :class:`engine.distributed.ClusterOptions` to run the work on Dask (every job then
        needs a ``recipe``); the bundle equals the single-process one with the same seeds.
    output_hook : an :class:`engine.stream.OutputHook`: more per-input attributes from each model's
        outputs, computed chunk by chunk as the outputs pass (a streaming run), or in one extra
        forward pass (an in-memory run); named ``<model>.<name>`` when there are several models.
    ``config.stream`` (``--stream``) or a memory budget too small for one layer of all N inputs
    makes the run stream (:mod:`engine.stream`): memory independent of N.

    Each layer's activations are (N, D) float32 where the back end keeps them (NumPy, or CuPy on
    CUDA) and become an (N, ``config.dim``) float32 embedding on the host. When a model is a
    classifier over the inputs' classes, its outputs become attributes (:mod:`engine.outputs`):
    per checkpoint of a training run, and the last state's for the bundle; streamed with the
    layers in a streaming run.
    Returns the bundle path. Raises ``ValueError`` for mismatched inputs or duplicate model names,
    :class:`engine.checkpoints.CheckpointError` for checkpoints that cannot be found or loaded.
    """
    from engine.checkpoints import align_bundle, output_collector, write_outputs
    from engine.embed import choose_backend
    from engine.outputs import ClassifierHook
    from engine.store import BundleWriter
    from engine.stream import join_hooks, plan_stream, resolve_config

    config = config if config is not None else PrepareConfig()
    if not jobs:
        raise ValueError("prepare: no models given")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"prepare: model names must be unique, got {names}")
    jobs = _with_checkpoints(jobs, checkpoints)
    if config.init == "previous-checkpoint" and not any(j.checkpoints for j in jobs):
        raise ValueError("--init previous-checkpoint: needs a training run (--checkpoints)")
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
    if plan is not None and any(j.checkpoints for j in jobs):
        raise ValueError(f"prepare: a training run (--checkpoints) is recorded in memory and cannot stream "
                         f"({plan.why}); lower --n or raise --memory-budget")
    if plan is not None:
        config = resolve_config(config, plan)
        log.info("prepare: streaming (%s): fit sample %d, chunks of %d rows, budget %.2f GiB", plan.why,
                 plan.fit_sample, plan.chunk, plan.budget / 2**30)
    writer = BundleWriter(Path(out), n=inputs.n, dim=config.dim, resume=resume, overwrite=overwrite,
                          params=run_params(jobs, inputs, config, umap_name))
    thumbnails, dist_info, images_done = None, None, False
    outputs: dict = {}
    try:
        # first, so a streamed run (whose outputs land as its streams finish) lists the same order
        if inputs.labels is not None:
            writer.set_attribute("label", np.asarray(inputs.labels, dtype=np.int32), "categorical",
                                 categories=list(inputs.label_names), default=True)
        for name, spec in getattr(inputs, "attributes", {}).items():  # e.g. label_coarse
            writer.set_attribute(name, spec["values"], spec["kind"], categories=spec.get("categories"),
                                 extent=spec.get("extent"))
        collectors = {job.name: output_collector(job, inputs, backend) for job in jobs}
        hooks = None if plan is None else \
            {job.name: join_hooks(_classifier_hook(collectors[job.name]), output_hook) for job in jobs}
        if cluster is not None:
            from engine.distributed import run

            got = run(jobs, inputs, writer, config, cluster, progress=progress, timings=timings, plan=plan,
                      hook=output_hook, hooks=hooks, collectors=collectors)
            thumbnails, dist_info, streamed = got["thumbnails"], got["provenance"], got.get("streamed")
        else:
            streamed = _run_models(jobs, inputs, writer, config, backend, plan, output_hook, hooks,
                                   collectors, outputs, progress, timings)
            align_bundle(writer, jobs, timings)
        if streamed is None:
            write_outputs(writer, jobs, collectors)
            for name, spec in outputs.items():  # the caller's hook's, after the classifier's as in a stream
                writer.set_attribute(name, spec["values"], spec["kind"], categories=spec.get("categories"),
                                     extent=spec.get("extent"))
        else:  # the streams wrote the outputs' attributes; the models' meta gets their summaries
            images_done = streamed["images"]
            for job in jobs:
                if collectors.get(job.name) is not None:
                    job.meta.update(ClassifierHook.summary(streamed["attributes"].get(job.name, {})))
        for job in jobs:  # meta gained consecutive similarities, residuals, accuracy and loss
            writer.add_model(job.name, meta=job.meta)
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
            "models": {j.name: {"layers": [s.id for s in j.layers],
                                **({"checkpoints": [c.name for c in j.checkpoints]} if j.checkpoints else {})}
                       for j in jobs},
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
    from engine.checkpoints import find_checkpoints
    from engine.inputs import digits_inputs, image_inputs, synthetic_inputs, with_coarse
    from engine.models import imagenet_categories, load_model, model_categories, resolve_layers

    sources = getattr(args, "checkpoints", None)
    if sources and len(args.model) != 1:
        raise ValueError(f"--checkpoints: a training run is of one model; got {len(args.model)} "
                         "--model options")
    checkpoints = find_checkpoints(sources) if sources else None  # checked before any model is loaded
    init = args.init or ("previous-checkpoint" if checkpoints else "spectral")
    config = PrepareConfig(dim=args.dim, n_neighbors=args.n_neighbors, min_dist=args.min_dist,
                           init=init, seed=args.seed, umap_backend=args.umap_backend,
                           pooling=args.pooling, batch_size=args.batch_size,
                           memory_budget_gib=args.memory_budget, device=args.device,
                           fit_sample=getattr(args, "fit_sample", None),
                           stream=True if getattr(args, "stream", False) else None,
                           reduce_dims=getattr(args, "reduce_dims", 256),
                           transform_chunk=getattr(args, "transform_chunk", 8192),
                           trust_checkpoints=bool(getattr(args, "trust_checkpoints", False)))
    cluster = _cluster_options(args)  # checks --cluster/--scheduler before any model is loaded
    # a training run's weights come from its checkpoints: no pretrained download to be replaced
    pretrained = args.weights == "DEFAULT" and not _all_custom(args.model)
    weights = "none" if checkpoints and pretrained else args.weights
    jobs = []
    for spec in args.model:
        if weights == "none" or (weights == "DEFAULT" and _custom(spec)):
            import torch

            torch.manual_seed(args.seed)  # random weights: the same in every run with this --seed
        module, name = load_model(spec, weights=weights)
        layers = resolve_layers(module, args.layers, name)
        recipe = None
        if cluster is not None:
            from engine.distributed import ModelRecipe

            recipe = ModelRecipe.from_spec(spec, weights, module)
        jobs.append(ModelJob(name=name, module=module, layers=layers, recipe=recipe, checkpoints=checkpoints,
                             meta={"source": spec, "weights": str(weights), "layers_spec": args.layers}))
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


def _with_checkpoints(jobs: Sequence[ModelJob], checkpoints) -> list[ModelJob]:
    """``jobs`` with the ``checkpoints`` argument of :func:`prepare` attached (checked, in order)."""
    from dataclasses import replace

    from engine.checkpoints import as_checkpoints

    jobs = list(jobs)
    if checkpoints is None:
        return [replace(j, checkpoints=as_checkpoints(j.checkpoints)) if j.checkpoints else j for j in jobs]
    if not isinstance(checkpoints, dict):
        if len(jobs) != 1:
            raise ValueError("prepare: with several models, give checkpoints as {model name: checkpoints}")
        checkpoints = {jobs[0].name: checkpoints}
    unknown = set(checkpoints) - {j.name for j in jobs}
    if unknown:
        raise ValueError(f"prepare: checkpoints for unknown models {sorted(unknown)}")
    return [replace(j, checkpoints=as_checkpoints(checkpoints[j.name])) if j.name in checkpoints else j
            for j in jobs]


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
