"""The bundle: a directory of ``.npy`` arrays described by ``manifest.json``; written atomically.

Layout (see docs/architecture.md)::

    BUNDLE/manifest.json                           format_version, n, dim, models, attributes, provenance
    BUNDLE/models/<model>/<layer_id>.npy           float32 (N, p) raw embedding
    BUNDLE/models/<model>/<layer_id>.rotation.npy  float64 (p, p) canonical alignment (optional)
    BUNDLE/models/<model>/<layer_id>.center.npy    float64 (p,)
    BUNDLE/attributes/<name>.npy                   (N,) int32 codes (categorical) or float32 (continuous)
    BUNDLE/images.npy                              uint8 (N, 32, 32, 3) thumbnails (optional)
    BUNDLE/similarity/<a>__<b>.npy                 float32 (La, Lb) layer-similarity matrix (optional)

A model recorded at several checkpoints of its training (a *training run*) keeps every checkpoint's
layers under ``models/<model>/checkpoints/<checkpoint>/`` (the same files per layer as above, plus
``attributes/<name>.npy`` for that checkpoint's outputs), ``models/<model>/checkpoint_similarity.npy``
(float32 (K-1, L): each layer's similarity between consecutive checkpoints) and
``models/<model>/layer_similarity.npy`` (float32 (K, L, L)); its manifest entry lists the
checkpoints in training order, and its ``layers`` are the last checkpoint's (so a reader that knows
nothing of checkpoints sees the trained model).

Reading: :func:`load_bundle` validates the manifest (types, keys, names and text, files, array
headers, shapes and dtypes, finite and orthogonal alignments, finite attribute values and extents)
and memory-maps every array (host memory, read-only; nothing is copied until used). Layer data are
spot-checked for NaN/Inf at load, checked whole where they are used (:meth:`Layer.aligned`) and
with ``verify=True``. Writing: :class:`BundleWriter` builds the bundle in ``.<name>.partial/``
beside the target, records each finished layer (shape, CRC-32) and the run's parameters in a
progress file so a killed run can resume (and a resume with other parameters is refused), and on
``commit()`` puts it in place with :func:`engine.replace.install` (recoverable after a crash at any
point) under an exclusive writer lock. Every failure raises :class:`BundleError` naming the file
(or model and layer) and what is wrong. NumPy only: importing this module loads no GPU library.

The study's own layout is read and written by :mod:`engine.studyformat`, which builds on this module.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.device import to_host
from engine.errors import UserError
from engine.files import NotRegularFileError, open_regular, read_regular, write_atomic
from engine.replace import DirLock, LockedError, install, needs_recovery, recover, staging_path

log = logging.getLogger("layertour")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
KINDS = ("categorical", "continuous")
#: The smallest embedding dimension a bundle may have: the tour needs p > d, and d = 2 at least.
MIN_DIM = 3
#: Names of models, layers and attributes (also file names): letters, digits, ``_ . + -``.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}\Z")
#: Characters refused in display text: C0/C1 controls, line and paragraph separators,
#: bidirectional overrides. Such text would break or disguise a label. Category names may hold
#: line breaks and tabs (a quoted CSV field may span lines); names and labels may not.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BAD_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_TEXT = 500
_CHUNK_ROWS = 1 << 16
_SPOT_ROWS = 4096  # rows of each layer checked for NaN/Inf at load: all below this, else blocks
_SPOT_BLOCK = 128  # ... of this many consecutive rows, evenly spaced (few pages of a cold memmap)
_MANIFEST_LIMIT = 256 * 2**20
_ORTHO_TOL = 1e-6
STREAM_SUFFIX = ".stream"  # row files of an unfinished stream in the staging directory

__all__ = ["Attribute", "Bundle", "BundleError", "BundleWriter", "Layer", "Model", "FORMAT_VERSION",
           "MIN_DIM", "NAME_RE", "PLAIN_CHECKPOINT", "is_valid_name", "is_valid_layer_id", "text_problem",
           "load_bundle", "write_atomic"]

#: The checkpoint name of a model recorded in one state (no training run): ``Bundle.checkpoints``
#: lists it alone.
PLAIN_CHECKPOINT = "final"
#: Checkpoint meta keys the viewer reads, with their checks (other keys are free JSON).
_CHECKPOINT_META = {"step": "count", "epoch": "nonnegative", "accuracy": "fraction", "loss": "nonnegative"}


def is_valid_name(name) -> bool:
    """True for a usable model, layer or attribute name (:data:`NAME_RE`)."""
    return isinstance(name, str) and NAME_RE.match(name) is not None


def is_valid_layer_id(lid) -> bool:
    """A valid name that does not end in ``.rotation``/``.center`` (those are a layer's alignment files)."""
    return is_valid_name(lid) and not lid.endswith((".rotation", ".center"))


def text_problem(text, *, multiline: bool = False) -> str | None:
    """Why ``text`` cannot be shown as a label (not a str, too long, control characters), or None.

    multiline : allow line breaks and tabs (category names); the viewer draws them safely.
    """
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if len(text) > MAX_TEXT:
        return f"is {len(text)} characters long (at most {MAX_TEXT})"
    m = (_BAD_MULTILINE if multiline else _BAD_TEXT).search(text)
    if m:
        return f"contains the control character {m.group()!r} at position {m.start()}"
    return None


class BundleError(UserError):
    """Any problem with a bundle or with data on its way into one; the message names the file.

    A :class:`engine.errors.UserError`: ``layertour`` prints it on one line and exits with 2."""


# ----------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Layer:
    """One embedded layer of a model.

    embedding : (N, p) float32 NumPy memmap (host), the raw embedding as produced or imported.
    rotation : (p, p) float64 memmap or None; center : (p,) float64 memmap or None.
    """

    id: str
    name: str
    index: int
    source_dim: int | None
    embedding: np.ndarray
    rotation: np.ndarray | None = None
    center: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    model: str = ""
    checkpoint: str | None = None

    def aligned(self, xp=np):
        """The layer in the bundle's canonical frame: ``(embedding - center) @ rotation``.

        Returns an (N, p) float32 array of module ``xp`` (``numpy``, or ``cupy``: one host -> device
        copy of the embedding). Without a stored alignment this is the embedding itself. Raises
        :class:`BundleError` naming the file when the result holds NaN or Inf (a corrupt layer).
        """
        e = xp.asarray(self.embedding)
        if self.rotation is None:
            out = e.astype(xp.float32, copy=True)
        else:
            c = xp.asarray(self.center if self.center is not None else np.zeros(e.shape[1]),
                           dtype=xp.float64)
            r = xp.asarray(self.rotation, dtype=xp.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                out = ((e.astype(xp.float64) - c) @ r).astype(xp.float32)
        if not bool(xp.isfinite(out).all()):
            at = "" if self.checkpoint is None else f" at checkpoint {self.checkpoint}"
            label = f"{self.model}/{self.id}{at}"
            where = getattr(self.embedding, "filename", None) or f"layer {label}"
            raise BundleError(f"{where}: NaN or Inf values, or values too large for float32 once "
                              f"aligned (layer {label})")
        return out


@dataclass(frozen=True)
class Model:
    """A model of a bundle: ``layers`` in network order, ``meta`` as stored.

    For a training run (:meth:`Bundle.model_at`) the model at one checkpoint: ``checkpoint`` (its
    name; None for a model recorded in one state), ``checkpoint_meta`` (step, epoch, accuracy, loss,
    source, ... as stored) and ``attributes`` (that checkpoint's own per-image attributes, e.g.
    prediction and correct: name -> :class:`Attribute`; empty when it has none).
    """

    name: str
    layers: list[Layer]
    meta: dict = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_meta: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)

    def layer(self, key) -> Layer:
        """The layer with id or name ``key``, or at index ``key`` (an int or a string of digits)."""
        if isinstance(key, str):
            for lay in self.layers:
                if key in (lay.id, lay.name):
                    return lay
            if key.isdigit():
                key = int(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            for lay in self.layers:
                if lay.index == key:
                    return lay
        raise KeyError(f"model {self.name!r} has no layer {key!r} "
                       f"(ids: {', '.join(lay.id for lay in self.layers)})")


@dataclass(frozen=True)
class Attribute:
    """A per-point attribute: ``values`` (N,) int32 codes into ``categories`` or float32 values."""

    name: str
    kind: str
    values: np.ndarray
    categories: list[str] | None = None
    extent: tuple[float, float] | None = None


@dataclass(frozen=True)
class Bundle:
    """An opened bundle; every array is a read-only host memmap."""

    path: Path
    manifest: dict
    n: int
    dim: int
    models: dict[str, Model]
    attributes: dict[str, Attribute]
    default_attribute: str | None
    images: np.ndarray | None
    provenance: dict
    _similarity: dict = field(default_factory=dict, repr=False)
    _training: dict = field(default_factory=dict, repr=False)  # model -> tuple of Model per checkpoint
    _training_similarity: dict = field(default_factory=dict, repr=False)  # model -> ((K-1,L), (K,L,L))

    def similarity(self, a: str, b: str) -> np.ndarray | None:
        """(La, Lb) float32 similarity between the layers of models ``a`` and ``b``, or None."""
        if (a, b) in self._similarity:
            return self._similarity[(a, b)]
        if (b, a) in self._similarity:
            return self._similarity[(b, a)].T
        return None

    def _model(self, model: str) -> Model:
        if model not in self.models:
            raise KeyError(f"bundle {self.path}: no model {model!r} (has: {', '.join(self.models)})")
        return self.models[model]

    def checkpoints(self, model: str) -> list[str]:
        """The checkpoint names of ``model`` in training order; ``[PLAIN_CHECKPOINT]`` ("final")
        for a model recorded in one state. ``models[model]`` is the last of them."""
        self._model(model)
        run = self._training.get(model)
        return [PLAIN_CHECKPOINT] if run is None else [m.checkpoint for m in run]

    def model_at(self, model: str, checkpoint) -> Model:
        """``model`` at ``checkpoint`` (a name from :meth:`checkpoints`, or its index; negative
        indices count from the last): a :class:`Model` whose ``layers`` are that checkpoint's
        (each with ``embedding``, ``aligned()`` and ``meta``), with ``checkpoint_meta`` and that
        checkpoint's ``attributes``. Raises KeyError listing the checkpoints."""
        m = self._model(model)
        run = self._training.get(model) or (m,)
        names = self.checkpoints(model)
        if isinstance(checkpoint, (int, np.integer)) and not isinstance(checkpoint, bool):
            if -len(run) <= int(checkpoint) < len(run):
                return run[int(checkpoint)]
        elif isinstance(checkpoint, str) and checkpoint in names:
            return run[names.index(checkpoint)]
        raise KeyError(f"model {model!r} has no checkpoint {checkpoint!r} (checkpoints: {', '.join(names)})")

    def checkpoint_similarity(self, model: str) -> np.ndarray | None:
        """(K - 1, L) float32: entry (k, l) is layer l's similarity between checkpoints k and k + 1
        (after alignment), or None (one state, or not stored)."""
        self._model(model)
        return self._training_similarity.get(model, (None, None))[0]

    def layer_similarity(self, model: str, checkpoint=None) -> np.ndarray | None:
        """(L, L) float32 layer-similarity matrix of ``model`` at ``checkpoint`` (name or index;
        default the last), or None when the bundle stores none for it."""
        ls = self._training_similarity.get(model, (None, None))[1]
        if ls is None:
            self._model(model)
            return None
        names = self.checkpoints(model)
        k = names.index(self.model_at(model, -1 if checkpoint is None else checkpoint).checkpoint)
        return ls[k]


class _Check:
    """Type checks on manifest values that raise BundleError naming the manifest file."""

    def __init__(self, path: Path):
        self.path = path
        self._root: Path | None = None

    def resolved_root(self, root: Path) -> Path:
        """``root.resolve()``, computed once per load."""
        if self._root is None:
            self._root = root.resolve()
        return self._root

    def fail(self, msg: str):
        raise BundleError(f"{self.path}: {msg}")

    def get(self, d: dict, key: str, types, where: str, optional: bool = False):
        if key not in d:
            if optional:
                return None
            self.fail(f"{where} lacks the key {key!r}")
        v = d[key]
        if optional and v is None:
            return None
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in _as_tuple(types))
        if not ok:
            names = "/".join(t.__name__ for t in _as_tuple(types))
            self.fail(f"{where}.{key} must be {names}, got {type(v).__name__} {_short(v)}")
        return v

    def name(self, v, where: str) -> str:
        if not is_valid_name(v):
            self.fail(f"{where} {_short(v)} is not a valid name (letters, digits, _ . + -)")
        return v

    def text(self, v, where: str, multiline: bool = False) -> str:
        why = text_problem(v, multiline=multiline)
        if why is not None:
            self.fail(f"{where} {_short(v)} {why}")
        return v

    def count(self, d: dict, key: str, where: str, optional: bool = False, minimum: int = 1):
        v = self.get(d, key, int, where, optional)
        if v is not None and v < minimum:
            self.fail(f"{where}.{key} must be >= {minimum}, got {v}")
        return v


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


def _short(v, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def open_npy(path) -> np.ndarray:
    """Memory-map the ``.npy`` file ``path`` read-only, parsing its header ourselves.

    Refuses (:class:`BundleError` naming the file) anything that is not a regular file, not a
    version 1-3 ``.npy`` (a zip archive, a pickle, a damaged header), an object or Fortran-order
    array, or a file whose size disagrees with its header. ``np.load`` would instead return an
    ``NpzFile`` for a zip or raise assorted parser errors for a damaged header.
    """
    path = Path(path)
    try:
        with open_regular(path, "rb") as f:
            try:
                major, _minor = np.lib.format.read_magic(f)
                if major == 1:
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif major in (2, 3):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unknown .npy version {major}")
            except Exception as exc:  # every way a damaged header fails to parse
                raise BundleError(f"{path}: not a readable .npy array (damaged header: "
                                  f"{type(exc).__name__}: {str(exc)[:200]})") from None
            offset = f.tell()
            size = f.seek(0, 2)
    except NotRegularFileError as exc:
        raise BundleError(f"{path}: not a readable .npy array ({exc.strerror})") from None
    except OSError as exc:
        raise BundleError(f"{path}: not a readable .npy array ({exc.strerror or exc})") from None
    if dtype.hasobject or fortran:
        raise BundleError(f"{path}: not a readable .npy array (object or Fortran-order arrays are refused)")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise BundleError(f"{path}: not a readable .npy array (bad shape {shape!r})")
    want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != want:
        raise BundleError(f"{path}: not a readable .npy array ({'truncated' if size < want else 'oversized'}"
                          f": {size} bytes where its header {shape} {dtype} needs {want})")
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))


