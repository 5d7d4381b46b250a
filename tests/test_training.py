"""``prepare`` over a training run, end to end with real torch and real UMAP (small: a tiny MLP whose
weights the test sets, a few hundred digits): K checkpoints at once equal K separate runs, the
outputs equal a direct forward pass, and a run killed mid-way resumes to the same bundle."""

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

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "assets" / "tiny_mlp.py"
N = 300


def _states(k: int):
    """K states of the tiny MLP: seeded random weights drifting towards a second draw (a stand-in
    for training whose every value the test knows)."""
    import torch

    sys.path.insert(0, str(TINY.parent))
    from tiny_mlp import build

    torch.manual_seed(0)
    a, b = build().state_dict(), build().state_dict()
    return build, [{n: (1 - t) * a[n] + t * b[n] for n in a} for t in np.linspace(0.0, 1.0, k)]


@pytest.mark.slow
def test_k_checkpoints_equal_k_separate_runs_and_outputs_equal_a_forward_pass(tmp_path):
    import torch

    from engine.inputs import digits_inputs
    from engine.jobs import Checkpoint, ModelJob, PrepareConfig
    from engine.models import resolve_layers
    from engine.pipeline import prepare

    build, states = _states(3)
    inputs = digits_inputs(n=N)
    config = PrepareConfig(device="cpu", init="spectral", n_neighbors=10, trust_sample=N)
    module = build()
    layers = resolve_layers(module, "input,1,5", "tiny")
    cks = [Checkpoint(f"step-{10 * k}", state=s, meta={"step": 10 * k}) for k, s in enumerate(states)]
    run = prepare([ModelJob("tiny", module, layers)], inputs, tmp_path / "run.lt", config, checkpoints=cks,
                  progress=False)
    b = engine.load_bundle(run, verify=True)
    assert b.checkpoints("tiny") == ["step-0", "step-10", "step-20"]
    x = torch.cat(list(inputs.batches(N)))
    for k, (ck, state) in enumerate(zip(cks, states)):
        single = build()
        single.load_state_dict(state)
        out = prepare([ModelJob("tiny", single, layers)], inputs, tmp_path / f"single{k}.lt", config,
                      progress=False)
        s = engine.load_bundle(out)
        at = b.model_at("tiny", ck.name)
        for la, lb in zip(at.layers, s.models["tiny"].layers):
            np.testing.assert_array_equal(np.asarray(la.embedding), np.asarray(lb.embedding), err_msg=la.id)
        with torch.no_grad():
            z = single(x).double()
        p = torch.softmax(z, 1).numpy()
        y = inputs.labels
        attrs = at.attributes
        np.testing.assert_array_equal(attrs["prediction"].values, p.argmax(1))
        np.testing.assert_array_equal(attrs["correct"].values, (p.argmax(1) == y).astype(np.int32))
        np.testing.assert_allclose(attrs["confidence"].values, p[np.arange(N), y], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(attrs["top1_confidence"].values, p.max(1), rtol=1e-4)
        np.testing.assert_allclose(attrs["loss"].values, -np.log(p[np.arange(N), y]), rtol=1e-4)
        assert at.checkpoint_meta["accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()), abs=1e-6)
        # a plain prepare records the same outputs as bundle attributes and in the model's meta
        np.testing.assert_array_equal(s.attributes["prediction"].values, attrs["prediction"].values)
        assert s.models["tiny"].meta["accuracy"] == at.checkpoint_meta["accuracy"]
    # the input layer is embedded once and is exactly still through training
    inp = [b.model_at("tiny", c).layers[0] for c in b.checkpoints("tiny")]
    assert inp[1].meta["copied_from_checkpoint"] == "step-0"
    for layer in inp[1:]:
        np.testing.assert_array_equal(layer.aligned(), inp[0].aligned())
    assert b.checkpoint_similarity("tiny")[:, 0] == pytest.approx(1.0, abs=1e-6)
    # the bundle's attributes are the last checkpoint's
    np.testing.assert_array_equal(b.attributes["correct"].values,
                                  b.model_at("tiny", -1).attributes["correct"].values)


def _cmd(ckdir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "prepare", "--model", f"{TINY}:build",
            "--checkpoints", str(ckdir), "--digits", "--n", str(N), "--layers", "input,1,3",
            "--device", "cpu", "--n-neighbors", "10", "--out", str(out), *extra]


@pytest.mark.slow
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    import torch

    _build, states = _states(3)
    ckdir = tmp_path / "ckpt"
    ckdir.mkdir()
    for k, s in enumerate(states):  # given out of order on disk: natural order is epoch-2 < epoch-10
        torch.save({"state_dict": s, "epoch": [0, 2, 10][k]}, ckdir / f"epoch-{[0, 2, 10][k]}.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clean, killed = tmp_path / "clean.lt", tmp_path / "killed.lt"
    res = subprocess.run(_cmd(ckdir, clean), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    staging = killed.with_name(f".{killed.name}.partial")
    proc = subprocess.Popen(_cmd(ckdir, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:  # kill inside the second checkpoint
            if list(staging.glob("models/*/checkpoints/epoch-2/*.npy")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not killed.exists() and staging.exists()
    res = subprocess.run(_cmd(ckdir, killed, "--resume"), env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    a, b = engine.load_bundle(clean, verify=True), engine.load_bundle(killed, verify=True)
    assert a.checkpoints("build") == b.checkpoints("build") == ["epoch-0", "epoch-2", "epoch-10"]
    assert a.model_at("build", 1).checkpoint_meta["epoch"] == 2
    for c in a.checkpoints("build"):
        for la, lb in zip(a.model_at("build", c).layers, b.model_at("build", c).layers):
            np.testing.assert_array_equal(np.asarray(la.embedding), np.asarray(lb.embedding))
            np.testing.assert_allclose(la.rotation, lb.rotation, atol=1e-12)
        for name, attr in a.model_at("build", c).attributes.items():
            np.testing.assert_array_equal(attr.values, b.model_at("build", c).attributes[name].values)
    assert a.provenance["parameters"]["init"] == "previous-checkpoint"  # the default with checkpoints
