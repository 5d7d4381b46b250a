"""Real image sets for ``prepare``: an ImageNet-style folder (WordNet-id folders of JPEGs) named by
the weights' categories with coarse groups, file lists, unreadable images, and subsets of every
kind of input set (what a streaming run records its fit sample from)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

import engine  # noqa: E402
from engine.cli import main as cli_main  # noqa: E402
from engine.inputs import (  # noqa: E402
    ImageReadError,
    check_image,
    digits_inputs,
    image_inputs,
    list_samples,
    synthetic_inputs,
)
from engine.models import imagenet_categories, model_categories  # noqa: E402

CATS = model_categories("resnet18")
COARSE = "category,labels\nfish,tench,goldfish\nbird,crane (bird),hen\nvehicle,crane\n"


def _imagenet_folder(root, rng, per_class=4):
    """Two WordNet-id folders of small JPEGs (tench, crane the bird), colours by class."""
    for wnid, base in (("n01440764", (40, 90, 160)), ("n02012849", (200, 180, 60))):
        (root / wnid).mkdir(parents=True)
        for j in range(per_class):
            px = np.clip(np.array(base) + rng.integers(-30, 30, (60 + 4 * j, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / wnid / f"{wnid}_{j:04d}.JPEG", quality=90)
    return root


def test_an_imagenet_folder_is_named_by_the_weights_and_grouped(tmp_path, rng):
    root = _imagenet_folder(tmp_path / "val", rng)
    (tmp_path / "coarse.csv").write_text(COARSE)
    inputs = image_inputs(root, workers=0, categories=CATS, coarse=tmp_path / "coarse.csv")
    assert inputs.label_names == [CATS[0], CATS[134]] == ["tench", "crane bird"]
    np.testing.assert_array_equal(inputs.labels, [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(inputs.targets, [0] * 4 + [134] * 4)  # the model's output classes
    coarse = inputs.attributes["label_coarse"]
    assert coarse["categories"] == ["fish", "bird"]  # the bird crane, not the machine
    np.testing.assert_array_equal(coarse["values"], [0] * 4 + [1] * 4)
    assert "weights' categories" in inputs.info["class_names"] and inputs.info["coarse"]["groups"] == 2
    x = torch.cat(list(inputs.batches(3)))
    assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32
    # No model classes: the table's names, no targets; the coarse table still matches them.
    plain = image_inputs(root, workers=0, imagenet_names=imagenet_categories(),
                         coarse=tmp_path / "coarse.csv")
    assert plain.label_names == ["tench", "crane bird"] and plain.targets is None
    assert plain.attributes["label_coarse"]["categories"] == ["fish", "bird"]


def test_file_lists_with_and_without_labels(tmp_path, rng):
    root = _imagenet_folder(tmp_path / "val", rng, per_class=2)
    files = sorted(root.rglob("*.JPEG"))
    lst = tmp_path / "lists" / "images.txt"
    lst.parent.mkdir()
    lines = ["# images and their classes", ""]
    lines += [f"../val/{p.parent.name}/{p.name}\t{p.parent.name}" for p in files]
    lst.write_text("\n".join(lines[:3] + lines[:1] + lines[3:]) + "\n")
    inputs = image_inputs(lst, workers=0, categories=CATS)
    assert inputs.n == 4 and inputs.name == "images" and inputs.label_names == ["tench", "crane bird"]
    np.testing.assert_array_equal(inputs.targets, [0, 0, 134, 134])
    csv = tmp_path / "lists" / "pets.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{'cat' if i % 2 else 'dog'}\n"
                                             for i, p in enumerate(files)))
    pets = image_inputs(csv, workers=0, categories=CATS)
    assert pets.label_names == ["cat", "dog"] and pets.targets is None
    np.testing.assert_array_equal(pets.labels, [1, 0, 1, 0])
    bare = tmp_path / "lists" / "bare.lst"
    bare.write_text("".join(f"{p}\n" for p in files))
    assert list_samples(bare)[1] == ["unlabelled"]
    for text, match in ((f"{files[0]}\tdog\n{files[1]}\n", "line 2: no label"),
                        (f"{files[0]}\ta\tb\n", "line 1: expected"), ("# nothing\n", "lists no images")):
        bad = tmp_path / "lists" / "bad.txt"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            image_inputs(bad, workers=0)


def test_unreadable_images_are_skipped_and_named_or_stop_a_strict_run(tmp_path, rng, caplog):
    root = _imagenet_folder(tmp_path / "val", rng, per_class=3)
    good = next(root.rglob("*.JPEG")).read_bytes()
    (root / "n01440764" / "n01440764_9998.JPEG").write_bytes(good[: len(good) // 2])  # truncated
    (root / "n02012849" / "n02012849_9999.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG at all")
    assert "truncated" in check_image(root / "n01440764" / "n01440764_9998.JPEG")
    with caplog.at_level(logging.WARNING, logger="layertour"):
        kept = image_inputs(root, workers=1)
    assert kept.n == 6 and kept.info["skipped"]["count"] == 2
    assert "skipped 2 unreadable of 8 images" in caplog.text and "n02012849_9999.JPEG" in caplog.text
    assert sum(x.shape[0] for x in kept.batches(4)) == 6
    strict = image_inputs(root, workers=0, strict=True)
    with pytest.raises(ImageReadError, match=r"cannot read image .*_999[89]\.JPEG.*--strict"):
        for _ in strict.batches(4):
            pass


def test_subsets_decode_only_their_rows_and_equal_the_full_pass(tmp_path, rng):
    root = _imagenet_folder(tmp_path / "val", rng, per_class=3)
    rows = np.array([1, 2, 5])
    for full in (image_inputs(root, workers=0), digits_inputs(n=40), synthetic_inputs(50, size=8, seed=4)):
        xs = torch.cat(list(full.batches(4))).numpy()
        part = full.subset(rows)
        got = torch.cat(list(part.batches(2))).numpy()
        np.testing.assert_array_equal(got, xs[rows])
        np.testing.assert_array_equal(part.labels, full.labels[rows])
        np.testing.assert_array_equal(part.thumbnails, full.thumbnails[rows])
        inner = part.subset(np.array([0, 2]))  # a subset of a subset
        np.testing.assert_array_equal(torch.cat(list(inner.batches(5))).numpy(), xs[rows[[0, 2]]])
    with pytest.raises(ValueError, match="sorted, unique"):
        full.subset(np.array([3, 1]))


def test_synthetic_images_depend_only_on_seed_and_row():
    a, b = synthetic_inputs(300, seed=7), synthetic_inputs(300, seed=7)
    xa = torch.cat([x for x, _ in a.stream(64)]).numpy()
    xb = torch.cat([x for x, _ in b.rows(100, 300).stream(37)]).numpy()
    np.testing.assert_array_equal(xa[100:], xb)
    assert xa.shape == (300, 3, 32, 32) and 0.0 <= xa.min() and xa.max() <= 1.0
    assert len(set(a.labels.tolist())) == 10 and not np.array_equal(xa, synthetic_inputs(300, seed=8)
                                                                     .subset(np.arange(300)).thumbnails)


@pytest.mark.slow
def test_prepare_on_an_imagenet_folder_records_names_and_coarse_groups(tmp_path, rng, caplog):
    root = _imagenet_folder(tmp_path / "val", rng, per_class=6)
    (root / "n01440764" / "n01440764_9999.JPEG").write_bytes(b"not an image")
    (tmp_path / "coarse.csv").write_text(COARSE)
    out = tmp_path / "imagenet.lt"
    with caplog.at_level(logging.WARNING, logger="layertour"):
        rc = cli_main(["prepare", "--model", "resnet18", "--weights", "none", "--images", str(root),
                       "--layers", "fc", "--coarse", str(tmp_path / "coarse.csv"), "--device", "cpu",
                       "--umap-backend", "umap-learn", "--n-neighbors", "3", "--batch-size", "4", "--workers",
                       "1", "--out", str(out)])
    assert rc == 0 and "skipped 1 unreadable of 13 images" in caplog.text
    b = engine.load_bundle(out)
    assert b.n == 12 and b.default_attribute == "label"
    assert b.attributes["label"].categories == ["tench", "crane bird"]
    assert b.attributes["label_coarse"].categories == ["fish", "bird"]
    np.testing.assert_array_equal(np.asarray(b.attributes["label_coarse"].values), [0] * 6 + [1] * 6)
    info = b.provenance["input_info"]
    assert info["skipped"] == {"count": 1, "first": ["n01440764/n01440764_9999.JPEG"]}
    assert info["check"]["images_per_s"] > 0 and "weights' categories" in info["class_names"]
    # resnet18 is a classifier over ImageNet's 1,000 classes, of which these two folders are two:
    # its outputs are attributes with the model's class names, judged against the folders' classes
    pred = b.attributes["prediction"]
    assert len(pred.categories) == 1000 and pred.categories[0] == "tench"
    targets = np.array([0] * 6 + [134] * 6)  # tench, crane (bird)
    np.testing.assert_array_equal(np.asarray(b.attributes["correct"].values),
                                  (np.asarray(pred.values) == targets).astype(int))
    conf, loss = (np.asarray(b.attributes[k].values, dtype=np.float64) for k in ("confidence", "loss"))
    np.testing.assert_allclose(loss, -np.log(conf), rtol=1e-4)
    assert b.models["resnet18"].meta["loss"] == pytest.approx(loss.mean(), rel=1e-5)
    # the same attributes when the run streams (engine.outputs.ClassifierHook, chunk by chunk)
    streamed = tmp_path / "streamed.lt"
    assert cli_main(["prepare", "--model", "resnet18", "--weights", "none", "--images", str(root),
                     "--layers", "fc", "--device", "cpu", "--umap-backend", "umap-learn",
                     "--n-neighbors", "2", "--batch-size", "4", "--workers", "1", "--stream",
                     "--fit-sample", "6", "--out", str(streamed)]) == 0
    s = engine.load_bundle(streamed)
    assert s.provenance["stream"] is not None
    for k in ("prediction", "correct", "confidence", "top1_confidence", "loss"):
        np.testing.assert_allclose(np.asarray(s.attributes[k].values), np.asarray(b.attributes[k].values),
                                   rtol=1e-5, atol=1e-6, err_msg=k)
    assert s.attributes["prediction"].categories == pred.categories


def test_dask_workers_rebuild_the_clients_images_without_checking_again(tmp_path, rng):
    pytest.importorskip("distributed")
    from engine.distributed import InputRecipe

    root = _imagenet_folder(tmp_path / "val", rng, per_class=3)
    (root / "n01440764" / "n01440764_0001.JPEG").write_bytes(b"broken")
    client = image_inputs(root, workers=0, categories=CATS)
    assert client.n == 5 and client.dropped.tolist() == [1]
    recipe = InputRecipe.from_images(root, client, categories=CATS)
    parts = [recipe.shard(a, b).build() for a, b in ((0, 2), (2, 5))]
    got = torch.cat([torch.cat(list(p.batches(2))) for p in parts])
    np.testing.assert_array_equal(got.numpy(), torch.cat(list(client.batches(5))).numpy())
    np.testing.assert_array_equal(np.concatenate([p.targets for p in parts]), client.targets)
    assert parts[0].label_names == client.label_names
