"""``prepare`` on Dask: recipes, shards, alignment chain, sample fit, and real clusters on loopback.

The cluster tests start real ``LocalCluster`` s (2 single-threaded worker processes, 127.0.0.1) or
a separately started ``dask scheduler`` + ``dask worker``; each compares the bundle with the
single-process run of the same seeds (equal to 1e-5 on the CPU). UMAP's numba JIT runs once per
worker process, so these are marked ``slow``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("umap")
pytest.importorskip("distributed")

import engine
from engine.align import procrustes as align_procrustes
from engine.cli import main as cli_main
from engine.distributed import (
    ClusterOptions,
    InputRecipe,
    ModelRecipe,
    cached_model,
    model_builds,
    record_shard,
    shard_ranges,
)
from engine.layerjob import sampled_plan
from engine.pipeline import PrepareConfig

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "assets" / "tiny_mlp.py"
TINY_SPEC = f"{TINY}:build"


def assert_same_bundle(path_a, path_b, atol=1e-5):
    """Two bundles hold the same models, layers, embeddings, alignments, attributes and images."""
    a, b = engine.load_bundle(path_a), engine.load_bundle(path_b)
    assert a.n == b.n and a.dim == b.dim and list(a.models) == list(b.models)
    for name, ma in a.models.items():
        mb = b.models[name]
        assert a.checkpoints(name) == b.checkpoints(name)
        assert [x.id for x in ma.layers] == [x.id for x in mb.layers]
        states = [(a.model_at(name, c), b.model_at(name, c)) for c in a.checkpoints(name)]
        for ca, cb in states:
            for k, att in ca.attributes.items():
                np.testing.assert_array_equal(np.asarray(att.values), np.asarray(cb.attributes[k].values))
        for la, lb in ((x, y) for ca, cb in states for x, y in zip(ca.layers, cb.layers)):
            assert la.source_dim == lb.source_dim
            np.testing.assert_allclose(np.asarray(la.embedding), np.asarray(lb.embedding), atol=atol,
                                       err_msg=f"{name}/{la.id}")
            np.testing.assert_allclose(la.rotation, lb.rotation, atol=1e-8, err_msg=f"{name}/{la.id}")
            np.testing.assert_allclose(la.center, lb.center, atol=1e-8, err_msg=f"{name}/{la.id}")
            np.testing.assert_allclose(la.aligned(), lb.aligned(), atol=10 * atol)
            assert la.meta["trustworthiness"] == pytest.approx(lb.meta["trustworthiness"], abs=1e-6)
        for key in ("consecutive_similarity", "alignment_residuals"):
            np.testing.assert_allclose(ma.meta[key], mb.meta[key], atol=2e-6)
    assert list(a.attributes) == list(b.attributes)
    for k, att in a.attributes.items():
        np.testing.assert_array_equal(np.asarray(att.values), np.asarray(b.attributes[k].values))
    names = list(a.models)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            np.testing.assert_allclose(a.similarity(x, y), b.similarity(x, y), atol=1e-6)
    if a.images is None:
        assert b.images is None
    else:
        np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))


# ------------------------------------------------------------------------- fast: no cluster


def test_single_process_path_imports_no_dask():
    code = (
        "import sys\n"
        "import engine.pipeline, engine.distributed, engine.demo\n"
        "from engine.cli import build_parser\n"
        "from engine.pipeline import _cluster_options\n"
        "a = build_parser().parse_args(['prepare', '--model', 'x.py:f', '--digits', '--out', 'o'])\n"
        "assert _cluster_options(a) is None\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_cuda'))\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("kw, word", [({"cluster": "local:0"}, "--cluster"),
                                      ({"cluster": "remote:2"}, "--cluster"),
                                      ({"scheduler": "127.0.0.1:8786"}, "--scheduler"),
                                      ({"cluster": "local:2", "scheduler": "tcp://h:1"}, "exactly one"),
                                      ({}, "exactly one")])
def test_cluster_options_reject_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        ClusterOptions(**kw)


def test_cli_bad_cluster_is_a_clear_error_before_any_work(tmp_path, capsys):
    rc = cli_main(["prepare", "--model", TINY_SPEC, "--weights", "none", "--digits", "--n", "50", "--layers",
                   "1", "--device", "cpu", "--out", str(tmp_path / "x.lt"), "--cluster", "local:zero"])
    assert rc == 2 and "--cluster" in capsys.readouterr().err
    assert not (tmp_path / "x.lt").exists()
    with pytest.raises(SystemExit):  # argparse: the two flags exclude each other
        cli_main(["demo", "--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:1"])


def test_shard_ranges_cover_rows_on_batch_boundaries(rng):
    for _ in range(200):
        n, bs, shards = int(rng.integers(1, 5000)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        r = shard_ranges(n, bs, shards)
        assert 1 <= len(r) <= shards
        assert r[0][0] == 0 and r[-1][1] == n
        assert all(a < b for a, b in r) and all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))
        assert all(a % bs == 0 for a, _ in r)
    with pytest.raises(ValueError, match="batch_size"):
        shard_ranges(10, 0, 2)


def _rows(inputs, batch_size):
    return np.concatenate([x.numpy() for x in inputs.batches(batch_size)])


def _check_shards(recipe, full, cuts, batch_size):
    parts = [recipe.shard(a, b).build() for a, b in zip(cuts[:-1], cuts[1:])]
    got = np.concatenate([_rows(p, batch_size) for p in parts])
    np.testing.assert_array_equal(got, _rows(full, batch_size))
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), full.labels)
    np.testing.assert_array_equal(np.concatenate([p.thumbnails for p in parts]), full.thumbnails)
    assert all(p.label_names == full.label_names for p in parts)


def test_input_recipes_rebuild_exactly_the_rows_of_the_full_set(rng, tmp_path):
    from PIL import Image

    from engine.inputs import digits_inputs, image_folder_inputs, tensor_inputs

    _check_shards(InputRecipe.digits(300), digits_inputs(n=300), [0, 64, 128, 300], 64)
    _check_shards(InputRecipe.digits(90, size=16, channels=3), digits_inputs(n=90, size=16, channels=3),
                  [0, 30, 90], 10)
    x = rng.standard_normal((57, 2, 5, 6)).astype(np.float32)
    _check_shards(InputRecipe.tensor(x), tensor_inputs(x), [0, 8, 16, 57], 8)
    for c in ("cat", "dog", "eel"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(int(rng.integers(3, 5))):  # >= 9 images: n=7 always fits
            h, w = (int(v) for v in rng.integers(40, 90, size=2))
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / c / f"{i}.png")
    full = image_folder_inputs(tmp_path / "img", n=7, workers=0)
    recipe = InputRecipe.images(tmp_path / "img", 7)
    _check_shards(recipe, full, [0, 3, 6, 7], 3)
    with pytest.raises(ValueError, match="outside"):
        recipe.shard(3, 9)
    (tmp_path / "img" / "cat" / "extra.png").write_bytes((tmp_path / "img" / "dog" / "0.png").read_bytes())
    with pytest.raises(ValueError, match="client saw"):
        recipe.shard(0, 3).build()


def test_model_recipe_carries_random_weights_and_is_built_once_per_process(monkeypatch):
    import torch

    from engine.models import load_model

    module, _ = load_model(TINY_SPEC, weights="none")
    with pytest.raises(ValueError, match="random weights"):
        ModelRecipe.from_spec(TINY_SPEC, "none")
    monkeypatch.chdir(REPO)
    recipe = ModelRecipe.from_spec("tests/assets/tiny_mlp.py:build", "none", module)
    assert recipe.spec == TINY_SPEC  # made absolute for workers with another working directory
    rebuilt = recipe.build()
    for (k, v), (k2, v2) in zip(module.state_dict().items(), rebuilt.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    before = model_builds().get(recipe.key, 0)
    m1, _ = cached_model(recipe)
    m2, _ = cached_model(recipe)
    assert m1 is m2 and model_builds()[recipe.key] == before + 1


def test_record_shards_concatenate_to_the_single_process_record(rng):
    import torch

    from engine.activations import record
    from engine.inputs import digits_inputs
    from engine.models import load_model, resolve_layers

    torch.manual_seed(int(rng.integers(1 << 31)))
    module, name = load_model(TINY_SPEC, weights="none")
    layers = resolve_layers(module, "1,3,5", name)
    config = PrepareConfig(device="cpu", batch_size=32)
    full = {s.id: X for s, X in record(module, digits_inputs(n=250), layers, backend="cpu", batch_size=32,
                                        progress=False)}
    recipe, inputs = ModelRecipe.from_spec(TINY_SPEC, "none", module), InputRecipe.digits(250)
    parts = [record_shard(recipe, inputs.shard(a, b), layers, config, [layers[0].id], i == 0, None, name)
             for i, (a, b) in enumerate(shard_ranges(250, 32, 3))]
    assert layers[0].id not in parts[0]["layers"]  # skipped: finished before
    for spec in layers[1:]:
        got = np.concatenate([p["layers"][spec.id] for p in parts])
        np.testing.assert_array_equal(got, full[spec.id])
    assert parts[0]["thumbs"].shape[1:] == (32, 32, 3) and parts[1]["thumbs"] is None


def test_pair_stats_chained_equal_canonical_alignment(rng):
    """The Dask runner's alignment (pair_stats tasks chained on the client) is align's own chain."""
    from engine.align import (
        canonical_alignment,
        chain,
        chain_similarities,
        consecutive_similarity,
        pair_stats,
    )

    n, p = int(rng.integers(50, 400)), int(rng.integers(2, 16))
    base = rng.standard_normal((n, p))
    layers = []
    for _ in range(5):
        Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        layers.append((base @ Q * rng.uniform(0.5, 2) + rng.standard_normal(p) * 3
                       + 0.3 * rng.standard_normal((n, p))).astype(np.float32))
        base = base + 0.5 * rng.standard_normal((n, p))
    ref = canonical_alignment(layers)
    stats = [pair_stats(layers[0], layers[0])] + [pair_stats(layers[i], layers[i - 1])
                                                   for i in range(1, len(layers))]
    got = chain(stats)
    # The chain composes R_k = Q_k R_(k-1) with Q_k the plain Procrustes of centred layer k onto k-1.
    R = np.eye(p)
    for k in range(1, len(layers)):
        c = [layers[j].astype(np.float64) - layers[j].astype(np.float64).mean(0) for j in (k, k - 1)]
        R = np.asarray(align_procrustes(c[0], c[1])) @ R
        np.testing.assert_allclose(got[k].rotation, R, atol=1e-9)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-9)
        np.testing.assert_allclose(a.center, b.center, atol=1e-9)
        assert a.residual == pytest.approx(b.residual, abs=1e-9)
    np.testing.assert_allclose(chain_similarities(got), consecutive_similarity(layers), atol=1e-9)


def test_sample_plan_is_seeded_and_disjoint(rng):
    n = int(rng.integers(2000, 30000))
    config = PrepareConfig(fit_sample=int(rng.integers(100, 1500)), seed=int(rng.integers(1000)))
    p1, p2 = sampled_plan(n, config), sampled_plan(n, config)
    for k in ("idx", "trust_idx", "held_idx"):
        np.testing.assert_array_equal(p1[k], p2[k])
        assert np.all(np.diff(p1[k]) > 0)
    assert len(p1["idx"]) == config.fit_sample and not np.isin(p1["held_idx"], p1["idx"]).any()
    assert p1["chunks"][0][0] == 0 and p1["chunks"][-1][1] == n
    with pytest.raises(ValueError, match="--fit-sample"):
        sampled_plan(n, PrepareConfig(fit_sample=n))


# ------------------------------------------------------------------------ slow: UMAP, clusters


@pytest.mark.slow
def test_sample_fit_on_digits_reports_trustworthiness():
    from sklearn.datasets import load_digits
    from sklearn.manifold import trustworthiness as sk_trust

    from engine.layerjob import embed_sampled

    X = (load_digits().data / 16.0).astype(np.float32)
    config = PrepareConfig(fit_sample=600, device="cpu", trust_sample=800)
    res = embed_sampled(X, config)
    Y = res.embedding
    assert Y.shape == (1797, 15) and Y.dtype == np.float32 and np.isfinite(Y).all()
    fs = res.meta["fit_sample"]
    plan = sampled_plan(1797, config)
    held = plan["held_idx"]
    assert fs["n"] == 600 and fs["held_out_rows"] == len(held)
    # Independent float64 reference of the held-out trustworthiness, and the reported cost.
    ref = sk_trust(X[held].astype(np.float64), Y[held].astype(np.float64), n_neighbors=15)
    assert fs["trustworthiness_transformed_rows"] == pytest.approx(ref, abs=2e-6)
    assert fs["trustworthiness_cost"] == pytest.approx(fs["trustworthiness_fit_rows"] - ref, abs=4e-6)
    assert res.meta["trustworthiness"] >= 0.9 and fs["trustworthiness_transformed_rows"] >= 0.85
    # Sampled rows carry the fit's own embedding; transformed rows land among their neighbours.
    rest = np.setdiff1d(np.arange(1797), plan["idx"])
    assert np.abs(Y[rest]).max() < 3 * np.abs(Y[plan["idx"]]).max()


def _tiny_job(layers="1,3,5", seed=42, name=None):
    import torch

    from engine.models import load_model, resolve_layers
    from engine.pipeline import ModelJob

    torch.manual_seed(seed)
    module, default = load_model(TINY_SPEC, weights="none")
    return ModelJob(name=name or default, module=module, layers=resolve_layers(module, layers, default),
                    recipe=ModelRecipe.from_spec(TINY_SPEC, "none", module))


@pytest.mark.slow
def test_worker_killed_mid_task_run_completes_with_identical_bundle(tmp_path):
    from engine.inputs import digits_inputs
    from engine.pipeline import prepare

    # Two models (other weights) in parallel: cross-model frames and the similarity matrix as well.
    jobs, inputs = [_tiny_job(), _tiny_job("1,5", seed=7, name="twin")], digits_inputs(n=600)
    # init="previous" chains each layer's UMAP init to the previous aligned layer (tasks on futures).
    config = PrepareConfig(device="cpu", batch_size=50, init="previous")
    local = prepare(jobs, inputs, tmp_path / "local.lt", config, progress=False)
    trace = tmp_path / "trace"
    trace.mkdir()
    killed: list = []
    stop = threading.Event()

    def killer():  # kill the worker process running the first embedding task, once, by its PID
        while not stop.is_set():
            hits = sorted(trace.glob("embed.*"))
            if hits:
                pid = int(hits[0].name.rsplit(".", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.append((hits[0].name, pid))
                return
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    opts = ClusterOptions(cluster="local:2", inputs=InputRecipe.digits(600), trace_dir=str(trace))
    try:
        dist = prepare(jobs, inputs, tmp_path / "dist.lt", config, progress=False, cluster=opts)
    finally:
        stop.set()
        t.join(5)
    assert killed, "no embedding task started"
    name, pid = killed[0]
    prefix = name.rsplit(".", 1)[0]
    reruns = [p for p in trace.glob(prefix + ".*") if int(p.name.rsplit(".", 1)[1]) != pid]
    assert reruns, f"{prefix} was not rerun after its worker {pid} was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert_same_bundle(local, dist)
    b = engine.load_bundle(dist)
    assert b.provenance["distributed"]["workers"] == 2 and list(b.models) == ["build", "twin"]
    assert b.similarity("build", "twin").shape == (3, 2)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    os.environ.setdefault("LAYERTOUR_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.slow
def test_demo_on_local_cluster_equals_local_demo(tmp_path, demo_cache):
    from engine.demo import build_demo_bundle

    # two checkpoints (the untrained and the trained CNN) keep this within the suite's budget while
    # exercising the training run on the cluster: per-checkpoint recipes, previous-checkpoint inits,
    # the input layer copied, the logits collected from the shards
    steps = (0, 690)
    local = build_demo_bundle(tmp_path / "local.lt", device="cpu", progress=False, steps=steps)
    dist = build_demo_bundle(tmp_path / "dist.lt", device="cpu", progress=False, cluster="local:2",
                             steps=steps)
    assert_same_bundle(local, dist)
    assert engine.load_bundle(dist).checkpoints("digits-cnn") == ["step-0", "step-690"]
    prov = engine.load_bundle(dist).provenance
    assert prov["distributed"]["cluster"].startswith("LocalCluster") and prov["backend"]["name"] == "cpu"
    assert engine.load_bundle(local).provenance["distributed"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_scheduler_address_with_fit_sample_equals_single_process(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    dask = str(Path(sys.executable).with_name("dask"))
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "start_new_session": True}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        procs.append(subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                       "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                      cwd=tmp_path, **quiet))
        args = ["prepare", "--model", TINY_SPEC, "--weights", "none", "--digits", "--n", "1000", "--layers",
                "1,5", "--device", "cpu", "--fit-sample", "500"]
        assert cli_main([*args, "--out", str(tmp_path / "local.lt")]) == 0
        rc = cli_main([*args, "--out", str(tmp_path / "dist.lt"), "--scheduler", f"tcp://127.0.0.1:{port}"])
        assert rc == 0
    finally:
        for p in reversed(procs):
            _stop(p)
    assert_same_bundle(tmp_path / "local.lt", tmp_path / "dist.lt")
    b = engine.load_bundle(tmp_path / "dist.lt")
    assert b.provenance["distributed"]["cluster"] == f"scheduler tcp://127.0.0.1:{port}"
    for layer in b.models["build"].layers:
        fs = layer.meta["fit_sample"]
        assert fs["n"] == 500 and 0.8 <= fs["trustworthiness_transformed_rows"] <= 1.0
        assert fs["trustworthiness_cost"] == pytest.approx(
            fs["trustworthiness_fit_rows"] - fs["trustworthiness_transformed_rows"], abs=2e-6)


@pytest.mark.slow
def test_killed_client_resumes_with_finished_layers_kept(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["prepare", "--model", TINY_SPEC, "--weights", "none", "--digits", "--n", "400", "--layers",
            "1,3,5", "--device", "cpu"]
    out = tmp_path / "killed.lt"
    staging = tmp_path / f".{out.name}.partial"
    cmd = [sys.executable, "-m", "engine.cli", *args, "--out", str(out), "--cluster", "local:2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not list(staging.glob("models/*/*.npy")):
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its LocalCluster's processes
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists(), "a killed run must not leave a bundle at --out"
    kept = {p.name: p.stat().st_ino for p in staging.glob("models/*/*.npy")}
    assert kept
    res = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not staging.exists()
    for name, ino in kept.items():  # finished layers were kept, not recomputed
        assert (out / "models" / "build" / name).stat().st_ino == ino
    assert cli_main([*args, "--out", str(tmp_path / "clean.lt")]) == 0
    assert_same_bundle(tmp_path / "clean.lt", out)
