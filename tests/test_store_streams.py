"""engine.store's streaming parts: row files, stream bookkeeping across a resume, adoption, and
the quality fields of a layer's meta (what the viewer shows) checked at load."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
from engine.store import STREAM_SUFFIX, BundleError, BundleWriter, RowFile, load_bundle


def test_row_files_take_rows_in_any_order_and_read_back(tmp_path, rng):
    f = RowFile(tmp_path / "x.npy.stream", (1000, 15), np.float32)
    data = rng.standard_normal((1000, 15)).astype(np.float32)
    for a in (600, 0, 200, 800, 400):
        f.write(a, data[a:a + 200])
    idx = np.array([0, 1, 2, 199, 200, 650, 999])
    np.testing.assert_array_equal(f.take(idx), data[idx])
    np.testing.assert_array_equal(f.read(350, 420), data[350:420])
    with pytest.raises(BundleError, match="do not fit"):
        f.write(990, data[:20])
    f.close()
    again = RowFile(tmp_path / "x.npy.stream", (1000, 15), np.float32, keep=True)
    assert again.kept
    np.testing.assert_array_equal(again.read(0, 1000), data)
    crc = again.finish(tmp_path / "x.npy", finite_label="x")
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), data)  # a plain .npy file
    from engine.store import _crc

    assert crc == _crc(data) and not (tmp_path / "x.npy.stream").exists()
    other = RowFile(tmp_path / "y.stream", (10, 3), np.float32)
    other.close()
    assert not RowFile(tmp_path / "y.stream", (11, 3), np.float32, keep=True).kept  # header differs: new file


def test_a_non_finite_streamed_layer_is_refused(tmp_path):
    w = BundleWriter(tmp_path / "b.lt", n=8, dim=3)
    w.add_model("m")
    f = w.row_file(f"models/m/a.npy{STREAM_SUFFIX}", (3,), np.float32)
    f.write(0, np.ones((8, 3)))
    f.write(5, np.full((1, 3), np.nan))
    with pytest.raises(BundleError, match=r"model m, layer a: NaN or Inf values \(first in row 5\)"):
        w.adopt_layer("m", "a", f)
    with pytest.raises(BundleError, match="must be a relative path ending in"):
        w.row_file("models/m/a.npy", (3,), np.float32)
    w.abort()


def test_stream_state_survives_a_resume_and_leftovers_never_reach_the_bundle(tmp_path, rng):
    out = tmp_path / "b.lt"
    w = BundleWriter(out, n=20, dim=4, params={"x": 1})
    w.add_model("m")
    f = w.row_file(f"models/m/a.npy{STREAM_SUFFIX}", (4,), np.float32)
    emb = rng.standard_normal((20, 4)).astype(np.float32)
    f.write(0, emb[:10])
    f.sync()
    w.set_stream_state("m", {"rows": [[[0, 10]]], "fits": {"a": "crc32:0"}})
    w.close()  # killed: the staging directory stays
    w = BundleWriter(out, n=20, dim=4, params={"x": 1}, resume=True)
    assert w.stream_state("m") == {"rows": [[[0, 10]]], "fits": {"a": "crc32:0"}}
    f = w.row_file(f"models/m/a.npy{STREAM_SUFFIX}", (4,), np.float32, keep=True)
    assert f.kept
    f.write(10, emb[10:])
    w.adopt_layer("m", "a", f, name="a", source_dim=64, meta={"trustworthiness": 0.9}, index=0)
    w.row_file(f"models/m/b.npy{STREAM_SUFFIX}", (4,), np.float32).close()  # never adopted
    w.set_stream_state("m", None)
    assert w.stream_state("m") is None
    path = w.commit()
    b = load_bundle(path, verify=True)
    np.testing.assert_array_equal(np.asarray(b.models["m"].layers[0].embedding), emb)
    assert not list(path.rglob(f"*{STREAM_SUFFIX}"))


@pytest.mark.parametrize("meta, field", [
    ({"trustworthiness": 1.5}, "meta.trustworthiness"),
    ({"trustworthiness": "high"}, "meta.trustworthiness"),
    ({"fit_sample": {"n": 0}}, "meta.fit_sample.n"),
    ({"fit_sample": {"n": 10**9}}, "meta.fit_sample.n"),
    ({"fit_sample": {"trustworthiness_transformed_rows": -0.1}}, "trustworthiness_transformed_rows"),
    ({"fit_sample": [1, 2]}, "meta.fit_sample must be an object"),
    ({"reduction": {"dims": 300, "from_dim": 64}}, "meta.reduction.from_dim"),
    ({"reduction": {"dims": True}}, "meta.reduction.dims"),
    ({"stream": {"passes": 0}}, "meta.stream.passes"),
])
def test_hostile_quality_fields_are_named_at_load(tmp_path, rng, meta, field):
    w = BundleWriter(tmp_path / "b.lt", n=12, dim=3)
    w.add_model("m")
    w.write_layer("m", "a", rng.standard_normal((12, 3)))
    path = w.commit()
    man = json.loads((path / "manifest.json").read_text())
    man["models"][0]["layers"][0]["meta"] = meta
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"manifest\.json: .*" + field.replace(".", r"\.")):
        engine.load_bundle(path)


def test_a_resume_reads_the_interrupted_runs_fit_sample(tmp_path):
    from engine.pipeline import _staged_fit_sample
    from engine.store import staged_params

    out = tmp_path / "b.lt"
    assert staged_params(out) is None and _staged_fit_sample(out) is None
    for value, want in ((777, 777), ("777", None), (True, None), (-3, None), (None, None)):
        w = BundleWriter(out, n=10, dim=3, params={"config": {"fit_sample": value}})
        w.close()
        assert staged_params(out) == {"config": {"fit_sample": value}}
        assert _staged_fit_sample(out) == want
    (tmp_path / ".b.lt.partial" / ".progress.json").write_text("{not json")
    assert staged_params(out) is None
