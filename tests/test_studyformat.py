"""The UMAP Tour study layout in and out: round trips (synthetic and the real published data) and
every kind of bad input refused with the culprit named and nothing left behind."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from _studyfiles import COARSE, FINE, LAYER_IDS, leftovers, study_labels, write_study

from engine.store import BundleError, load_bundle
from engine.studyformat import export_umap_tour, import_umap_tour


def _two_models(tmp_path, rng, n=40):
    src = tmp_path / "src"
    labels = study_labels(rng, n)
    a = write_study(src, "googlenet", rng, n=n, labels=labels)
    b = write_study(src, "resnet50", rng, n=n, labels=labels,
                    layer_ids=["0-Input", "1-Bottleneck", "2-Softmax"])
    return a, b


def test_import_reads_every_layer_and_attribute(tmp_path, rng):
    a, b = _two_models(tmp_path, rng)
    out = import_umap_tour([a, b], tmp_path / "s.lt")
    bun = load_bundle(out, verify=True)
    assert list(bun.models) == ["googlenet", "resnet50"]
    assert [lay.id for lay in bun.models["googlenet"].layers] == LAYER_IDS
    assert [lay.index for lay in bun.models["resnet50"].layers] == [0, 1, 2]
    for d, m in ((a, "googlenet"), (b, "resnet50")):
        schema = json.loads((d / "schema.json").read_text())
        for e, lay in zip(schema["layers"], bun.models[m].layers):
            ref = np.fromfile(d / f"{e['id']}.bin", dtype="<f4").reshape(40, 15)
            np.testing.assert_array_equal(lay.embedding, ref)
            assert lay.meta["umap_tour"]["residual"] == e["residual"]
    fine = np.fromfile(a / "labels.bin", dtype="<u2")
    assert bun.attributes["label"].categories == FINE
    assert bun.attributes["label_coarse"].categories == COARSE
    np.testing.assert_array_equal(bun.attributes["label"].values, fine)
    assert bun.default_attribute == "label_coarse"  # schema.json labels.id
    # Each model's own confidence differs, so each gets its own attribute; extents from the meta file.
    for m, d in (("googlenet", a), ("resnet50", b)):
        conf = bun.attributes[f"{m}.confidence"]
        assert conf.kind == "continuous" and conf.extent == (0.0, 1.0)
        ref = np.loadtxt(d / "attributes.csv", delimiter=",", skiprows=1, usecols=3, dtype=np.float64)
        np.testing.assert_array_equal(conf.values, ref.astype(np.float32))
    assert "confidence" not in bun.attributes
    assert leftovers(tmp_path) == []


def test_round_trip_is_byte_identical(tmp_path, rng):
    a, b = _two_models(tmp_path, rng)
    out = import_umap_tour([a, b], tmp_path / "s.lt")
    written = export_umap_tour(out, tmp_path / "exp")
    assert [p.name for p in written] == ["googlenet", "resnet50"]
    for d in (a, b):
        for f in d.iterdir():  # layers, labels, schema and CSV all come back byte for byte
            assert (tmp_path / "exp" / d.name / f.name).read_bytes() == f.read_bytes(), f.name
        meta = json.loads((tmp_path / "exp" / f"meta-{d.name}-15D.json").read_text())
        orig = json.loads((d.parent / f"meta-{d.name}-15D.json").read_text())
        assert meta == orig
    assert leftovers(tmp_path) == []


def test_names_option_and_meta_found_despite_different_spelling(tmp_path, rng):
    src = tmp_path / "src"
    d = write_study(src, "ResNet_50", rng, meta=False)
    # the meta file is spelled differently from the directory (as in meta-resnet50-15D.json)
    write_study(tmp_path / "other", "resnet50", rng)
    shutil.move(tmp_path / "other" / "meta-resnet50-15D.json", src / "meta-resnet50-15D.json")
    order = list(reversed(FINE))
    m = json.loads((src / "meta-resnet50-15D.json").read_text())
    m["attributes"]["label"]["order"] = order
    (src / "meta-resnet50-15D.json").write_text(json.dumps(m))
    # labels.bin must follow the meta's order for the names to agree: recode it and the CSV stays
    fine = np.fromfile(d / "labels.bin", dtype="<u2")
    (len(FINE) - 1 - fine).astype("<u2").tofile(d / "labels.bin")
    out = import_umap_tour([d], tmp_path / "r.lt", names=["rn50"])
    bun = load_bundle(out)
    assert list(bun.models) == ["rn50"]
    assert bun.attributes["label"].categories == order
    np.testing.assert_array_equal(bun.attributes["label"].values, len(FINE) - 1 - fine)
    # a single model keeps the plain column names
    assert bun.attributes["confidence"].extent == (0.0, 1.0)


def test_without_meta_categories_come_from_the_csv(tmp_path, rng):
    d = write_study(tmp_path / "src", "net", rng, meta=False)
    bun = load_bundle(import_umap_tour([d], tmp_path / "n.lt"))
    fine = np.fromfile(d / "labels.bin", dtype="<u2")
    cats = bun.attributes["label"].categories
    present = np.unique(fine)
    assert [cats[i] for i in present] == [FINE[i] for i in present]
    conf = bun.attributes["confidence"]
    assert conf.extent == (float(conf.values.min()), float(conf.values.max()))


@pytest.mark.parametrize("where", ["schema", "csv"])
def test_existing_bundle_is_replaced_only_with_overwrite(tmp_path, rng, where):
    d = write_study(tmp_path / "src", "net", rng)
    out = import_umap_tour([d], tmp_path / "n.lt")
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="n.lt.*already exists"):
        import_umap_tour([d], out)
    assert (out / "manifest.json").read_bytes() == before
    # a broken input with overwrite=True still leaves the old bundle intact
    if where == "schema":
        (d / "schema.json").write_text("{")
    else:
        (d / "attributes.csv").write_text(",label\n0,tench\n")
    with pytest.raises(BundleError):
        import_umap_tour([d], out, overwrite=True)
    assert (out / "manifest.json").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path, rng):
    d1 = write_study(tmp_path / "a", "net", rng)
    d2 = write_study(tmp_path / "b", "net", rng, layer_ids=["0-Input"])
    out = import_umap_tour([d1], tmp_path / "n.lt")
    import_umap_tour([d2], out, overwrite=True)
    assert [lay.id for lay in load_bundle(out).models["net"].layers] == ["0-Input"]
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# bad input: each case is refused naming the culprit file, leaving no bundle and no staging dir


def _truncate(d):
    p = d / "1-Conv2d.bin"
    p.write_bytes(p.read_bytes()[:-7])
    return "1-Conv2d.bin", "truncated"


def _oversize(d):
    with open(d / "2-ReLU.bin", "ab") as f:
        f.write(np.zeros(15, "<f4").tobytes())
    return "2-ReLU.bin", "oversized"


def _rows_disagree(d):
    s = json.loads((d / "schema.json").read_text())
    s["layers"][2]["shape"] = [39, 15]
    (d / "schema.json").write_text(json.dumps(s))
    return "schema.json", "row counts disagree"


def _bad_value(value):
    def corrupt(d):
        a = np.fromfile(d / "3-Linear.bin", dtype="<f4")
        a[37] = value
        a.tofile(d / "3-Linear.bin")
        return "3-Linear.bin", "NaN or Inf"
    return corrupt


def _no_schema(d):
    (d / "schema.json").unlink()
    return "schema.json", "missing"


def _no_layer_file(d):
    (d / "2-ReLU.bin").unlink()
    return "2-ReLU.bin", "missing"


def _csv_binary(d):
    (d / "attributes.csv").write_bytes(b"\xff\xfe\x00garbage\x9c\n" * 5)
    return "attributes.csv", "unreadable CSV"


def _csv_fields(d):
    p = d / "attributes.csv"
    lines = p.read_text().splitlines()
    lines[9] = lines[9] + ",extra"
    p.write_text("\n".join(lines) + "\n")
    return "attributes.csv", "line 10 has 6 fields"


def _csv_number(d):
    p = d / "attributes.csv"
    lines = p.read_text().splitlines()
    parts = lines[5].split(",")
    parts[3] = "high"
    lines[5] = ",".join(parts)
    p.write_text("\n".join(lines) + "\n")
    return "attributes.csv", "'high' is not a number"


def _csv_short(d):
    p = d / "attributes.csv"
    p.write_text("\n".join(p.read_text().splitlines()[:-3]) + "\n")
    return "attributes.csv", "data rows"


def _csv_disagrees(d):
    p = d / "attributes.csv"
    lines = p.read_text().splitlines()
    parts = lines[4].split(",")
    parts[1] = "ostrich" if parts[1] != "ostrich" else "tench"
    lines[4] = ",".join(parts)
    p.write_text("\n".join(lines) + "\n")
    return "labels.bin", "disagree at row 3"


def _labels_truncated(d):
    p = d / "labels-coarse.bin"
    p.write_bytes(p.read_bytes()[:-2])
    return "labels-coarse.bin", "bytes"


def _label_code_unnamed(d):
    fine = np.fromfile(d / "labels.bin", dtype="<u2")
    fine[0] = len(FINE) + 3
    fine.tofile(d / "labels.bin")
    return "labels.bin", "categories"


BAD = {"truncated": _truncate, "oversized": _oversize, "rows-disagree": _rows_disagree,
       "nan": _bad_value(np.nan), "inf": _bad_value(-np.inf), "no-schema": _no_schema,
       "no-layer-file": _no_layer_file, "csv-binary": _csv_binary, "csv-fields": _csv_fields,
       "csv-number": _csv_number, "csv-short": _csv_short, "csv-vs-labels": _csv_disagrees,
       "labels-truncated": _labels_truncated, "label-code-unnamed": _label_code_unnamed}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused(tmp_path, rng, case):
    d = write_study(tmp_path / "src", "net", rng)
    culprit, what = BAD[case](d)
    out = tmp_path / "n.lt"
    with pytest.raises(BundleError) as ei:
        import_umap_tour([d], out)
    msg = str(ei.value)
    assert culprit in msg and what in msg, msg
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_nan_error_names_model_and_layer(tmp_path, rng):
    d = write_study(tmp_path / "src", "net", rng)
    _bad_value(np.inf)(d)
    with pytest.raises(BundleError, match=r"3-Linear\.bin.*model net, layer 3-Linear.*row 2"):
        import_umap_tour([d], tmp_path / "n.lt")


def test_dirs_with_different_n(tmp_path, rng):
    a = write_study(tmp_path / "src", "a", rng, n=40)
    b = write_study(tmp_path / "src", "b", rng, n=41)
    with pytest.raises(BundleError) as ei:
        import_umap_tour([a, b], tmp_path / "x.lt")
    msg = str(ei.value)
    assert "b/schema.json: 41 rows" in msg and "a/schema.json has 40" in msg
    assert not (tmp_path / "x.lt").exists() and leftovers(tmp_path) == []


def test_dirs_whose_labels_disagree(tmp_path, rng):
    a = write_study(tmp_path / "src", "a", rng, n=40)
    fine, coarse = study_labels(rng, 40)
    fine = fine.copy()
    fine[5] = (int(np.fromfile(a / "labels.bin", dtype="<u2")[5]) + 1) % len(FINE)
    coarse = np.asarray([0, 0, 1, 2, 2, 2], "<u2")[fine]
    b = write_study(tmp_path / "src", "b", rng, n=40, labels=(fine, coarse))
    with pytest.raises(BundleError) as ei:
        import_umap_tour([a, b], tmp_path / "x.lt")
    msg = str(ei.value)
    assert "a/labels.bin" in msg and "b/labels.bin" in msg and "disagree" in msg, msg
    assert leftovers(tmp_path) == []


def test_bad_arguments(tmp_path, rng):
    d = write_study(tmp_path / "src", "net", rng)
    with pytest.raises(BundleError, match="not a directory"):
        import_umap_tour([tmp_path / "nope"], tmp_path / "x.lt")
    with pytest.raises(BundleError, match="distinct"):
        import_umap_tour([d, d], tmp_path / "x.lt")
    with pytest.raises(BundleError, match="2 --name values for 1"):
        import_umap_tour([d], tmp_path / "x.lt", names=["a", "b"])
    with pytest.raises(BundleError, match="not valid"):
        import_umap_tour([d], tmp_path / "x.lt", names=["../evil"])
    assert not (tmp_path / "x.lt").exists() and leftovers(tmp_path) == []


def test_export_refuses_existing_targets_and_unknown_models(tmp_path, rng):
    d = write_study(tmp_path / "src", "net", rng)
    out = import_umap_tour([d], tmp_path / "n.lt")
    with pytest.raises(BundleError, match="no model 'other'"):
        export_umap_tour(out, tmp_path / "exp", models=["other"])
    (tmp_path / "exp" / "net").mkdir(parents=True)
    with pytest.raises(BundleError, match=r"exp/net: already exists"):
        export_umap_tour(out, tmp_path / "exp")
    with pytest.raises(BundleError, match="manifest.json: missing"):
        export_umap_tour(tmp_path / "src", tmp_path / "exp2")
    assert leftovers(tmp_path) == []


def test_export_of_a_written_bundle(tmp_path, rng):
    """A bundle made by BundleWriter (not imported) exports to a layout the importer reads back."""
    from engine.store import BundleWriter

    n = 30
    w = BundleWriter(tmp_path / "w.lt", n=n, dim=15)
    w.add_model("m")
    embs = [rng.standard_normal((n, 15)).astype(np.float32) for _ in range(3)]
    for i, e in enumerate(embs):
        w.write_layer("m", f"{i}-Layer", e)
    codes = rng.integers(0, 4, n)
    w.set_attribute("label", codes, "categorical", categories=list("abcd"), default=True)
    w.set_attribute("m.confidence", rng.uniform(size=n), "continuous")
    w.commit()
    export_umap_tour(tmp_path / "w.lt", tmp_path / "exp")
    for i, e in enumerate(embs):
        assert (tmp_path / "exp" / "m" / f"{i}-Layer.bin").read_bytes() == e.astype("<f4").tobytes()
    back = load_bundle(import_umap_tour([tmp_path / "exp" / "m"], tmp_path / "back.lt"))
    np.testing.assert_array_equal(back.attributes["label"].values, codes)
    assert back.attributes["label"].categories == list("abcd")
    assert back.default_attribute == "label"
    assert "confidence" in back.attributes


# ---------------------------------------------------------------------------------------------
# the real published data


def test_real_study_round_trip_is_byte_identical(tmp_path, study_data):
    dirs = [study_data / "googlenet", study_data / "resnet50"]
    out = import_umap_tour(dirs, tmp_path / "study.lt")
    bun = load_bundle(out)
    assert bun.n == 50000 and bun.dim == 15
    assert [len(m.layers) for m in bun.models.values()] == [21, 25]
    meta = json.loads((study_data / "meta-resnet50-15D.json").read_text())
    assert bun.attributes["label"].categories == meta["attributes"]["label"]["order"]
    assert len(bun.attributes["label_coarse"].categories) == 67
    assert bun.default_attribute == "label_coarse"
    err = bun.attributes["resnet50.error"]
    assert err.extent == (0.0, 5.0) and math.isfinite(float(np.asarray(err.values).sum()))
    # The import aligns every layer into one canonical frame and stores the comparisons.
    g, r = bun.models["googlenet"], bun.models["resnet50"]
    for layer in g.layers + r.layers:
        np.testing.assert_allclose(layer.rotation.T @ layer.rotation, np.eye(15), atol=1e-9)
    a, b = g.layers[11], g.layers[12]
    raw = np.linalg.norm((a.embedding - a.embedding.mean(0)) - (b.embedding - b.embedding.mean(0)))
    assert np.linalg.norm(a.aligned() - b.aligned()) < raw
    S = bun.similarity("googlenet", "resnet50")
    assert S.shape == (21, 25)
    # Published with the study (rows ResNet-50, cols GoogLeNet): (0,0) 0.9973, (1,1) 0.8585, (24,20) 0.8856.
    np.testing.assert_allclose([S[0, 0], S[1, 1], S[20, 24]], [0.9973, 0.8585, 0.8856], atol=6e-5)
    export_umap_tour(out, tmp_path / "exp")
    for d in dirs:
        for f in sorted(d.glob("*.bin")):
            assert (tmp_path / "exp" / d.name / f.name).read_bytes() == f.read_bytes(), f
    assert leftovers(tmp_path) == []
