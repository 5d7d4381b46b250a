"""Input sets for recording: scikit-learn's digits, image folders and file lists, tensors, and
procedural synthetic images (for runs at any N).

An :class:`InputSet` yields float32 (B, C, H, W) CPU tensors in a fixed order (``batches``) and
carries per-input ``labels`` ((N,) int64), ``label_names``, 32-px RGB ``thumbnails`` ((N, 32, 32, 3)
uint8, made from the un-normalised image), optionally the model's class index of each input
(``targets``), extra per-input ``attributes`` (a coarse group) and ``info`` for the provenance.
Any subset of rows is an input set too (:meth:`InputSet.subset`), decoded without touching the
other rows: what a streaming ``prepare`` records its fit sample from.

Images are decoded by parallel worker processes (a torch ``DataLoader``) that send uint8 crops;
the float conversion and ImageNet normalisation run batched in the reading process. Unreadable
images are found by a parallel decode check before anything is recorded and left out (counted and
named in a warning), or, with ``strict``, stop the run naming the file. torch, torchvision,
scikit-learn and Pillow are imported only inside the functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.files import read_regular
from engine.labels import ClassNames, coarse_groups, name_classes, read_coarse_table

log = logging.getLogger("layertour")

THUMB = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".lst")
_LIST_LIMIT = 4 * 2**30
_NAMED = 5  # unreadable files named in the warning (the rest are counted)


class InputSet:
    """N inputs in a fixed order.

    name, description : str
    n : int
    labels : (N,) int64 NumPy (indices into ``label_names``); label_names : list[str]
    thumbnails : (N, 32, 32, 3) uint8 NumPy. For decoded images they are filled as a by-product of
        ``batches`` (no extra decoding); reading the property before a full pass decodes the rest.
    batches(batch_size) : iterator of float32 (B, C, H, W) CPU tensors, in order, covering all N.
    stream(batch_size) : the same as ``(x, thumbnails (B, 32, 32, 3) uint8 or None)`` pairs, keeping
        nothing (memory independent of N).
    subset(rows) : the inputs at ``rows`` (sorted indices) as an InputSet.
    fingerprint : str identifying the content (which images, in which order, with which labels);
        a resumed ``prepare`` must see the same one. Default: a digest of name, description, labels.
    targets : (N,) int64 index of each input's class among the model's outputs, or None (the
        classes are not the model's: no prediction can be right or wrong).
    attributes : name -> {"values": (N,), "kind", "categories"} stored with the bundle (a coarse
        group); info : JSON facts for the provenance (how classes were named, skipped files).
    """

    def __init__(self, *, name: str, description: str, labels, label_names, batch_fn: Callable,
                 thumbnails: np.ndarray | None = None, fingerprint: str | None = None,
                 rows_fn: Callable | None = None, targets=None, attributes: dict | None = None,
                 info: dict | None = None, classes: ClassNames | None = None):
        self.name = name
        self.description = description
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names = [str(s) for s in label_names]
        self.n = int(self.labels.shape[0])
        if self.labels.ndim != 1 or self.n < 1:
            raise ValueError(f"input set {name!r}: labels must be a non-empty (N,) array, "
                             f"got {self.labels.shape}")
        if self.labels.min() < 0 or self.labels.max() >= len(self.label_names):
            raise ValueError(f"input set {name!r}: labels must lie in [0, {len(self.label_names)}) "
                             f"(one per label name), got [{self.labels.min()}, {self.labels.max()}]")
        self._batch_fn = batch_fn  # batch_size -> iterator of (x tensor, thumbs (B,32,32,3) uint8 | None)
        self._rows_fn = rows_fn  # sorted rows -> batch_fn over those rows only
        self.fingerprint = fingerprint or _digest(name, description, self.labels.tobytes(), *self.label_names)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        if self.targets is not None and self.targets.shape != (self.n,):
            raise ValueError(f"input set {name!r}: targets must be ({self.n},), got {self.targets.shape}")
        self.model_class_names: list[str] | None = None  # the K model classes ``targets`` index
        self.attributes = dict(attributes or {})
        self.info = dict(info or {})
        self.classes = classes
        self._given_thumbs = thumbnails is not None
        if thumbnails is not None:
            if thumbnails.shape != (self.n, THUMB, THUMB, 3) or thumbnails.dtype != np.uint8:
                raise ValueError(f"input set {name!r}: thumbnails must be uint8 ({self.n}, 32, 32, 3)")
            self._thumbs, self._have = thumbnails, np.ones(self.n, bool)
        else:
            self._thumbs = None  # allocated on the first storing pass (np.zeros: pages on first touch)
            self._have = np.zeros(self.n, bool)

    def __repr__(self) -> str:
        return f"InputSet({self.name!r}, n={self.n}, classes={len(self.label_names)})"

    def batches(self, batch_size: int) -> Iterator:
        """Float32 (B, C, H, W) CPU tensors in order; thumbnails made on the way are kept."""
        pos = 0
        for x, thumbs in self.stream(batch_size):
            b = int(x.shape[0])
            if thumbs is not None and not self._given_thumbs:
                if self._thumbs is None:
                    self._thumbs = np.zeros((self.n, THUMB, THUMB, 3), np.uint8)
                self._thumbs[pos:pos + b] = thumbs
                self._have[pos:pos + b] = True
            pos += b
            yield x

    def stream(self, batch_size: int) -> Iterator:
        """``(x float32 (B, C, H, W) CPU tensor, thumbnails (B, 32, 32, 3) uint8 or None)`` in order;
        nothing is kept (for in-memory sets the thumbnails are slices of the stored ones)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pos = 0
        for x, thumbs in self._batch_fn(int(batch_size)):
            b = int(x.shape[0])
            if thumbs is None and self._given_thumbs:
                thumbs = self._thumbs[pos:pos + b]
            pos += b
            yield x, thumbs

    @property
    def thumbnails(self) -> np.ndarray:
        if not self._have.all():
            for _ in self.batches(64):
                pass
        return self._thumbs

    def subset(self, rows) -> InputSet:
        """The inputs at ``rows`` ((R,) sorted, unique int indices in [0, n)), in that order: an
        InputSet whose batches decode only those rows (labels, targets, attributes follow)."""
        rows = np.asarray(rows, dtype=np.int64)
        if (rows.ndim != 1 or rows.size == 0 or rows[0] < 0 or rows[-1] >= self.n
                or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"input set {self.name!r}: subset rows must be sorted, unique and in "
                             f"[0, {self.n})")
        if self._rows_fn is not None:
            batch_fn, rows_fn = self._rows_fn(rows), (lambda r, base=rows: self._rows_fn(base[r]))
        else:  # read everything once, keep the chosen rows (in-memory sets only)
            batch_fn, rows_fn = _select_rows(self._batch_fn, rows), None
        attrs = {k: {**v, "values": np.asarray(v["values"])[rows]} for k, v in self.attributes.items()}
        sub = InputSet(name=self.name, description=f"{self.description} [{rows.size} rows]",
                       labels=self.labels[rows], label_names=self.label_names, batch_fn=batch_fn,
                       thumbnails=self._thumbs[rows] if self._given_thumbs else None,
                       fingerprint=_digest(self.fingerprint, rows.tobytes()), rows_fn=rows_fn,
                       targets=None if self.targets is None else self.targets[rows], attributes=attrs,
                       info=self.info, classes=self.classes)
        sub.model_class_names = self.model_class_names
        return sub

    def rows(self, a: int, b: int) -> InputSet:
        """Rows ``[a, b)`` (a shard)."""
        if not 0 <= a < b <= self.n:
            raise ValueError(f"input set {self.name!r}: rows [{a}, {b}) outside [0, {self.n})")
        return self if (a, b) == (0, self.n) else self.subset(np.arange(a, b, dtype=np.int64))


def _select_rows(batch_fn, rows: np.ndarray):
    """A batch function over ``rows`` (sorted) of ``batch_fn``'s inputs: reads them all once, in
    order, and re-batches the chosen rows to full batches."""

    def select(batch_size):
        import torch

        qx, qt, have, pos, last = [], [], 0, 0, int(rows[-1])
        for x, thumbs in batch_fn(batch_size):
            b = int(x.shape[0])
            lo, hi = np.searchsorted(rows, [pos, pos + b])
            if hi > lo:
                sel = rows[lo:hi] - pos
                qx.append(x[torch.from_numpy(sel)])
                qt.append(None if thumbs is None else thumbs[sel])
                have += int(hi - lo)
            pos += b
            while have >= batch_size:
                yield _take_batch(qx, qt, batch_size)
                have -= batch_size
            if pos > last:
                break
        if have:
            yield _take_batch(qx, qt, have)

    return select


def _take_batch(out_x: list, out_t: list, size: int):
    """Pop the first ``size`` rows of the queued pieces (x tensors, thumbs or None) as one batch."""
    import torch

    xs, ts, got = [], [], 0
    while out_x and got < size:
        x, t = out_x[0], out_t[0]
        k = min(size - got, int(x.shape[0]))
        xs.append(x[:k])
        ts.append(None if t is None else t[:k])
        if k == x.shape[0]:
            out_x.pop(0)
            out_t.pop(0)
        else:
            out_x[0], out_t[0] = x[k:], None if t is None else t[k:]
        got += k
    thumbs = None if any(t is None for t in ts) else np.concatenate(ts)
    return torch.cat(xs), thumbs


class ImageReadError(UserError, ValueError):
    """An image of an ``--images`` folder or list cannot be decoded; the message names the file."""


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def thumbnails_from(x01) -> np.ndarray:
    """(N, C, H, W) float tensor in [0, 1] -> (N, 32, 32, 3) uint8 (C = 1 grey, 3 RGB, else channel mean)."""
    import torch
    import torch.nn.functional as F

    x = x01.float()
    if x.shape[1] not in (1, 3):
        x = x.mean(dim=1, keepdim=True)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(THUMB, THUMB), mode="bilinear", align_corners=False, antialias=True)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _check_n(n, total: int, what: str) -> int:
    if n is None:
        return total
    if int(n) < 1:
        raise ValueError(f"{what}: n must be >= 1, got {n}")
    if int(n) > total:
        raise ValueError(f"{what}: n={n} is more than the {total} inputs available")
    return int(n)