def _open_array(root: Path, rel, check: _Check, where: str, shape: tuple, dtype) -> np.ndarray:
    """Memory-map ``root/rel`` and check its shape and dtype (``None`` in ``shape`` = any size)."""
    if (not isinstance(rel, str) or not rel or "\x00" in rel or rel.startswith(("/", "\\"))
            or ".." in Path(rel).parts or "\\" in rel):
        check.fail(f"{where}: file {_short(rel)} must be a relative path inside the bundle")
    path = root / rel
    try:
        present = path.is_file()
        parts = Path(rel).parts
        linked = any((root.joinpath(*parts[:i])).is_symlink() for i in range(1, len(parts) + 1))
        inside = present and (not linked or check.resolved_root(root) in path.resolve().parents)
    except (OSError, ValueError, RuntimeError):
        present = inside = False
    if not present:
        raise BundleError(f"{path}: missing (listed in {check.path} at {where})")
    if not inside:
        raise BundleError(f"{path}: a link that leads outside the bundle (listed in {check.path} at {where})")
    arr = open_npy(path)
    if arr.dtype != np.dtype(dtype):
        raise BundleError(f"{path}: dtype {arr.dtype} where {np.dtype(dtype)} was expected ({where})")
    if len(arr.shape) != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "x".join("*" if s is None else str(s) for s in shape)
        raise BundleError(f"{path}: shape {arr.shape} where {want} was expected ({where})")
    return arr


