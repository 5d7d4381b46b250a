"""End-to-end tests of ``prepare`` and the demo: real torch, real UMAP, real files.

These are the slow tests of the suite (UMAP's numba JIT costs tens of seconds per process), so
the demo bundle is built once per module and shared.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("umap")

import engine
from engine.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "assets" / "tiny_mlp.py"


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    from engine.demo import build_demo_bundle

    os.environ.setdefault("LAYERTOUR_CACHE", str(tmp_path_factory.mktemp("cache")))
    out = tmp_path_factory.mktemp("demo") / "demo.lt"
    return build_demo_bundle(out, device="cpu", progress=False)


@pytest.mark.slow
def test_demo_bundle_is_complete_and_good(demo_bundle):
    from engine.demo import DEMO_STEPS

    b = engine.load_bundle(demo_bundle)
    assert b.n == 1797 and b.dim == 15
    model = b.models["digits-cnn"]
    ids = ["0-Input", "1-Conv2d", "2-Conv2d", "3-Linear", "4-Linear", "5-Softmax"]
    assert [layer.id for layer in model.layers] == ids
    assert model.meta["test_accuracy"] >= 0.95
    # the training axis: six checkpoints from the untrained network on, each with every layer
    names = b.checkpoints("digits-cnn")
    assert names == [f"step-{s}" for s in DEMO_STEPS] and len(names) >= 6 and names[0] == "step-0"
    accs = [b.model_at("digits-cnn", c).checkpoint_meta["accuracy"] for c in names]
    assert accs[0] < 0.25 and accs[-1] > 0.95 and accs[-1] == model.meta["accuracy"]
    assert b.checkpoint_similarity("digits-cnn").shape == (5, 6)
    for c in names:
        at = b.model_at("digits-cnn", c)
        assert [layer.id for layer in at.layers] == ids
        assert set(at.attributes) == {"prediction", "correct", "confidence", "top1_confidence", "loss"}
        for layer in at.layers:
            e = np.asarray(layer.embedding)
            assert e.shape == (1797, 15) and e.dtype == np.float32 and np.isfinite(e).all()
            assert layer.meta["trustworthiness"] >= 0.85, (c, layer.id, layer.meta["trustworthiness"])
            R = layer.rotation
            np.testing.assert_allclose(R.T @ R, np.eye(15), atol=1e-9)
    # Canonical frame: the last checkpoint's first layer is only centred
    np.testing.assert_allclose(model.layers[0].rotation, np.eye(15), atol=1e-12)
    assert len(model.meta["consecutive_similarity"]) == 5
    assert set(b.attributes) >= {"label", "prediction", "correct", "confidence", "loss", "split"}
    assert b.default_attribute == "label"
    assert b.images is not None and b.images.shape == (1797, 32, 32, 3)
    prov = b.provenance
    assert prov["parameters"]["dim"] == 15 and prov["backend"]["name"] == "cpu"
    assert prov["parameters"]["init"] == "previous-checkpoint"
    assert "umap-learn" in prov["versions"]


def _knn_accuracy(X: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-NN label accuracy in X (how well the classes separate)."""
    from sklearn.neighbors import KNeighborsClassifier

    nn = KNeighborsClassifier(n_neighbors=k + 1).fit(X, y)
    idx = nn.kneighbors(X, return_distance=False)[:, 1:]
    votes = np.apply_along_axis(lambda r: np.bincount(r, minlength=10).argmax(), 1, y[idx])
    return float((votes == y).mean())


@pytest.mark.slow
def test_the_softmax_layer_separates_the_classes_better_after_training(demo_bundle):
    """k-NN label accuracy in the 15-D embedding of the softmax layer: low for the untrained CNN,
    high for the trained one, and rising over training."""
    b = engine.load_bundle(demo_bundle)
    y = np.asarray(b.attributes["label"].values)
    acc = [_knn_accuracy(np.asarray(b.model_at("digits-cnn", c).layer("5-Softmax").aligned()), y)
           for c in b.checkpoints("digits-cnn")]
    assert acc[-1] > acc[0] + 0.2 and acc[-1] > 0.95, acc


