"""engine.store: BundleWriter (atomic, resumable) and load_bundle (validating, memory-mapped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _studyfiles import leftovers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.store import BundleError, BundleWriter, load_bundle

N, P = 48, 15


def _rotation(rng, p=P):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def make_bundle(path, rng, *, overwrite=False):
    """A two-model bundle with every optional part; returns (path, the arrays written)."""
    w = BundleWriter(path, n=N, dim=P, overwrite=overwrite)
    data = {"emb": {}, "rot": {}, "cen": {}}
    for model, nl in (("alpha", 3), ("beta", 2)):
        w.add_model(model, meta={"arch": model, "weights": "none"})
        for i in range(nl):
            lid = f"{i}-L{model}"
            e = (rng.standard_normal((N, P)) * 3 + rng.standard_normal(P)).astype(np.float32)
            w.write_layer(model, lid, e, name=f"features.{i}", source_dim=int(rng.integers(20, 900)),
                          meta={"trustworthiness": float(rng.uniform(0.8, 1))})
            r, c = _rotation(rng), rng.standard_normal(P)
            w.set_alignment(model, lid, r, c)
            data["emb"][(model, lid)], data["rot"][(model, lid)], data["cen"][(model, lid)] = e, r, c
    data["codes"] = rng.integers(0, 5, N)
    data["conf"] = rng.uniform(0, 1, N)
    data["images"] = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    data["S"] = rng.uniform(0, 1, (3, 2))
    w.set_attribute("label", data["codes"], "categorical", categories=["a", "b", "c", "d", "e"])
    w.set_attribute("confidence", data["conf"], "continuous", extent=(0, 1), default=True)
    w.set_images(data["images"])
    w.set_similarity("alpha", "beta", data["S"])
    w.update_provenance({"seeds": {"umap": 42}, "timings": {"embed": 1.5}})
    w.update_provenance({"timings": {"align": 0.25}, "parameters": {"n_neighbors": 15}})
    return w.commit(), data


def test_write_then_load_gives_back_everything(tmp_path, rng):
    path, d = make_bundle(tmp_path / "b.lt", rng)
    b = engine.load_bundle(path)
    assert (b.n, b.dim, list(b.models)) == (N, P, ["alpha", "beta"])
    assert b.models["alpha"].meta == {"arch": "alpha", "weights": "none"}
    for (model, lid), e in d["emb"].items():
        lay = b.models[model].layer(lid)
        assert isinstance(lay.embedding, np.memmap) and lay.embedding.dtype == np.float32
        np.testing.assert_array_equal(lay.embedding, e)
        np.testing.assert_array_equal(lay.rotation, d["rot"][(model, lid)])
        np.testing.assert_array_equal(lay.center, d["cen"][(model, lid)])
        assert lay.model == model and 20 <= lay.source_dim < 900 and lay.name.startswith("features.")
        assert 0.8 <= lay.meta["trustworthiness"] <= 1
    lab, conf = b.attributes["label"], b.attributes["confidence"]
    assert lab.kind == "categorical" and lab.categories == list("abcde") and lab.values.dtype == np.int32
    np.testing.assert_array_equal(lab.values, d["codes"])
    assert conf.extent == (0.0, 1.0) and conf.values.dtype == np.float32
    np.testing.assert_array_equal(conf.values, d["conf"].astype(np.float32))
    assert b.default_attribute == "confidence"
    np.testing.assert_array_equal(b.images, d["images"])
    np.testing.assert_array_equal(b.similarity("alpha", "beta"), d["S"].astype(np.float32))
    np.testing.assert_array_equal(b.similarity("beta", "alpha"), d["S"].astype(np.float32).T)
    assert b.similarity("alpha", "alpha") is None
    assert b.provenance == {"seeds": {"umap": 42}, "timings": {"embed": 1.5, "align": 0.25},
                            "parameters": {"n_neighbors": 15}}
    assert leftovers(tmp_path) == [] and not (path / ".progress.json").exists()
    load_bundle(path, verify=True)


def test_layer_lookup(tmp_path, rng):
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    m = load_bundle(path).models["alpha"]
    assert [lay.index for lay in m.layers] == [0, 1, 2]
    assert m.layer("1-Lalpha") is m.layer("features.1") is m.layer(1) is m.layer("1") is m.layers[1]
    with pytest.raises(KeyError, match="alpha.*no layer 'nope'"):
        m.layer("nope")
    with pytest.raises(KeyError):
        m.layer(7)


def test_aligned_matches_float64_reference(tmp_path, rng, xp):
    path, d = make_bundle(tmp_path / "b.lt", rng)
    b = load_bundle(path)
    for (model, lid), e in d["emb"].items():
        ref = (e.astype(np.float64) - d["cen"][(model, lid)]) @ d["rot"][(model, lid)]
        got = b.models[model].layer(lid).aligned(xp=xp)
        assert isinstance(got, xp.ndarray) and got.dtype == xp.float32 and got.shape == (N, P)
        host = got.get() if hasattr(got, "get") else got
        np.testing.assert_allclose(host, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        # a rigid alignment keeps every distance between points
        np.testing.assert_allclose(np.linalg.norm(host[1:] - host[0], axis=1),
                                   np.linalg.norm(e[1:].astype(np.float64) - e[0], axis=1), rtol=1e-4)


def test_aligned_without_alignment_is_the_embedding(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("m")
    e = rng.standard_normal((N, P)).astype(np.float32)
    w.write_layer("m", "0", e)
    lay = load_bundle(w.commit()).models["m"].layers[0]
    assert lay.rotation is None and lay.center is None
    got = lay.aligned()
    np.testing.assert_array_equal(got, e)
    assert not isinstance(got, np.memmap)  # a writable copy, not the read-only map


def test_layers_are_listed_in_index_order_and_cast_to_float32(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("m")
    embs = {i: rng.standard_normal((N, P)) for i in range(4)}  # float64 in, float32 stored
    for i in (2, 0, 3, 1):  # e.g. distributed workers finishing out of order
        w.write_layer("m", f"L{i}", embs[i], index=i)
    b = load_bundle(w.commit())
    assert [lay.id for lay in b.models["m"].layers] == ["L0", "L1", "L2", "L3"]
    for i, lay in enumerate(b.models["m"].layers):
        np.testing.assert_array_equal(lay.embedding, embs[i].astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embedding_is_refused(tmp_path, rng, bad):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("resnet")
    e = rng.standard_normal((N, P)).astype(np.float32)
    row = int(rng.integers(0, N))
    e[row, int(rng.integers(0, P))] = bad
    with pytest.raises(BundleError, match=rf"model resnet, layer 7-Conv.*row {row}\b"):
        w.write_layer("resnet", "7-Conv", e)
    assert not w.has_layer("resnet", "7-Conv")
    assert sorted(p.name for p in (w.staging / "models" / "resnet").iterdir()) == []
    w.abort()
    assert leftovers(tmp_path) == []


def test_writer_refuses_bad_arguments(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    with pytest.raises(BundleError, match="no model 'm'"):
        w.write_layer("m", "0", rng.standard_normal((N, P)))
    w.add_model("m")
    with pytest.raises(BundleError, match=r"m/0: embedding shape \(47, 15\)"):
        w.write_layer("m", "0", rng.standard_normal((N - 1, P)))
    with pytest.raises(BundleError, match="not floating point"):
        w.write_layer("m", "0", rng.integers(0, 3, (N, P)))
    for bad_id in ("../x", "a/b", ".hidden", "x.rotation", ""):
        with pytest.raises(BundleError, match="layer id"):
            w.write_layer("m", bad_id, rng.standard_normal((N, P)))
    with pytest.raises(BundleError, match="model name"):
        w.add_model("a/b")
    with pytest.raises(BundleError, match="set_alignment before write_layer"):
        w.set_alignment("m", "0", np.eye(P), np.zeros(P))
    w.write_layer("m", "0", rng.standard_normal((N, P)))
    with pytest.raises(BundleError, match="alignment shapes"):
        w.set_alignment("m", "0", np.eye(P - 1), np.zeros(P))
    with pytest.raises(BundleError, match="codes outside 0..2"):
        w.set_attribute("lab", np.full(N, 3), "categorical", categories=["a", "b", "c"])
    with pytest.raises(BundleError, match="need categories"):
        w.set_attribute("lab", np.zeros(N, int), "categorical")
    with pytest.raises(BundleError, match="kind must be"):
        w.set_attribute("lab", np.zeros(N), "ordinal")
    with pytest.raises(BundleError, match=r"shape \(3,\)"):
        w.set_attribute("x", np.zeros(3), "continuous")
    with pytest.raises(BundleError, match="NaN or Inf"):
        w.set_attribute("x", np.full(N, np.nan), "continuous")
    with pytest.raises(BundleError, match="images must be"):
        w.set_images(np.zeros((N, 32, 32, 3), np.float32))
    with pytest.raises(BundleError, match="not JSON-serialisable"):
        w.update_provenance({"x": object()})
    with pytest.raises(BundleError, match="n must be a positive int"):
        BundleWriter(tmp_path / "c.lt", n=0, dim=P)
    w.abort()
    with pytest.raises(BundleError, match="already committed or aborted"):
        w.add_model("z")
    assert leftovers(tmp_path) == [] and not (tmp_path / "b.lt").exists()


def test_commit_refuses_an_empty_model(tmp_path, rng):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.add_model("m")
    with pytest.raises(BundleError, match="model 'm' has no layers"):
        w.commit()


def test_existing_bundle_needs_overwrite_and_is_replaced_whole(tmp_path, rng):
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    before = (path / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="b.lt: already exists"):
        BundleWriter(path, n=N, dim=P)
    assert (path / "manifest.json").read_bytes() == before
    # a failing build with overwrite=True leaves the old bundle as it was
    w = BundleWriter(path, n=N, dim=P, overwrite=True)
    w.add_model("m")
    with pytest.raises(BundleError):
        w.commit()
    w.abort()
    assert (path / "manifest.json").read_bytes() == before
    load_bundle(path, verify=True)
    make_bundle(path, rng, overwrite=True)
    assert (path / "manifest.json").read_bytes() != before
    load_bundle(path, verify=True)
    assert leftovers(tmp_path) == []


def test_overwrite_never_replaces_something_that_is_not_a_bundle(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(BundleError, match="not a layertour bundle"):
        BundleWriter(tmp_path / "notes", n=N, dim=P, overwrite=True)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"


def test_resume_keeps_verified_layers_and_drops_corrupt_ones(tmp_path, rng):
    target = tmp_path / "b.lt"
    w = BundleWriter(target, n=N, dim=P)
    w.add_model("m", meta={"k": 1})
    embs = [rng.standard_normal((N, P)).astype(np.float32) for _ in range(3)]
    for i, e in enumerate(embs):
        w.write_layer("m", f"L{i}", e)
    del w  # the run dies: nothing committed
    # corrupt one finished layer on disk
    f = tmp_path / ".b.lt.partial" / "models" / "m" / "L1.npy"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF
    f.write_bytes(bytes(raw))
    w = BundleWriter(target, n=N, dim=P, resume=True)
    w.add_model("m")
    assert [w.has_layer("m", f"L{i}") for i in range(3)] == [True, False, True]
    np.testing.assert_array_equal(w.read_layer("m", "L2"), embs[2])
    w.write_layer("m", "L1", embs[1], index=1)
    b = load_bundle(w.commit(), verify=True)
    assert b.models["m"].meta == {"k": 1}
    for i, lay in enumerate(b.models["m"].layers):
        np.testing.assert_array_equal(lay.embedding, embs[i])
    assert leftovers(tmp_path) == []


def test_resume_false_starts_clean_and_mismatch_is_refused(tmp_path, rng):
    target = tmp_path / "b.lt"
    w = BundleWriter(target, n=N, dim=P)
    w.add_model("m")
    w.write_layer("m", "L0", rng.standard_normal((N, P)))
    w.close()  # the run stops (its lock goes with it)
    w2 = BundleWriter(target, n=N, dim=P)  # resume=False
    assert not w2.has_layer("m", "L0")
    assert list(w2.staging.iterdir()) == [w2.staging / ".progress.json"]
    w2.add_model("m")
    w2.write_layer("m", "L0", rng.standard_normal((N, P)))
    w2.close()
    with pytest.raises(BundleError, match=r"n=48, dim=15; this run has n=49"):
        BundleWriter(target, n=N + 1, dim=P, resume=True)


def test_a_killed_run_resumes(tmp_path, rng):
    """A writer process killed with SIGKILL in the middle leaves finished layers to resume."""
    target = tmp_path / "k.lt"
    seed = int(rng.integers(0, 2**31))
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from engine.store import BundleWriter
        rng = np.random.default_rng({seed})
        w = BundleWriter({str(target)!r}, n={N}, dim={P})
        w.add_model("m")
        for i in range(4):
            w.write_layer("m", f"L{{i}}", rng.standard_normal(({N}, {P})).astype(np.float32))
            if i == 1:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not target.exists()
    ref = np.random.default_rng(seed)
    embs = [ref.standard_normal((N, P)).astype(np.float32) for _ in range(4)]
    w = BundleWriter(target, n=N, dim=P, resume=True)
    w.add_model("m")
    assert [w.has_layer("m", f"L{i}") for i in range(4)] == [True, True, False, False]
    for i in range(4):
        if not w.has_layer("m", f"L{i}"):
            w.write_layer("m", f"L{i}", embs[i])
    b = load_bundle(w.commit(), verify=True)
    for i, lay in enumerate(b.models["m"].layers):
        np.testing.assert_array_equal(lay.embedding, embs[i])


# ---------------------------------------------------------------------------------------------
# load_bundle validation


def _edit_manifest(path, edit):
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))


CASES = {
    "unknown-version": (lambda m: m.update(format_version=2), "unknown format_version 2"),
    "version-type": (lambda m: m.update(format_version="1"), "format_version must be int"),
    "no-models": (lambda m: m.pop("models"), "lacks the key 'models'"),
    "no-n": (lambda m: m.pop("n"), "lacks the key 'n'"),
    "n-bool": (lambda m: m.update(n=True), "n must be int"),
    "n-wrong": (lambda m: m.update(n=N + 1), r"shape \(48, 15\) where 49x15"),
    "dim-wrong": (lambda m: m.update(dim=P - 1), r"shape \(48, 15\) where 48x14"),
    "layer-file-missing": (lambda m: m["models"][0]["layers"][1].update(file="models/alpha/zz.npy"),
                           "models/alpha/zz.npy: missing .*manifest.json"),
    "path-escape": (lambda m: m["models"][0]["layers"][0].update(file="../../etc/passwd"),
                    "must be a relative path inside the bundle"),
    "layer-not-object": (lambda m: m["models"][0]["layers"].__setitem__(0, 3),
                         r"layers\[0\] must be an object"),
    "rotation-shape": (lambda m: m["models"][1]["layers"][0].update(
        rotation=m["models"][1]["layers"][0]["center"]), r"shape \(15,\) where 15x15"),
    "attr-dtype": (lambda m: m["attributes"][0].update(file=m["attributes"][1]["file"]),
                   "dtype float32 where int32"),
    "attr-kind": (lambda m: m["attributes"][0].update(kind="ordinal"), "kind must be one of"),
    "categories-short": (lambda m: m["attributes"][0].update(categories=["a"]), r"codes outside 0..0"),
    "default-unknown": (lambda m: m.update(default_attribute="colour"), "default_attribute 'colour'"),
    "images-shape": (lambda m: m.update(images=m["attributes"][0]["file"]), "dtype int32 where uint8"),
    "similarity-model": (lambda m: m["similarity"][0].update(b="gamma"), "must both be in the bundle"),
    "duplicate-model": (lambda m: m["models"].append(m["models"][0]), "duplicate model name 'alpha'"),
    "not-object": (lambda m: (m.clear()), "lacks the key 'format_version'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_load_refuses_bad_manifests(tmp_path, rng, case):
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    edit, msg = CASES[case]
    _edit_manifest(path, edit)
    with pytest.raises(BundleError, match=msg) as ei:
        load_bundle(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe\x00{", b"[1, 2]", b"null", b"[" * 100_000])
def test_load_refuses_corrupt_manifest_files(tmp_path, rng, content):
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    (path / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError, match="manifest.json"):
        load_bundle(path)


def test_load_refuses_missing_things_and_corrupt_arrays(tmp_path, rng):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "nothing")
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    layer = path / "models" / "beta" / "1-Lbeta.npy"
    raw = layer.read_bytes()
    layer.write_bytes(raw[: len(raw) // 2])  # truncated array file
    with pytest.raises(BundleError, match="1-Lbeta.npy: not a readable .npy"):
        load_bundle(path)
    raw2 = bytearray(raw)
    raw2[-1] ^= 0x55  # same size, one flipped byte: only verify=True reads the data
    layer.write_bytes(bytes(raw2))
    load_bundle(path)
    with pytest.raises(BundleError, match=r"1-Lbeta.npy: checksum .* \(corrupt layer beta/1-Lbeta\)"):
        load_bundle(path, verify=True)
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def test_manifest_reader_fuzz(tmp_path, rng):
    """Random JSON, and valid manifests with one value replaced or removed: only BundleError."""
    path, _ = make_bundle(tmp_path / "b.lt", rng)
    good = json.loads((path / "manifest.json").read_text())
    where = [p for p in _paths(good) if p]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(where) - 1), _json, st.booleans(), st.booleans())
    def check(i, value, delete, whole):
        m = json.loads(json.dumps(good))
        if whole:
            m = value
        else:
            *parent, key = where[i]
            node = m
            for k in parent:
                node = node[k]
            if delete:
                del node[key]
            else:
                node[key] = value
        (path / "manifest.json").write_text(json.dumps(m))
        try:
            load_bundle(path)
        except BundleError:
            pass

    check()

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=200))
    def check_bytes(raw):
        (path / "manifest.json").write_bytes(raw)
        with pytest.raises(BundleError):
            load_bundle(path)

    check_bytes()
