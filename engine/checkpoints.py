"""Training runs: find, order and load a model's checkpoints, and what ``prepare`` does around them.

A *training run* is one model recorded at several checkpoints (states of its training) over the
same images. ``layertour prepare --checkpoints PATH...`` names them as files, folders or globs:

- order = training order: the paths as given, each folder's or glob's files sorted *naturally* by
  name (``epoch-2`` before ``epoch-10``); a checkpoint is named after its file (stem, with
  characters a bundle name cannot hold replaced by ``-``); two files with one name are refused;
- a checkpoint file is a state dict, a dict holding one (``state_dict``, ``model_state_dict``,
  ``model``, ``state``, ``net``; Lightning's and ``DataParallel``'s ``model.``/``module.`` key
  prefixes are stripped when that makes it fit) or a saved ``nn.Module``. PyTorch loads a saved
  module only by unpickling code from the file, so that needs ``--trust-checkpoints``; state dicts
  load with ``weights_only=True``. ``epoch`` and ``step`` (also ``global_step``, ``iteration``)
  found in the file or in its name go into the checkpoint's meta.

Per checkpoint, both runners (:mod:`engine.pipeline`, :mod:`engine.distributed`) load its weights
into the job's module and record every layer; layers that do not depend on the weights (the
``input`` layer) are embedded at the first checkpoint only and copied to the others, so they stay
exactly still while the viewer scrubs through training. With ``--init previous-checkpoint`` (the
default with checkpoints) each layer's UMAP starts from the same layer's embedding at the previous
checkpoint. When the model is a classifier over the inputs' classes its logits are recorded in the
same pass (:class:`OutputCollector`) and become per-checkpoint attributes (:mod:`engine.outputs`).
At the end :func:`align_bundle` puts every (checkpoint, layer) embedding into one frame
(:func:`engine.align.align_training`) and stores the similarities. torch is imported only inside
the functions that load weights.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pickle
import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.jobs import Checkpoint, ModelJob
from engine.models import LayerSpec
from engine.outputs import OUTPUTS_LAYER_ID, ClassifierOutputs, classifier_outputs, classifier_targets
from engine.store import NAME_RE

log = logging.getLogger("layertour")

__all__ = ["SUFFIXES", "CheckpointError", "OutputCollector", "align_bundle", "as_checkpoints",
           "checkpoint_digest", "checkpoint_name", "find_checkpoints", "load_checkpoint", "meta_from_name",
           "natural_key", "output_collector", "plan", "static_layers", "write_outputs"]

#: File suffixes a checkpoint folder is searched for.
SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "state", "net")
_META_KEYS = {"epoch": "epoch", "step": "step", "global_step": "step", "iteration": "step"}
_NAME_META = (("epoch", re.compile(r"(?:^|[^a-z])(?:epoch|ep)[-_ ]?(\d+)", re.I)),
              ("step", re.compile(r"(?:^|[^a-z])(?:step|iter|iteration|it)[-_ ]?(\d+)", re.I)))
_PREFIXES = ("module.", "model.")
_AUX = ("aux1.", "aux2.", "AuxLogits.")  # torchvision's auxiliary heads, absent from the recorded model


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be found, named or loaded; the message names the file or argument."""


# ------------------------------------------------------------------------------ finding, naming


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``step-9`` before ``step-10``."""
    parts = [p for p in re.split(r"(\d+)", str(text)) if p]
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts)


def checkpoint_name(stem: str) -> str:
    """A bundle name for a checkpoint file's stem: characters outside ``A-Za-z0-9_.+-`` become
    ``-``, leading ``-``/``.``/``+`` are dropped, at most 200 characters. Raises CheckpointError when
    nothing usable is left."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(stem)).lstrip("-.+")[:200]
    if not NAME_RE.match(name):
        raise CheckpointError(f"checkpoint file {stem!r}: cannot make a name from it (give files whose names "
                              "hold letters or digits)")
    return name


def meta_from_name(name: str) -> dict:
    """``{"epoch": e, "step": s}`` read off a checkpoint's name (``epoch-3``, ``ep03``, ``step_1200``,
    ``it500``), only the keys found."""
    out = {}
    for key, rx in _NAME_META:
        m = rx.search(name)
        if m:
            out[key] = int(m.group(1))
    return out


