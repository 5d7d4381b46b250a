"""engine.inputs: digits, image folders (written here with Pillow) and tensors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

from engine.inputs import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    digits_inputs,
    image_folder_inputs,
    tensor_inputs,
)


def _all(inputs, batch_size):
    return torch.cat(list(inputs.batches(batch_size))).numpy()


def test_digits_raw_and_upsampled():
    from sklearn.datasets import load_digits

    d = load_digits()
    full = digits_inputs()
    assert full.n == 1797 and full.label_names == [str(i) for i in range(10)]
    assert full.labels.dtype == np.int64
    np.testing.assert_array_equal(full.labels, d.target)
    x = _all(full, 500)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], d.images / 16.0, rtol=1e-6)
    th = full.thumbnails
    assert th.shape == (1797, 32, 32, 3) and th.dtype == np.uint8
    assert (th[..., 0] == th[..., 2]).all() and th.max() > 200  # grey, ink bright
    up = digits_inputs(20, size=32, channels=3)
    xu = _all(up, 7)
    assert xu.shape == (20, 3, 32, 32) and up.n == 20
    # Bilinear upsampling preserves the mean intensity of each image to within interpolation error.
    np.testing.assert_allclose(xu.mean(axis=(1, 2, 3)), (d.images[:20] / 16.0).mean(axis=(1, 2)), atol=0.05)
    with pytest.raises(ValueError, match="n=1798 is more than the 1797"):
        digits_inputs(1798)
    with pytest.raises(ValueError, match="n must be >= 1"):
        digits_inputs(0)
    with pytest.raises(ValueError, match="batch_size"):
        next(full.batches(0))


def _write_folder(root, rng, sizes=((300, 260), (260, 300), (257, 256))):
    """Two classes of solid-colour images; returns {(class, file): colour}."""
    colours = {}
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for j, (w, h) in enumerate(sizes):
            c = tuple(int(v) for v in rng.integers(0, 256, size=3))
            Image.new("RGB", (w, h), c).save(root / cls / f"img{j}.png")
            colours[(cls, j)] = c
    return colours


def test_image_folder_solid_colours(tmp_path, rng):
    colours = _write_folder(tmp_path / "set", rng)
    inputs = image_folder_inputs(tmp_path / "set", workers=0)
    assert inputs.n == 6 and inputs.label_names == ["cat", "dog"] and inputs.name == "set"
    np.testing.assert_array_equal(inputs.labels, [0, 0, 0, 1, 1, 1])
    x = _all(inputs, 4)
    assert x.shape == (6, 3, 224, 224) and x.dtype == np.float32
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    for i, key in enumerate(sorted(colours)):  # ImageFolder order: classes sorted, then files sorted
        c = np.array(colours[key], dtype=np.float64)
        ref = (c / 255.0 - mean) / std
        np.testing.assert_allclose(x[i].reshape(3, -1).mean(axis=1), ref, atol=1e-5)
        assert np.ptp(x[i].reshape(3, -1), axis=1).max() < 1e-5  # a solid image stays solid
        np.testing.assert_array_equal(inputs.thumbnails[i], np.broadcast_to(c.astype(np.uint8), (32, 32, 3)))


def test_image_folder_centre_crop_and_workers(tmp_path, rng):
    root = tmp_path / "crop" / "only"
    root.mkdir(parents=True)
    inner = tuple(int(v) for v in rng.integers(0, 256, size=3))
    # Resize(256) keeps 512×256; CenterCrop(224) keeps columns 144..367 (rows 16..239).
    img = Image.new("RGB", (512, 256), (0, 255, 0))
    img.paste(Image.new("RGB", (312, 256), inner), (100, 0))  # columns 100..411: covers the whole crop
    img.save(root / "a.png")
    img.save(root / "b.jpg", quality=100)
    inputs = image_folder_inputs(tmp_path / "crop", workers=1)
    thumbs_before = inputs._have.copy()
    x = _all(inputs, 1)
    assert not thumbs_before.any() and inputs._have.all()  # thumbnails were filled by the pass itself
    ref = (np.array(inner) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0].reshape(3, -1).mean(axis=1), ref, atol=1e-5)
    np.testing.assert_allclose(x[1].reshape(3, -1).mean(axis=1), ref, atol=0.05)  # JPEG


def test_image_folder_subset_and_lazy_thumbnails(tmp_path, rng):
    colours = _write_folder(tmp_path / "s", rng)
    inputs = image_folder_inputs(tmp_path / "s", n=3, workers=0)
    assert inputs.n == 3 and set(inputs.labels) == {0, 1}  # evenly spaced: both classes
    th = inputs.thumbnails  # before any batch: decodes
    keys = sorted(colours)
    for i, idx in enumerate((np.arange(3) * 6) // 3):
        assert tuple(th[i, 5, 5]) == colours[keys[idx]]
    with pytest.raises(ValueError, match="n=7 is more than the 6"):
        image_folder_inputs(tmp_path / "s", n=7)


def test_image_folder_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="nothere"):
        image_folder_inputs(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="image folder .*empty: no readable images"):
        image_folder_inputs(tmp_path / "empty")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="noimg: no readable images"):
        image_folder_inputs(tmp_path / "noimg")
    _write_folder(tmp_path / "bad", rng, sizes=((40, 40),))
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    inputs = image_folder_inputs(tmp_path / "bad", workers=0)
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        _all(inputs, 2)


def test_tensor_inputs(rng):
    x = rng.standard_normal((5, 6, 7)).astype(np.float64)  # (N, H, W): gets a channel axis
    labels = rng.integers(0, 3, size=5)
    inputs = tensor_inputs(x, labels)
    got = _all(inputs, 2)
    assert got.shape == (5, 1, 6, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], x, rtol=1e-6)
    assert inputs.label_names == [str(i) for i in range(int(labels.max()) + 1)]
    th = inputs.thumbnails
    assert th.shape == (5, 32, 32, 3) and th.min() < 30 and th.max() > 225  # min-max scaled per image
    plain = tensor_inputs(torch.from_numpy(rng.standard_normal((2, 3, 4, 4)).astype(np.float32)))
    assert plain.label_names == ["all"] and (plain.labels == 0).all()
    with pytest.raises(ValueError, match=r"labels must be \(5,\) integers"):
        tensor_inputs(x, labels[:4])
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        tensor_inputs(rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        tensor_inputs(x, np.full(5, 2), label_names=["a", "b"])
