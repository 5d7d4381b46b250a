"""Bad bundles, study directories and arguments are refused with an error that names the culprit.

One test per class of issue 11: paths from a bundle that lead outside the export directory, NaN/Inf
and non-orthogonal arrays, corrupt ``.npy`` content in every command, control characters in
names, special files, bad meta extents and ``data_shape``, a quoted newline in a CSV field (which
is valid), bundles nobody can view, atomic files' modes, and the prepare arguments that used to
end in a traceback (a corrupt image, a non-weights file, a factory with a syntax error, a UMAP
back end that is not installed).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _studyfiles import leftovers, write_study

import engine
from engine.cli import main
from engine.files import NotRegularFileError, read_regular, write_atomic, write_text_atomic
from engine.store import BundleError, BundleWriter, load_bundle, open_npy
from engine.studyformat import export_umap_tour, import_umap_tour

N, P = 64, 5


def _rotation(rng, p=P):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def _bundle(path, rng, *, layers=3, meta=None):
    w = BundleWriter(path, n=N, dim=P)
    w.add_model("m", meta=meta)
    for i in range(layers):
        w.write_layer("m", f"L{i}", rng.standard_normal((N, P)), name=f"layer {i}")
        w.set_alignment("m", f"L{i}", _rotation(rng), rng.standard_normal(P))
    w.set_attribute("label", rng.integers(0, 3, N), "categorical", categories=["a", "b", "c"])
    w.set_attribute("conf", rng.uniform(0, 1, N), "continuous")
    return w.commit()


def _poke(path: Path, values, offset_rows=None):
    """Overwrite the data of the .npy ``path`` in place with ``values`` (same dtype), keeping its header."""
    arr = np.load(path, mmap_mode="r+")
    if offset_rows is None:
        arr[...] = values
    else:
        arr[offset_rows] = values
    arr.flush()
    del arr


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _set_manifest(path, m):
    (path / "manifest.json").write_text(json.dumps(m))


# ----------------------------------------------------------------------------- paths from files


@pytest.mark.parametrize("name", ["/tmp/evil.bin", "../evil.bin", "labels/../../evil.bin", "sub/labels.bin",
                                  "labels\n.bin"])
def test_export_never_writes_outside_its_directory(tmp_path, rng, name):
    """A bundle's model meta names label files; a path there must not leave the export directory."""
    meta = {"source": "umap-tour",
            "umap_tour": {"columns": {"label": "label"}, "label_files": {name: "label"}, "csv_columns": []}}
    bundle = _bundle(tmp_path / "b.lt", rng, meta=meta)
    out = tmp_path / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(BundleError, match="label file") as ei:
        export_umap_tour(bundle, out)
    assert "b.lt" in str(ei.value) and "'m'" in str(ei.value)
    assert sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(out)) == before
    assert not Path("/tmp/evil.bin").exists() or name != "/tmp/evil.bin"
    assert not (tmp_path / "evil.bin").exists() and leftovers(tmp_path) == []
    assert main(["export", str(bundle), "--out", str(tmp_path / "out2")]) == 2


def test_manifest_file_entries_cannot_leave_the_bundle(tmp_path, rng):
    path = _bundle(tmp_path / "b.lt", rng)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((N, P), np.float32))
    (path / "models" / "m" / "link.npy").symlink_to(secret)
    m = _manifest(path)
    m["models"][0]["layers"][0]["file"] = "models/m/link.npy"
    _set_manifest(path, m)
    with pytest.raises(BundleError, match="leads outside the bundle"):
        load_bundle(path)


# ----------------------------------------------------------------------------- array content


def test_nan_in_a_layer_is_refused_at_load_where_used_and_by_verify(tmp_path, rng):
    path = _bundle(tmp_path / "b.lt", rng)
    f = path / "models" / "m" / "L1.npy"
    _poke(f, np.nan, 0)  # row 0 is always among the rows checked at load
    with pytest.raises(BundleError, match=r"L1.npy: NaN or Inf values \(first in row 0; layer m/L1\)"):
        load_bundle(path)
    _poke(f, 1.0, 0)
    _poke(f, np.inf, 1)  # beyond the spot check? (N < 4096: every row is checked)
    with pytest.raises(BundleError, match="row 1"):
        load_bundle(path)


