"""Streaming ``prepare`` (engine.stream): equal to the in-memory sample fit, within its memory
budget, resumable after a kill mid-stream, on Dask; and its planner, row files and output hook.

The runs use the tiny MLP on scikit-learn's digits (1,797 images, ``--reduce-dims 32`` so the
input layer's 64 dimensions go through the PCA basis) and a tiny CNN on synthetic images for the
memory budget; every comparison is exact (the same bits), not a tolerance.
"""

from __future__ import annotations

import json
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
from engine.activations import MemoryBudgetError
from engine.cli import main as cli_main
from engine.jobs import PrepareConfig
from engine.stream import add_rows, covered, plan_stream, rows_from_start

REPO = Path(__file__).resolve().parent.parent
TINY_SPEC = f"{REPO / 'tests' / 'assets' / 'tiny_mlp.py'}:build"
CNN_SPEC = f"{REPO / 'tests' / 'assets' / 'tiny_cnn.py'}:build"
ARGS = ["prepare", "--model", TINY_SPEC, "--weights", "none", "--digits", "--layers", "input,1,5",
        "--device", "cpu", "--umap-backend", "umap-learn", "--fit-sample", "600", "--transform-chunk", "200",
        "--batch-size", "50", "--reduce-dims", "32"]


def assert_identical(path_a, path_b):
    """Two bundles with the same layers, bit for bit, and the same quality figures and attributes."""
    a, b = engine.load_bundle(path_a, verify=True), engine.load_bundle(path_b, verify=True)
    assert list(a.models) == list(b.models)
    for name, ma in a.models.items():
        mb = b.models[name]
        assert [x.id for x in ma.layers] == [x.id for x in mb.layers]
        for la, lb in zip(ma.layers, mb.layers):
            np.testing.assert_array_equal(np.asarray(la.embedding), np.asarray(lb.embedding),
                                          err_msg=f"{name}/{la.id}")
            np.testing.assert_allclose(la.rotation, lb.rotation, atol=1e-12)
            assert la.meta["trustworthiness"] == lb.meta["trustworthiness"]
            for key in ("n", "trustworthiness_fit_rows", "trustworthiness_transformed_rows", "held_out_rows"):
                assert la.meta["fit_sample"][key] == lb.meta["fit_sample"][key], (la.id, key)
            assert la.meta["reduction"] == lb.meta["reduction"] or (
                {k: v for k, v in la.meta["reduction"].items() if k != "seconds"}
                == {k: v for k, v in lb.meta["reduction"].items() if k != "seconds"})
    assert list(a.attributes) == list(b.attributes)
    for k, att in a.attributes.items():
        np.testing.assert_array_equal(np.asarray(att.values), np.asarray(b.attributes[k].values))
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Path:
    """The reference: the digits run streamed in one process."""
    out = tmp_path_factory.mktemp("ref") / "stream.lt"
    assert cli_main([*ARGS, "--stream", "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------------------ fast: the planner


DIMS = {"m": {"0-Input": 3072, "1-Conv": 8192, "2-Fc": 10}}


class _N:
    def __init__(self, n):
        self.n = n


def test_plan_streams_only_when_the_budget_requires_it():
    from engine.device import resolve

    cpu = resolve("cpu")
    small = PrepareConfig(memory_budget_gib=0.5)
    assert plan_stream([], _N(10_000), small, cpu, dims=DIMS) is None  # 10,000 x 8,192 x 4 = 0.31 GiB
    plan = plan_stream([], _N(100_000), small, cpu, dims=DIMS)
    assert plan is not None and "m/1-Conv" in plan.why and "0.50 GiB budget" in plan.why
    never = PrepareConfig(memory_budget_gib=0.5, stream=False)
    assert plan_stream([], _N(100_000), never, cpu, dims=DIMS) is None
    forced = plan_stream([], _N(5_000), PrepareConfig(stream=True), cpu, dims=DIMS)
    assert forced.why == "--stream" and forced.fit_sample == 2_500  # at most half the inputs
    assert forced.reduced["m"] == {"0-Input": 256, "1-Conv": 256, "2-Fc": 10}


def test_plan_sizes_the_fit_sample_by_the_budget_and_refuses_what_cannot_fit():
    from engine.device import resolve

    cpu = resolve("cpu")
    sizes = [plan_stream([], _N(10**6), PrepareConfig(memory_budget_gib=g, stream=True), cpu, dims=DIMS)
             for g in (0.35, 0.6, 2.0, 64.0)]
    ms = [p.fit_sample for p in sizes]
    assert ms == sorted(ms) and ms[0] < ms[-1] == 20_000, ms
    for p in sizes:
        assert p.estimate["peak"] <= 0.8 * p.budget  # the plan's peak sits inside the budget
    with pytest.raises(MemoryBudgetError, match=r"--memory-budget 0\.05 GiB cannot hold .* MiB"):
        plan_stream([], _N(10**6), PrepareConfig(memory_budget_gib=0.05, stream=True), cpu, dims=DIMS)
    with pytest.raises(MemoryBudgetError, match=r"--fit-sample 200,000 with --memory-budget 0\.50 GiB"):
        plan_stream([], _N(10**6), PrepareConfig(memory_budget_gib=0.5, stream=True, fit_sample=200_000), cpu,
                    dims=DIMS)


def test_row_intervals():
    done: list = []
    for a, b in ((400, 600), (0, 200), (200, 400), (800, 1000)):
        done = add_rows(done, a, b)
    assert done == [[0, 600], [800, 1000]] and rows_from_start(done) == 600
    assert covered(done, 200, 600) and not covered(done, 500, 900) and rows_from_start([[200, 400]]) == 0


# ------------------------------------------------------------------------------- slow: real runs


@pytest.mark.slow
def test_stream_equals_the_in_memory_sample_fit(streamed, tmp_path):
    mem = tmp_path / "memory.lt"
    assert cli_main([*ARGS, "--out", str(mem)]) == 0
    assert engine.load_bundle(mem).provenance["stream"] is None
    assert_identical(mem, streamed)
    b = engine.load_bundle(streamed)
    st = b.provenance["stream"]
    assert st["why"] == "--stream" and st["fit_sample"] == 600 and st["transform_chunk"] == 200
    lay = b.models["build"].layers
    assert lay[0].meta["reduction"]["dims"] == 32 and lay[0].meta["reduction"]["from_dim"] == 64
    assert lay[1].meta["reduction"] is None  # 32 dims: nothing to reduce
    for layer in lay:
        fs = layer.meta["fit_sample"]
        assert fs["n"] == 600 and fs["held_out_rows"] == 1197 and layer.meta["stream"]["passes"] == 1
        assert 0.85 < fs["trustworthiness_transformed_rows"] <= 1.0
    assert not list(Path(streamed).rglob("*.stream"))  # no row file is left behind


@pytest.mark.slow
def test_resume_after_a_kill_mid_stream_equals_an_uninterrupted_run(streamed, tmp_path, caplog):
    out = tmp_path / "killed.lt"
    progress = tmp_path / f".{out.name}.partial" / ".progress.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *ARGS, "--stream", "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rows = None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            try:
                rows = json.loads(progress.read_text())["streams"]["build"]["rows"][0]
            except (OSError, ValueError, KeyError, IndexError):
                rows = None
            if rows:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed mid-stream"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rows and rows[0][0] == 0 and rows[0][1] < 1797, rows
    assert not out.exists()
    with caplog.at_level("INFO", logger="layertour"):
        assert cli_main([*ARGS, "--stream", "--resume", "--out", str(out)]) == 0
    assert "resuming the stream" in caplog.text
    assert_identical(streamed, out)


@pytest.mark.slow
def test_stream_on_a_local_cluster_equals_one_process(streamed, tmp_path):
    pytest.importorskip("distributed")
    from engine.distributed import ClusterOptions, InputRecipe, ModelRecipe, stream_ranges
    from engine.inputs import digits_inputs
    from engine.models import load_model, resolve_layers
    from engine.pipeline import ModelJob, prepare

    module, name = load_model(TINY_SPEC, weights="none")
    job = ModelJob(name, module, resolve_layers(module, "input,1,5", name),
                   meta={"source": TINY_SPEC, "weights": "none", "layers_spec": "input,1,5"},
                   recipe=ModelRecipe.from_spec(TINY_SPEC, "none", module))
    config = PrepareConfig(device="cpu", umap_backend="umap-learn", fit_sample=600, transform_chunk=200,
                           batch_size=50, reduce_dims=32, stream=True)
    trace = tmp_path / "trace"
    trace.mkdir()
    opts = ClusterOptions(cluster="local:2", inputs=InputRecipe.digits(1797), trace_dir=str(trace))
    out = prepare([job], digits_inputs(), tmp_path / "dist.lt", config, progress=False, cluster=opts)
    assert_identical(streamed, out)
    ranges = stream_ranges(1797, 200, 50)
    assert ranges == [(0, 800), (800, 1600), (1600, 1797)]
    streams = sorted(p.name for p in trace.glob("stream.*"))
    assert [s.split(".")[2] for s in streams] == sorted(f"{a}-{b}" for a, b in ranges)  # one task per range
    assert len({s.rsplit(".", 1)[1] for s in streams}) == 2  # on both workers
    assert len(list(trace.glob("fit.*"))) == 3 and not list(trace.glob("embed.*"))  # no whole-layer task


CHILD = r"""
import gc, json, sys
from engine.inputs import synthetic_inputs
from engine.models import load_model, resolve_layers
from engine.pipeline import ModelJob, PrepareConfig, prepare

def status():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "VmHWM")}

spec, out, budget, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
module, name = load_model(spec, weights="none")
layers = resolve_layers(module, "0", name)
cfg = dict(device="cpu", umap_backend="umap-learn", memory_budget_gib=budget, transform_chunk=1000,
           reduce_dims=32)
# Warm up (numba compiles UMAP, torch and scikit-learn allocate their pools) on a small run, then
# reset the peak: the figure is what the real run's data take above the warm process.
prepare([ModelJob(name, module, layers)], synthetic_inputs(400, seed=3), out + ".warm",
        PrepareConfig(**cfg, stream=True), overwrite=True, progress=False)
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status()["VmRSS"]
prepare([ModelJob(name, module, layers)], synthetic_inputs(n, seed=1), out, PrepareConfig(**cfg),
        overwrite=True, progress=False)
print(json.dumps({"base": base, "peak": status()["VmHWM"]}))
"""


@pytest.mark.slow
def test_a_small_budget_is_never_exceeded(tmp_path):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    budget_gib, n = 0.12, 5000  # the first convolution alone: 5,000 x 8,192 x 4 B = 0.153 GiB
    out = tmp_path / "small.lt"
    res = subprocess.run([sys.executable, "-c", CHILD, CNN_SPEC, str(out), str(budget_gib), str(n)],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    grew = got["peak"] - got["base"]
    assert grew <= budget_gib * 2**30, f"peak RSS grew by {grew / 2**20:.0f} MiB, budget {budget_gib} GiB"
    b = engine.load_bundle(out)
    assert b.n == n and "needs 0.15 GiB" in b.provenance["stream"]["why"]
    assert all(lay.meta["fit_sample"]["n"] >= 1000 for lay in b.models["build"].layers)


class ArgmaxHook:
    """A caller's model-output hook (``prepare(output_hook=)``): the arg-max and top-1 probability."""

    def specs(self):
        return {"argmax": {"kind": "categorical", "categories": [str(i) for i in range(10)],
                           "dtype": "int32"},
                "top1": {"kind": "continuous", "extent": [0.0, 1.0], "dtype": "float32"}}

    def __call__(self, a, b, outputs, labels, targets):
        assert outputs.shape == (b - a, 10) and labels.shape == (b - a,)
        e = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        return {"argmax": outputs.argmax(axis=1).astype(np.int32),
                "top1": p.max(axis=1).astype(np.float32)}


@pytest.mark.slow
def test_a_classifiers_outputs_are_attributes_streamed_or_not(tmp_path):
    """The tiny MLP is a classifier over the digits' 10 classes: prediction, correct, confidence,
    top-1 confidence and loss equal a direct forward pass, bit for bit the same streamed (chunk by
    chunk, :class:`engine.outputs.ClassifierHook`) as in memory (the logits recorded with the
    layers); accuracy and mean loss land in the model's meta; a caller's hook adds its own."""
    import torch

    from engine.inputs import digits_inputs
    from engine.models import load_model, resolve_layers
    from engine.outputs import OUTPUT_ATTRIBUTES, classifier_outputs
    from engine.pipeline import ModelJob, prepare

    module, name = load_model(TINY_SPEC, weights="none")
    inputs = digits_inputs(n=700)
    with torch.no_grad():
        logits = module(next(iter(inputs.batches(700)))).numpy()
    want = classifier_outputs(logits, inputs.labels)
    cfg = dict(device="cpu", umap_backend="umap-learn", fit_sample=300, transform_chunk=256, batch_size=64)
    got = {}
    for stream in (True, None):
        job = ModelJob(name, module, resolve_layers(module, "1", name))
        out = prepare([job], inputs, tmp_path / f"{stream}.lt", PrepareConfig(**cfg, stream=stream),
                      progress=False, output_hook=ArgmaxHook())
        b = engine.load_bundle(out)
        assert (b.provenance["stream"] is not None) == bool(stream)
        got[stream] = b
        np.testing.assert_array_equal(np.asarray(b.attributes["prediction"].values), want.prediction)
        np.testing.assert_array_equal(np.asarray(b.attributes["correct"].values), want.correct.astype(int))
        for k in ("confidence", "top1_confidence", "loss"):
            np.testing.assert_allclose(np.asarray(b.attributes[k].values), getattr(want, k), rtol=1e-5,
                                       atol=1e-6)
        assert b.attributes["prediction"].categories == [str(i) for i in range(10)]
        assert b.models[name].meta["accuracy"] == pytest.approx(want.accuracy, abs=1e-6)
        assert b.models[name].meta["loss"] == pytest.approx(want.mean_loss, rel=1e-5)
        np.testing.assert_array_equal(np.asarray(b.attributes["argmax"].values), logits.argmax(1))
        p = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(np.asarray(b.attributes["top1"].values),
                                   (p / p.sum(1, keepdims=True)).max(1), rtol=1e-5)
        assert b.default_attribute == "label"
    for k in OUTPUT_ATTRIBUTES:
        np.testing.assert_array_equal(np.asarray(got[True].attributes[k].values),
                                      np.asarray(got[None].attributes[k].values))


@pytest.mark.gpu
def test_pca_basis_and_streamed_transform_on_cupy_match_numpy():
    """The CUDA path (CuPy randomised PCA, the basis applied on the device, cuML's transform): the
    basis spans the same subspace as NumPy's, and a streamed chunk embeds as well."""
    import cupy as cp

    from engine.embed import pca_reduce

    rng = np.random.default_rng(0)
    X = (rng.standard_normal((3000, 40)) @ rng.standard_normal((40, 600))).astype(np.float32)
    _, var_h, basis_h = pca_reduce(X, 32, seed=1, basis=True)
    _, var_d, basis_d = pca_reduce(cp.asarray(X), 32, seed=1, basis=True)
    assert isinstance(basis_d.axes, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(var_d), var_h, rtol=1e-3)
    A, B = basis_h.axes.astype(np.float64), cp.asnumpy(basis_d.axes).astype(np.float64)
    np.testing.assert_allclose(np.linalg.svd(A.T @ B, compute_uv=False), 1.0, atol=1e-3)  # same subspace
    Yd = basis_d.apply(cp.asarray(X[:500]))
    assert isinstance(Yd, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(Yd) @ B.T, basis_h.apply(X[:500]) @ A.T, rtol=1e-3, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.slow
def test_stream_on_cuda_embeds_as_well_as_on_the_cpu(streamed, tmp_path):
    out = tmp_path / "cuda.lt"
    args = [a if a != "cpu" else "cuda" for a in ARGS]
    args[args.index("umap-learn")] = "auto"  # cuML on the device
    assert cli_main([*args, "--stream", "--out", str(out)]) == 0
    a, b = engine.load_bundle(streamed), engine.load_bundle(out)
    assert b.provenance["backend"]["name"] == "cuda"
    for la, lb in zip(a.models["build"].layers, b.models["build"].layers):
        fa, fb = la.meta["fit_sample"], lb.meta["fit_sample"]
        assert fb["trustworthiness_transformed_rows"] >= fa["trustworthiness_transformed_rows"] - 0.03, la.id


@pytest.mark.slow
def test_one_command_streams_synthetic_images(tmp_path):
    out = tmp_path / "synthetic.lt"
    assert cli_main(["prepare", "--model", CNN_SPEC, "--weights", "none", "--synthetic", "500", "--layers",
                     "7", "--stream", "--fit-sample", "200", "--device", "cpu", "--umap-backend",
                     "umap-learn", "--out", str(out)]) == 0
    b = engine.load_bundle(out)
    assert b.n == 500 and b.images.shape == (500, 32, 32, 3)
    assert b.attributes["label"].categories[0] == "class 0"
    assert b.provenance["stream"]["fit_sample"] == 200