@lru_cache(maxsize=8)
def _spot_rows(n: int) -> np.ndarray | None:
    """The rows a load-time check reads: None (all) up to _SPOT_ROWS rows, else _SPOT_ROWS rows in
    evenly spaced blocks of _SPOT_BLOCK consecutive rows, first and last rows included (a few
    dozen pages of a cold memmap)."""
    if n <= _SPOT_ROWS:
        return None
    starts = np.linspace(0, n - _SPOT_BLOCK, _SPOT_ROWS // _SPOT_BLOCK).astype(np.int64)
    rows = (starts[:, None] + np.arange(_SPOT_BLOCK)[None, :]).ravel()
    rows.setflags(write=False)
    return rows


def _first_bad_row(a: np.ndarray, rows=None) -> int | None:
    """Index of the first row of (N, ...) ``a`` with a NaN or Inf among ``rows`` (sorted; default
    all rows, read in chunks), or None."""
    base = a.view(np.ndarray) if isinstance(a, np.memmap) else np.asarray(a)
    parts = ([rows] if rows is not None
             else [slice(s, s + _CHUNK_ROWS) for s in range(0, base.shape[0], _CHUNK_ROWS)])
    for sel in parts:
        chunk = base[sel]
        bad = ~np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            return int(sel[k]) if rows is not None else sel.start + k
    return None


def load_bundle(path, *, verify: bool = False) -> Bundle:
    """Open the bundle directory ``path``; arrays are memory-mapped (host, read-only).

    ``verify=True`` also reads every layer file whole: its CRC-32 must equal the manifest's and it
    must hold no NaN or Inf (a full read of the bundle). Without it, rotations, centres and
    attributes are checked whole and each layer on a sample of rows. An interrupted replacement
    of this bundle (a crash inside ``BundleWriter.commit``) is repaired first (see
    :mod:`engine.replace`). Raises :class:`BundleError` naming the file for any inconsistency.
    """
    return _load(Path(path), verify, repair=True)


def _load(root: Path, verify: bool, repair: bool) -> Bundle:
    if repair:
        recover_bundle(root)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing (is {root} a layertour bundle?)")
    try:
        manifest = json.loads(read_regular(mpath, limit=_MANIFEST_LIMIT))
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{mpath}: corrupt manifest ({type(exc).__name__}: {str(exc)[:200]})") from exc
    except OSError as exc:
        raise BundleError(f"{mpath}: unreadable ({exc.strerror or exc})") from exc
    return _parse(root, manifest, _Check(mpath), verify)


def recover_bundle(path) -> str | None:
    """Repair what a crash inside :meth:`BundleWriter.commit` left at ``path`` (a missing bundle
    whose old or new copy waits under a hidden name, or a left-over old copy); returns what was
    done or None. Does nothing while another process holds the writer lock, or where the
    directory is read-only."""
    path = Path(path)
    stray = path / PROGRESS
    if not (needs_recovery(path, MANIFEST) or (stray.is_file() and (path / MANIFEST).is_file())):
        return None
    try:
        with DirLock(path):
            done = recover(path, MANIFEST)
            if (path / MANIFEST).is_file():
                (path / PROGRESS).unlink(missing_ok=True)
                done = done or "cleaned"
    except LockedError:
        if not path.exists():
            raise BundleError(f"{path}: being replaced by another layertour process right now; "
                              "try again when it has finished") from None
        return None
    except OSError as exc:
        log.debug("cannot repair %s (%s)", path, exc)
        return None
    if done:
        log.warning("%s: repaired an interrupted replacement (%s)", path, done)
    return done


def _parse(root: Path, m, check: _Check, verify: bool) -> Bundle:
    if not isinstance(m, dict):
        check.fail(f"the manifest must be a JSON object, got {type(m).__name__}")
    version = check.get(m, "format_version", int, "manifest")
    if version != FORMAT_VERSION:
        check.fail(f"unknown format_version {version} (this layertour reads version {FORMAT_VERSION})")
    n = check.count(m, "n", "manifest")
    dim = check.count(m, "dim", "manifest")
    models: dict[str, Model] = {}
    training: dict[str, tuple] = {}
    training_sims: dict[str, tuple] = {}
    for i, md in enumerate(check.get(m, "models", list, "manifest")):
        where = f"models[{i}]"
        if not isinstance(md, dict):
            check.fail(f"{where} must be an object")
        name = check.name(check.get(md, "name", str, where), f"{where}.name")
        if name in models:
            check.fail(f"{where}: duplicate model name {name!r}")
        layers = [_parse_layer(root, check, ld, f"{where}.layers[{j}]", name, n, dim, verify)
                  for j, ld in enumerate(check.get(md, "layers", list, where))]
        if not layers:
            check.fail(f"{where} ({name}) has no layers")
        ids = [lay.id for lay in layers]
        if len(set(ids)) != len(ids):
            check.fail(f"{where} ({name}) has duplicate layer ids")
        meta = check.get(md, "meta", dict, where, optional=True) or {}
        run = _parse_training(root, check, md, where, name, layers, meta, n, dim, verify)
        if run is None:
            models[name] = Model(name, layers, meta)
        else:
            training[name], training_sims[name] = run
            models[name] = training[name][-1]
    if not models:
        check.fail("the manifest lists no models")
    attributes: dict[str, Attribute] = {}
    for i, ad in enumerate(check.get(m, "attributes", list, "manifest")):
        a = _parse_attribute(root, check, ad, f"attributes[{i}]", n)
        if a.name in attributes:
            check.fail(f"attributes[{i}]: duplicate attribute {a.name!r}")
        attributes[a.name] = a
    default = check.get(m, "default_attribute", str, "manifest", optional=True)
    if default is not None and default not in attributes:
        check.fail(f"default_attribute {default!r} is not one of the attributes")
    images_rel = check.get(m, "images", str, "manifest", optional=True)
    images = None
    if images_rel is not None:
        images = _open_array(root, images_rel, check, "images", (n, 32, 32, 3), np.uint8)
    sims = {}
    for i, sd in enumerate(check.get(m, "similarity", list, "manifest", optional=True) or []):
        where = f"similarity[{i}]"
        if not isinstance(sd, dict):
            check.fail(f"{where} must be an object")
        a, b = check.get(sd, "a", str, where), check.get(sd, "b", str, where)
        if a not in models or b not in models:
            check.fail(f"{where}: models {a!r}, {b!r} must both be in the bundle")
        shape = (len(models[a].layers), len(models[b].layers))
        S = _open_array(root, check.get(sd, "file", str, where), check, where, shape, np.float32)
        if not np.isfinite(S).all():
            raise BundleError(f"{S.filename}: NaN or Inf values ({where})")
        sims[(a, b)] = S
    provenance = check.get(m, "provenance", dict, "manifest", optional=True) or {}
    return Bundle(root, m, n, dim, models, attributes, default, images, provenance, sims, training,
                  training_sims)


def _parse_training(root, check: _Check, md: dict, where: str, name: str, layers: list, meta: dict, n: int,
                    dim: int, verify: bool):
    """A model's checkpoints (None when it has none): ``(tuple of Model per checkpoint, (checkpoint
    similarity or None, layer similarity or None))``. Every checkpoint must have the model's layers
    (same ids, same order), the last one exactly the model's own records."""
    cks = check.get(md, "checkpoints", list, where, optional=True)
    if cks is None:
        for key in ("checkpoint_similarity", "layer_similarity"):
            if md.get(key) is not None:
                check.fail(f"{where} ({name}) has {key} but no checkpoints")
        return None
    if not cks:
        check.fail(f"{where} ({name}).checkpoints is empty (a model recorded in one state has no "
                   "checkpoints key)")
    ids = [lay.id for lay in layers]
    run: list[Model] = []
    for k, cd in enumerate(cks):
        cw = f"{where}.checkpoints[{k}]"
        if not isinstance(cd, dict):
            check.fail(f"{cw} must be an object")
        cname = check.name(check.get(cd, "name", str, cw), f"{cw}.name")
        cw = f"{cw} ({name}, checkpoint {cname})"
        if any(prev.checkpoint == cname for prev in run):
            check.fail(f"{cw}: duplicate checkpoint name {cname!r}")
        cmeta = check.get(cd, "meta", dict, cw, optional=True) or {}
        _check_checkpoint_meta(check, cmeta, f"{cw}.meta")
        lds = check.get(cd, "layers", list, cw)
        if k == len(cks) - 1:
            if lds != md.get("layers"):
                check.fail(f"{cw}.layers must equal the model's layers (the last checkpoint is the model)")
            cl = [replace(lay, checkpoint=cname) for lay in layers]
        else:
            cl = [_parse_layer(root, check, ld, f"{cw}.layers[{j}]", name, n, dim, verify, cname)
                  for j, ld in enumerate(lds)]
            if [lay.id for lay in cl] != ids or [lay.index for lay in cl] != [lay.index for lay in layers]:
                check.fail(f"{cw}: its layers {[lay.id for lay in cl]} must be the model's {ids}, with the "
                           "same indices")
        attrs: dict[str, Attribute] = {}
        for i, ad in enumerate(check.get(cd, "attributes", list, cw, optional=True) or []):
            a = _parse_attribute(root, check, ad, f"{cw}.attributes[{i}]", n)
            if a.name in attrs:
                check.fail(f"{cw}.attributes[{i}]: duplicate attribute {a.name!r}")
            attrs[a.name] = a
        run.append(Model(name, cl, meta, cname, cmeta, attrs))
    k_all, n_layers = len(run), len(layers)
    csim = _similarity_array(root, check, md, "checkpoint_similarity", where, name, (k_all - 1, n_layers))
    if csim is not None and k_all < 2:
        check.fail(f"{where} ({name}) has checkpoint_similarity but a single checkpoint")
    lsim = _similarity_array(root, check, md, "layer_similarity", where, name, (k_all, n_layers, n_layers))
    return tuple(run), (csim, lsim)


def _check_checkpoint_meta(check: _Check, meta: dict, where: str) -> None:
    """The checkpoint meta keys the viewer reads must hold what they say (other keys are free)."""
    for key, rule in _CHECKPOINT_META.items():
        v = meta.get(key)
        if v is None:
            continue
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if rule == "count":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
            want = "an integer >= 0"
        else:
            ok = number and _finite_pair([v, v]) and v >= 0 and (rule != "fraction" or v <= 1)
            want = "a number in [0, 1]" if rule == "fraction" else "a finite number >= 0"
        if not ok:
            check.fail(f"{where}.{key} must be {want}, got {_short(v)}")


def _similarity_array(root, check: _Check, md: dict, key: str, where: str, name: str, shape: tuple):
    """A training run's stored similarity array (float32 of ``shape``, finite, in [0, 1]) or None."""
    rec = check.get(md, key, dict, where, optional=True)
    if rec is None:
        return None
    w = f"{where} ({name}).{key}"
    arr = _open_array(root, check.get(rec, "file", str, w), check, w, shape, np.float32)
    a = np.asarray(arr)
    if not np.isfinite(a).all() or a.min(initial=0.0) < -1e-5 or a.max(initial=0.0) > 1 + 1e-5:
        raise BundleError(f"{arr.filename}: similarities must be finite and lie in [0, 1] ({w})")
    return arr


def _parse_layer(root, check: _Check, ld, where, model, n, dim, verify, checkpoint=None) -> Layer:
    if not isinstance(ld, dict):
        check.fail(f"{where} must be an object")
    lid = check.name(check.get(ld, "id", str, where), f"{where}.id")
    where = f"{where} ({model}/{lid})"
    name = check.text(check.get(ld, "name", str, where, optional=True) or lid, f"{where}.name")
    index = check.count(ld, "index", where, minimum=0)
    source_dim = check.count(ld, "source_dim", where, optional=True)
    emb = _open_array(root, check.get(ld, "file", str, where), check, where, (n, dim), np.float32)
    rot = cen = None
    if ld.get("rotation") is not None or ld.get("center") is not None:
        rot = _open_array(root, check.get(ld, "rotation", str, where), check, where, (dim, dim), np.float64)
        cen = _open_array(root, check.get(ld, "center", str, where), check, where, (dim,), np.float64)
        _check_alignment(rot, cen, where)
    meta = check.get(ld, "meta", dict, where, optional=True) or {}
    _check_quality(check, meta, f"{where}.meta", n)
    if verify:
        want = check.get(ld, "checksum", str, where)
        got = _crc(emb)
        if got != want:
            raise BundleError(f"{emb.filename}: checksum {got} differs from the manifest's {want} "
                              f"(corrupt layer {model}/{lid})")
    bad = _first_bad_row(emb, None if verify else _spot_rows(n))
    if bad is not None:
        raise BundleError(f"{emb.filename}: NaN or Inf values (first in row {bad}; layer {model}/{lid})")
    return Layer(lid, name, index, source_dim, emb, rot, cen, meta, model, checkpoint)


def _check_quality(check: _Check, meta: dict, where: str, n: int) -> None:
    """The quality fields of a layer's meta that the viewer shows (trustworthiness, the fit
    sample's figures, the reduction, the stream): each optional, each checked when present."""

    def unit(d: dict, key: str, at: str) -> None:
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            check.fail(f"{at}.{key} must be a number in [0, 1], got {_short(v)}")

    def count(d: dict, key: str, at: str, lo: int = 1, hi: int | None = None) -> None:
        v = d.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo
                              or (hi is not None and v > hi)):
            check.fail(f"{at}.{key} must be an integer in [{lo}, {hi if hi is not None else '...'}], "
                       f"got {_short(v)}")

    unit(meta, "trustworthiness", where)
    for key, fields in (("fit_sample", ("trustworthiness_fit_rows", "trustworthiness_transformed_rows")),
                        ("reduction", ("explained_variance_ratio",)), ("stream", ())):
        sub = meta.get(key)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            check.fail(f"{where}.{key} must be an object, got {type(sub).__name__}")
        for f in fields:
            unit(sub, f, f"{where}.{key}")
    fs = meta.get("fit_sample") or {}
    count(fs, "n", f"{where}.fit_sample", 1, n)
    count(fs, "held_out_rows", f"{where}.fit_sample", 0, n)
    count(fs, "transform_chunk", f"{where}.fit_sample")
    red = meta.get("reduction") or {}
    count(red, "dims", f"{where}.reduction")
    count(red, "from_dim", f"{where}.reduction", red.get("dims") if isinstance(red.get("dims"), int) else 1)
    st = meta.get("stream") or {}
    count(st, "passes", f"{where}.stream")
    count(st, "budget_bytes", f"{where}.stream")