def test_nan_between_spot_checked_rows_is_caught_where_used_and_by_verify(tmp_path, rng, monkeypatch):
    import engine.store as store

    monkeypatch.setattr(store, "_SPOT_ROWS", 8)  # two blocks of 4 rows: 0-3 and 60-63 of 64
    monkeypatch.setattr(store, "_SPOT_BLOCK", 4)
    store._spot_rows.cache_clear()
    path = _bundle(tmp_path / "b.lt", rng)
    _poke(path / "models" / "m" / "L2.npy", np.nan, 5)
    b = load_bundle(path)  # the cheap check misses row 5 ...
    with pytest.raises(BundleError, match=r"L2.npy: NaN or Inf values"):
        b.models["m"].layers[2].aligned()  # ... where the layer is used it is caught
    with pytest.raises(BundleError, match=r"L2.npy: checksum .* \(corrupt layer m/L2\)"):
        engine.load_bundle(path, verify=True)  # the documented engine.load_bundle(..., verify=True)
    m = _manifest(path)  # a NaN written with a matching checksum: verify's full scan still finds it
    m["models"][0]["layers"][2]["checksum"] = store._crc(np.load(path / "models" / "m" / "L2.npy"))
    _set_manifest(path, m)
    with pytest.raises(BundleError, match=r"L2.npy: NaN or Inf values \(first in row 5"):
        engine.load_bundle(path, verify=True)
    store._spot_rows.cache_clear()


def test_alignment_values_too_large_for_float32_are_refused_where_used(tmp_path, rng):
    path = _bundle(tmp_path / "b.lt", rng)
    _poke(path / "models" / "m" / "L0.npy", np.float32(3e38))
    with pytest.raises(BundleError, match="too large for float32 once aligned"):
        load_bundle(path).models["m"].layers[0].aligned()


@pytest.mark.parametrize("part,value,msg", [("rotation", np.nan, "NaN or Inf"),
                                            ("center", np.inf, "NaN or Inf"),
                                            ("rotation", 2.0, "not an orthogonal rotation")])
def test_bad_rotation_or_centre_is_refused_at_load(tmp_path, rng, part, value, msg):
    path = _bundle(tmp_path / "b.lt", rng)
    f = path / "models" / "m" / f"L1.{part}.npy"
    _poke(f, value, 0)
    with pytest.raises(BundleError, match=msg) as ei:
        load_bundle(path)
    assert f"L1.{part}.npy" in str(ei.value)