def find_checkpoints(sources) -> list[Checkpoint]:
    """The checkpoints named by ``sources`` (a path or a sequence of them: files, folders, globs),
    in training order: as given, each folder's files (:data:`SUFFIXES`) and each glob's matches
    sorted naturally by name. Each is named after its file (:func:`checkpoint_name`) with
    ``step``/``epoch`` from the name (:func:`meta_from_name`) and ``source`` in its meta. Raises
    :class:`CheckpointError` for a missing path, an empty folder, a glob without matches, a file
    named twice or two files with one name."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[Path] = []
    for src in sources:
        text = os.path.expanduser(str(src))
        p = Path(text)
        if p.is_dir():
            found = sorted((q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SUFFIXES),
                           key=lambda q: natural_key(q.name))
            if not found:
                raise CheckpointError(f"--checkpoints {src}: no checkpoint files ({', '.join(SUFFIXES)}) in "
                                      "this folder")
        elif p.is_file():
            found = [p]
        elif glob.has_magic(text):
            found = sorted((Path(q) for q in glob.glob(text) if Path(q).is_file()),
                           key=lambda q: natural_key(q.name))
            if not found:
                raise CheckpointError(f"--checkpoints {src}: the pattern matches no file")
        else:
            raise CheckpointError(f"--checkpoints {src}: no such file or folder")
        paths += found
    if not paths:
        raise CheckpointError("--checkpoints: no checkpoints given")
    seen: dict[Path, Path] = {}
    for q in paths:
        r = q.resolve()
        if r in seen:
            raise CheckpointError(f"--checkpoints: {q} is given twice (as {seen[r]} too)")
        seen[r] = q
    out = []
    for q in paths:
        name = checkpoint_name(q.stem)
        out.append(Checkpoint(name, path=str(q), meta={**meta_from_name(q.stem), "source": str(q)}))
    _check_unique(out)
    return out


def _check_unique(cks: Sequence[Checkpoint]) -> None:
    by: dict[str, Checkpoint] = {}
    for ck in cks:
        if not NAME_RE.match(ck.name):
            raise CheckpointError(f"checkpoint name {ck.name!r} is not valid (letters, digits, _ . + -)")
        if ck.name in by:
            a, b = by[ck.name].path or "(in memory)", ck.path or "(in memory)"
            raise CheckpointError(f"checkpoints {a} and {b} both get the name {ck.name!r}; rename one")
        by[ck.name] = ck


def as_checkpoints(items) -> list[Checkpoint]:
    """A training run's checkpoints from what the API accepts: :class:`Checkpoint` objects and
    paths (files, folders, globs, expanded by :func:`find_checkpoints`), mixed, in order; names must
    be unique."""
    if isinstance(items, (str, os.PathLike, Checkpoint)):
        items = [items]
    out: list[Checkpoint] = []
    for it in items:
        out += [it] if isinstance(it, Checkpoint) else find_checkpoints(it)
    if not out:
        raise CheckpointError("no checkpoints given")
    _check_unique(out)
    return out


# ------------------------------------------------------------------------------------ loading


def load_checkpoint(module, ck: Checkpoint, *, trust: bool = False) -> dict:
    """Load ``ck``'s weights into ``module`` (strictly: every parameter and buffer must match) and
    return what the file says about itself (``epoch``, ``step``: JSON numbers; empty for a state in
    memory). ``trust`` allows files that need unpickling code (a saved module). Raises
    :class:`CheckpointError` naming the file for an unreadable file or weights that do not fit."""
    if ck.state is not None:
        _load_into(module, ck.state, f"checkpoint {ck.name}")
        return {}
    import torch

    path = Path(ck.path)
    label = f"checkpoint {path}"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:  # not a pickle of objects at all: a damaged or foreign file
            raise CheckpointError(f"{label}: not a PyTorch file that can be loaded "
                                  f"({_first_line(exc)})") from None
        if not trust:
            raise CheckpointError(f"{label}: holds pickled Python objects ({found.group(1)}: a saved "
                                  "module?), which PyTorch loads only by running code from the file; if you "
                                  "trust the file, pass --trust-checkpoints") from None
        obj = _load_trusted(path, label)
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError,
            KeyError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{label}: not a PyTorch file that can be loaded ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    state, meta = _state_of(obj, label)
    _load_into(module, state, label)
    return meta


def _first_line(exc) -> str:
    """The part of an exception's message that says what went wrong (torch's own load errors put it
    after a long preamble: its "error:" line, else the first line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.endswith("error:") and i + 1 < len(lines):
            return lines[i + 1][:200]
    return lines[0][:200] if lines else type(exc).__name__


