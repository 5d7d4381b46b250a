"""Input sets for recording: scikit-learn's digits, an image folder, or a tensor.

An :class:`InputSet` yields float32 (B, C, H, W) CPU tensors in a fixed order (``batches``) and
carries per-input ``labels`` ((N,) int64), ``label_names`` and 32-px RGB ``thumbnails``
((N, 32, 32, 3) uint8, made from the un-normalised image). torch, torchvision, scikit-learn and
Pillow are imported only inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

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
    """

    def __init__(self, *, name: str, description: str, labels, label_names, batch_fn: Callable,
                 thumbnails: np.ndarray | None = None):
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
                    batch_fn=_memory_batches(x), thumbnails=thumbnails_from(raw))


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
                    thumbnails=thumbnails_from(x01))


class _FolderImages:
    """Dataset over (path, label) pairs: (normalised (3,224,224) float32, (32,32,3) uint8 thumbnail)."""

    def __init__(self, samples):
        from torchvision import transforms

        self.samples = samples
        self.crop = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        path, _label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = self.crop(im.convert("RGB"))
        except Exception as exc:
            raise ValueError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
        thumb = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.uint8)
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        return x, torch.from_numpy(thumb.copy())


def image_folder_inputs(path, n: int | None = None, workers: int | None = None) -> InputSet:
    """Images in ``path/<class>/<image>`` (torchvision ImageFolder conventions: classes = sorted
    sub-folder names, files sorted within each), as the study prepared ImageNet: Resize 256,
    CenterCrop 224, ImageNet mean/std normalisation -> float32 (3, 224, 224).

    n : how many (default all); a subset is evenly spaced over the sorted list, so every class
        keeps its share. More than available raises ``ValueError``.
    workers : DataLoader worker processes decoding images (default min(4, CPU count)); 0 decodes in
        this process.
    A missing, empty or unreadable folder raises an error naming it; an unreadable image raises
    ``ValueError`` naming the file when its batch is read.
    """
    import torch
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found (or not a directory)")
    try:
        ds = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise ValueError(f"image folder {root}: no readable images ({type(exc).__name__}: {exc}); expected "
                         f"{root}/<class>/<image file>") from exc
    total = len(ds.samples)
    n = _check_n(n, total, f"image folder {root}")
    idx = (np.arange(n, dtype=np.int64) * total) // n
    samples = [ds.samples[i] for i in idx]
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    data = _FolderImages(samples)

    def batch_fn(batch_size):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
        for x, thumbs in loader:
            yield x, thumbs.numpy()

    return InputSet(name=root.name, labels=[s[1] for s in samples], label_names=ds.classes,
                    description=f"{n} of {total} images in {root} ({len(ds.classes)} classes); "
                                "Resize 256, CenterCrop 224, ImageNet normalisation",
                    batch_fn=batch_fn)