def test_a_non_finite_similarity_matrix_is_refused_at_load(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    for m in ("a", "b"):
        w.add_model(m)
        w.write_layer(m, "L0", rng.standard_normal((N, P)))
    w.set_similarity("a", "b", np.ones((1, 1)))
    path = w.commit()
    _poke(path / "similarity" / "a__b.npy", np.nan)
    with pytest.raises(BundleError, match=r"a__b.npy: NaN or Inf values \(similarity\[0\]\)"):
        load_bundle(path)


def test_writer_refuses_a_non_orthogonal_rotation(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("m")
    w.write_layer("m", "L0", rng.standard_normal((N, P)))
    with pytest.raises(BundleError, match="m/L0: the rotation is not orthogonal"):
        w.set_alignment("m", "L0", np.eye(P) * 2, np.zeros(P))
    w.abort()


def test_bad_attribute_values_and_extents_are_refused_at_load(tmp_path, rng):
    path = _bundle(tmp_path / "b.lt", rng)
    m = _manifest(path)
    conf = next(a for a in m["attributes"] if a["name"] == "conf")
    for ext in ([1.0, 0.0], [0, 1e400], ["0", 1], [0]):
        conf["extent"] = ext
        (path / "manifest.json").write_text(json.dumps(m).replace("Infinity", "1e400"))
        with pytest.raises(BundleError, match=r"extent must be \[lo, hi\]"):
            load_bundle(path)
    conf["extent"] = [0, 1]
    _set_manifest(path, m)
    _poke(path / "attributes" / "conf.npy", np.nan, 3)
    with pytest.raises(BundleError, match=r"conf.npy: NaN or Inf values \(first at point 3"):
        load_bundle(path)


# ----------------------------------------------------------------------------- corrupt .npy content


def _corruptions(f: Path):
    raw = f.read_bytes()
    yield "npz under a .npy name", lambda: _npz(f)
    yield "damaged header", lambda: f.write_bytes(raw[:10] + b"{'descr': '<f4', 'fortran_or" + raw[40:])
    yield "header with a syntax error", lambda: f.write_bytes(raw.replace(b"'descr'", b"'descr"))
    yield "pickled object array", lambda: np.save(f, np.array([None] * N, dtype=object), allow_pickle=True)
    yield "not numpy at all", lambda: f.write_bytes(b"GIF89a" + raw[6:])
    yield "header says more rows", lambda: f.write_bytes(raw.replace(f"({N}, {P})".encode(),
                                                                     f"({N + 9}, {P})".encode()))


def _npz(f: Path):
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("arr_0.npy", b"x")


def test_corrupt_npy_content_is_a_bundle_error_in_every_command(tmp_path, rng, capsys):
    path = _bundle(tmp_path / "b.lt", rng)
    f = path / "models" / "m" / "L1.npy"
    good = f.read_bytes()
    for what, corrupt in _corruptions(f):
        corrupt()
        with pytest.raises(BundleError, match=r"L1.npy: not a readable .npy array") as ei:
            load_bundle(path)
        assert "Traceback" not in str(ei.value), what
        for argv in (["export", str(path), "--out", str(tmp_path / "x")],
                     ["similarity", str(path), "m", "m", "--out", str(tmp_path / "S.csv")]):
            assert main(argv) == 2, (what, argv)
            err = capsys.readouterr().err
            assert "L1.npy: not a readable .npy array" in err and len(err.strip().splitlines()) == 1, what
        f.write_bytes(good)
    load_bundle(path, verify=True)


def test_a_fifo_as_an_array_or_manifest_is_refused_without_blocking(tmp_path, rng):
    path = _bundle(tmp_path / "b.lt", rng)
    f = path / "models" / "m" / "L0.rotation.npy"
    f.unlink()
    os.mkfifo(f)
    done = threading.Event()

    def opener():  # would make a blocked open() return, so the test ends even if the code hangs
        done.wait(10)
        if not done.is_set():
            with open(f, "wb"):
                pass

    t = threading.Thread(target=opener, daemon=True)
    t.start()
    with pytest.raises(BundleError, match=r"L0.rotation.npy: (missing|not a readable)"):
        load_bundle(path)
    done.set()
    with pytest.raises(NotRegularFileError, match="FIFO"):
        read_regular(f)
    assert open_npy  # the public reader is the one load_bundle uses


# ----------------------------------------------------------------------------- text that is drawn


@pytest.mark.parametrize("bad", ["two\nlines", "tab\there", "bell\x07", "rtl\u202eoverride", "x" * 600])
def test_control_characters_in_names_are_refused_where_they_enter(tmp_path, rng, bad):
    """Layer names: no control character at all (a newline breaks a one-line HUD label). Category
    names may hold line breaks and tabs (a quoted CSV field can), never other controls."""
    category_ok = bad in ("two\nlines", "tab\there")
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("m")
    with pytest.raises(BundleError, match="layer name"):
        w.write_layer("m", "L0", rng.standard_normal((N, P)), name=bad)
    w.write_layer("m", "L0", rng.standard_normal((N, P)))
    if category_ok:
        w.set_attribute("c", np.zeros(N, int), "categorical", categories=["ok", bad])
    else:
        with pytest.raises(BundleError, match="category 1"):
            w.set_attribute("c", np.zeros(N, int), "categorical", categories=["ok", bad])
    w.abort()
    path = _bundle(tmp_path / "c.lt", rng)
    m = _manifest(path)
    m["models"][0]["layers"][0]["name"] = bad
    _set_manifest(path, m)
    with pytest.raises(BundleError, match=r"layers\[0\] \(m/L0\)\.name"):
        load_bundle(path)
    m["models"][0]["layers"][0]["name"] = "fine"
    m["attributes"][0]["categories"][2] = bad
    _set_manifest(path, m)
    if category_ok:
        assert load_bundle(path).attributes["label"].categories[2] == bad
    else:
        with pytest.raises(BundleError, match=r"categories\[2\]"):
            load_bundle(path)


# ----------------------------------------------------------------------------- study directories


def test_a_quoted_newline_inside_a_csv_field_is_valid(tmp_path, rng):
    """A CSV field may span lines when quoted (pandas writes one for a label with a line break):
    the row index is counted in records, not in lines."""
    d = write_study(tmp_path, "m", rng, n=N, dim=P, meta=False)
    lines = (d / "attributes.csv").read_text().splitlines()
    note = ',"first line\nsecond, with ""quotes"""'
    lines = [lines[0] + ",note"] + [ln + (note if i % 3 == 0 else ",plain") for i, ln in enumerate(lines[1:])]
    (d / "attributes.csv").write_text("\n".join(lines) + "\n")
    b = load_bundle(import_umap_tour([d], tmp_path / "x.lt"))
    note = b.attributes["note"]
    assert note.categories == ['first line\nsecond, with "quotes"', "plain"]
    assert list(np.asarray(note.values)[:4]) == [0, 1, 1, 0]
    back = export_umap_tour(b.path, tmp_path / "exp")[0]
    again = load_bundle(import_umap_tour([back], tmp_path / "y.lt"))
    np.testing.assert_array_equal(again.attributes["note"].values, note.values)


def test_a_control_character_in_a_study_category_is_refused(tmp_path, rng):
    def rows(lines):
        return [lines[0]] + [ln.replace("tench", "ten\x1bch") for ln in lines[1:]]

    d = write_study(tmp_path, "m", rng, n=N, dim=P, csv_rows=rows)
    meta = tmp_path / f"meta-m-{P}D.json"
    mm = json.loads(meta.read_text())
    mm["attributes"]["label"]["order"][0] = "ten\x1bch"
    meta.write_text(json.dumps(mm))
    with pytest.raises(BundleError, match=r"a category of label.*control character '\\x1b'"):
        import_umap_tour([d], tmp_path / "x.lt")


def test_special_files_in_a_study_directory_are_refused_without_blocking(tmp_path, rng):
    d = write_study(tmp_path, "m", rng, n=N, dim=P)
    (d / "attributes.csv").unlink()
    os.mkfifo(d / "attributes.csv")
    with pytest.raises(BundleError, match=r"attributes.csv: unreadable \(a FIFO"):
        import_umap_tour([d], tmp_path / "x.lt")
    (d / "attributes.csv").unlink()
    (d / "schema.json").rename(d / "schema.bak")
    os.mkfifo(d / "schema.json")
    with pytest.raises(BundleError, match=r"schema.json: unreadable \(a FIFO"):
        import_umap_tour([d], tmp_path / "x.lt")


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.update(data_shape=7), r"data_shape 7 must be \[N, p\]"),
    (lambda m: m.update(data_shape=["64", "5"]), r"data_shape \['64', '5'\] must be \[N, p\]"),
    (lambda m: m.update(data_shape=[64, 6]), r"data_shape \[64, 6\] disagrees"),
    (lambda m: m["attributes"]["confidence"].update(extent=[1, 0]), r"attributes.confidence.extent"),
    (lambda m: m["attributes"]["confidence"].update(extent="0..1"), r"attributes.confidence.extent"),
    (lambda m: m["attributes"]["confidence"].update(extent=[0, float("nan")]), "confidence.extent"),
])
def test_bad_meta_files_name_the_file_and_field(tmp_path, rng, edit, msg):
    d = write_study(tmp_path, "m", rng, n=N, dim=P)
    meta = tmp_path / f"meta-m-{P}D.json"
    m = json.loads(meta.read_text())
    edit(m)
    meta.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=msg) as ei:
        import_umap_tour([d], tmp_path / "x.lt")
    assert str(meta) in str(ei.value)


