"""Streaming ``prepare``: every layer's activations flow through in chunks and are never held whole,
so memory does not grow with N.

For one model (:func:`stream_model`):

1. **Fit.** A seeded fit sample of M rows (:func:`engine.layerjob.sampled_plan`, the same rows as
   ``--fit-sample M``) is recorded as an input subset (:meth:`engine.inputs.InputSet.subset`), in
   memory-planned groups of layers; per layer a randomised-PCA basis and the UMAP model are fitted
   on it (:func:`engine.layerjob.fit_on_sample`, in the back end's ``xp``), then the raw sample is
   dropped. A fitted model keeps M x k floats (k = ``--reduce-dims``) and its k-NN graph.
2. **Stream.** One hooked forward pass over all N inputs per stream group (all layers, unless one
   batch of every layer exceeds the budget; :func:`engine.activations.stream_batches`). Each
   batch's activations are reduced by their layer's basis at once and dropped; the reduced rows
   fill a chunk of ``transform_chunk`` rows, which is transformed by the fitted model, its
   sample rows replaced by their fitted coordinates, and written to the layer's row file
   (:class:`engine.store.RowFile`) with the chunk's thumbnails and the model-output attributes of
   an :class:`OutputHook`. After every chunk the files are synced and the chunk recorded in the
   progress file, so ``--resume`` continues at the first unfinished chunk (the fits are redone,
   seeded, and checked against the checksums of the first run's).
3. **Quality.** The trust and held-out rows (at most ``2 * trust_sample``) are recorded again as a
   subset and each layer's trustworthiness is measured overall, on fitted and on transformed rows
   (:func:`engine.layerjob.sampled_meta`, the ``--fit-sample`` path's meta), then the layer file is
   checksummed and adopted into the bundle.

The result equals the in-memory ``--fit-sample`` run with the same sample, seed and chunk (tested):
every batch runs at the full batch size (:func:`engine.activations.pad_batch`) and the reduction
is applied in the same row blocks (:func:`engine.layerjob.reduce_blocks`). Memory, bounded by the
budget (:func:`plan_stream`): the fitted models, one batch of activations, the reduced chunk
buffers, and the largest of the sample groups, the quality rows and the UMAP work; all
independent of N. On CUDA the activations, bases, buffers and fits stay on the device (cuML), only
each chunk's (C, p) embedding comes to the host. The Dask runner (:mod:`engine.distributed`)
builds the same steps as tasks; each worker streams its own image range.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from engine.device import Backend, to_host
from engine.embed import trustworthiness
from engine.jobs import ModelJob, PrepareConfig
from engine.layerjob import fit_on_sample, sampled_meta, sampled_plan

__all__ = ["STREAM_FIT_SAMPLE", "OutputHook", "StreamPlan", "finish_streams", "fit_layers", "join_hooks",
           "output_pass",
           "plan_stream", "stream_model", "stream_rows"]

log = logging.getLogger("layertour")

#: The fit sample's size when the budget allows it and no ``--fit-sample`` is given (never more
#: than half the inputs): 20,000 rows fit in about a minute per layer with umap-learn on one core.
STREAM_FIT_SAMPLE = 20_000
MIN_FIT_SAMPLE = 1_000  # below this the budget is refused rather than a poor fit made quietly
_MODEL_ROW_BYTES = 1_000  # a fitted umap-learn model per training row beyond 8 bytes per dim (measured
#                           1.7 KB/row at k = 256 and 0.9 KB at k = 64, data excluded; x2 for the fit)
_HEADROOM = 0.8  # plans use 80 % of the budget: the allocator, torch and library temporaries


class OutputHook(Protocol):
    """Attributes computed from the model's outputs, chunk by chunk (prediction, confidence, ...).

    ``specs()`` : name -> {"kind": "categorical" | "continuous", "categories": [...] or
    "extent": [lo, hi], "dtype": "int32" | "float32"}: the attributes it returns.
    ``__call__(a, b, outputs, labels, targets)`` : rows [a, b) of the inputs; ``outputs``
    (b - a, K) float32 host, the model's outputs (logits) for them; ``labels`` (b - a,) int64,
    ``targets`` (b - a,) int64 model class of each input or None. Returns name -> (b - a,) array.
    """

    def specs(self) -> dict: ...

    def __call__(self, a: int, b: int, outputs: np.ndarray, labels: np.ndarray,
                 targets: np.ndarray | None) -> dict: ...


class _JoinedHooks:
    """Several :class:`OutputHook` s as one (their attribute names must not collide)."""

    def __init__(self, hooks):
        self.hooks = list(hooks)
        names = [n for h in self.hooks for n in h.specs()]
        if len(set(names)) != len(names):
            raise ValueError(f"output hooks: attribute names collide: {sorted(names)}")

    def specs(self) -> dict:
        return {k: v for h in self.hooks for k, v in h.specs().items()}

    def __call__(self, a, b, outputs, labels, targets) -> dict:
        return {k: v for h in self.hooks for k, v in h(a, b, outputs, labels, targets).items()}


def join_hooks(*hooks) -> OutputHook | None:
    """The given hooks (None entries left out) as one hook, or None when there is none."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None
    return hooks[0] if len(hooks) == 1 else _JoinedHooks(hooks)