def _memory_batches(x):
    def batch_fn(batch_size):
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], None

    return batch_fn


def _memory_rows(x):
    def rows_fn(rows):
        return _memory_batches(x[rows])

    return rows_fn


def digits_inputs(n: int | None = None, *, size: int = 8, channels: int = 1) -> InputSet:
    """scikit-learn's bundled 8×8 digits (1,797 images, classes 0-9), in the data set's order.

    Each image is scaled to [0, 1] (pixel / 16) and given as float32 (1, 8, 8); ``size`` > 8
    upsamples bilinearly to size×size (e.g. 32 for a small CNN); ``channels=3`` repeats the grey
    channel. No further normalisation. ``n`` takes the first n images.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    if channels not in (1, 3):
        raise ValueError(f"digits_inputs: channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"digits_inputs: size must be >= 1, got {size}")
    d = load_digits()
    n = _check_n(n, d.images.shape[0], "digits_inputs")
    raw = torch.from_numpy((d.images[:n] / 16.0).astype(np.float32)).unsqueeze(1)
    x = raw if size == 8 else F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, channels, -1, -1).contiguous()
    return InputSet(name="digits", labels=d.target[:n], label_names=[str(i) for i in range(10)],
                    description=f"scikit-learn digits: {n} images, {channels}×{size}×{size}, pixel/16",
                    batch_fn=_memory_batches(x), thumbnails=thumbnails_from(raw),
                    fingerprint=_digest("digits", n, size, channels), rows_fn=_memory_rows(x))


def tensor_inputs(x, labels=None, label_names=None, *, name: str = "tensor") -> InputSet:
    """Inputs from an array: ``x`` (N, C, H, W) or (N, H, W), torch tensor or NumPy, any float/int dtype.

    The batches are ``x`` as float32 CPU tensors, unchanged. ``labels`` (N,) ints (default: all 0,
    named "all"); ``label_names`` default ``["0", "1", ...]``. Thumbnails show each image min-max
    scaled to [0, 1] on its own.
    """
    import torch

    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[0] < 1:
        raise ValueError(f"tensor_inputs: x must be (N, C, H, W) or (N, H, W) with N >= 1, "
                         f"got {tuple(t.shape)}")
    t = t.float().contiguous()
    n = t.shape[0]
    if labels is None:
        labels = np.zeros(n, np.int64)
        label_names = label_names or ["all"]
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"tensor_inputs: labels must be ({n},) integers, got {labels.shape} {labels.dtype}")
    if label_names is None:
        label_names = [str(i) for i in range(int(labels.max()) + 1)]
    flat = t.reshape(n, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    x01 = (t - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    return InputSet(name=name, labels=labels, label_names=label_names,
                    description=f"tensor {tuple(t.shape)}", batch_fn=_memory_batches(t),
                    thumbnails=thumbnails_from(x01), rows_fn=_memory_rows(t),
                    fingerprint=_digest("tensor", tuple(t.shape), t.numpy().tobytes(), labels.tobytes()))


# ------------------------------------------------------------------------------------ synthetic


def _mix64(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 counters: a fast, well-mixed, seedless hash (vectorised)."""
    v = (v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    v = (v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return v ^ (v >> np.uint64(31))


def _uniform(seed: int, stream: int, counters: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 per counter (uint64), depending only on (seed, stream, counter)."""
    key = np.uint64((seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) % 2**64)
    with np.errstate(over="ignore"):
        return ((_mix64(counters.astype(np.uint64) ^ key) >> np.uint64(40)).astype(np.float32)
                * np.float32(2.0**-24))


def synthetic_inputs(n: int, *, size: int = 32, channels: int = 3, classes: int = 10, seed: int = 0,
                     noise: float = 0.35) -> InputSet:
    """``n`` procedural images (float32 (channels, size, size) in [0, 1]) in ``classes`` classes.

    Image i is its class's template (smooth random colour blobs, seeded) at a per-image brightness,
    plus per-pixel noise; every value depends only on (seed, i), through a counter hash, so any
    subset or range decodes to the same pixels and nothing is held in memory: an input set for
    runs at any N (10⁶ images cost 8 MB of labels). Thumbnails are the images themselves.
    """
    import torch
    import torch.nn.functional as F

    for what, v, lo in (("n", n, 1), ("size", size, 4), ("channels", channels, 1), ("classes", classes, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"synthetic_inputs: {what} must be an integer >= {lo}, got {v!r}")
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand((classes, channels, 4, 4), generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    templates = templates.numpy().reshape(classes, -1)
    pixels = channels * size * size
    labels = (_mix64(np.arange(n, dtype=np.uint64) + np.uint64(seed * 7919 + 1)) % np.uint64(classes)
              ).astype(np.int64)

    def images(rows: np.ndarray):
        r = rows.astype(np.uint64)
        bright = 0.6 + 0.8 * _uniform(seed, 1, r)
        eps = _uniform(seed, 2, r[:, None] * np.uint64(pixels) + np.arange(pixels, dtype=np.uint64)[None, :])
        x = templates[labels[rows]] * bright[:, None] + noise * (2.0 * eps - 1.0)
        x = np.clip(x, 0.0, 1.0, out=x).astype(np.float32)
        return torch.from_numpy(x.reshape(-1, channels, size, size))

    def rows_fn(rows):
        def batch_fn(batch_size):
            for i in range(0, rows.size, batch_size):
                x = images(rows[i:i + batch_size])
                yield x, thumbnails_from(x)

        return batch_fn

    return InputSet(name="synthetic", labels=labels, label_names=[f"class {k}" for k in range(classes)],
                    description=f"synthetic: {n} images, {channels}×{size}×{size}, {classes} classes, "
                                f"seed {seed}",
                    batch_fn=rows_fn(np.arange(n, dtype=np.int64)), rows_fn=rows_fn,
                    fingerprint=_digest("synthetic", n, size, channels, classes, seed, noise))


# ------------------------------------------------------------------------------------ image files


class FolderImages:
    """Dataset over (path, label) pairs: (uint8 (3,224,224) crop, (32,32,3) uint8 thumbnail, index
    of an unreadable image or -1). The crop is the study's (Resize 256, CenterCrop 224); the float
    conversion and normalisation run batched in the reading process (:func:`normalize_batch`), so
    worker processes send a quarter of the bytes. An image that cannot be decoded gives zeros and its
    index, so the error is raised in the reading process naming the file, instead of as a
    DataLoader worker's traceback."""

    def __init__(self, samples):
        from torchvision import transforms

        self.samples = samples
        self.crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])

    def __len__(self):
        return len(self.samples)

    def load(self, i):
        """(uint8 (3, 224, 224) tensor, (32, 32, 3) uint8 thumbnail) of image ``i``; raises
        :class:`ImageReadError` naming the file."""
        import torch
        from PIL import Image

        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                img = self.crop(im.convert("RGB"))
        except Exception as exc:  # PIL raises many types for a damaged or foreign file
            raise ImageReadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
        thumb = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.uint8)
        # NumPy's transposing copy: torch's permute(...).contiguous() of uint8 took 9 ms an image here
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))
        return x, torch.from_numpy(thumb.copy())

    def __getitem__(self, i):
        import torch

        try:
            x, thumb = self.load(i)
            return x, thumb, -1
        except ImageReadError:
            return (torch.zeros(3, 224, 224, dtype=torch.uint8),
                    torch.zeros(THUMB, THUMB, 3, dtype=torch.uint8), int(i))


