"""Training runs without UMAP: finding and loading checkpoints, the (checkpoint, layer) frame, the
bundle's checkpoint API and its refusals, and a classifier's outputs as attributes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
from engine.align import align_grid, align_training, canonical_alignment, similarity
from engine.checkpoints import (
    CheckpointError,
    checkpoint_name,
    find_checkpoints,
    load_checkpoint,
    meta_from_name,
    natural_key,
)
from engine.outputs import classifier_outputs, classifier_targets
from engine.store import PLAIN_CHECKPOINT, BundleError, BundleWriter

N, P = 40, 6


def _rotation(rng, p=P):
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


# ------------------------------------------------------------------------ finding and loading

def test_natural_order_names_and_meta(tmp_path):
    assert sorted(["step-10", "step-9", "step-100"], key=natural_key) == ["step-9", "step-10", "step-100"]
    assert checkpoint_name("epoch 3 (best)") == "epoch-3-best-"
    assert meta_from_name("run1_epoch-03_step1200") == {"epoch": 3, "step": 1200}
    assert meta_from_name("ep7") == {"epoch": 7} and meta_from_name("final") == {}
    with pytest.raises(CheckpointError, match="cannot make a name"):
        checkpoint_name("...")


def test_find_checkpoints_files_folders_globs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for s in (10, 2, 1):
        (run / f"step-{s}.pt").write_bytes(b"x")
    (run / "notes.txt").write_text("not a checkpoint")
    names = [c.name for c in find_checkpoints(run)]
    assert names == ["step-1", "step-2", "step-10"]  # natural order, .txt ignored
    assert [c.name for c in find_checkpoints(str(run / "step-1*.pt"))] == ["step-1", "step-10"]
    given = find_checkpoints([run / "step-10.pt", run / "step-1.pt"])  # as given: the order is kept
    assert [c.name for c in given] == ["step-10", "step-1"] and given[0].meta["step"] == 10
    with pytest.raises(CheckpointError, match="no such file"):
        find_checkpoints(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="matches no file"):
        find_checkpoints(str(tmp_path / "*.ckpt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        find_checkpoints(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="given twice"):
        find_checkpoints([run, run / "step-1.pt"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "step-1.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="both get the name 'step-1'"):
        find_checkpoints([run / "step-1.pt", other / "step-1.pt"])


def test_load_state_dicts_wrapped_prefixed_and_saved_modules(tmp_path):
    torch = pytest.importorskip("torch")
    from engine.jobs import Checkpoint

    def net():
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))

    src = net()
    want = {k: v.clone() for k, v in src.state_dict().items()}
    cases = {"plain.pt": want, "wrapped.pt": {"model_state_dict": want, "epoch": 4, "global_step": 80},
             "lightning.ckpt": {"state_dict": {f"model.{k}": v for k, v in want.items()}, "epoch": 2}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
    for name, meta in (("plain.pt", {}), ("wrapped.pt", {"epoch": 4, "step": 80}),
                       ("lightning.ckpt", {"epoch": 2})):
        dst = net()
        got = load_checkpoint(dst, Checkpoint(name, path=str(tmp_path / name)))
        assert got == meta, name
        for k, v in dst.state_dict().items():
            assert torch.equal(v, want[k]), (name, k)
    torch.save(src, tmp_path / "module.pt")  # a pickled module: only when trusted
    with pytest.raises(CheckpointError, match="--trust-checkpoints"):
        load_checkpoint(net(), Checkpoint("m", path=str(tmp_path / "module.pt")))
    dst = net()
    load_checkpoint(dst, Checkpoint("m", path=str(tmp_path / "module.pt")), trust=True)
    assert all(torch.equal(v, want[k]) for k, v in dst.state_dict().items())
    torch.save({"state_dict": {"0.weight": torch.zeros(3, 4)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt does not fit the model: missing 0.bias"):
        load_checkpoint(net(), Checkpoint("p", path=str(tmp_path / "partial.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt: not a PyTorch file"):
        load_checkpoint(net(), Checkpoint("j", path=str(tmp_path / "junk.pt")))


# ------------------------------------------------------------------------ one frame

def _grid(rng, k=4, n_layers=3, noise=0.0):
    """Training-run embeddings: each layer a fixed cloud, every (checkpoint, layer) a rotated and
    shifted copy of it (plus optional noise)."""
    base = [rng.standard_normal((N, P)) * rng.uniform(0.5, 2, P) for _ in range(n_layers)]
    return [[(b + noise * rng.standard_normal(b.shape)) @ _rotation(rng) + rng.standard_normal(P) * 5
             for b in base] for _ in range(k)], base


def test_rigid_copies_land_on_one_another_whatever_the_path(rng):
    grid, _ = _grid(rng)
    als, sims = align_grid(grid)
    aligned = [[a.apply(E) for a, E in zip(row, Es)] for row, Es in zip(als, grid)]
    for k in range(4):  # every checkpoint of a layer, in one frame: the same points to 1e-10
        for i in range(3):
            np.testing.assert_allclose(aligned[k][i], aligned[-1][i], atol=1e-10)
    np.testing.assert_allclose(sims, 1.0, atol=1e-12)
    # the last checkpoint's chain is exactly canonical_alignment's
    for a, b in zip(als[-1], canonical_alignment(grid[-1])):
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-12)


def test_no_path_dependence_and_similarities_from_residuals(rng):
    grid, _ = _grid(rng, noise=0.3)
    als, sims = align_grid(grid)
    frame = {(k, i): als[k][i].apply(grid[k][i]) for k in range(4) for i in range(3)}

    def walk(path):  # the viewer's positions are each stop's stored alignment: no accumulation
        return [frame[s] for s in path][-1]

    a = walk([(0, 0), (0, 2), (3, 2), (3, 1), (1, 1)])
    b = walk([(3, 0), (1, 0), (1, 1)])
    np.testing.assert_array_equal(a, b)
    # chained the other way round (the grid re-aligned from scratch) gives the same frame to 1e-10
    als2, _ = align_grid([list(row) for row in grid])
    for k in range(4):
        for i in range(3):
            np.testing.assert_allclose(als2[k][i].apply(grid[k][i]), frame[(k, i)], atol=1e-10)
    for k in range(3):
        for i in range(3):
            assert sims[k, i] == pytest.approx(similarity(grid[k][i], grid[k + 1][i]), abs=1e-9)
    with pytest.raises(ValueError, match=r"grid\[1\] has 2 layers"):
        align_grid([grid[0], grid[1][:2], grid[2]])


def test_align_training_joins_models_through_last_checkpoints(rng):
    grid_a, _ = _grid(rng, k=3)
    Q = _rotation(rng)
    grid_b = [[E @ Q + 1.0 for E in row] for row in grid_a]  # model B: a rotated copy of A's run
    res = align_training({"a": grid_a, "b": grid_b})
    for k in range(3):
        for i in range(3):
            np.testing.assert_allclose(res.grids["b"][k][i].apply(grid_b[k][i]),
                                       res.grids["a"][k][i].apply(grid_a[k][i]), atol=1e-9)
    assert res.layer_similarity["a"].shape == (3, 3, 3)
    assert res.checkpoint_similarity["a"].shape == (2, 3)
    np.testing.assert_allclose(res.similarity[("a", "b")], res.layer_similarity["a"][-1], atol=1e-9)


# ------------------------------------------------------------------------ the bundle

def _write_run(path, rng, k=3, n_layers=2, extra=None):
    grid, _ = _grid(rng, k=k, n_layers=n_layers, noise=0.2)
    w = BundleWriter(path, n=N, dim=P)
    w.add_model("net", meta={"source": "test"})
    names = [f"step-{10 * j}" for j in range(k)]
    for j, c in enumerate(names):
        w.add_checkpoint("net", c, meta={"step": 10 * j, "epoch": j * 0.5})
        for i in range(n_layers):
            w.write_layer("net", f"{i}-L", grid[j][i].astype(np.float32), name=f"layer{i}", checkpoint=c,
                          meta={"trustworthiness": 0.9})
        w.set_checkpoint_attribute("net", c, "correct", (rng.uniform(size=N) < 0.3 + 0.3 * j).astype(int),
                                   "categorical", categories=["wrong", "correct"])
        w.set_checkpoint_meta("net", c, {"accuracy": 0.3 + 0.3 * j, "loss": 2.0 - j})
    res = align_training({"net": [[w.read_layer("net", f"{i}-L", c) for i in range(n_layers)]
                                  for c in names]})
    for c, row in zip(names, res.grids["net"]):
        for i, a in enumerate(row):
            w.set_alignment("net", f"{i}-L", a.rotation, a.center, checkpoint=c)
    w.set_training_similarity("net", res.checkpoint_similarity["net"], res.layer_similarity["net"])
    w.set_attribute("label", rng.integers(0, 3, N), "categorical", categories=["a", "b", "c"])
    if extra:
        extra(w)
    return w.commit(), grid, res


def test_training_run_round_trip(tmp_path, rng):
    path, grid, res = _write_run(tmp_path / "run.lt", rng)
    b = engine.load_bundle(path, verify=True)
    assert b.checkpoints("net") == ["step-0", "step-10", "step-20"]
    last = b.models["net"]
    assert last.checkpoint == "step-20" and last is b.model_at("net", -1)
    assert last is b.model_at("net", "step-20")
    m0 = b.model_at("net", "step-0")
    assert m0.checkpoint_meta == {"step": 0, "epoch": 0.0, "accuracy": 0.3, "loss": 2.0}
    assert [ly.id for ly in m0.layers] == ["0-L", "1-L"] and m0.layers[1].name == "layer1"
    assert m0.layers[0].checkpoint == "step-0" and set(m0.attributes) == {"correct"}
    np.testing.assert_array_equal(np.asarray(m0.layers[1].embedding), grid[0][1].astype(np.float32))
    want = res.grids["net"][0][1].apply(grid[0][1].astype(np.float32))
    np.testing.assert_allclose(m0.layers[1].aligned(), want, atol=1e-5)
    assert b.checkpoint_similarity("net").shape == (2, 2)
    np.testing.assert_allclose(b.layer_similarity("net", "step-10"), res.layer_similarity["net"][1],
                               atol=1e-6)
    np.testing.assert_allclose(b.layer_similarity("net"), res.layer_similarity["net"][2], atol=1e-6)
    with pytest.raises(KeyError, match="step-0, step-10, step-20"):
        b.model_at("net", "step-5")
    man = json.loads((path / "manifest.json").read_text())  # a reader that knows no checkpoints
    assert [r["file"] for r in man["models"][0]["layers"]] == [
        "models/net/checkpoints/step-20/0-L.npy", "models/net/checkpoints/step-20/1-L.npy"]


def test_bundles_without_checkpoints_open_as_before(tmp_path, rng):
    """An old bundle (the manifest written before training runs existed) opens unchanged and answers
    the checkpoint API with its one state."""
    root = tmp_path / "old.lt"
    (root / "models" / "m").mkdir(parents=True)
    e = rng.standard_normal((N, P)).astype(np.float32)
    np.save(root / "models" / "m" / "0-L.npy", e)
    man = {"format_version": 1, "n": N, "dim": P, "attributes": [], "default_attribute": None, "images": None,
           "similarity": [], "provenance": {"tool": "layertour prepare"},
           "models": [{"name": "m", "meta": {}, "layers": [
               {"id": "0-L", "name": "0-L", "index": 0, "source_dim": 64, "file": "models/m/0-L.npy",
                "shape": [N, P], "dtype": "float32", "rotation": None, "center": None, "meta": {}}]}]}
    (root / "manifest.json").write_text(json.dumps(man))
    b = engine.load_bundle(root)
    assert b.checkpoints("m") == [PLAIN_CHECKPOINT] and b.model_at("m", PLAIN_CHECKPOINT) is b.models["m"]
    assert b.models["m"].checkpoint is None and b.model_at("m", 0) is b.models["m"]
    assert b.checkpoint_similarity("m") is None and b.layer_similarity("m") is None
    np.testing.assert_array_equal(b.models["m"].layers[0].aligned(), e)


def _corrupt(path, fn):
    man = json.loads((path / "manifest.json").read_text())
    fn(man["models"][0])
    (path / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("case, message", [
    (lambda m: m["checkpoints"][0].__setitem__("name", "bad/name"),
     r"checkpoints\[0\]\.name .* not a valid name"),
    (lambda m: m["checkpoints"][1].__setitem__("name", "step-0"), "duplicate checkpoint name 'step-0'"),
    (lambda m: m["checkpoints"][0]["layers"].pop(), r"layers \['0-L'\] must be the model's \['0-L', '1-L'\]"),
    (lambda m: m["checkpoints"][-1]["layers"].reverse(), "must equal the model's layers"),
    (lambda m: m["checkpoints"][0]["meta"].__setitem__("accuracy", 1.5),
     r"meta\.accuracy must be a number in \[0, 1\]"),
    (lambda m: m["checkpoints"][0]["meta"].__setitem__("step", -1), r"meta\.step must be an integer >= 0"),
    (lambda m: m["checkpoints"][0]["meta"].__setitem__("loss", "low"), r"meta\.loss must be a finite number"),
    (lambda m: m.__setitem__("checkpoints", []), "checkpoints is empty"),
    (lambda m: m["checkpoint_similarity"].__setitem__("file", "models/net/layer_similarity.npy"),
     r"shape \(3, 2, 2\) where 2x2 was expected"),
    (lambda m: m["checkpoints"][0]["layers"][0].__setitem__("file", "../../x.npy"), "relative path inside"),
    (lambda m: m["checkpoints"][0]["attributes"][0].__setitem__("kind", "fuzzy"), "kind must be one of"),
])
def test_hostile_training_manifests_are_refused_naming_the_field(tmp_path, rng, case, message):
    path, _, _ = _write_run(tmp_path / "run.lt", rng)
    _corrupt(path, case)
    with pytest.raises(BundleError, match=message) as exc:
        engine.load_bundle(path)
    assert "manifest.json" in str(exc.value) or ".npy" in str(exc.value)


def test_similarity_values_out_of_range_are_refused(tmp_path, rng):
    path, _, _ = _write_run(tmp_path / "run.lt", rng)
    f = path / "models" / "net" / "checkpoint_similarity.npy"
    a = np.load(f)
    a[0, 0] = 7.0
    np.save(f, a)
    with pytest.raises(BundleError, match=r"checkpoint_similarity.npy: similarities must be finite"):
        engine.load_bundle(path)


def test_writer_refuses_mixing_states_and_incomplete_checkpoints(tmp_path, rng):
    w = BundleWriter(tmp_path / "x.lt", n=N, dim=P)
    w.add_model("net")
    w.add_checkpoint("net", "a")
    with pytest.raises(BundleError, match="name the checkpoint"):
        w.write_layer("net", "0-L", np.zeros((N, P), np.float32))
    with pytest.raises(BundleError, match="checkpoint name 'b@c'"):
        w.add_checkpoint("net", "b@c")
    with pytest.raises(BundleError, match="no checkpoint 'zz'"):
        w.write_layer("net", "0-L", np.zeros((N, P), np.float32), checkpoint="zz")
    for c, ids in (("a", ["0-L"]), ("b", ["0-L", "1-L"])):
        if c == "b":
            w.add_checkpoint("net", c)
        for i in ids:
            w.write_layer("net", i, rng.standard_normal((N, P)), checkpoint=c)
    with pytest.raises(BundleError, match=r"checkpoint 'a' of model 'net' has layers .* \(missing"):
        w.commit()  # 'a' lacks a layer the last checkpoint has
    w.abort()
    w = BundleWriter(tmp_path / "y.lt", n=N, dim=P)
    w.add_model("plain")
    w.write_layer("plain", "0-L", rng.standard_normal((N, P)))
    with pytest.raises(BundleError, match="already has layers of one state"):
        w.add_checkpoint("plain", "a")
    w.abort()


def test_resume_keeps_finished_checkpoint_layers(tmp_path, rng):
    w = BundleWriter(tmp_path / "r.lt", n=N, dim=P, params={"p": 1})
    w.add_model("net")
    e = rng.standard_normal((N, P)).astype(np.float32)
    for c in ("a", "b"):
        w.add_checkpoint("net", c, meta={"step": 1})
        w.write_layer("net", "0-L", e, checkpoint=c)
    w.close()  # a killed run
    w = BundleWriter(tmp_path / "r.lt", n=N, dim=P, params={"p": 1}, resume=True)
    assert w.checkpoint_names("net") == ["a", "b"]
    assert w.has_layer("net", "0-L", "a") and w.has_layer("net", "0-L", "b") and not w.has_layer("net", "0-L")
    np.testing.assert_array_equal(np.asarray(w.read_layer("net", "0-L", "b")), e)
    w.abort()


# ------------------------------------------------------------------------ outputs

def test_classifier_outputs_equal_a_direct_computation(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((50, 7)) * 8
    z[0] = [1000.0, 0, 0, 0, 0, 0, -1000.0]  # extreme logits stay finite
    t = rng.integers(0, 7, 50)
    t[0] = 6
    out = classifier_outputs(z.astype(np.float32), t)
    zt = torch.tensor(z, dtype=torch.float64)
    p = torch.softmax(zt, 1).numpy()
    np.testing.assert_array_equal(out.prediction, z.argmax(1))
    np.testing.assert_array_equal(out.correct, z.argmax(1) == t)
    np.testing.assert_allclose(out.confidence, p[np.arange(50), t], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.top1_confidence, p.max(1), rtol=1e-5)
    ce = torch.nn.functional.cross_entropy(torch.tensor(z.astype(np.float32)).double(), torch.tensor(t),
                                           reduction="none").numpy()
    np.testing.assert_allclose(out.loss, ce, rtol=1e-5)
    assert np.isfinite(out.loss).all() and out.loss[0] == pytest.approx(2000.0)
    assert out.summary() == {"accuracy": round(float((z.argmax(1) == t).mean()), 6),
                             "loss": round(float(ce.mean()), 6)}
    attrs = out.attributes([f"c{i}" for i in range(7)])
    assert list(attrs) == ["prediction", "correct", "confidence", "top1_confidence", "loss"]
    assert attrs["prediction"]["categories"][3] == "c3"
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 7\)"):
        classifier_outputs(z, t + 7)


def test_classifier_targets_decide_what_counts_as_a_classifier():
    labels, names = np.array([0, 2, 1]), ["a", "b", "c"]
    assert classifier_targets((1, 3), labels, names).tolist() == [0, 2, 1]
    assert classifier_targets((1, 10), labels, names) is None  # 10 outputs, 3 classes: another layer
    assert classifier_targets((1, 3, 4, 4), labels, names) is None  # not (N, K)
    assert classifier_targets(None, labels, names) is None
    assert classifier_targets((1, 1000), labels, names, model_targets=[5, 999, 0]).tolist() == [5, 999, 0]
    assert classifier_targets((1, 10), labels, names, model_targets=[5, 999, 0]) is None