def _load_trusted(path: Path, label: str):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling user code can fail in any way: say where
        raise CheckpointError(f"{label}: cannot be loaded even trusted ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None


def _is_state(d) -> bool:
    import torch

    return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                    for k, v in d.items())


def _state_of(obj, label: str) -> tuple[dict, dict]:
    """(state dict, meta) of a loaded checkpoint object."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), {}
    if _is_state(obj):
        return obj, {}
    if isinstance(obj, dict):
        meta = {}
        for key, name in _META_KEYS.items():
            v = obj.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0:
                meta.setdefault(name, int(v) if float(v).is_integer() else float(v))
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict(), meta
            if _is_state(inner):
                return inner, meta
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(f"{label}: a dict without a state dict in it (keys {keys}; looked for "
                              f"{', '.join(_STATE_KEYS)})")
    raise CheckpointError(f"{label}: expected a state dict or a saved module, got {type(obj).__name__}")


def _load_into(module, state: dict, label: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
        return
    except RuntimeError as exc:
        first_error = exc
    want = set(module.state_dict())
    aux = [k for k in state if k.startswith(_AUX) and k not in want]
    if aux and want <= set(state):
        try:
            module.load_state_dict({k: v for k, v in state.items() if k not in aux}, strict=True)
            log.info("%s: loaded without %d auxiliary-head tensors", label, len(aux))
            return
        except RuntimeError:
            pass
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            try:
                module.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
                log.info("%s: loaded with the key prefix %r removed", label, prefix)
                return
            except RuntimeError:
                pass
    want, got = set(module.state_dict()), set(state)
    missing, extra = sorted(want - got), sorted(got - want)
    detail = "; ".join(x for x in (f"missing {', '.join(missing[:5])}" + ("..." if len(missing) > 5 else "")
                                   if missing else "",
                                   f"unexpected {', '.join(extra[:5])}" + ("..." if len(extra) > 5 else "")
                                   if extra else "") if x)
    raise CheckpointError(f"{label} does not fit the model: {detail or _first_line(first_error)}") from None


def checkpoint_digest(ck: Checkpoint) -> str:
    """A short SHA-1 of what decides ``ck``'s content (the file's bytes, or the state's tensors):
    a resumed run must see the same."""
    h = hashlib.sha1()
    if ck.path is not None:
        try:
            with open(ck.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        except OSError as exc:
            raise CheckpointError(f"checkpoint {ck.path}: unreadable ({exc.strerror or exc})") from None
        return h.hexdigest()[:16]
    import torch

    for k, v in sorted(ck.state.items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------ per checkpoint


def plan(job: ModelJob) -> list[Checkpoint | None]:
    """What a runner records of ``job``: its checkpoints in order, or ``[None]`` (the module as it is)."""
    return list(job.checkpoints) if job.checkpoints else [None]


def static_layers(job: ModelJob, k: int) -> set[str]:
    """Ids of ``job``'s layers that do not depend on the weights (``input``): at checkpoint ``k`` > 0
    they are copied from the first checkpoint instead of being recorded and embedded again."""
    return {s.id for s in job.layers if s.kind == "input"} if k > 0 else set()


class OutputCollector:
    """Takes a classifier's logits out of a recording stream, per (model, checkpoint).

    targets : (N,) int64 true classes in the model's output space; class_names : the model's K class
    names; uses_targets : whether those are the inputs' ``targets`` (their classes are a subset of
    the model's) rather than their labels. :data:`spec` is the extra layer a runner records (the
    model's output, kind ``logits``).
    """

    spec = LayerSpec(OUTPUTS_LAYER_ID, "logits", "logits")

    def __init__(self, targets: np.ndarray, class_names: Sequence[str], uses_targets: bool = False):
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_names = [str(c) for c in class_names]
        self.uses_targets = uses_targets  # targets are the inputs' ``targets``, not their labels
        self.results: dict[tuple[str, str | None], ClassifierOutputs] = {}

    def add(self, key: tuple[str, str | None], logits) -> ClassifierOutputs:
        """Outputs of ``logits`` ((N, K), NumPy or CuPy) under ``key`` = (model, checkpoint or None)."""
        out = classifier_outputs(logits, self.targets)
        self.results[key] = out
        return out

    def take(self, stream: Iterable, key: tuple[str, str | None]) -> Iterator:
        """``stream`` (of ``(LayerSpec, X)``) without the logits, which are collected under ``key``."""
        for spec, X in stream:
            if spec.id == OUTPUTS_LAYER_ID:
                self.add(key, X)
            else:
                yield spec, X


def output_collector(job: ModelJob, inputs, backend) -> OutputCollector | None:
    """An :class:`OutputCollector` when ``job``'s model is a classifier over the inputs' classes
    (:func:`engine.outputs.classifier_targets`, from one forward pass on one image), else None."""
    from engine.activations import output_shape

    labels = getattr(inputs, "labels", None)
    names = getattr(inputs, "label_names", None)
    model_targets = getattr(inputs, "targets", None)  # set when the inputs' classes are the model's
    shape = output_shape(job.module, inputs, backend)
    targets = classifier_targets(shape, labels, names, model_targets)
    if targets is None:
        return None
    k = int(shape[1])
    class_names = getattr(inputs, "model_class_names", None)
    if class_names is None or len(class_names) != k:
        class_names = names if model_targets is None and len(names or ()) == k else [str(i) for i in range(k)]
    return OutputCollector(targets, class_names, uses_targets=model_targets is not None)


def write_outputs(writer, jobs: Sequence[ModelJob], collectors: dict) -> None:
    """Store every collected output: per checkpoint as that checkpoint's attributes and meta; the
    last (or only) state's also as bundle attributes (plain names with one classifier, else
    ``<model>.<name>``) and in the model's meta. ``collectors`` : model name -> OutputCollector."""
    shared = sum(1 for j in jobs if collectors.get(j.name) is not None) == 1
    for job in jobs:
        col = collectors.get(job.name)
        if col is None:
            continue
        last = None
        for ck in plan(job):
            key = (job.name, None if ck is None else ck.name)
            out = col.results.get(key)
            if out is None:
                raise RuntimeError(f"{job.name}: no outputs were recorded at {key[1] or 'its state'}")
            if ck is not None:
                for name, spec in out.attributes(col.class_names).items():
                    writer.set_checkpoint_attribute(job.name, ck.name, name, spec["values"], spec["kind"],
                                                    categories=spec.get("categories"),
                                                    extent=spec.get("extent"))
                writer.set_checkpoint_meta(job.name, ck.name, out.summary())
            last = out
        for name, spec in last.attributes(col.class_names).items():
            writer.set_attribute(name if shared else f"{job.name}.{name}", spec["values"], spec["kind"],
                                 categories=spec.get("categories"), extent=spec.get("extent"))
        job.meta.update(last.summary())