def normalize_batch(x_u8):
    """(B, 3, H, W) uint8 -> float32 ``(x / 255 - mean) / std`` with the ImageNet mean and std
    (torchvision's ``to_tensor`` + ``normalize``, to float32 rounding), for a whole batch at once
    as one multiply and one subtract per channel."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).float()[:, None, None]
    shift = (mean / std).float()[:, None, None]
    return x_u8.float().mul_(scale).sub_(shift)


def default_workers() -> int:
    """Decoding worker processes by default: one per CPU core but one (the forward pass), 1 to 16."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def folder_samples(root) -> tuple[list, list[str]]:
    """``([(path, label), ...], classes)`` of an ImageFolder layout (classes = sorted sub-folders,
    files sorted within each). Raises an error naming the folder when it is missing or empty."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found (or not a directory)")
    try:
        ds = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise ValueError(f"image folder {root}: no readable images ({type(exc).__name__}: {exc}); expected "
                         f"{root}/<class>/<image file>") from exc
    return ds.samples, ds.classes


def list_samples(path) -> tuple[list, list[str]]:
    """``([(path, label), ...], classes)`` of a file list: one image per line, ``PATH`` or
    ``PATH<TAB>LABEL`` (``.csv``: ``path,label`` columns, an optional ``path`` header). Relative
    paths are relative to the list's folder; ``#`` lines and blank lines are skipped; classes are
    the sorted distinct labels (one class ``unlabelled`` when no line has a label). Raises
    ``ValueError`` naming the file and line for a malformed list."""
    path = Path(path)
    try:
        text = read_regular(path, limit=_LIST_LIMIT).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"image list {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    base = path.resolve().parent
    records: list[tuple[int, list[str]]] = []
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as exc:
            raise ValueError(f"image list {path}: not a CSV table ({exc})") from None
        for line, rec in enumerate(rows, 1):
            cells = [c.strip() for c in rec]
            if not any(cells) or (line == 1 and cells[0].casefold() == "path"):
                continue
            records.append((line, [c for c in cells if c] if len(cells) > 2 else cells))
    else:
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            records.append((line, [c.strip() for c in raw.split("\t")]))
    if not records:
        raise ValueError(f"image list {path}: lists no images")
    labelled = None
    samples_raw = []
    for line, cells in records:
        if len(cells) > 2 or not cells[0]:
            raise ValueError(f"image list {path}, line {line}: expected 'PATH' or 'PATH<tab>LABEL' "
                             f"({'path,label' if path.suffix.lower() == '.csv' else 'tab-separated'}), "
                             f"got {len(cells)} fields")
        has = len(cells) == 2 and bool(cells[1])
        if labelled is None:
            labelled = has
        elif has != labelled:
            raise ValueError(f"image list {path}, line {line}: {'no label' if labelled else 'a label'} "
                             f"where the first entry {'has one' if labelled else 'has none'}; label every "
                             "line or none")
        if any(ord(ch) < 32 or ch == "\x7f" for ch in "".join(cells)):
            raise ValueError(f"image list {path}, line {line}: control characters in the entry")
        p = Path(cells[0]).expanduser()
        samples_raw.append((str(p if p.is_absolute() else base / p), cells[1] if has else "unlabelled"))
    classes = sorted({lab for _, lab in samples_raw})
    index = {c: k for k, c in enumerate(classes)}
    return [(p, index[lab]) for p, lab in samples_raw], classes


def image_samples(source) -> tuple[list, list[str], str]:
    """``(samples, raw class names, "folder" | "list")`` of ``--images SOURCE``: a folder in
    ImageFolder layout or a file list (:data:`LIST_SUFFIXES`)."""
    source = Path(source)
    if source.is_dir():
        samples, classes = folder_samples(source)
        return samples, classes, "folder"
    if source.suffix.lower() in LIST_SUFFIXES:
        if not source.exists():
            raise FileNotFoundError(f"image list {source} not found")
        samples, classes = list_samples(source)
        return samples, classes, "list"
    if source.exists():
        raise ValueError(f"--images {source}: neither a folder (class/xxx.jpg) nor a file list "
                         f"({', '.join(LIST_SUFFIXES)})")
    raise FileNotFoundError(f"image folder {source} not found (or not a directory)")


def check_image(path) -> str | None:
    """Why the image at ``path`` cannot be decoded, or None. The whole file is decoded (JPEG at a
    reduced DCT scale, which still reads every coefficient), so a truncated file is caught."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))
            im.convert("RGB").load()
    except Exception as exc:  # every way a damaged or foreign file fails
        return f"{type(exc).__name__}: {exc}"
    return None


