"""Record layer activations: one forward pass per batch for every layer of a group, pooled on the device.

The study re-ran the network prefix of every layer over the whole data set (O(L²) forward work);
here forward hooks on all requested modules of a *group* capture them in one pass per batch. Each
activation is pooled with the study's rule (:func:`pool`), flattened and copied inside the hook into
an (N, D) float32 accumulator on the back end's device (the copy happens before any later in-place
op, e.g. ``ReLU(inplace=True)``, can overwrite the tensor). A memory planner (:func:`plan_groups`)
splits the layers into groups whose accumulators fit a byte budget: one forward pass over the data
per group. Results come out as NumPy arrays (CPU) or CuPy arrays sharing the torch tensors' memory
through DLPack (CUDA: no host copy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator

from engine.device import Backend, resolve
from engine.models import LayerSpec

log = logging.getLogger("layertour")

POOLINGS = ("avg", "max")


class MemoryBudgetError(ValueError):
    """A single layer's activations do not fit the memory budget, or the device ran out of memory."""


def pooled_width(c: int, max_dim: int = 51200, max_width: int = 16) -> int:
    """Target width w = min(max_width, ⌊√(max_dim / c)⌋), at least 1 (integer arithmetic, exact)."""
    if c < 1 or max_dim < 1 or max_width < 1:
        raise ValueError(f"pooled_width: c={c}, max_dim={max_dim}, max_width={max_width} must all be >= 1")
    return max(1, min(max_width, math.isqrt(max_dim // c)))


def pooled_dim(c: int, h: int, w: int, max_dim: int = 51200, max_width: int = 16) -> int:
    """Length of a pooled, flattened C×H×W activation: C·H·W if ≤ max_dim, else C·w² (see pool)."""
    if c * h * w <= max_dim:
        return c * h * w
    k = pooled_width(c, max_dim, max_width)
    return c * k * k


def pool(t, max_dim: int = 51200, max_width: int = 16, mode: str = "avg"):
    """Pool and flatten one batch of activations, the study's rule.

    t : torch tensor (B, ...) on any device. A 4-D (B, C, H, W) tensor with C·H·W > max_dim is
        adaptively average- or max-pooled (``mode``) to w×w, w = :func:`pooled_width` (C); any
        tensor is then flattened.
    Returns a (B, D) tensor on t's device (a view of t when nothing was pooled).
    """
    import torch.nn.functional as F

    if mode not in POOLINGS:
        raise ValueError(f"pooling={mode!r} is not one of {', '.join(POOLINGS)}")
    if t.ndim == 4:
        c, h, w = t.shape[1:]
        if c * h * w > max_dim:
            k = pooled_width(c, max_dim, max_width)
            t = F.adaptive_avg_pool2d(t, k) if mode == "avg" else F.adaptive_max_pool2d(t, k)
    return t.reshape(t.shape[0], -1)


def plan_groups(layer_dims: dict[str, int], n: int, budget_bytes: int) -> list[list[str]]:
    """Split layers (in order) into consecutive groups whose float32 (n, D) arrays fit the budget.

    layer_dims : layer id -> pooled dimension D (insertion order = recording order).
    Returns the groups as lists of ids; a group's Σ n·D·4 ≤ budget_bytes. A layer that alone needs
    more raises :class:`MemoryBudgetError` stating the bytes needed.
    """
    if budget_bytes <= 0:
        raise ValueError(f"memory budget must be positive, got {budget_bytes}")
    for lid, d in layer_dims.items():
        need = n * d * 4
        if need > budget_bytes:
            raise MemoryBudgetError(
                f"layer {lid}: its activations need {need:,} bytes ({n:,} × {d:,} float32), more than the "
                f"memory budget of {budget_bytes:,} bytes; lower max_dim, use fewer inputs or a larger budget"
            )
    return pack_in_order({lid: n * d * 4 for lid, d in layer_dims.items()}, budget_bytes)


def pack_in_order(needs: dict[str, int], budget_bytes: int) -> list[list[str]]:
    """Consecutive groups of the ids of ``needs`` (id -> bytes, in order) whose sums fit
    ``budget_bytes``; an id that alone needs more gets a group of its own."""
    groups: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for lid, need in needs.items():
        if cur and used + need > budget_bytes:
            groups.append(cur)
            cur, used = [], 0
        cur.append(lid)
        used += need
    if cur:
        groups.append(cur)
    return groups


class _StopForward(Exception):
    """Raised from a hook once a group's last needed module has run: the rest of the network is skipped."""


def _sources(layers: list[LayerSpec], modules: dict) -> dict[str, tuple[str, str | None]]:
    """Layer id -> ("input", None) | ("module", module name) | ("output", None)."""
    out: dict[str, tuple[str, str | None]] = {}
    last_module = None
    for spec in layers:
        if spec.kind == "input":
            out[spec.id] = ("input", None)
        elif spec.kind in ("softmax", "logits"):
            out[spec.id] = ("output", None)
        elif spec.kind == "flatten":
            if last_module is None:
                raise ValueError(f"layer {spec.id}: a flatten layer needs a module layer before it")
            out[spec.id] = ("module", last_module)
        else:
            if spec.name not in modules:
                raise ValueError(f"layer {spec.id}: no module named {spec.name!r} in the model; "
                                 f"modules: {', '.join(n for n in modules if n)}")
            out[spec.id] = ("module", spec.name)
            last_module = spec.name
    return out


def pad_batch(x, size: int):
    """``x`` ((B, ...) tensor) with its last row repeated up to ``size`` rows (``x`` itself when
    B >= size). Every batch runs at the full batch size, so a row's activations do not depend on
    which rows share its batch: CPU GEMM and convolution kernels change their summation order for
    small batches (measured: differences of 1e-7 at 1-7 rows, none at 16 or more), and a fit
    sample recorded as a subset must equal the same rows of a full pass."""
    b = int(x.shape[0])
    if b >= size:
        return x
    import torch

    return torch.cat([x, x[-1:].expand(size - b, *x.shape[1:])])


def _run_batch(model, x, group: list[LayerSpec], srcs, modules, convert, sink, *, rows: int | None = None,
               keep_output: bool = False):
    """Run one batch for ``group``; ``sink(spec, (rows, D) tensor)`` per layer, for the first ``rows``
    rows of x (default all: the rest pad the batch, :func:`pad_batch`).

    Returns whether the model ran, or with ``keep_output`` the model's output for those rows (the
    whole forward pass runs then; None when it returned no tensor)."""
    import torch

    if rows is None:
        rows = int(x.shape[0])

    by_module: dict[str, list[LayerSpec]] = {}
    want_output = []
    for spec in group:
        kind, name = srcs[spec.id]
        if kind == "input":
            sink(spec, convert(x[:rows]))
        elif kind == "output":
            want_output.append(spec)
        else:
            by_module.setdefault(name, []).append(spec)
    if not by_module and not want_output and not keep_output:
        return False
    fired: set[str] = set()

    def make_hook(name):
        def hook(_module, _inputs, out):
            if name in fired:  # a module called again in the same pass (a shared ReLU): first call counts
                return
            fired.add(name)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {by_module[name][0].id} ({name}): the module returned "
                                f"{type(out).__name__}, not a tensor; pick a module that returns one")
            for spec in by_module[name]:
                sink(spec, convert(out[:rows]))
            if not want_output and not keep_output and len(fired) == len(by_module):
                raise _StopForward

        return hook

    handles = [modules[name].register_forward_hook(make_hook(name)) for name in by_module]
    try:
        out = model(x)
    except _StopForward:
        out = None
    finally:
        for h in handles:
            h.remove()
    missing = [by_module[n][0].id for n in by_module if n not in fired]
    if missing:
        raise ValueError(f"layers {missing} never ran in the forward pass (modules unused by forward())")
    if want_output:
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise TypeError(f"layer {want_output[0].id}: {want_output[0].kind} needs the model to return a "
                            f"(B, K, ...) tensor, got {type(out).__name__}")
        o = out[:rows].float()
        probs = torch.softmax(o, dim=1) if any(s.kind == "softmax" for s in want_output) else None
        for spec in want_output:
            sink(spec, convert(probs if spec.kind == "softmax" else o))
    if keep_output:
        return out[:rows].detach() if isinstance(out, torch.Tensor) else None
    return True


def output_shape(model, inputs, backend="auto") -> tuple | None:
    """The shape of ``model``'s output for the first input (a forward pass on one image, no hooks),
    e.g. ``(1, K)`` for a classifier; None when the model does not return a tensor."""
    import torch

    be = backend if isinstance(backend, Backend) else resolve(backend)
    device = torch.device("cuda" if be.is_cuda else "cpu")
    model = model.eval().to(device)
    with torch.no_grad():
        out = model(_first_batch(inputs).to(device))
    return tuple(int(s) for s in out.shape) if isinstance(out, torch.Tensor) else None


def default_budget(backend: Backend) -> int:
    """Bytes a run's data may take by default (``--memory-budget`` unset): 60 % of free device
    memory, or half the available host RAM."""
    if backend.is_cuda:
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(0.6 * free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def _dry_run(model, inputs, todo, srcs, modules, convert, device, be) -> dict[str, int]:
    """Each layer's pooled dimension D from a forward pass of the first input."""
    import torch

    dims: dict[str, int] = {}

    def dry_sink(spec, t):
        if t.shape[0] != 1:
            raise ValueError(f"layer {spec.id}: output batch size {t.shape[0]} != input batch size 1 "
                             "(the module must keep the batch dimension first)")
        dims[spec.id] = int(t.shape[1])

    try:
        with torch.no_grad():
            _run_batch(model, _first_batch(inputs).to(device), todo, srcs, modules, convert, dry_sink)
    except torch.OutOfMemoryError:
        dry_oom = True
    else:
        dry_oom = False
    if dry_oom:
        raise MemoryBudgetError(f"out of device memory in the dry run on a single input: the model and one "
                                f"forward pass do not fit on {be.device_name}")
    return dims


def layer_dims(model, inputs, layers: Iterable[LayerSpec], *, backend="auto", max_dim: int = 51200,
               max_width: int = 16, pooling: str = "avg") -> dict[str, int]:
    """Layer id -> pooled dimension D of each layer's activations (one forward pass on one input,
    on the back end's device): what a memory plan needs before anything is recorded."""
    import torch

    be = backend if isinstance(backend, Backend) else resolve(backend)
    layers = list(layers)
    device = torch.device("cuda" if be.is_cuda else "cpu")
    model = model.eval().to(device)
    modules = dict(model.named_modules())
    srcs = _sources(layers, modules)
    return _dry_run(model, inputs, layers, srcs, modules,
                    lambda t: pool(t.detach(), max_dim, max_width, pooling), device, be)


def _first_batch(inputs):
    gen = iter(inputs.batches(1))
    try:
        return next(gen)
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


def record(model, inputs, layers: Iterable[LayerSpec], *, backend="auto", batch_size: int = 64,
           max_dim: int = 51200, max_width: int = 16, pooling: str = "avg", memory_budget: int | None = None,
           skip: Iterable[str] = (), progress: bool = True) -> Iterator[tuple[LayerSpec, object]]:
    """Record every layer's pooled activations; yields ``(LayerSpec, (N, D) float32 array)`` in list order.

    model : ``torch.nn.Module``; put in eval mode and moved to the back end's device (CUDA or CPU).
    inputs : an :class:`engine.inputs.InputSet` (``n`` and ``batches(batch_size)`` yielding float32
        (B, C, H, W) CPU tensors in order).
    layers : :class:`LayerSpec` s (see :mod:`engine.models`); ``skip`` : ids (or names) not recorded.
    backend : a :class:`engine.device.Backend` or ``"auto" | "cuda" | "cpu"``. The arrays live in
        ``backend.xp``: NumPy on the CPU, CuPy on CUDA (``cupy.from_dlpack`` of the torch
        accumulator: no host copy).
    max_dim, max_width, pooling : the pooling rule (:func:`pool`).
    memory_budget : bytes the accumulators of one group may take (default: 60 % of free GPU memory,
        or half the available RAM); layers are grouped by :func:`plan_groups`, one forward pass
        over the inputs per group; a group of only ``input`` layers needs none.

    A dry run on one input first fixes each layer's D. A module called several times in one
    forward pass is recorded at its first call. NaN/Inf activations raise ``ValueError`` naming the
    layer. On CUDA out-of-memory the group is retried with half the batch size, then split; a
    single layer that still fails raises :class:`MemoryBudgetError` stating the memory needed.
    """
    import torch

    be = backend if isinstance(backend, Backend) else resolve(backend)
    layers = list(layers)
    if not layers:
        raise ValueError("record: no layers given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
    ids = [s.id for s in layers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"record: duplicate layer ids in {ids}")
    skip = set(skip)
    unknown = skip - set(ids) - {s.name for s in layers}
    if unknown:
        raise ValueError(f"skip names unknown layers {sorted(unknown)}; layers: {', '.join(ids)}")
    todo = [s for s in layers if s.id not in skip and s.name not in skip]
    device = torch.device("cuda" if be.is_cuda else "cpu")
    model = model.eval().to(device)
    modules = dict(model.named_modules())
    srcs = _sources(layers, modules)
    if not todo:
        return
    n = int(inputs.n)

    def convert(t):
        return pool(t.detach(), max_dim, max_width, pooling)

    dims = _dry_run(model, inputs, todo, srcs, modules, convert, device, be)
    budget = memory_budget if memory_budget is not None else default_budget(be)
    groups = plan_groups({s.id: dims[s.id] for s in todo}, n, budget)
    by_id = {s.id: s for s in todo}
    log.info("recording %d layers of %d inputs in %d group(s) (budget %.2f GB, %s)",
             len(todo), n, len(groups), budget / 1e9, be.name)

    def to_xp(acc):
        if be.is_cuda:
            return be.xp.from_dlpack(acc.detach())
        return acc.numpy()

    def split_or_fail(group: list[LayerSpec], label: str, why: str):
        """Out of device memory with ``group``: record its halves one after the other, or, for a
        single layer, raise with the memory it needs."""
        if len(group) > 1:
            log.warning("out of device memory %s with %d layers in one pass; splitting them", why, len(group))
            half = len(group) // 2
            yield from run_group(group[:half], label + "a")
            yield from run_group(group[half:], label + "b")
            return
        spec = group[0]
        raise MemoryBudgetError(
            f"layer {spec.id}: out of device memory {why}; its activations alone need "
            f"{n * dims[spec.id] * 4:,} bytes ({n:,} × {dims[spec.id]:,} float32) plus one forward pass")

    def run_group(group: list[LayerSpec], label: str):
        # The accumulators first: if they do not fit, a smaller batch cannot help; split at once.
        try:
            accs = {s.id: torch.empty((n, dims[s.id]), dtype=torch.float32, device=device) for s in group}
        except torch.OutOfMemoryError:
            accs = None
        if accs is None:
            if be.is_cuda:
                torch.cuda.empty_cache()
            yield from split_or_fail(group, label, "allocating the accumulators")
            return
        bs = batch_size
        while True:  # an OOM in the forward pass is retried with half the batch, down to 1
            try:
                _pass(model, inputs, group, srcs, modules, convert, dims, n, bs, device, label, progress,
                      accs)
                break
            except torch.OutOfMemoryError:
                if be.is_cuda:
                    torch.cuda.empty_cache()
                if bs == 1:
                    del accs
                    if be.is_cuda:
                        torch.cuda.empty_cache()
                    yield from split_or_fail(group, label, "even at batch size 1")
                    return
                log.warning("out of device memory at batch size %d; retrying with %d", bs, bs // 2)
                bs //= 2
        for spec in group:
            acc = accs.pop(spec.id)
            _check_finite(spec, acc)
            yield spec, to_xp(acc)

    for gi, gids in enumerate(groups):
        yield from run_group([by_id[i] for i in gids], f"group {gi + 1}/{len(groups)}")


def _pass(model, inputs, group, srcs, modules, convert, dims, n, bs, device, label, progress, accs):
    """One pass over the inputs for ``group``, filling ``accs`` (id -> (n, D) float32 torch tensor on
    ``device``, allocated by the caller) batch by batch; returns ``accs``."""
    import torch
    from tqdm.auto import tqdm

    pos = [0, 0]  # start row, rows in the current batch

    def sink(spec, t):
        if t.shape[1] != dims[spec.id]:
            raise ValueError(f"layer {spec.id}: activation size {t.shape[1]} differs from the dry run's "
                             f"{dims[spec.id]} (inputs of different sizes?)")
        accs[spec.id][pos[0]:pos[0] + pos[1]].copy_(t)

    total = math.ceil(n / bs)
    with torch.no_grad():
        for x in tqdm(inputs.batches(bs), total=total, desc=f"activations {label}", unit="batch",
                      disable=not progress, leave=False):
            b = int(x.shape[0])
            if pos[0] + b > n:
                raise ValueError(f"inputs yielded more than n={n} rows")
            pos[1] = b
            _run_batch(model, pad_batch(x, bs).to(device, non_blocking=True), group, srcs, modules, convert,
                       sink, rows=b)
            pos[0] += b
    if pos[0] != n:
        raise ValueError(f"inputs yielded {pos[0]} rows, expected n={n}")
    return accs


def _check_finite(spec: LayerSpec, acc) -> None:
    import torch

    bad = ~torch.isfinite(acc).all(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        raise ValueError(f"layer {spec.id} ({spec.name}): NaN or Inf activations for {rows.numel()} inputs "
                         f"(first: input {int(rows[0])})")


def stream_batches(model, inputs, layers: Iterable[LayerSpec], *, backend="auto", batch_size: int = 64,
                   max_dim: int = 51200, max_width: int = 16, pooling: str = "avg", start: int = 0,
                   keep_output: bool = False, dims: dict | None = None) -> Iterator[tuple]:
    """One hooked forward pass per batch for every layer of ``layers`` (one group), nothing kept.

    Yields ``(row, {layer id: (B, D) float32 array in backend.xp}, thumbnails (B, 32, 32, 3) uint8
    or None, output)`` per batch, in input order from row ``start``: ``row`` is the batch's first
    input; the arrays are copies (NumPy on the CPU, CuPy on CUDA through DLPack, no host copy) that
    the caller owns; ``output`` is the model's output for the batch ((B, ...) float32 host NumPy,
    with ``keep_output``, else None). Memory: one batch's activations, independent of N.

    Batches are padded to ``batch_size`` (:func:`pad_batch`), so every row's activations equal those
    :func:`record` gives. ``start`` must be a multiple of ``batch_size`` (batches keep their place
    in the full pass). ``dims`` (layer id -> D, :func:`layer_dims`) checks every batch. NaN/Inf
    activations raise ``ValueError`` naming the layer and the input.
    """
    import torch

    be = backend if isinstance(backend, Backend) else resolve(backend)
    layers = list(layers)
    if start % batch_size:
        raise ValueError(f"stream_batches: start={start} is not a multiple of batch_size={batch_size}")
    device = torch.device("cuda" if be.is_cuda else "cpu")
    model = model.eval().to(device)
    modules = dict(model.named_modules())
    srcs = _sources(layers, modules)

    def convert(t):
        p = pool(t.detach(), max_dim, max_width, pooling)
        if p.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
            p = p.clone()  # a view of the module's output: a later in-place op could overwrite it
        return p.float().contiguous()

    def to_xp(t):
        return be.xp.from_dlpack(t) if be.is_cuda else t.numpy()

    source = inputs if start == 0 else inputs.rows(start, inputs.n)
    row = start
    got: dict = {}

    def sink(spec, t):
        if dims is not None and t.shape[1] != dims[spec.id]:
            raise ValueError(f"layer {spec.id}: activation size {t.shape[1]} differs from the dry "
                             f"run's {dims[spec.id]} (inputs of different sizes?)")
        got[spec.id] = t

    with torch.no_grad():
        for x, thumbs in source.stream(batch_size):
            b = int(x.shape[0])
            got.clear()

            try:
                out = _run_batch(model, pad_batch(x, batch_size).to(device, non_blocking=True), layers, srcs,
                                 modules, convert, sink, rows=b, keep_output=keep_output)
            except torch.OutOfMemoryError:
                raise MemoryBudgetError(f"out of device memory in a forward pass of {batch_size} inputs; "
                                        "give a smaller --batch-size") from None
            for spec in layers:
                t = got[spec.id]
                bad = ~torch.isfinite(t).all(dim=1)
                if bool(bad.any()):
                    first = int(torch.nonzero(bad).flatten()[0])
                    raise ValueError(f"layer {spec.id} ({spec.name}): NaN or Inf activations (first: input "
                                     f"{row + first})")
            output = None
            if keep_output and isinstance(out, torch.Tensor):
                output = out.float().cpu().numpy()
            yield row, {spec.id: to_xp(got[spec.id]) for spec in layers}, thumbs, output
            row += b
    if row != inputs.n:
        raise ValueError(f"inputs yielded {row} rows, expected n={inputs.n}")