@dataclass(frozen=True)
class StreamPlan:
    """How a streaming run uses its memory budget (every figure in bytes).

    budget : the memory budget; fit_sample : M; chunk : rows per transform; trust_sample : rows
    of each trustworthiness measurement; dims : model -> {layer id: D}; reduced : model ->
    {layer id: k} (the dims UMAP sees); sample_budget : what a group of sample activations may
    take; stream_groups : model -> groups of layer ids, one forward pass over N each;
    estimate : the planned peak's parts; why : why the run streams.
    """

    budget: int
    fit_sample: int
    chunk: int
    trust_sample: int
    dims: dict
    reduced: dict
    sample_budget: int
    stream_groups: dict
    estimate: dict
    why: str
    batch_size: int = 64

    def provenance(self) -> dict:
        return {"why": self.why, "budget_bytes": int(self.budget), "fit_sample": self.fit_sample,
                "transform_chunk": self.chunk, "trust_sample": self.trust_sample,
                "stream_passes": {m: len(g) for m, g in self.stream_groups.items()},
                "estimate_bytes": {k: int(v) for k, v in self.estimate.items()}}


def _budget(config: PrepareConfig, backend: Backend) -> int:
    from engine.activations import default_budget

    if config.memory_budget_gib is not None:
        return int(config.memory_budget_gib * 2**30)
    return default_budget(backend)


def _model_bytes(m: int, k: int) -> int:
    return m * (8 * k + _MODEL_ROW_BYTES)


def _trust_bytes(t: int) -> int:
    return 3 * t * t * 8  # scikit-learn's trustworthiness: distances, argsort and ranks, (t, t) each