def align_bundle(writer, jobs: Sequence[ModelJob], timings: dict) -> None:
    """Every (checkpoint, layer) of every model into one frame (:func:`engine.align.align_training`),
    read from ``writer``'s staging files; stores the alignments, the model pairs' similarity
    matrices, and for training runs the checkpoint and per-checkpoint layer similarities; each
    model's meta gains ``consecutive_similarity`` and ``alignment_residuals`` (its last state's),
    each checkpoint's meta its own ``consecutive_similarity``."""
    from engine.align import align_training

    t0 = time.perf_counter()
    names = {job.name: [None if ck is None else ck.name for ck in plan(job)] for job in jobs}
    grids = {job.name: [[writer.read_layer(job.name, s.id, c) for s in job.layers] for c in names[job.name]]
             for job in jobs}
    result = align_training(grids)
    for job in jobs:
        cks = names[job.name]
        for c, row in zip(cks, result.grids[job.name]):
            for spec, a in zip(job.layers, row):
                writer.set_alignment(job.name, spec.id, a.rotation, a.center, checkpoint=c)
        job.meta["consecutive_similarity"] = [round(float(v), 6) for v in result.consecutive[job.name]]
        job.meta["alignment_residuals"] = [round(float(a.residual), 6) for a in result.alignments[job.name]]
        if cks != [None]:
            lsim = result.layer_similarity[job.name] if len(cks) > 1 else None
            csim = result.checkpoint_similarity[job.name] if len(cks) > 1 else None
            writer.set_training_similarity(job.name, csim, lsim)
            if lsim is not None:
                for k, c in enumerate(cks):
                    diag = [round(float(lsim[k, i, i + 1]), 6) for i in range(lsim.shape[1] - 1)]
                    writer.set_checkpoint_meta(job.name, c, {"consecutive_similarity": diag})
    for (a, b), S in result.similarity.items():
        writer.set_similarity(a, b, np.asarray(S, dtype=np.float32))
    timings["align_s"] = round(time.perf_counter() - t0, 3)