@pytest.mark.slow
def test_aligned_layers_are_closer_than_raw(demo_bundle):
    """Procrustes alignment must reduce the distance between consecutive layers (of the trained
    network) and between consecutive checkpoints (of each layer)."""
    b = engine.load_bundle(demo_bundle)
    model = b.models["digits-cnn"]
    pairs = list(zip(model.layers[:-1], model.layers[1:]))
    states = [b.model_at("digits-cnn", c) for c in b.checkpoints("digits-cnn")]
    pairs += [(x, y) for s, t in zip(states[:-1], states[1:]) for x, y in zip(s.layers, t.layers)]
    for a, c in pairs:
        raw = np.linalg.norm((a.embedding - a.embedding.mean(0)) - (c.embedding - c.embedding.mean(0)))
        aligned = np.linalg.norm(a.aligned() - c.aligned())
        assert aligned <= raw + 1e-6, (a.checkpoint, a.id, c.checkpoint, c.id)


def _prepare_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "prepare", "--model", f"{TINY}:build", "--weights", "none",
            "--digits", "--n", "400", "--layers", "1,3,5", "--device", "cpu", "--out", str(out), *extra]


@pytest.mark.slow
def test_resume_after_kill_equals_clean_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clean, killed = tmp_path / "clean.lt", tmp_path / "killed.lt"
    subprocess.run(_prepare_cmd(clean), check=True, env=env, capture_output=True, timeout=600)
    staging = killed.with_name(f".{killed.name}.partial")
    proc = subprocess.Popen(_prepare_cmd(killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(list(staging.glob("models/*/*.npy"))) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not killed.exists(), "a killed run must not leave a bundle at --out"
    assert staging.exists(), "finished layers must survive the kill"
    res = subprocess.run(_prepare_cmd(killed, "--resume"), env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert not staging.exists()
    a, b = engine.load_bundle(clean), engine.load_bundle(killed)
    (ma,), (mb,) = a.models.values(), b.models.values()
    assert [x.id for x in ma.layers] == [x.id for x in mb.layers] == ["0-Linear", "1-Linear", "2-Linear"]
    for la, lb in zip(ma.layers, mb.layers):
        np.testing.assert_array_equal(np.asarray(la.embedding), np.asarray(lb.embedding))
        np.testing.assert_allclose(la.rotation, lb.rotation, atol=1e-12)


def test_prepare_unknown_layer_is_a_clear_error(tmp_path, capsys):
    rc = cli_main(["prepare", "--model", f"{TINY}:build", "--weights", "none", "--digits", "--n", "50",
                   "--layers", "nope", "--device", "cpu", "--out", str(tmp_path / "x.lt")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err
    assert not (tmp_path / "x.lt").exists()


def test_prepare_n_larger_than_data_is_a_clear_error(tmp_path, capsys):
    rc = cli_main(["prepare", "--model", f"{TINY}:build", "--weights", "none", "--digits", "--n", "99999",
                   "--layers", "1", "--device", "cpu", "--out", str(tmp_path / "x.lt")])
    assert rc == 2 and "99999" in capsys.readouterr().err
    assert not (tmp_path / "x.lt").exists()


def test_prepare_cuda_without_gpu_is_refused(tmp_path, capsys):
    from conftest import gpu_status

    if gpu_status()[0]:
        pytest.skip("a GPU is present: the refusal cannot be observed here")
    rc = cli_main(["prepare", "--model", f"{TINY}:build", "--weights", "none", "--digits", "--n", "50",
                   "--layers", "1", "--device", "cuda", "--out", str(tmp_path / "x.lt")])
    assert rc == 2 and "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "x.lt").exists()


@pytest.mark.gpu
def test_prepare_on_cuda_keeps_activations_on_device_and_writes_a_valid_bundle(tmp_path):
    """On CUDA: record on the device (CuPy), embed (cuML, or umap-learn on host when cuML is absent)."""
    rc = cli_main(["prepare", "--model", f"{TINY}:build", "--weights", "none", "--digits", "--n", "600",
                   "--layers", "1,3,5", "--device", "cuda", "--out", str(tmp_path / "g.lt")])
    assert rc == 0
    b = engine.load_bundle(tmp_path / "g.lt")
    assert b.provenance["backend"]["name"] == "cuda"
    (model,) = b.models.values()
    for layer in model.layers:
        assert np.isfinite(np.asarray(layer.embedding)).all()
        assert layer.meta["trustworthiness"] >= 0.8