def plan_stream(jobs: Sequence[ModelJob], inputs, config: PrepareConfig, backend: Backend,
                dims: dict | None = None) -> StreamPlan | None:
    """Whether and how to stream: None for an in-memory run, else the :class:`StreamPlan`.

    ``config.stream`` True streams; None streams when one layer's activations of all N inputs
    (N x D x 4 bytes) exceed the budget (``--memory-budget``, default 60 % of free device memory
    or half the available RAM); False never. dims : model -> {layer id: D} when already known
    (else one input is run through each model). The fit sample is ``config.fit_sample`` or the
    largest size up to :data:`STREAM_FIT_SAMPLE` (and N / 2) whose planned peak fits; a budget
    that cannot hold a useful plan raises :class:`engine.activations.MemoryBudgetError` stating
    the bytes needed.
    """
    from engine.activations import MemoryBudgetError, layer_dims, pack_in_order

    if config.stream is False:
        return None
    n = int(inputs.n)
    budget = _budget(config, backend)
    if dims is None:
        dims = {j.name: layer_dims(j.module, inputs, j.layers, backend=backend, max_dim=config.max_dim,
                                   max_width=config.max_width, pooling=config.pooling) for j in jobs}
    widest = max(((j, lid, d) for j, ds in dims.items() for lid, d in ds.items()), key=lambda t: t[2])
    need = n * widest[2] * 4
    if config.stream is None:
        if need <= budget:
            return None
        why = (f"layer {widest[0]}/{widest[1]} needs {need / 2**30:.2f} GiB for N={n:,} x D={widest[2]:,} "
               f"float32, more than the {budget / 2**30:.2f} GiB budget")
    else:
        why = "--stream"
    kdim = config.reduce_dims
    reduced = {m: {lid: (min(d, kdim) if kdim else d) for lid, d in ds.items()} for m, ds in dims.items()}
    chunk = min(config.transform_chunk, n)
    bs = config.batch_size
    usable = int(budget * _HEADROOM)
    trust = min(config.trust_sample, n)  # measuring quality may take a third of the budget, no more
    d_max = max(d for ds in dims.values() for d in ds.values())
    while trust > 200 and 2 * trust * d_max * 4 + _trust_bytes(trust) > usable // 3:
        trust = int(trust * 0.8)

    def estimate(m: int) -> dict:
        est = {}
        per_model = []
        for name, ds in dims.items():
            fits = sum(_model_bytes(m, k) for k in reduced[name].values())
            widest_d = max(ds.values())
            k_w = reduced[name][max(ds, key=ds.get)]
            w = min(k_w + 10, widest_d)
            # randomised PCA: sketches and their QR (D x w float32, three at once), the float64 SVD
            # of the (w x D) projection and its factors, the (m x w) range, 16 MB blocks of X - mean
            pca = 36 * widest_d * w + 16 * m * w + (32 << 20) if kdim and widest_d > kdim else 0
            fit_work = _model_bytes(m, k_w) + pca
            sample_group = m * widest_d * 4  # at least the widest layer's sample at once
            chunk_bufs = sum(chunk * k * 4 for k in reduced[name].values())
            batch = 3 * bs * sum(ds.values()) * 4
            transform = chunk * (m * 8 if m < 4096 else 400) + chunk * 1_000 * 4
            quality = 2 * trust * widest_d * 4 + _trust_bytes(trust)
            parts = {"fitted_models": fits, "sample_activations": sample_group, "fit_work": fit_work,
                     "stream_batch": batch, "chunk_buffers": chunk_bufs, "transform_work": transform,
                     "quality_rows": quality}
            fit_trust = trust * widest_d * 4 + _trust_bytes(trust)  # trustworthiness on the fitted rows
            parts["peak"] = fits + max(sample_group + fit_work + fit_trust, batch + chunk_bufs + transform,
                                       quality)
            per_model.append(parts)
        for parts in per_model:
            for k, v in parts.items():
                est[k] = max(est.get(k, 0), v)
        return est

    held_min = 2 * config.n_neighbors + 1
    m_max = n - held_min
    if config.fit_sample:
        m = int(config.fit_sample)
        if m > m_max:
            raise ValueError(f"--fit-sample {m}: only {n - m} rows would be left to transform; need more "
                             f"than {2 * config.n_neighbors}")
        est = estimate(m)
        if est["peak"] > usable:
            raise MemoryBudgetError(
                f"--fit-sample {m:,} with --memory-budget {budget / 2**30:.2f} GiB: the streaming plan needs "
                f"about {_gib(est['peak'] / _HEADROOM)} GiB ({_parts(est)}); give a larger budget, a smaller "
                "--fit-sample or --reduce-dims, or a lower max_dim")
    else:
        hi = min(STREAM_FIT_SAMPLE, n // 2, m_max)
        lo = min(MIN_FIT_SAMPLE, hi)
        if lo < held_min or estimate(lo)["peak"] > usable:
            est = estimate(max(lo, held_min))
            raise MemoryBudgetError(
                f"--memory-budget {budget / 2**30:.2f} GiB cannot hold a streaming plan with a fit sample of "
                f"{max(lo, held_min):,} rows (about {_gib(est['peak'] / _HEADROOM)} GiB: {_parts(est)}); "
                "give a larger --memory-budget, a smaller --batch-size or --reduce-dims, or fewer layers")
        if estimate(hi)["peak"] <= usable:
            lo = hi
        while hi - lo > max(1, lo // 100):  # the largest sample that fits (the estimate grows with m)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if estimate(mid)["peak"] <= usable else (lo, mid - 1)
        m = lo
        est = estimate(m)
    sample_budget = max(1, usable - est["fitted_models"] - est["fit_work"])
    stream_groups = {}
    for name, ds in dims.items():
        free = usable - est["fitted_models"] - est["chunk_buffers"] - est["transform_work"]
        # what one batch of the group keeps: 3 copies of each layer's (bs, D) float32 activations
        stream_groups[name] = pack_in_order({lid: 3 * bs * d * 4 for lid, d in ds.items()}, max(free, 1))
    return StreamPlan(budget=budget, fit_sample=m, chunk=chunk, trust_sample=trust, dims=dims,
                      reduced=reduced, sample_budget=sample_budget, stream_groups=stream_groups, estimate=est,
                      why=why, batch_size=bs)


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def _parts(est: dict) -> str:
    names = (("fitted_models", "fitted models"), ("sample_activations", "sample of the widest layer"),
             ("fit_work", "fitting it"), ("stream_batch", "one batch"), ("transform_work", "a transform"),
             ("quality_rows", "trustworthiness rows"))
    return ", ".join(f"{label} {est[k] / 2**20:,.0f} MiB" for k, label in names)


# ------------------------------------------------------------------------------------------- fit


def _crc(a) -> str:
    return f"crc32:{zlib.crc32(np.ascontiguousarray(to_host(a), dtype=np.float32).data):08x}"


def fit_layers(job: ModelJob, inputs, config: PrepareConfig, backend: Backend, plan: StreamPlan,
               todo: list, *, progress: bool, prev=None) -> dict:
    """Record the fit sample of the layers ``todo`` (specs) and fit each: layer id ->
    ``{"fit": EmbedResult (with its reducer), "tw_fit": float, "crc": str of the fitted
    embedding, "source_dim": D}``. ``prev`` : for ``--init previous``, the aligned sample
    embedding of the layer before ``todo[0]`` ((M, p) host) or None."""
    from engine.activations import record
    from engine.align import extend_chain

    sp = sampled_plan(inputs.n, config)
    idx = sp["idx"]
    sample = inputs.subset(idx)
    out: dict = {}
    chain_end = None
    prev_aligned = prev
    if prev is not None:
        al, chain_end = extend_chain(None, np.asarray(prev, dtype=np.float64))
        prev_aligned = al.apply(np.asarray(prev, dtype=np.float64))
    for spec, Xs in record(job.module, sample, todo, backend=backend, batch_size=config.batch_size,
                           max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                           memory_budget=plan.sample_budget, progress=progress):
        init = prev_aligned if config.init == "previous" and prev_aligned is not None else None
        out[spec.id] = got = fit_one(Xs, config, init)
        red = got["fit"].params.get("reduction")
        log.info("%s %s: fitted on %d rows (D=%d%s) in %.1fs, trustworthiness on them %.3f", job.name,
                 spec.id, len(idx), Xs.shape[1], f" -> PCA {red['dims']}" if red else "", got["fit"].seconds,
                 got["tw_fit"])
        if config.init == "previous":
            e = np.asarray(to_host(got["fit"].embedding), dtype=np.float64)
            al, chain_end = extend_chain(chain_end, e, name=f"{job.name}/{spec.id}")
            prev_aligned = al.apply(e)
        del Xs
    return out


def fit_one(Xs, config: PrepareConfig, init=None) -> dict:
    """One layer's fit on its sample Xs ((M, D), host or device): ``{"fit": EmbedResult (with its
    reducer), "tw_fit": trustworthiness on the fitted rows, "crc": checksum of the fitted
    embedding (a resume refits and compares), "source_dim": D}``. Also a Dask task."""
    fit = fit_on_sample(Xs, config, init)
    tw_fit = trustworthiness(Xs, fit.embedding, k=config.n_neighbors, n_sample=config.trust_sample,
                             seed=config.seed)
    return {"fit": fit, "tw_fit": float(tw_fit), "crc": _crc(fit.embedding), "source_dim": int(Xs.shape[1])}


# ---------------------------------------------------------------------------------------- stream


class _Chunk:
    """One transform chunk being filled: rows [a, b), reduced rows per layer (in xp), outputs and
    thumbnails (host)."""

    def __init__(self, a: int, b: int, bufs: dict):
        self.a, self.b, self.bufs = a, b, bufs
        self.outputs: list = []
        self.thumbs: list = []


def stream_rows(job: ModelJob, inputs, config: PrepareConfig, backend: Backend, fits: dict, group: list,
                start: int, *, hook: OutputHook | None = None, want_thumbs: bool = False,
                fitted_rows: np.ndarray | None = None, fitted_from: int = 0, offset: int = 0,
                progress: bool = False):
    """Stream rows ``[start, inputs.n)`` of ``inputs`` through the layers ``group`` (specs), chunk
    by chunk: yields per finished chunk ``{"a", "b", "Y": {layer id: (b - a, p) float32 host},
    "thumbs": (b - a, 32, 32, 3) uint8 or None, "attributes": {name: (b - a,)} or None,
    "seconds": transform time}``.

    ``start`` must be a multiple of ``config.transform_chunk`` (chunk boundaries are rows of
    ``inputs``); ``fitted_rows`` : the fit sample's rows (sorted, in ``inputs``' rows) whose
    transformed coordinates are replaced by the fit's own, which start at row ``fitted_from`` of
    the fitted embedding (the sample rows before ``inputs``). ``offset`` : the row of the whole input
    set where ``inputs`` starts (a Dask task's image range starts on a multiple of both the chunk
    and the batch size): "a" and "b" and the hook's rows are reported in the whole set's rows.
    Used by the single-process run (over all N) and by each Dask task (over its range).
    """
    from tqdm.auto import tqdm

    from engine.activations import stream_batches

    n = inputs.n
    C, bs = config.transform_chunk, config.batch_size
    xp = backend.xp
    if start % C and start != n:
        raise ValueError(f"stream_rows: start={start} is not a multiple of the transform chunk {C}")
    if start >= n:
        return
    ids = [s.id for s in group]
    k = {lid: (fits[lid]["fit"].reducer.dims if fits[lid]["fit"].reducer is not None
               else fits[lid]["source_dim"]) for lid in ids}
    fitted_rows = np.asarray([] if fitted_rows is None else fitted_rows, dtype=np.int64)
    fitted = {lid: np.asarray(to_host(fits[lid]["fit"].embedding), dtype=np.float32) for lid in ids}

    def new_chunk(a):
        b = min(a + C, n)
        return _Chunk(a, b, {lid: xp.empty((b - a, k[lid]), dtype=xp.float32) for lid in ids})

    def finish(ch: _Chunk) -> dict:
        t0 = time.perf_counter()
        Y = {}
        lo, hi = np.searchsorted(fitted_rows, [ch.a, ch.b])
        for lid in ids:
            y = np.asarray(to_host(fits[lid]["fit"].transform(ch.bufs[lid], reduced=True)), dtype=np.float32)
            if hi > lo:
                y[fitted_rows[lo:hi] - ch.a] = fitted[lid][fitted_from + lo:fitted_from + hi]
            Y[lid] = y
        seconds = time.perf_counter() - t0
        attrs = None
        if hook is not None:
            outputs = np.concatenate(ch.outputs)
            rows = np.arange(ch.a, ch.b)
            attrs = hook(offset + ch.a, offset + ch.b, outputs, inputs.labels[rows],
                         None if inputs.targets is None else inputs.targets[rows])
        thumbs = np.concatenate(ch.thumbs) if want_thumbs and ch.thumbs else None
        return {"a": offset + ch.a, "b": offset + ch.b, "Y": Y, "thumbs": thumbs, "attributes": attrs,
                "seconds": seconds}

    first = (start // bs) * bs
    ch = new_chunk(start)
    bar = tqdm(total=math.ceil((n - start) / C), desc=f"{job.name}: streaming", unit="chunk",
               disable=not progress, leave=False)
    try:
        batches = stream_batches(job.module, inputs, group, backend=backend, batch_size=bs,
                                 max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                                 start=first, keep_output=hook is not None)
        for row, acts, thumbs, output in batches:
            e = row + next(iter(acts.values())).shape[0]
            lo = max(row, start)
            while lo < e:
                hi = min(e, ch.b)
                for lid in ids:
                    X = acts[lid][lo - row:hi - row]
                    red = fits[lid]["fit"].reducer
                    ch.bufs[lid][lo - ch.a:hi - ch.a] = red.apply(X) if red is not None else X
                if hook is not None:
                    ch.outputs.append(output[lo - row:hi - row])
                if want_thumbs and thumbs is not None:
                    ch.thumbs.append(np.asarray(thumbs[lo - row:hi - row]))
                lo = hi
                if hi == ch.b:
                    yield finish(ch)
                    bar.update()
                    if ch.b < n:
                        ch = new_chunk(ch.b)
            del acts
    finally:
        bar.close()


def output_pass(job: ModelJob, inputs, config: PrepareConfig, backend: Backend, hook: OutputHook,
                progress: bool = False) -> dict:
    """The model's outputs through ``hook`` over all inputs, for an in-memory run: one forward
    pass, nothing recorded: name -> (N,) array."""
    from engine.activations import stream_batches

    specs = hook.specs()
    out = {name: np.zeros(inputs.n, dtype=np.dtype(s.get("dtype", "float32"))) for name, s in specs.items()}
    for row, _acts, _thumbs, output in stream_batches(job.module, inputs, [], backend=backend,
                                                      batch_size=config.batch_size, keep_output=True):
        b = row + output.shape[0]
        got = hook(row, b, output, inputs.labels[row:b],
                   None if inputs.targets is None else inputs.targets[row:b])
        for name in specs:
            out[name][row:b] = got[name]
    return out


# ------------------------------------------------------------------------------- single process


def add_rows(done: list, a: int, b: int) -> list:
    """``done`` (sorted, disjoint [start, stop) row intervals) with [a, b) added, merged."""
    out: list = []
    for s, e in sorted([*map(tuple, done), (a, b)]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def rows_from_start(done: list) -> int:
    """How many rows from row 0 ``done`` covers without a gap."""
    return done[0][1] if done and done[0][0] == 0 else 0


def covered(done: list, a: int, b: int) -> bool:
    """Whether ``done`` covers every row of [a, b)."""
    return any(s <= a and b <= e for s, e in done)


def _intervals_ok(iv, n: int, C: int) -> bool:
    if not isinstance(iv, list):
        return False
    last = -1
    for pair in iv:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)):
            return False
        a, b = pair
        if not last < a < b <= n or a % C or (b % C and b != n):
            return False
        last = b
    return True


def _resumable(st, fixed: dict, todo: list, n: int, C: int) -> bool:
    """Whether the saved stream state ``st`` (data from the progress file) continues here: the same
    settings, every unfinished layer among its layers, well-formed row intervals (on chunk
    boundaries), and, when some of its layers were adopted already, every pass complete."""
    if not isinstance(st, dict) or any(st.get(k) != v for k, v in fixed.items()):
        return False
    layers, groups, done = st.get("layers"), st.get("groups"), st.get("rows")
    if not (isinstance(layers, list) and isinstance(groups, list) and isinstance(done, list)
            and len(done) == len(groups) and isinstance(st.get("fits"), dict)
            and all(isinstance(g, list) for g in groups)
            and sorted(i for g in groups for i in g) == sorted(layers)):
        return False
    if not all(_intervals_ok(iv, n, C) for iv in done) or not set(todo) <= set(layers):
        return False
    return set(todo) == set(layers) or all(covered(iv, 0, n) for iv in done)


def open_stream(job: ModelJob, inputs, writer, config: PrepareConfig, plan: StreamPlan, *, hook=None,
                images: bool = False, mode: str = "single") -> dict:
    """The row files and bookkeeping of ``job``'s stream, resumed when the progress file allows:
    ``{"todo": specs, "groups": layer-id groups, "rows": per group done row intervals, "files":
    {layer id: RowFile}, "extra": {"images" | "attr:<name>": RowFile}, "state": dict, "resume":
    bool, "done": bool (nothing left)}``. Shared by the single-process and the Dask runners."""
    from engine.store import STREAM_SUFFIX

    n, C = inputs.n, config.transform_chunk
    todo = [s for s in job.layers if not writer.has_layer(job.name, s.id)]
    todo_ids = [s.id for s in todo]
    hook_specs = hook.specs() if hook is not None else {}
    fixed = {"chunk": C, "fit_sample": config.fit_sample, "n": n, "images": bool(images),
             "attributes": sorted(hook_specs), "fingerprint": inputs.fingerprint}
    st = writer.stream_state(job.name)
    resume = _resumable(st, fixed, todo_ids, n, C)
    if resume and st.get("done") and not todo:
        return {"done": True}
    if st is not None and not resume:
        log.warning("%s: the interrupted stream had other layers or settings; streaming from the first row",
                    job.name)

    def fresh_groups(source):
        gs = [[lid for lid in grp if lid in set(todo_ids)] for grp in source]
        return [g for g in gs if g]

    if resume:
        layers, groups, rows = list(st["layers"]), [list(g) for g in st["groups"]], list(st["rows"])
    else:
        layers, groups = todo_ids, fresh_groups(plan.stream_groups[job.name])
        rows = [[] for _ in groups]
    files = {lid: writer.row_file(f"models/{job.name}/{lid}.npy{STREAM_SUFFIX}", (config.dim,), np.float32,
                                  keep=resume) for lid in todo_ids}
    extra = {}
    if images:
        extra["images"] = writer.row_file(f"images.npy{STREAM_SUFFIX}", (32, 32, 3), np.uint8, keep=resume)
    for name, sp in hook_specs.items():
        extra[f"attr:{name}"] = writer.row_file(f"attributes/{job.name}.{name}.npy{STREAM_SUFFIX}", (),
                                                np.dtype(sp.get("dtype", "float32")), keep=resume)
    if resume and not all(f.kept for f in (*files.values(), *extra.values())):
        log.warning("%s: a streamed file is missing or damaged; streaming from the first row", job.name)
        resume, layers, groups = False, todo_ids, fresh_groups(groups)
        rows = [[] for _ in groups]
    if resume and any(not covered(iv, 0, n) for iv in rows):
        done = sum(e - s for iv in rows for s, e in iv)
        log.info("%s: resuming the stream: %d of %d rows of %d pass(es) done", job.name, done,
                 n * len(groups), len(groups))
    state = {**fixed, "layers": layers, "groups": groups, "rows": rows,
             "fits": dict(st["fits"]) if resume else {}, "done": False, "mode": mode,
             "thumbs_written": bool(resume and st.get("thumbs_written"))}
    return {"todo": todo, "groups": groups, "rows": rows, "files": files, "extra": extra, "state": state,
            "resume": resume, "done": False, "hook_specs": hook_specs}


def check_refit(job: ModelJob, stream: dict, crcs: dict, n: int) -> None:
    """After the fits of a resumed stream: if a refitted model differs from the interrupted run's
    (a back end that is not reproducible), forget the streamed rows (they came from the old fit)."""
    st = stream["state"]
    if stream["resume"] and any(st["fits"].get(lid) not in (None, c) for lid, c in crcs.items()):
        if any(iv for iv in stream["rows"]):
            log.warning("%s: the refitted UMAP models differ from the interrupted run's (a back end that is "
                        "not reproducible); streaming from the first row", job.name)
        stream["rows"][:] = [[] for _ in stream["rows"]]
    st["fits"] = {**st["fits"], **crcs}


def stream_model(job: ModelJob, inputs, writer, config: PrepareConfig, plan: StreamPlan, backend: Backend, *,
                 progress: bool, timings: dict, hook: OutputHook | None = None, images: bool = False) -> None:
    """Stream every unfinished layer of ``job`` into ``writer`` (fit, stream, quality; see the
    module docstring), resuming at the first unfinished chunk of an interrupted run. With
    ``images`` this model's first pass writes the thumbnails; ``hook`` adds model-output
    attributes. Both are adopted by :func:`finish_streams`."""
    n = inputs.n
    stream = open_stream(job, inputs, writer, config, plan, hook=hook, images=images)
    if stream["done"]:
        return
    todo, groups, rows, files, extra = (stream[k] for k in ("todo", "groups", "rows", "files", "extra"))
    position = {s.id: i for i, s in enumerate(job.layers)}
    specs = {s.id: s for s in job.layers}
    t0 = time.perf_counter()
    prev = None
    if todo and config.init == "previous":
        k = position[todo[0].id]
        if k > 0:  # the layer before the first unfinished one is finished: its sample rows start the chain
            idx = sampled_plan(n, config)["idx"]
            prev = np.asarray(writer.read_layer(job.name, job.layers[k - 1].id)[idx], dtype=np.float32)
    fits = fit_layers(job, inputs, config, backend, plan, todo, progress=progress, prev=prev) if todo else {}
    timings["fit_s"] = timings.get("fit_s", 0.0) + time.perf_counter() - t0
    check_refit(job, stream, {lid: f["crc"] for lid, f in fits.items()}, n)
    state = stream["state"]
    writer.set_stream_state(job.name, state)
    fitted_rows = sampled_plan(n, config)["idx"]
    t0 = time.perf_counter()
    transform_s = {s.id: 0.0 for s in todo}
    streamed = 0  # image passes done in this run (a resumed run does the rest only)
    for g, ids in enumerate(groups):
        first = g == 0
        start = rows_from_start(rows[g])
        if start >= n:
            continue
        for res in stream_rows(job, inputs, config, backend, fits, [specs[i] for i in ids], start,
                               hook=hook if first else None, want_thumbs=images and first,
                               fitted_rows=fitted_rows, progress=progress):
            write_chunk(res, files, extra if first else {}, ids, transform_s)
            rows[g] = add_rows(rows[g], res["a"], res["b"])
            streamed += res["b"] - res["a"]
            state["thumbs_written"] |= res["thumbs"] is not None
            writer.set_stream_state(job.name, state)
    dt = time.perf_counter() - t0
    timings["stream_s"] = timings.get("stream_s", 0.0) + dt
    if dt > 0 and streamed:
        rate = streamed / dt
        timings[f"stream_images_per_s.{job.name}"] = rate
        log.info("%s: streamed %d images in %d pass(es) at %.0f images/s (decode, forward, reduce, "
                 "transform)", job.name, streamed, len(groups), rate)
    if todo:
        t0 = time.perf_counter()
        _quality_and_adopt(job, inputs, writer, config, backend, plan, todo, fits, files, transform_s,
                           position, progress)
        timings["quality_s"] = timings.get("quality_s", 0.0) + time.perf_counter() - t0
    for f in extra.values():
        f.close()
    writer.set_stream_state(job.name, {**state, "done": True, "attribute_specs": stream["hook_specs"]})


def write_chunk(res: dict, files: dict, extra: dict, ids: list, transform_s: dict) -> None:
    """Write one chunk's result (:func:`stream_rows`) into the row files and sync them, so the
    progress file may record it next."""
    a = res["a"]
    for lid, Y in res["Y"].items():
        files[lid].write(a, Y)
        transform_s[lid] += res["seconds"] / len(ids)
    if res["thumbs"] is not None and "images" in extra:
        extra["images"].write(a, res["thumbs"])
    for name, v in (res["attributes"] or {}).items():
        extra[f"attr:{name}"].write(a, v)
    for f in (*[files[i] for i in ids], *extra.values()):
        f.sync()


def _quality_and_adopt(job, inputs, writer, config, backend, plan, todo, fits, files, transform_s, position,
                       progress) -> None:
    """Trustworthiness of every streamed layer on the trust and held-out rows (recorded again as a
    subset, in memory-planned groups), then each layer file is adopted into the bundle."""
    from engine.activations import record

    sp = sampled_plan(inputs.n, config)
    trust_idx, held_idx = sp["trust_idx"], sp["held_idx"]
    rows = np.union1d(trust_idx, held_idx)
    pos_t, pos_h = np.searchsorted(rows, trust_idx), np.searchsorted(rows, held_idx)
    k = config.n_neighbors
    xp = backend.xp
    recorded = record(job.module, inputs.subset(rows), todo, backend=backend, batch_size=config.batch_size,
                      max_dim=config.max_dim, max_width=config.max_width, pooling=config.pooling,
                      memory_budget=plan.sample_budget, progress=progress)
    for spec, XQ in recorded:
        t0 = time.perf_counter()
        f = files[spec.id]
        tw_all = trustworthiness(XQ[xp.asarray(pos_t)], f.take(trust_idx), k=k, n_sample=len(trust_idx))
        tw_held = trustworthiness(XQ[xp.asarray(pos_h)], f.take(held_idx), k=k, n_sample=len(held_idx))
        fit = fits[spec.id]
        meta = sampled_meta(config, inputs.n, fit["fit"], tw_all, fit["tw_fit"], tw_held, len(held_idx),
                            transform_s[spec.id], time.perf_counter() - t0)
        meta["stream"] = {"passes": len(plan.stream_groups[job.name]), "budget_bytes": int(plan.budget),
                          "trust_sample": int(config.trust_sample)}
        del XQ
        writer.adopt_layer(job.name, spec.id, f, name=spec.name, source_dim=fit["source_dim"], meta=meta,
                           index=position[spec.id])
        log.info("%s %s: streamed, trustworthiness %.3f (fitted rows %.3f, transformed rows %.3f)", job.name,
                 spec.id, tw_all, fit["tw_fit"], tw_held)


def finish_streams(writer, jobs: Sequence[ModelJob], inputs, config: PrepareConfig, *,
                   progress: bool = False) -> dict:
    """Adopt what the streams left for the end: the thumbnails and each model's output attributes
    (prefixed ``<model>.`` when there are several models). Thumbnails missing because every layer
    of the streaming model was finished before an interruption are made by a decode-only pass.
    Returns ``{"images": bool, "attributes": {model: {name: (N,) host array}}}``."""
    from engine.store import STREAM_SUFFIX

    got_images = False
    adopted: dict = {}
    for job in jobs:
        st = writer.stream_state(job.name)
        if not st or not st.get("done"):
            continue
        specs = st.get("attribute_specs") if isinstance(st.get("attribute_specs"), dict) else {}
        mine = adopted.setdefault(job.name, {})
        for name, s in specs.items():
            f = writer.row_file(f"attributes/{job.name}.{name}.npy{STREAM_SUFFIX}", (),
                                np.dtype(s.get("dtype", "float32")), keep=True)
            if not f.kept:
                raise RuntimeError(f"{job.name}: the streamed attribute {name!r} is missing; rerun without "
                                   "--resume")
            values = f.read(0, inputs.n)
            f.close()
            mine[name] = values
            label = name if len(jobs) == 1 else f"{job.name}.{name}"
            writer.set_attribute(label, values, s["kind"], categories=s.get("categories"),
                                 extent=s.get("extent"))
        if st.get("images") and st.get("thumbs_written") and not got_images:
            f = writer.row_file(f"images.npy{STREAM_SUFFIX}", (32, 32, 3), np.uint8, keep=True)
            if f.kept:
                writer.adopt_images(f)
                got_images = True
            else:
                f.close()
    if not got_images and any(writer.stream_state(j.name) for j in jobs):
        got_images = _thumbnail_pass(writer, inputs, config, progress)
    return {"images": got_images, "attributes": adopted}


def _thumbnail_pass(writer, inputs, config: PrepareConfig, progress: bool) -> bool:
    """Decode every input once for its thumbnail only, into a row file: False when the inputs make none."""
    from tqdm.auto import tqdm

    from engine.store import STREAM_SUFFIX

    f = writer.row_file(f"images.npy{STREAM_SUFFIX}", (32, 32, 3), np.uint8)
    row = 0
    for _x, thumbs in tqdm(inputs.stream(config.batch_size), desc="thumbnails", unit="batch",
                           disable=not progress, leave=False):
        if thumbs is None:
            f.close()
            return False
        f.write(row, thumbs)
        row += thumbs.shape[0]
    writer.adopt_images(f)
    return True


def resolve_config(config: PrepareConfig, plan: StreamPlan) -> PrepareConfig:
    """The run's config with the plan's choices (fit sample, trust sample): what the bundle records."""
    return replace(config, fit_sample=plan.fit_sample, trust_sample=plan.trust_sample, stream=True)