def test_deep_json_in_a_study_is_a_clear_error(tmp_path, rng):
    d = write_study(tmp_path, "m", rng, n=N, dim=P)
    (tmp_path / f"meta-m-{P}D.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match=r"meta-m-5D.json: not valid JSON \(RecursionError"):
        import_umap_tour([d], tmp_path / "x.lt")


# ----------------------------------------------------------------------------- bundles nobody can view


@pytest.mark.parametrize("p", [1, 2])
def test_bundles_with_p_at_most_the_view_dimension_are_refused_at_write(tmp_path, rng, p):
    with pytest.raises(BundleError, match=r"dim must be an int >= 3"):
        BundleWriter(tmp_path / "b.lt", n=N, dim=p)
    d = write_study(tmp_path, "m", rng, n=N, dim=p, meta=False)
    with pytest.raises(BundleError, match="dim must be an int >= 3"):
        import_umap_tour([d], tmp_path / "x.lt")
    assert leftovers(tmp_path) == [] and not (tmp_path / "x.lt").exists()


def test_prepare_dim_2_is_refused(tmp_path, capsys):
    rc = main(["prepare", "--model", "resnet18", "--weights", "none", "--digits", "--dim", "2",
               "--out", str(tmp_path / "x.lt")])
    err = capsys.readouterr().err
    assert rc == 2 and "--dim 2" in err and "at least 3" in err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_prepare_seed_outside_cumls_range_is_refused(tmp_path, capsys, seed):
    rc = main(["prepare", "--model", "resnet18", "--digits", "--seed", seed, "--out", str(tmp_path / "x.lt")])
    assert rc == 2 and f"--seed {seed}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- atomic files


def test_atomic_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
        os.umask(0o002)
        write_atomic(tmp_path / "b.bin", lambda p: p.write_bytes(b"x"))
        assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o664
        w = BundleWriter(tmp_path / "c.lt", n=N, dim=P)
        w.add_model("m")
        w.write_layer("m", "L0", np.ones((N, P)) * np.arange(P))
        path = w.commit()
        assert stat.S_IMODE((path / "manifest.json").stat().st_mode) == 0o664
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- prepare arguments


def _image_folder(root: Path, rng, n_good=6, bad=("cls_b/broken.jpg",)):
    from PIL import Image

    for i in range(n_good):
        d = root / ("cls_a" if i % 2 else "cls_b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    for b in bad:
        (root / b).parent.mkdir(parents=True, exist_ok=True)
        (root / b).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return root


def test_a_corrupt_image_names_the_file_and_can_be_skipped(tmp_path, rng, caplog):
    pytest.importorskip("torchvision")
    from engine.inputs import ImageReadError, image_folder_inputs

    root = _image_folder(tmp_path / "imgs", rng)
    inputs = image_folder_inputs(root, workers=0)
    with pytest.raises(ImageReadError, match=r"cannot read image .*cls_b/broken.jpg"):
        for _ in inputs.batches(4):
            pass
    inputs = image_folder_inputs(root, workers=1)  # a DataLoader worker process: same one-line error
    with pytest.raises(ImageReadError, match=r"cannot read image .*broken.jpg") as ei:
        for _ in inputs.batches(4):
            pass
    assert "Traceback" not in str(ei.value)
    with caplog.at_level("WARNING", logger="layertour"):
        kept = image_folder_inputs(root, workers=0, skip_unreadable=True)
    assert kept.n == 6 and "skipped 1 unreadable of 7 images" in caplog.text and "broken.jpg" in caplog.text
    assert sum(x.shape[0] for x in kept.batches(4)) == 6


def test_prepare_with_a_corrupt_image_is_one_line_naming_it(tmp_path, rng, capsys):
    pytest.importorskip("torchvision")
    root = _image_folder(tmp_path / "imgs", rng, n_good=3)
    rc = main(["prepare", "--model", "resnet18", "--weights", "none", "--images", str(root), "--layers", "fc",
               "--device", "cpu", "--umap-backend", "umap-learn", "--n-neighbors", "2", "--batch-size", "2",
               "--strict", "--out", str(tmp_path / "x.lt")])
    err = capsys.readouterr().err  # (progress bars come before the error line)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("layertour prepare: error: cannot read image")
    assert "Traceback" not in err
    assert "broken.jpg" in last and "--strict" in last
    assert not (tmp_path / "x.lt").exists()


def test_weights_that_are_not_a_weights_file_are_named(tmp_path, capsys):
    pytest.importorskip("torchvision")
    for content in (b"just some text\n", b"PK\x03\x04 broken zip", b"\x80\x04K\x01."):
        bad = tmp_path / "weights.pt"
        bad.write_bytes(content)
        rc = main(["prepare", "--model", "resnet18", "--weights", str(bad), "--digits", "--n", "40",
                   "--device", "cpu", "--out", str(tmp_path / "x.lt")])
        err = capsys.readouterr().err
        assert rc == 2 and f"{bad}" in err and ("weights" in err) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("source,msg", [("def build(:\n    pass\n", r"line 1: syntax error"),
                                        ("import no_such_module_xyz\n", "ModuleNotFoundError"),
                                        ("def build():\n    return 1 / 0\n",
                                         r"build\(\) raised ZeroDivisionError")])
def test_a_broken_model_file_is_named(tmp_path, capsys, source, msg):
    pytest.importorskip("torch")
    f = tmp_path / "net.py"
    f.write_text(source)
    rc = main(["prepare", "--model", f"{f}:build", "--digits", "--n", "40", "--device", "cpu",
               "--out", str(tmp_path / "x.lt")])
    err = capsys.readouterr().err
    assert rc == 2 and f"model file {f}" in err and len(err.strip().splitlines()) == 1
    import re

    assert re.search(msg, err), err


def test_umap_backend_cuml_without_cuml_fails_before_recording(tmp_path, capsys):
    pytest.importorskip("torch")
    from engine.embed import _import_cuml

    if _import_cuml()[0] is not None:
        pytest.skip("cuML is installed here")
    tiny = Path(__file__).parent / "assets" / "tiny_mlp.py"
    rc = main(["prepare", "--model", f"{tiny}:build", "--weights", "none", "--digits", "--n", "60",
               "--layers", "1", "--device", "cpu", "--umap-backend", "cuml", "--out", str(tmp_path / "x.lt")])
    err = capsys.readouterr().err
    assert rc == 2 and "cuML is not importable" in err and "--umap-backend umap-learn" in err
    assert not (tmp_path / "x.lt").exists() and leftovers(tmp_path) == []  # nothing was recorded


def test_a_study_layer_that_cannot_be_aligned_names_the_directory(tmp_path, rng):
    """A constant layer has no orientation to align (float32 data cannot overflow the float64
    products; values that overflow float32 once aligned are caught by Layer.aligned)."""
    d = write_study(tmp_path, "m", rng, n=N, dim=P, meta=False)
    np.full((N, P), 7.0, "<f4").tofile(d / "1-Conv2d.bin")
    with pytest.raises(BundleError, match=rf"{d}: cannot align the layers \(.*zero variance"):
        import_umap_tour([d], tmp_path / "x.lt")
    assert not (tmp_path / "x.lt").exists() and leftovers(tmp_path) == []


def test_load_spot_check_covers_the_first_and_last_rows_of_large_layers(tmp_path, rng):
    import engine.store as store

    store._spot_rows.cache_clear()
    n = 5000
    w = BundleWriter(tmp_path / "big.lt", n=n, dim=3)
    w.add_model("m")
    w.write_layer("m", "L0", rng.standard_normal((n, 3)))
    path = w.commit()
    rows = store._spot_rows(n)
    assert len(rows) == store._SPOT_ROWS and rows[0] == 0 and rows[-1] == n - 1
    gap = int(np.setdiff1d(np.arange(n), rows)[0])
    f = path / "models" / "m" / "L0.npy"
    for row, caught in ((n - 1, True), (0, True), (gap, False)):
        _poke(f, np.nan, row)
        if caught:
            with pytest.raises(BundleError, match=f"first in row {row}"):
                load_bundle(path)
        else:
            load_bundle(path)  # between the checked blocks: left to aligned() and verify=True
            with pytest.raises(BundleError, match="L0.npy"):
                load_bundle(path, verify=True)
        _poke(f, 0.5, row)