def scan_images(paths: Sequence[str], workers: int | None = None, progress: bool = False) -> dict:
    """Decode-check every path in parallel threads (Pillow decodes outside the GIL):
    ``{"bad": sorted indices that fail, "reasons": {index: why}, "seconds", "images_per_s"}``."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    threads = max(1, workers if workers else (os.cpu_count() or 1))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        why = list(tqdm(pool.map(check_image, paths, chunksize=64), total=len(paths), desc="checking images",
                        unit="img", disable=not progress, leave=False))
    dt = time.perf_counter() - t0
    bad = [i for i, w in enumerate(why) if w is not None]
    return {"bad": bad, "reasons": {i: why[i] for i in bad}, "seconds": round(dt, 3),
            "images_per_s": round(len(paths) / dt, 1) if dt > 0 else None, "threads": threads}


def image_inputs(source, n: int | None = None, workers: int | None = None, *,
                 rows: tuple[int, int] | None = None, strict: bool = False, drop: Sequence[int] | None = None,
                 categories: Sequence[str] | None = None, imagenet_names: Sequence[str] | None = None,
                 coarse=None, progress: bool = False) -> InputSet:
    """Images of ``source``: a folder ``source/<class>/<image>`` (torchvision ImageFolder
    conventions: classes = sorted sub-folder names, files sorted within each) or a file list
    (:func:`list_samples`), prepared as the study prepared ImageNet: Resize 256, CenterCrop 224,
    ImageNet mean/std normalisation -> float32 (3, 224, 224).

    n : how many (default all); a subset is evenly spaced over the sorted list, so every class
        keeps its share. More than available raises ``ValueError``.
    workers : DataLoader worker processes decoding images (default :func:`default_workers`); 0
        decodes in this process.
    rows : only rows ``[a, b)`` of the readable chosen images (a Dask shard), with the same files.
    strict : an unreadable image raises :class:`ImageReadError` naming the file when its batch is
        read. Default: every chosen image is decode-checked first (:func:`scan_images`, parallel)
        and those that fail are left out, counted and named in a warning and in ``info``.
    drop : positions (among the chosen images) already known to be unreadable (the client's
        check, given to Dask workers): left out without checking again.
    categories, imagenet_names : name the classes (:func:`engine.labels.name_classes`): the
        model's output classes and torchvision's ImageNet names; ``targets`` are set when the
        classes are the model's.
    coarse : a coarse table (path, :func:`engine.labels.read_coarse_table`): adds the categorical
        attribute ``label_coarse`` (classes it does not list go to ``unassigned``, logged).
    A missing or empty folder or list raises an error naming it.
    """
    import torch

    source = Path(source)
    all_samples, raw_classes, kind = image_samples(source)
    what = "image folder" if kind == "folder" else "image list"
    home = source if kind == "folder" else source.parent  # what reported names are relative to
    total = len(all_samples)
    n_chosen = _check_n(n, total, f"{what} {source}")
    idx = (np.arange(n_chosen, dtype=np.int64) * total) // n_chosen
    samples = [all_samples[i] for i in idx]
    info: dict = {"source": str(source), "kind": kind, "listed": total, "chosen": n_chosen}
    bad = sorted({int(i) for i in drop}) if drop is not None else []
    if drop is None and not strict:
        scan = scan_images([p for p, _ in samples], workers, progress)
        bad = scan["bad"]
        info["check"] = {k: scan[k] for k in ("seconds", "images_per_s", "threads")}
        if bad:
            names = [os.path.relpath(samples[i][0], home) for i in bad]
            more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
            shown = ", ".join(names[:_NAMED]) + more
            log.warning("%s %s: skipped %d unreadable of %d images: %s", what, source, len(bad), len(samples),
                        shown)
            for i in bad[:_NAMED]:
                log.info("unreadable: %s (%s)", samples[i][0], scan["reasons"][i])
            info["skipped"] = {"count": len(bad), "first": names[:_NAMED]}
    if bad:
        if bad[-1] >= len(samples) or bad[0] < 0:
            raise ValueError(f"{what} {source}: unreadable positions outside the {len(samples)} chosen "
                             "images")
        keep = np.setdiff1d(np.arange(len(samples)), np.asarray(bad, dtype=np.int64))
        if keep.size == 0:
            raise ImageReadError(f"{what} {source}: none of the {len(samples)} chosen images can be read")
        samples = [samples[i] for i in keep]
    a, b = rows if rows is not None else (0, len(samples))
    if not 0 <= a < b <= len(samples):
        raise ValueError(f"{what} {source}: rows [{a}, {b}) outside the {len(samples)} chosen images")
    chosen = samples[a:b]
    workers = default_workers() if workers is None else int(workers)
    cn = name_classes(raw_classes, categories, imagenet_names)
    info["class_names"] = cn.source
    labels = np.fromiter((s[1] for s in chosen), dtype=np.int64, count=len(chosen))
    targets = None if cn.targets is None else np.asarray(cn.targets, dtype=np.int64)[labels]
    attributes = {}
    if coarse is not None:
        attributes["label_coarse"], info["coarse"] = coarse_attribute(cn, raw_classes, labels, coarse)

    def rows_fn(sel: np.ndarray):
        data = FolderImages([chosen[i] for i in sel])

        def batch_fn(batch_size):
            loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                                 num_workers=workers)
            for x, thumbs, bad_rows in loader:
                failed = bad_rows[bad_rows >= 0]
                if failed.numel():
                    try:
                        data.load(int(failed[0]))  # raises ImageReadError naming the file, in this process
                    except ImageReadError as exc:
                        raise ImageReadError(f"{exc} ({failed.numel()} unreadable in this batch; run without "
                                             "--strict to leave unreadable images out)") from None
                yield normalize_batch(x), thumbs.numpy()

        return batch_fn

    stats = []
    for p, _ in chosen:
        try:
            st = os.stat(p)
            rel = os.path.relpath(p, home)
            stats.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stats.append(f"{p}:missing")
    part = "" if rows is None else f" rows {a}:{b}"
    inputs = InputSet(name=source.stem if kind == "list" else source.name, labels=labels,
                      label_names=cn.names,
                      description=f"{len(samples)} of {total} images in {source} ({len(raw_classes)} classes)"
                                  f"{part}; Resize 256, CenterCrop 224, ImageNet normalisation",
                      batch_fn=rows_fn(np.arange(len(chosen))), rows_fn=rows_fn, targets=targets,
                      attributes=attributes, info=info, classes=cn,
                      fingerprint=_digest("folder" if kind == "folder" else "list", *stats, *labels.tolist()))
    inputs.dropped = np.asarray(bad, dtype=np.int64)  # positions among the chosen files left out
    # the model's K classes, which ``targets`` index (a prediction's categories)
    inputs.model_class_names = [str(c) for c in categories] if targets is not None and categories else None
    return inputs


def coarse_attribute(classes: ClassNames, raw: Sequence[str], labels: np.ndarray, path) -> tuple[dict, dict]:
    """The ``label_coarse`` attribute of inputs with class ``labels`` from the coarse table at
    ``path`` (:func:`engine.labels.coarse_groups`): ``({"values": (N,) int32, "kind", "categories"},
    provenance facts)``; classes the table does not list are logged (count and first names)."""
    codes, groups, unmatched = coarse_groups(classes, raw, read_coarse_table(path), f"--coarse {path}")
    if unmatched:
        log.warning("--coarse %s: %d of %d classes are not in the table (group %r): %s%s", path,
                    len(unmatched), len(classes.names), "unassigned", ", ".join(unmatched[:_NAMED]),
                    " ..." if len(unmatched) > _NAMED else "")
    attr = {"values": np.asarray(codes, dtype=np.int32)[labels], "kind": "categorical", "categories": groups}
    return attr, {"table": str(path), "groups": len(groups), "unassigned_classes": len(unmatched)}


def with_coarse(inputs: InputSet, path) -> InputSet:
    """``inputs`` with the ``label_coarse`` attribute of the coarse table at ``path``, matched by
    the inputs' class names (for sets not read by :func:`image_inputs`, e.g. digits)."""
    cn = inputs.classes or name_classes(inputs.label_names)
    inputs.attributes["label_coarse"], inputs.info["coarse"] = coarse_attribute(cn, inputs.label_names,
                                                                                inputs.labels, path)
    return inputs


def image_folder_inputs(path, n: int | None = None, workers: int | None = None, *,
                        rows: tuple[int, int] | None = None, skip_unreadable: bool = False,
                        progress: bool = False) -> InputSet:
    """:func:`image_inputs` of a folder with the older default: an unreadable image stops the read
    (``skip_unreadable=True``: checked first and left out). Kept for callers of the first API."""
    return image_inputs(path, n, workers, rows=rows, strict=not skip_unreadable, progress=progress)