def _check_alignment(rot: np.ndarray, cen: np.ndarray, where: str) -> None:
    """A stored alignment must be finite, and the rotation orthogonal (RᵀR = I to 1e-6)."""
    for a in (rot, cen):
        if not np.isfinite(a).all():
            raise BundleError(f"{a.filename}: NaN or Inf values ({where})")
    r = np.asarray(rot)
    err = float(np.abs(r.T @ r - np.eye(r.shape[0])).max())
    if not err <= _ORTHO_TOL:
        raise BundleError(f"{rot.filename}: not an orthogonal rotation (max |RᵀR - I| = {err:.3g}; {where})")


def _parse_attribute(root, check: _Check, ad, where, n) -> Attribute:
    if not isinstance(ad, dict):
        check.fail(f"{where} must be an object")
    name = check.name(check.get(ad, "name", str, where), f"{where}.name")
    where = f"{where} ({name})"
    kind = check.get(ad, "kind", str, where)
    if kind not in KINDS:
        check.fail(f"{where}.kind must be one of {KINDS}, got {kind!r}")
    rel = check.get(ad, "file", str, where)
    if kind == "categorical":
        cats = check.get(ad, "categories", list, where)
        if not all(isinstance(c, str) for c in cats):
            check.fail(f"{where}.categories must be a list of strings")
        for k, c in enumerate(cats):
            check.text(c, f"{where}.categories[{k}]", multiline=True)
        values = _open_array(root, rel, check, where, (n,), np.int32)
        if n and (int(values.min()) < 0 or int(values.max()) >= len(cats)):
            raise BundleError(f"{root / rel}: codes outside 0..{len(cats) - 1} ({where})")
        return Attribute(name, kind, values, list(cats), None)
    ext = check.get(ad, "extent", list, where)
    if (len(ext) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ext)
            or not _finite_pair(ext)):
        check.fail(f"{where}.extent must be [lo, hi], two finite numbers with lo <= hi, got {_short(ext)}")
    values = _open_array(root, rel, check, where, (n,), np.float32)
    bad = _first_bad_row(values)
    if bad is not None:
        raise BundleError(f"{root / rel}: NaN or Inf values (first at point {bad}; {where})")
    return Attribute(name, kind, values, None, (float(ext[0]), float(ext[1])))


def _finite_pair(ext: list) -> bool:
    try:
        lo, hi = float(ext[0]), float(ext[1])
    except OverflowError:  # an integer too large for a float
        return False
    return bool(np.isfinite(lo) and np.isfinite(hi) and lo <= hi)


def _crc(a: np.ndarray) -> str:
    """CRC-32 of the array's bytes in C order, read in chunks (no full copy)."""
    crc = 0
    flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
    for s in range(0, flat.shape[0], _CHUNK_ROWS):
        crc = zlib.crc32(np.ascontiguousarray(flat[s:s + _CHUNK_ROWS]).data, crc)
    return f"crc32:{crc:08x}"


# ----------------------------------------------------------------------------------------------
# writing


