"""Input sets for recording: scikit-learn's digits, an image folder, or a tensor.

An :class:`InputSet` yields float32 (B, C, H, W) CPU tensors in a fixed order (``batches``) and
carries per-input ``labels`` ((N,) int64), ``label_names`` and 32-px RGB ``thumbnails``
((N, 32, 32, 3) uint8, made from the un-normalised image). torch, torchvision, scikit-learn and
Pillow are imported only inside the functions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from engine.errors import UserError

log = logging.getLogger("layertour")

THUMB = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputSet:
    """N inputs in a fixed order.

    name, description : str
    n : int
    labels : (N,) int64 NumPy (indices into ``label_names``); label_names : list[str]
    thumbnails : (N, 32, 32, 3) uint8 NumPy. For an image folder they are filled as a by-product of
        ``batches`` (no extra decoding); reading the property before a full pass decodes the rest.
    batches(batch_size) : iterator of float32 (B, C, H, W) CPU tensors, in order, covering all N.
    fingerprint : str identifying the content (which images, in which order, with which labels);
        a resumed ``prepare`` must see the same one. Default: a digest of name, description, labels.
    """

    def __init__(self, *, name: str, description: str, labels, label_names, batch_fn: Callable,
                 thumbnails: np.ndarray | None = None, fingerprint: str | None = None):
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
        self.fingerprint = fingerprint or _digest(name, description, self.labels.tobytes(), *self.label_names)
        if thumbnails is not None:
            if thumbnails.shape != (self.n, THUMB, THUMB, 3) or thumbnails.dtype != np.uint8:
                raise ValueError(f"input set {name!r}: thumbnails must be uint8 ({self.n}, 32, 32, 3)")
            self._thumbs, self._have = thumbnails, np.ones(self.n, bool)
        else:
            self._thumbs = np.zeros((self.n, THUMB, THUMB, 3), np.uint8)
            self._have = np.zeros(self.n, bool)

    def __repr__(self) -> str:
        return f"InputSet({self.name!r}, n={self.n}, classes={len(self.label_names)})"

    def batches(self, batch_size: int) -> Iterator:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pos = 0
        for x, thumbs in self._batch_fn(batch_size):
            b = int(x.shape[0])
            if thumbs is not None:
                self._thumbs[pos:pos + b] = thumbs
                self._have[pos:pos + b] = True
            pos += b
            yield x

    @property
    def thumbnails(self) -> np.ndarray:
        if not self._have.all():
            for _ in self.batches(64):
                pass
        return self._thumbs


class ImageReadError(UserError, ValueError):
    """An image of an ``--images`` folder cannot be decoded; the message names the file."""


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
                    fingerprint=_digest("digits", n, size, channels))


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
                    thumbnails=thumbnails_from(x01),
                    fingerprint=_digest("tensor", tuple(t.shape), t.numpy().tobytes(), labels.tobytes()))


class FolderImages:
    """Dataset over (path, label) pairs: (normalised (3,224,224) float32, (32,32,3) uint8 thumbnail,
    index of an unreadable image or -1). An image that cannot be decoded gives zeros and its index,
    so the error is raised in the reading process (:func:`_folder_batches`) naming the file,
    instead of as a DataLoader worker's traceback."""

    def __init__(self, samples):
        from torchvision import transforms

        self.samples = samples
        self.crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])

    def __len__(self):
        return len(self.samples)

    def load(self, i):
        """(normalised (3, 224, 224) tensor, (32, 32, 3) uint8 thumbnail) of image ``i``; raises
        :class:`ImageReadError` naming the file."""
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        path, _label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = self.crop(im.convert("RGB"))
        except Exception as exc:  # PIL raises many types for a damaged or foreign file
            raise ImageReadError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
        thumb = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.uint8)
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        return x, torch.from_numpy(thumb.copy())

    def __getitem__(self, i):
        import torch

        try:
            x, thumb = self.load(i)
            return x, thumb, -1
        except ImageReadError:
            return torch.zeros(3, 224, 224), torch.zeros(THUMB, THUMB, 3, dtype=torch.uint8), int(i)


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


def _readable(data: FolderImages, progress: bool) -> list[int]:
    """Indices of the images of ``data`` that decode (each is decoded once, in a thread pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def ok(i):
        try:
            data.load(i)
            return True
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            return False

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        flags = list(tqdm(pool.map(ok, range(len(data))), total=len(data), desc="checking images",
                          unit="img", disable=not progress))
    return [i for i, f in enumerate(flags) if f]


def image_folder_inputs(path, n: int | None = None, workers: int | None = None, *,
                        rows: tuple[int, int] | None = None, skip_unreadable: bool = False,
                        progress: bool = False) -> InputSet:
    """Images in ``path/<class>/<image>`` (torchvision ImageFolder conventions: classes = sorted
    sub-folder names, files sorted within each), as the study prepared ImageNet: Resize 256,
    CenterCrop 224, ImageNet mean/std normalisation -> float32 (3, 224, 224).

    n : how many (default all); a subset is evenly spaced over the sorted list, so every class
        keeps its share. More than available raises ``ValueError``.
    workers : DataLoader worker processes decoding images (default min(4, CPU count)); 0 decodes in
        this process.
    rows : only rows ``[a, b)`` of those n images (a Dask shard), with the same files.
    skip_unreadable : first decode every chosen image once (a progress bar) and drop those that
        fail, logging each and the count; the survivors are the input set. Without it, an
        unreadable image raises :class:`ImageReadError` naming the file when its batch is read.
    A missing or empty folder raises an error naming it.
    """
    import torch

    root = Path(path)
    all_samples, classes = folder_samples(root)
    total = len(all_samples)
    n = _check_n(n, total, f"image folder {root}")
    idx = (np.arange(n, dtype=np.int64) * total) // n
    samples = [all_samples[i] for i in idx]
    if skip_unreadable:
        keep = _readable(FolderImages(samples), progress)
        if len(keep) < len(samples):
            log.warning("image folder %s: skipped %d unreadable of %d images", root, len(samples) - len(keep),
                        len(samples))
        if not keep:
            raise ImageReadError(f"image folder {root}: none of the {len(samples)} chosen images can be read")
        samples = [samples[i] for i in keep]
    a, b = rows if rows is not None else (0, len(samples))
    if not 0 <= a < b <= len(samples):
        raise ValueError(f"image folder {root}: rows [{a}, {b}) outside the {len(samples)} chosen images")
    chosen = samples[a:b]
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    data = FolderImages(chosen)

    def batch_fn(batch_size):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
        for x, thumbs, bad in loader:
            failed = bad[bad >= 0]
            if failed.numel():
                try:
                    data.load(int(failed[0]))  # raises ImageReadError naming the file, in this process
                except ImageReadError as exc:
                    raise ImageReadError(f"{exc} ({failed.numel()} unreadable in this batch; pass "
                                         "--skip-unreadable to leave such images out)") from None
            yield x, thumbs.numpy()

    stats = []
    for p, _ in chosen:
        try:
            st = os.stat(p)
            stats.append(f"{os.path.relpath(p, root)}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            stats.append(f"{p}:missing")
    part = "" if rows is None else f" rows {a}:{b}"
    return InputSet(name=root.name, labels=[s[1] for s in chosen], label_names=classes,
                    description=f"{len(samples)} of {total} images in {root} ({len(classes)} classes)"
                                f"{part}; Resize 256, CenterCrop 224, ImageNet normalisation",
                    batch_fn=batch_fn, fingerprint=_digest("folder", *stats, *(s[1] for s in chosen)))