def _write_json(path: Path, obj) -> None:
    """Write JSON atomically (:func:`write_atomic`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.write("\n")

    write_atomic(path, write)


def _save_npy(path: Path, arr: np.ndarray, *, finite_label: str | None = None) -> str:
    """Write ``arr`` as ``.npy`` to a temp name in chunks, then rename; returns its CRC-32.

    With ``finite_label`` set, NaN or Inf values raise BundleError naming that label (the temp file
    is removed). ``arr`` may be a memmap: it is read once, chunk by chunk.
    """
    tmp = path.with_name(path.name + ".tmp")
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
              "shape": tuple(int(s) for s in arr.shape)}
    crc = 0
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for s in range(0, flat.shape[0], _CHUNK_ROWS):
                chunk = np.ascontiguousarray(flat[s:s + _CHUNK_ROWS])
                if finite_label is not None and not np.isfinite(chunk).all():
                    bad = s + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                    raise BundleError(f"{finite_label}: NaN or Inf values (first in row {bad})")
                crc = zlib.crc32(chunk.data, crc)
                f.write(chunk.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return f"crc32:{crc:08x}"


class RowFile:
    """A ``.npy`` file of shape ``shape`` (rows first) filled row block by row block.

    Rows are written with ``os.pwrite`` and read back with ``os.pread``, never through a memory
    map: dirty mapped pages count toward the writer's resident memory, which would then grow with
    N (a streamed layer of 10⁶ points is 60 MB, its thumbnails 3 GB). ``keep=True`` opens an
    existing file whose header is exactly this shape and dtype (a resumed stream), else a new
    file is made (sparse: the size is set, nothing written). :meth:`finish` checks, checksums and
    renames it into place.
    """

    def __init__(self, path, shape: tuple, dtype, *, keep: bool = False):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                   "fortran_order": False, "shape": self.shape})
        self._header = buf.getvalue()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        size = len(self._header) + self.shape[0] * self.row_bytes
        self.kept = False
        if keep and self.path.is_file() and not self.path.is_symlink():
            with open(self.path, "rb") as f:
                same = f.read(len(self._header)) == self._header
            if same and self.path.stat().st_size == size:
                self._fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                self.kept = True
                return
        self.path.unlink(missing_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        os.pwrite(self._fd, self._header, 0)
        os.ftruncate(self._fd, size)

    def _offset(self, row: int) -> int:
        return len(self._header) + int(row) * self.row_bytes

    def write(self, start: int, rows) -> None:
        """Rows ``[start, start + len(rows))`` from ``rows`` (host, castable to the file's dtype)."""
        a = np.ascontiguousarray(to_host(rows), dtype=self.dtype)
        if a.shape[1:] != self.shape[1:] or not 0 <= start <= start + a.shape[0] <= self.shape[0]:
            raise BundleError(f"{self.path}: rows [{start}, {start + a.shape[0]}) of shape {a.shape[1:]} do "
                              f"not fit {self.shape}")
        view, off = memoryview(a).cast("B"), self._offset(start)
        while view:
            k = os.pwrite(self._fd, view, off)
            view, off = view[k:], off + k

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a fresh host array."""
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        view, off = memoryview(out).cast("B"), self._offset(start)
        while view:
            k = os.preadv(self._fd, [view], off)
            if k == 0:
                raise BundleError(f"{self.path}: shorter than its header says (rows [{start}, {stop}))")
            view, off = view[k:], off + k
        return out

    def take(self, idx) -> np.ndarray:
        """The rows ``idx`` (sorted int indices) as a host array, read in runs of consecutive rows."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((idx.size, *self.shape[1:]), dtype=self.dtype)
        if idx.size == 0:
            return out
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for s, e in zip(np.r_[0, breaks], np.r_[breaks, idx.size]):
            out[s:e] = self.read(int(idx[s]), int(idx[e - 1]) + 1)
        return out

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self, dest: Path, *, finite_label: str | None = None) -> str:
        """Scan the whole file in row chunks (CRC-32 of the data; NaN/Inf refused with
        ``finite_label``), fsync, close and rename it to ``dest``; returns the CRC."""
        crc = 0
        step = max(1, (16 << 20) // max(1, self.row_bytes))  # 16 MB reads
        for s in range(0, self.shape[0], step):
            chunk = self.read(s, min(self.shape[0], s + step))
            if finite_label is not None and not np.isfinite(chunk.reshape(chunk.shape[0], -1)).all():
                bad = s + int(np.flatnonzero(~np.isfinite(chunk.reshape(chunk.shape[0], -1)).all(axis=1))[0])
                raise BundleError(f"{finite_label}: NaN or Inf values (first in row {bad})")
            crc = zlib.crc32(chunk.data, crc)
        self.sync()
        self.close()
        os.replace(self.path, dest)
        return f"crc32:{crc:08x}"


class BundleWriter:
    """Builds a bundle in ``.<name>.partial/`` beside ``path``; ``commit()`` renames it into place.

    n, dim : the number of points and the embedding dimension p of every layer.
    resume : keep the layers a previous (killed) run finished in the staging directory (each is
        checked against the shape and CRC-32 recorded in the progress file); otherwise start clean.
    overwrite : replace an existing bundle at ``path`` (only at the final rename); without it an
        existing ``path`` is refused at once.

    All arrays given to the writer may be NumPy or CuPy (copied to the host); they are stored as
    documented in the module docstring.
    """

    def __init__(self, path, *, n: int, dim: int, resume: bool = False, overwrite: bool = False,
                 params: dict | None = None):
        self.path = Path(path)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise BundleError(f"{self.path}: n must be a positive int, got {n!r}")
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < MIN_DIM:
            raise BundleError(f"{self.path}: dim must be an int >= {MIN_DIM} (the tour shows p-dimensional "
                              f"points in 2-D or 3-D views and needs p > d), got {dim!r}")
        if params is not None:
            _check_json(params, f"{self.path}: params")
        self.n, self.dim, self.overwrite = int(n), int(dim), overwrite
        self.params = params
        self.staging = staging_path(self.path)
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = DirLock(self.path)
        try:
            self._lock.acquire()
        except LockedError as exc:
            raise BundleError(f"{self.path}: {exc.strerror}") from None
        try:
            done = recover(self.path, MANIFEST)
            if done:
                log.warning("%s: repaired an interrupted replacement (%s)", self.path, done)
            if (self.path / MANIFEST).is_file():
                (self.path / PROGRESS).unlink(missing_ok=True)
            self._check_target()
            self._state = self._fresh_state()
            if resume and (self.staging / PROGRESS).is_file():
                self._resume()
            else:
                if self.staging.exists() or self.staging.is_symlink():
                    _remove_tree(self.staging)
                self.staging.mkdir()
                self._save_progress()
            (self.staging / MANIFEST).unlink(missing_ok=True)  # only commit() marks staging complete
        except BaseException:
            self._lock.release()
            raise

    # -- bookkeeping -----------------------------------------------------------------------

    def _fresh_state(self) -> dict:
        return {"n": self.n, "dim": self.dim, "params": self.params, "models": {}, "attributes": {},
                "default_attribute": None, "images": None, "similarity": {}, "provenance": {}, "streams": {}}

    def _check_target(self) -> None:
        if not (self.path.exists() or self.path.is_symlink()):
            return
        if not self.overwrite:
            raise BundleError(f"{self.path}: already exists (pass overwrite=True / --force to replace it)")
        if not self.path.is_dir() or not ((self.path / MANIFEST).is_file() or not any(self.path.iterdir())):
            raise BundleError(f"{self.path}: exists and is not a layertour bundle; refusing to replace it")

    def _resume(self) -> None:
        """Keep the finished layers of the interrupted run in the staging directory.

        The progress file is data from disk: its layer records are used only when they name the
        file this writer would have written (no path from it is trusted) and the file's shape and
        CRC-32 match. Alignments, attributes, images and similarities are dropped (the caller
        writes them again after the layers). A run with other parameters is refused.
        """
        prog = self.staging / PROGRESS
        try:
            state = json.loads(read_regular(prog, limit=_MANIFEST_LIMIT))
        except (OSError, ValueError, RecursionError) as exc:
            raise BundleError(f"{prog}: unreadable progress file ({exc}); rerun without resume") from exc
        if not isinstance(state, dict) or state.get("n") != self.n or state.get("dim") != self.dim:
            old = state if isinstance(state, dict) else {}
            raise BundleError(f"{prog}: the interrupted run had n={old.get('n')}, dim={old.get('dim')}; "
                              f"this run has n={self.n}, dim={self.dim} (rerun without resume)")
        if self.params is not None and state.get("params") != self.params:
            diff = param_differences(state.get("params"), self.params)
            raise BundleError(f"{self.path}: cannot resume: the interrupted run had other parameters "
                              f"({'; '.join(diff[:12])}{'; ...' if len(diff) > 12 else ''}); rerun without "
                              "--resume to start again, or with the old parameters")
        fresh = self._fresh_state()
        models = state.get("models") if isinstance(state.get("models"), dict) else {}
        kept = 0
        for mname, model in models.items():
            if not is_valid_name(mname) or not isinstance(model, dict):
                continue
            meta = model.get("meta") if isinstance(model.get("meta"), dict) else {}
            layers = model.get("layers") if isinstance(model.get("layers"), dict) else {}
            fresh["models"][mname] = {"meta": meta, "layers": {}}
            for lid, rec in layers.items():
                if self._verify(mname, lid, rec):
                    fresh["models"][mname]["layers"][lid] = {**rec, "rotation": None, "center": None}
                    kept += 1
                else:
                    log.warning("resume: dropping %s/%s (file missing or corrupt)", mname, lid)
            cks = model.get("checkpoints") if isinstance(model.get("checkpoints"), dict) else {}
            for cname, ck in cks.items():
                if not is_valid_name(cname) or not isinstance(ck, dict):
                    continue
                cmeta = ck.get("meta") if isinstance(ck.get("meta"), dict) else {}
                kept_ck = fresh["models"][mname].setdefault("checkpoints", {})[cname] = {
                    "meta": cmeta, "layers": {}, "attributes": {}}
                for lid, rec in (ck.get("layers") if isinstance(ck.get("layers"), dict) else {}).items():
                    if self._verify(mname, lid, rec, cname):
                        kept_ck["layers"][lid] = {**rec, "rotation": None, "center": None}
                        kept += 1
                    else:
                        log.warning("resume: dropping %s/%s at checkpoint %s (file missing or corrupt)",
                                    mname, lid, cname)
        streams = state.get("streams") if isinstance(state.get("streams"), dict) else {}
        fresh["streams"] = {k: v for k, v in streams.items() if is_valid_name(k) and isinstance(v, dict)}
        self._state = fresh
        log.info("resume: kept %d finished layers in %s", kept, self.staging)
        self._save_progress()

    def _verify(self, model: str, lid: str, rec, checkpoint: str | None = None) -> bool:
        if not (is_valid_layer_id(lid) and isinstance(rec, dict)
                and rec.get("file") == _layer_file(model, lid, checkpoint)
                and isinstance(rec.get("index"), int) and not isinstance(rec.get("index"), bool)
                and rec["index"] >= 0 and text_problem(rec.get("name")) is None
                and isinstance(rec.get("meta", {}), dict)):
            return False
        try:
            arr = open_npy(self.staging / rec["file"])
        except BundleError:
            return False
        return (list(arr.shape) == rec.get("shape") and arr.dtype == np.float32
                and _crc(arr) == rec.get("checksum"))

    def _save_progress(self) -> None:
        _write_json(self.staging / PROGRESS, self._state)

    def _open(self) -> None:
        if self._closed:
            raise BundleError(f"{self.path}: this BundleWriter was already committed or aborted (or closed)")

    def _model(self, model: str) -> dict:
        if model not in self._state["models"]:
            raise BundleError(f"{self.path}: no model {model!r} (call add_model first)")
        return self._state["models"][model]

    def _checkpoint(self, model: str, checkpoint: str) -> dict:
        ck = self._model(model).get("checkpoints", {}).get(checkpoint)
        if ck is None:
            raise BundleError(f"{self.path}: model {model!r} has no checkpoint {checkpoint!r} "
                              "(call add_checkpoint first)")
        return ck

    def _layers(self, model: str, checkpoint: str | None) -> dict:
        """The layer records of ``model`` (at ``checkpoint``); a training run's layers always belong
        to a checkpoint, a plain model's never."""
        m = self._model(model)
        if checkpoint is None:
            if m.get("checkpoints"):
                raise BundleError(f"{self.path}: model {model!r} is recorded at checkpoints: name the "
                                  "checkpoint of its layers")
            return m["layers"]
        return self._checkpoint(model, checkpoint)["layers"]

    # -- public API ------------------------------------------------------------------------

    def add_model(self, name: str, meta: dict | None = None) -> None:
        """Add model ``name`` (kept, with its finished layers, when resuming); ``meta`` is JSON."""
        self._open()
        if not is_valid_name(name):
            raise BundleError(f"{self.path}: model name {name!r} is not valid (letters, digits, _ . + -)")
        _check_json(meta or {}, f"{self.path}: meta of model {name!r}")
        models = self._state["models"]
        if name not in models:
            (self.staging / "models" / name).mkdir(parents=True, exist_ok=True)
            models[name] = {"meta": meta or {}, "layers": {}}
        elif meta is not None:
            models[name]["meta"] = meta
        self._save_progress()

    def add_checkpoint(self, model: str, name: str, meta: dict | None = None) -> None:
        """Add checkpoint ``name`` of ``model`` (call in training order; kept with its finished
        layers when resuming, its ``meta`` (JSON: step, epoch, ...) replaced when given). A model
        with checkpoints stores every layer per checkpoint (``write_layer(..., checkpoint=name)``)."""
        self._open()
        m = self._model(model)
        if not is_valid_name(name):
            raise BundleError(f"{self.path}: checkpoint name {name!r} of model {model!r} is not valid "
                              "(letters, digits, _ . + -)")
        if m["layers"]:
            raise BundleError(f"{self.path}: model {model!r} already has layers of one state; a training "
                              "run stores every layer per checkpoint")
        _check_json(meta or {}, f"{self.path}: meta of checkpoint {model}/{name}")
        cks = m.setdefault("checkpoints", {})
        if name not in cks:
            (self.staging / "models" / model / "checkpoints" / name).mkdir(parents=True, exist_ok=True)
            cks[name] = {"meta": meta or {}, "layers": {}, "attributes": {}}
        elif meta is not None:
            cks[name]["meta"] = meta
        self._save_progress()

    def checkpoint_names(self, model: str) -> list[str]:
        """The checkpoints of ``model`` added so far, in order (empty for a plain model)."""
        return list(self._model(model).get("checkpoints", {}))

    def set_checkpoint_meta(self, model: str, checkpoint: str, meta: dict) -> None:
        """Merge ``meta`` (JSON; e.g. accuracy and loss once the outputs are known) into the
        checkpoint's meta."""
        self._open()
        ck = self._checkpoint(model, checkpoint)
        _check_json(meta, f"{self.path}: meta of checkpoint {model}/{checkpoint}")
        ck["meta"] = {**ck["meta"], **meta}
        self._save_progress()

    def write_layer(self, model: str, layer_id: str, embedding, *, name: str | None = None,
                    source_dim: int | None = None, meta: dict | None = None,
                    index: int | None = None, checkpoint: str | None = None) -> None:
        """Store one layer: ``embedding`` (n, dim) float, NumPy/CuPy/memmap (read once, in chunks).

        The file is written to a temp name, renamed, then recorded in the progress file. ``index``
        is the layer's position in network order (default: after the layers already written); the
        manifest lists layers by index. ``checkpoint``: the checkpoint of a training run the layer
        belongs to (:meth:`add_checkpoint`). NaN/Inf raise BundleError naming model and layer.
        """
        self._open()
        layers = self._check_layer_args(model, layer_id, name, index, meta, checkpoint)
        emb = embedding if isinstance(embedding, np.ndarray) else to_host(embedding)
        if emb.shape != (self.n, self.dim):
            raise BundleError(f"{model}/{layer_id}: embedding shape {tuple(emb.shape)} where "
                              f"({self.n}, {self.dim}) was expected")
        if not np.issubdtype(emb.dtype, np.floating):
            raise BundleError(f"{model}/{layer_id}: embedding dtype {emb.dtype} is not floating point")
        if emb.dtype != np.dtype("<f4"):
            emb = emb.astype("<f4")
        rel = _layer_file(model, layer_id, checkpoint)
        at = "" if checkpoint is None else f", checkpoint {checkpoint}"
        crc = _save_npy(self.staging / rel, emb, finite_label=f"model {model}, layer {layer_id}{at}")
        self._record_layer(layers, layer_id, rel, crc, name, source_dim, meta, index)

    def _check_layer_args(self, model: str, layer_id: str, name, index, meta,
                          checkpoint: str | None = None) -> dict:
        """Check a layer's arguments; returns the layer records it goes into (model or checkpoint)."""
        layers = self._layers(model, checkpoint)
        if not is_valid_layer_id(layer_id):
            raise BundleError(f"{self.path}: layer id {layer_id!r} of model {model!r} is not valid "
                              "(letters, digits, _ . + -; not ending in .rotation/.center)")
        why = text_problem(name or layer_id)
        if why is not None:
            raise BundleError(f"{model}/{layer_id}: layer name {_short(name)} {why}")
        if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer))
                                  or index < 0):
            raise BundleError(f"{model}/{layer_id}: index must be an int >= 0, got {index!r}")
        _check_json(meta or {}, f"{model}/{layer_id}: meta")
        return layers

    def _record_layer(self, layers: dict, layer_id: str, rel: str, crc: str, name, source_dim, meta,
                      index) -> None:
        old = layers.get(layer_id)
        if index is None:
            index = old["index"] if old else (max((r["index"] for r in layers.values()), default=-1) + 1)
        layers[layer_id] = {"id": layer_id, "name": name or layer_id, "index": int(index),
                            "source_dim": None if source_dim is None else int(source_dim),
                            "file": rel, "shape": [self.n, self.dim], "dtype": "float32",
                            "checksum": crc, "rotation": None, "center": None, "meta": meta or {}}
        self._save_progress()

    # -- streamed files (engine.stream): rows written block by block, adopted when complete ----------

    def row_file(self, rel: str, row_shape: tuple, dtype, *, keep: bool = False) -> RowFile:
        """A :class:`RowFile` ``rel`` (a path inside the staging directory ending in ``.stream``) of
        shape (n, *row_shape): kept as it is with ``keep`` when its header matches (a resumed
        stream), else created empty. :meth:`commit` removes every ``.stream`` file not adopted."""
        self._open()
        if not rel.endswith(STREAM_SUFFIX) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BundleError(f"{self.path}: stream file {rel!r} must be a relative path ending in "
                              f"{STREAM_SUFFIX}")
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return RowFile(path, (self.n, *row_shape), dtype, keep=keep)

    def stream_state(self, key: str) -> dict | None:
        """The stream bookkeeping saved under ``key`` (a model name) by :meth:`set_stream_state`, as
        read back from the progress file (data from disk: the caller validates it), or None."""
        st = self._state["streams"].get(key)
        return dict(st) if isinstance(st, dict) else None

    def set_stream_state(self, key: str, state: dict | None) -> None:
        """Save (or with None drop) JSON bookkeeping of a stream in the progress file, atomically:
        rows written to row files before this call survive a kill."""
        self._open()
        if not is_valid_name(key):
            raise BundleError(f"{self.path}: stream key {key!r} is not a valid name")
        if state is None:
            self._state["streams"].pop(key, None)
        else:
            _check_json(state, f"{self.path}: stream state {key!r}")
            self._state["streams"][key] = state
        self._save_progress()

    def adopt_layer(self, model: str, layer_id: str, rows: RowFile, *, name: str | None = None,
                    source_dim: int | None = None, meta: dict | None = None,
                    index: int | None = None) -> None:
        """Store a layer whose (n, dim) float32 rows were streamed into ``rows``: checked for NaN/Inf
        and checksummed in one chunked read, fsynced, renamed to the layer's file and recorded as
        :meth:`write_layer` records (``rows`` is closed)."""
        self._open()
        m = self._check_layer_args(model, layer_id, name, index, meta)
        if rows.shape != (self.n, self.dim) or rows.dtype != np.dtype("<f4"):
            raise BundleError(f"{model}/{layer_id}: streamed rows {rows.shape} {rows.dtype} where "
                              f"({self.n}, {self.dim}) float32 was expected")
        rel = _layer_file(model, layer_id)
        crc = rows.finish(self.staging / rel, finite_label=f"model {model}, layer {layer_id}")
        self._record_layer(m, layer_id, rel, crc, name, source_dim, meta, index)

    def adopt_images(self, rows: RowFile) -> None:
        """Store thumbnails streamed into ``rows`` ((n, 32, 32, 3) uint8; ``rows`` is closed)."""
        self._open()
        if rows.shape != (self.n, 32, 32, 3) or rows.dtype != np.uint8:
            raise BundleError(f"{self.path}: images must be ({self.n}, 32, 32, 3) uint8, "
                              f"got {rows.shape} {rows.dtype}")
        rows.finish(self.staging / "images.npy")
        self._state["images"] = "images.npy"
        self._save_progress()

    def has_layer(self, model: str, layer_id: str, checkpoint: str | None = None) -> bool:
        """True when ``layer_id`` of ``model`` (at ``checkpoint``) is finished (written now or kept
        by resume)."""
        m = self._state["models"].get(model, {})
        layers = m.get("layers", {}) if checkpoint is None else \
            m.get("checkpoints", {}).get(checkpoint, {}).get("layers", {})
        return layer_id in layers

    def _record(self, model: str, layer_id: str, checkpoint: str | None) -> dict:
        rec = self._layers(model, checkpoint).get(layer_id)
        if rec is None:
            at = "" if checkpoint is None else f" at checkpoint {checkpoint!r}"
            raise BundleError(f"{self.path}: model {model!r} has no finished layer {layer_id!r}{at}")
        return rec

    def read_layer(self, model: str, layer_id: str, checkpoint: str | None = None) -> np.ndarray:
        """A finished layer's embedding: (n, dim) float32 memmap of the staging file (host)."""
        return open_npy(self.staging / self._record(model, layer_id, checkpoint)["file"])

    def layer_record(self, model: str, layer_id: str, checkpoint: str | None = None) -> dict:
        """A copy of a finished layer's record (``name``, ``index``, ``source_dim``, ``meta``, ...)."""
        import copy

        return copy.deepcopy(self._record(model, layer_id, checkpoint))

    def set_alignment(self, model: str, layer_id: str, rotation, center,
                      checkpoint: str | None = None) -> None:
        """Store a layer's canonical alignment: rotation (dim, dim), center (dim,), kept as float64."""
        self._open()
        rec = self._layers(model, checkpoint).get(layer_id)
        if rec is None:
            raise BundleError(f"{self.path}: set_alignment before write_layer for {model}/{layer_id}")
        r = np.asarray(to_host(rotation), dtype=np.float64)
        c = np.asarray(to_host(center), dtype=np.float64)
        if r.shape != (self.dim, self.dim) or c.shape != (self.dim,):
            raise BundleError(f"{model}/{layer_id}: alignment shapes {r.shape}, {c.shape} where "
                              f"({self.dim}, {self.dim}) and ({self.dim},) were expected")
        err = float(np.abs(r.T @ r - np.eye(self.dim)).max()) if np.isfinite(r).all() else np.inf
        if not err <= _ORTHO_TOL:
            raise BundleError(f"{model}/{layer_id}: the rotation is not orthogonal or not finite "
                              f"(max |RᵀR - I| = {err:.3g})")
        for part, a in (("rotation", r), ("center", c)):
            rel = rec["file"][: -len(".npy")] + f".{part}.npy"
            _save_npy(self.staging / rel, a, finite_label=f"model {model}, layer {layer_id}, {part}")
            rec[part] = rel
        self._save_progress()

    def set_attribute(self, name: str, values, kind: str, categories=None, extent=None,
                      default: bool = False) -> None:
        """Store a per-point attribute: (n,) integer codes into ``categories`` (categorical, stored
        int32) or finite floats (continuous, stored float32; ``extent`` defaults to (min, max))."""
        self._open()
        (self.staging / "attributes").mkdir(exist_ok=True)
        self._state["attributes"][name] = self._attribute(name, values, kind, categories, extent,
                                                          f"attributes/{name}.npy",
                                                          f"{self.path}: attribute {name!r}")
        if default or self._state["default_attribute"] is None:
            self._state["default_attribute"] = name
        self._save_progress()

    def set_checkpoint_attribute(self, model: str, checkpoint: str, name: str, values, kind: str,
                                 categories=None, extent=None) -> None:
        """Store a per-point attribute of one checkpoint (its own prediction, correctness, ...), as
        :meth:`set_attribute` checks and stores a bundle's."""
        self._open()
        ck = self._checkpoint(model, checkpoint)
        folder = f"models/{model}/checkpoints/{checkpoint}/attributes"
        (self.staging / folder).mkdir(parents=True, exist_ok=True)
        where = f"{self.path}: attribute {name!r} of checkpoint {model}/{checkpoint}"
        ck["attributes"][name] = self._attribute(name, values, kind, categories, extent,
                                                 f"{folder}/{name}.npy", where)
        self._save_progress()

    def set_training_similarity(self, model: str, checkpoint_similarity=None, layer_similarity=None) -> None:
        """Store a training run's similarities: ``checkpoint_similarity`` (K-1, L) (each layer between
        consecutive checkpoints) and/or ``layer_similarity`` (K, L, L) (each checkpoint's layer
        matrix), float32, finite, in [0, 1]."""
        self._open()
        m = self._model(model)
        k, n_layers = len(m.get("checkpoints", {})), None
        if k == 0:
            raise BundleError(f"{self.path}: model {model!r} has no checkpoints")
        for key, S in (("checkpoint_similarity", checkpoint_similarity),
                       ("layer_similarity", layer_similarity)):
            if S is None:
                continue
            a = np.asarray(to_host(S), dtype=np.float32)
            n_layers = a.shape[-1] if a.ndim else None
            want = (k - 1, n_layers) if key == "checkpoint_similarity" else (k, n_layers, n_layers)
            if a.shape != want:
                raise BundleError(f"{self.path}: {key} of {model} must have shape {want}, got {a.shape}")
            clipped = np.clip(a, 0.0, 1.0)  # rounding can leave 1 + 1e-7
            if not np.isfinite(a).all() or np.abs(clipped - a).max(initial=0.0) > 1e-5:
                raise BundleError(f"{self.path}: {key} of {model} must be finite and lie in [0, 1]")
            rel = f"models/{model}/{key}.npy"
            _save_npy(self.staging / rel, clipped, finite_label=f"{key} of {model}")
            m[key] = {"file": rel, "shape": list(a.shape)}
        self._save_progress()

    def _attribute(self, name: str, values, kind: str, categories, extent, rel: str, where: str) -> dict:
        """Check one attribute, save it at ``rel`` and return its manifest record."""
        if not is_valid_name(name):
            raise BundleError(f"{where}: not a valid name (letters, digits, _ . + -)")
        if kind not in KINDS:
            raise BundleError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
        v = np.asarray(to_host(values))
        if v.shape != (self.n,):
            raise BundleError(f"{where}: shape {v.shape} where ({self.n},) was expected")
        if kind == "categorical":
            if categories is None or not all(isinstance(c, str) for c in categories):
                raise BundleError(f"{where}: categorical attributes need categories (a list of str)")
            for k, c in enumerate(categories):
                why = text_problem(c, multiline=True)
                if why is not None:
                    raise BundleError(f"{where}: category {k} ({_short(c)}) {why}")
            if extent is not None:
                raise BundleError(f"{where}: extent is for continuous attributes only")
            if not np.issubdtype(v.dtype, np.integer):
                raise BundleError(f"{where}: categorical codes must be integers, got {v.dtype}")
            if v.min() < 0 or v.max() >= len(categories):
                raise BundleError(f"{where}: codes outside 0..{len(categories) - 1}")
            arr, cats, ext = v.astype(np.int32), list(categories), None
        else:
            if categories is not None:
                raise BundleError(f"{where}: categories are for categorical attributes only")
            arr = v.astype(np.float32)
            if not np.isfinite(arr).all():
                raise BundleError(f"{where}: NaN or Inf values")
            ext = [float(arr.min()), float(arr.max())] if extent is None else [float(e) for e in extent]
            if len(ext) != 2 or not all(np.isfinite(ext)) or not ext[0] <= ext[1]:
                raise BundleError(f"{where}: extent must be two finite numbers lo <= hi, got {ext}")
            cats = None
        _save_npy(self.staging / rel, arr)
        return {"name": name, "kind": kind, "categories": cats, "extent": ext, "file": rel}

    def set_images(self, images) -> None:
        """Store thumbnails: (n, 32, 32, 3) uint8."""
        self._open()
        im = np.asarray(to_host(images))
        if im.shape != (self.n, 32, 32, 3) or im.dtype != np.uint8:
            raise BundleError(f"{self.path}: images must be ({self.n}, 32, 32, 3) uint8, "
                              f"got {im.shape} {im.dtype}")
        _save_npy(self.staging / "images.npy", im)
        self._state["images"] = "images.npy"
        self._save_progress()

    def set_similarity(self, a: str, b: str, S) -> None:
        """Store the (La, Lb) layer-similarity matrix between models ``a`` and ``b`` (float32)."""
        self._open()
        self._model(a), self._model(b)
        s = np.asarray(to_host(S), dtype=np.float32)
        if s.ndim != 2:
            raise BundleError(f"{self.path}: similarity {a}/{b} must be 2-D, got shape {s.shape}")
        rel = f"similarity/{a}__{b}.npy"
        (self.staging / "similarity").mkdir(exist_ok=True)
        _save_npy(self.staging / rel, s, finite_label=f"similarity {a}/{b}")
        self._state["similarity"][f"{a}__{b}"] = {"a": a, "b": b, "file": rel, "shape": list(s.shape)}
        self._save_progress()

    def update_provenance(self, info: dict) -> None:
        """Merge ``info`` (JSON-serialisable; nested dicts are merged) into the provenance."""
        self._open()
        _check_json(info, f"{self.path}: provenance")
        _merge(self._state["provenance"], info)
        self._save_progress()

    def manifest(self) -> dict:
        """The manifest ``commit()`` would write now (layers sorted by index)."""
        st = self._state
        models = []
        for name, m in st["models"].items():
            cks = m.get("checkpoints") or {}
            if not cks:
                models.append({"name": name, "meta": m["meta"],
                               "layers": sorted(m["layers"].values(), key=lambda r: r["index"])})
                continue
            entries = [{"name": c, "meta": ck["meta"],
                        "layers": sorted(ck["layers"].values(), key=lambda r: r["index"]),
                        "attributes": list(ck["attributes"].values())} for c, ck in cks.items()]
            models.append({"name": name, "meta": m["meta"], "layers": entries[-1]["layers"],
                           "checkpoints": entries,
                           **{k: m[k] for k in ("checkpoint_similarity", "layer_similarity") if m.get(k)}})
        return {"format_version": FORMAT_VERSION, "n": self.n, "dim": self.dim, "models": models,
                "attributes": list(st["attributes"].values()), "default_attribute": st["default_attribute"],
                "images": st["images"], "similarity": list(st["similarity"].values()),
                "provenance": st["provenance"]}

    def commit(self) -> Path:
        """Write manifest.json, check the bundle, and put it in place (:func:`engine.replace.install`:
        a crash at any point is repaired by the next writer or ``load_bundle``); returns the path."""
        self._open()
        man = self.manifest()
        for m in man["models"]:
            idx = [r["index"] for r in m["layers"]]
            if not idx:
                raise BundleError(f"{self.path}: model {m['name']!r} has no layers")
            if len(set(idx)) != len(idx):
                raise BundleError(f"{self.path}: model {m['name']!r} has layers with the same index")
            want = [(r["id"], r["index"]) for r in m["layers"]]
            for ck in m.get("checkpoints", ()):
                got = [(r["id"], r["index"]) for r in ck["layers"]]
                if got != want:
                    missing = sorted({i for i, _ in want} - {i for i, _ in got})
                    raise BundleError(f"{self.path}: checkpoint {ck['name']!r} of model {m['name']!r} has "
                                      f"layers {[i for i, _ in got]}, not the last checkpoint's "
                                      f"{[i for i, _ in want]}"
                                      + (f" (missing {missing})" if missing else ""))
        if not man["models"]:
            raise BundleError(f"{self.path}: nothing to commit (no models)")
        for left in self.staging.rglob(f"*{STREAM_SUFFIX}"):  # streamed rows never adopted
            left.unlink()
        _write_json(self.staging / MANIFEST, man)
        try:
            _load(self.staging, verify=True, repair=False)  # it must read back before it replaces anything
        except BundleError:
            (self.staging / MANIFEST).unlink(missing_ok=True)
            raise
        self._check_target()
        install(self.staging, self.path)
        (self.path / PROGRESS).unlink(missing_ok=True)
        self._finish()
        return self.path

    def abort(self) -> None:
        """Discard the staging directory (finished layers included) and release the lock."""
        if not self._closed:
            _remove_tree(self.staging)
        self._finish()

    def close(self) -> None:
        """Release the lock, keeping the staging directory (finished layers) for a later resume."""
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        self._lock.release()

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def staged_params(path) -> dict | None:
    """The ``params`` an interrupted :class:`BundleWriter` for ``path`` recorded in its staging
    directory (what a ``--resume`` must match), or None when there is none or it cannot be read.
    Data from disk: the caller checks every value it uses."""
    prog = staging_path(Path(path)) / PROGRESS
    try:
        state = json.loads(read_regular(prog, limit=_MANIFEST_LIMIT))
    except (OSError, ValueError, RecursionError):
        return None
    params = state.get("params") if isinstance(state, dict) else None
    return params if isinstance(params, dict) else None


def _layer_file(model: str, layer_id: str, checkpoint: str | None = None) -> str:
    if checkpoint is None:
        return f"models/{model}/{layer_id}.npy"
    return f"models/{model}/checkpoints/{checkpoint}/{layer_id}.npy"


def _remove_tree(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def param_differences(old, new, prefix: str = "") -> list[str]:
    """What differs between two JSON values, as ``"key: old -> new"`` lines (nested keys dotted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            key = f"{prefix}{k}"
            if k not in new:
                out.append(f"{key}: {_short(old[k], 40)} -> (absent)")
            elif k not in old:
                out.append(f"{key}: (absent) -> {_short(new[k], 40)}")
            else:
                out += param_differences(old[k], new[k], f"{key}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.') or 'parameters'}: {_short(old, 40)} -> {_short(new, 40)}"]
    return []


def _check_json(obj, where: str) -> None:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where} is not JSON-serialisable ({exc})") from exc


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
