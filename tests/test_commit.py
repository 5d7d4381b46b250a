"""Nothing on disk is lost: a writer killed at each rename of ``commit``, concurrent writers, and
``--resume`` after the parameters changed.

The crash tests run the commit in a subprocess whose ``os.replace`` kills the process (SIGKILL)
just before or just after the k-th rename of :func:`engine.replace.install`; the parent then opens
the target with ``load_bundle`` (or a new writer) and must find a whole bundle, old or new, and
no hidden copy left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _studyfiles import leftovers

from engine.replace import DirLock, install, lock_path, old_path, recover, staging_path
from engine.store import BundleError, BundleWriter, load_bundle

N, P = 40, 6


def _write(path, value: float, *, overwrite=False, commit=True):
    w = BundleWriter(path, n=N, dim=P, overwrite=overwrite)
    w.add_model("m")
    w.write_layer("m", "L0", np.full((N, P), value, np.float32) + np.arange(N * P).reshape(N, P))
    return w.commit() if commit else w


def _value(path) -> float:
    return float(load_bundle(path).models["m"].layers[0].embedding[0, 0])


_KILL = """
import os, signal, sys
import numpy as np
import engine.replace as rp
from engine.store import BundleWriter
k, when = int(sys.argv[2]), sys.argv[3]
real, calls = os.replace, [0]
def replace(a, b):
    if not os.path.isdir(a):   # files (the manifest, written atomically) are not install()'s renames
        return real(a, b)
    calls[0] += 1
    if calls[0] == k and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)
    if calls[0] == k and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
w = BundleWriter(sys.argv[1], n={n}, dim={p}, overwrite=True)
w.add_model("m")
w.write_layer("m", "L0", np.full(({n}, {p}), 2.0, np.float32) + np.arange({n} * {p}).reshape({n}, {p}))
os.replace = replace
w.commit()
"""


@pytest.mark.parametrize("k,when,expect", [(1, "before", 1.0), (1, "after", 2.0), (2, "before", 2.0),
                                           (2, "after", 2.0)])
def test_kill_at_each_rename_of_commit_loses_nothing(tmp_path, k, when, expect):
    """k=1 moves the old bundle aside, k=2 moves the new one in. Whatever the moment, the target
    afterwards holds a whole bundle: the old one if the replacement had not begun, else the new
    (rolled forward from the finished staging directory), and no hidden copy is left."""
    target = tmp_path / "b.lt"
    _write(target, 1.0)
    script = _KILL.format(n=N, p=P)
    proc = subprocess.run([sys.executable, "-c", script, str(target), str(k), when], capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    if (k, when) in ((1, "after"), (2, "before")):
        assert not target.exists() and old_path(target).is_dir()  # the window the issue describes
    assert _value(target) == expect  # load_bundle repairs first
    b = load_bundle(target, verify=True)
    assert b.models["m"].layers[0].id == "L0"
    assert not old_path(target).exists() and not (target / ".progress.json").exists()
    # (a killed writer may leave its lock *file*; the kernel released the lock itself)
    # A later writer starts cleanly from here and replaces it as usual.
    _write(target, 3.0, overwrite=True)
    assert _value(target) == 3.0 and leftovers(tmp_path) == []


def test_next_writer_repairs_too_and_an_unfinished_staging_is_never_moved_in(tmp_path):
    target = tmp_path / "b.lt"
    _write(target, 1.0)
    # A crash after the old copy was moved aside while the staging directory was not finished
    # (no manifest): the old bundle is restored, not replaced by half a bundle.
    os.replace(target, old_path(target))
    staging_path(target).mkdir()
    (staging_path(target) / "junk").write_text("x")
    with DirLock(target):
        assert recover(target, "manifest.json") == "restored"
    assert _value(target) == 1.0 and not old_path(target).exists()
    # The writer's own repair: the same window, found by the next BundleWriter.
    os.replace(target, old_path(target))
    w = _write(tmp_path / "b.lt", 5.0, overwrite=True, commit=False)
    assert target.exists() and not old_path(target).exists()  # restored before it went on
    w.commit()
    assert _value(target) == 5.0


def test_install_replaces_whole_directories(tmp_path):
    target, staging = tmp_path / "d", staging_path(tmp_path / "d")
    target.mkdir()
    (target / "a").write_text("old")
    staging.mkdir()
    (staging / "b").write_text("new")
    with DirLock(target):
        install(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["b"] and not staging.exists()
    assert not old_path(target).exists()


_HOLD = """
import sys, time
import numpy as np
from engine.store import BundleWriter
w = BundleWriter(sys.argv[1], n={n}, dim={p})
w.add_model("m")
print("ready", flush=True)
time.sleep(60)
"""


def test_a_second_writer_of_the_same_target_is_refused_clearly(tmp_path, capsys):
    target = tmp_path / "b.lt"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(n=N, p=P), str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(BundleError, match=rf"b.lt: in use: another layertour process \(pid {proc.pid}\)"):
            BundleWriter(target, n=N, dim=P, overwrite=True)
        # The command line says the same in one line, and touches nothing of the running writer.
        from _studyfiles import write_study

        from engine.cli import main

        study = write_study(tmp_path / "src", "m", np.random.default_rng(0), n=N, dim=P)
        rc = main(["import", str(study), "--out", str(target), "--force"])
        err = capsys.readouterr().err
        assert rc == 2 and "in use" in err and str(proc.pid) in err and len(err.splitlines()) == 1
        assert staging_path(target).is_dir() and lock_path(target).exists()
    finally:
        proc.kill()
        proc.wait()
    # The kernel released the killed holder's lock: the next writer goes ahead (no stale lock).
    w = BundleWriter(target, n=N, dim=P, resume=True)
    w.abort()
    assert not staging_path(target).exists() and not lock_path(target).exists()


def test_two_writers_in_one_process_are_refused(tmp_path):
    w = BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    with pytest.raises(BundleError, match="in use: another writer in this process"):
        BundleWriter(tmp_path / "b.lt", n=N, dim=P)
    w.abort()
    BundleWriter(tmp_path / "b.lt", n=N, dim=P).abort()


def test_load_while_a_writer_replaces_is_told_to_retry(tmp_path):
    target = tmp_path / "b.lt"
    _write(target, 1.0)
    os.replace(target, old_path(target))  # as if a live writer were between its two renames
    with DirLock(target):
        with pytest.raises(BundleError, match="being replaced by another layertour process"):
            load_bundle(target)
    assert _value(target) == 1.0  # once the lock is free, the reader repairs it itself


# ----------------------------------------------------------------------------- resume parameters

torch = pytest.importorskip("torch")


def _jobs(layers="1,3,5", seed=0, weights_seed=0):
    from pathlib import Path

    from engine.models import load_model, resolve_layers
    from engine.pipeline import ModelJob

    spec = f"{Path(__file__).parent / 'assets' / 'tiny_mlp.py'}:build"
    module, name = load_model(spec, weights="none", seed=weights_seed)
    return [ModelJob(name=name, module=module, layers=resolve_layers(module, layers, name),
                     meta={"source": spec, "weights": "none"})]


def _interrupted(target, jobs, inputs, config):
    """A staging directory as a killed run with these parameters leaves it."""
    from engine.pipeline import run_params

    params = run_params(jobs, inputs, config, "umap-learn")
    w = BundleWriter(target, n=inputs.n, dim=config.dim, params=params)
    w.add_model(jobs[0].name)
    w.write_layer(jobs[0].name, jobs[0].layers[0].id, np.random.default_rng(0).standard_normal((inputs.n,
                                                                                               config.dim)))
    w.close()


CHANGES = {
    "seed": (dict(config={"seed": 7}), r"config\.seed: 42 -> 7"),
    "neighbours": (dict(config={"n_neighbors": 10}), r"config\.n_neighbors: 15 -> 10"),
    "dim": (dict(config={"dim": 8}), r"dim=15; this run has n=120, dim=8"),
    "layers": (dict(layers="1,5"), r"models\.build\.layers"),
    "model": (dict(weights_seed=3), r"models\.build\.state"),
    "inputs": (dict(n=100), r"(n=120, dim=15; this run has n=100|inputs\.)"),
    "input-content": (dict(inputs="tensor"), r"inputs\.(name|fingerprint)"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_with_changed_parameters_is_refused_listing_them(tmp_path, change):
    from dataclasses import replace

    from engine.inputs import digits_inputs, tensor_inputs
    from engine.pipeline import PrepareConfig, prepare

    config, target = PrepareConfig(device="cpu"), tmp_path / "r.lt"
    _interrupted(target, _jobs(), digits_inputs(n=120), config)
    kw, msg = CHANGES[change]
    cfg = replace(config, **kw.get("config", {}))
    inputs = digits_inputs(n=kw.get("n", 120))
    if kw.get("inputs") == "tensor":
        x = next(iter(inputs.batches(120)))
        inputs = tensor_inputs(x + 0.01, labels=inputs.labels, label_names=inputs.label_names)
    t0 = time.perf_counter()
    with pytest.raises(BundleError, match=f"cannot resume|{msg}") as ei:
        prepare(_jobs(kw.get("layers", "1,3,5"), weights_seed=kw.get("weights_seed", 0)), inputs, target, cfg,
                resume=True, progress=False)
    import re

    assert re.search(msg, str(ei.value)), str(ei.value)
    assert time.perf_counter() - t0 < 60  # refused before anything was recorded or embedded
    # The interrupted run's finished layer is still there for a resume with the old parameters.
    assert (staging_path(target) / "models" / "build" / "0-Linear.npy").is_file()
    assert not target.exists() and not lock_path(target).exists()


def test_resume_with_the_same_parameters_is_accepted(tmp_path):
    from engine.inputs import digits_inputs
    from engine.pipeline import PrepareConfig, run_params

    config, target, inputs = PrepareConfig(device="cpu"), tmp_path / "r.lt", digits_inputs(n=120)
    _interrupted(target, _jobs(), inputs, config)
    w = BundleWriter(target, n=120, dim=15, resume=True,
                     params=run_params(_jobs(), inputs, config, "umap-learn"))
    assert w.has_layer("build", "0-Linear")
    w.abort()


@pytest.mark.slow
def test_a_layer_recomputed_on_resume_keeps_its_network_position(tmp_path, monkeypatch):
    """The run is interrupted after every layer was embedded; the first layer's file is then
    damaged, so the resume drops it and embeds it again: it must still come first."""
    pytest.importorskip("umap")
    import engine.checkpoints as checkpoints
    from engine.inputs import digits_inputs
    from engine.pipeline import PrepareConfig, prepare

    config, target = PrepareConfig(device="cpu", n_neighbors=5), tmp_path / "r.lt"
    inputs = digits_inputs(n=90)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "align_bundle", interrupt)  # killed after every layer is written
    with pytest.raises(KeyboardInterrupt):
        prepare(_jobs(), inputs, target, config, progress=False)
    monkeypatch.undo()
    first = staging_path(target) / "models" / "build" / "0-Linear.npy"
    raw = bytearray(first.read_bytes())
    raw[-3] ^= 0xFF
    first.write_bytes(bytes(raw))
    b = load_bundle(prepare(_jobs(), inputs, target, config, resume=True, progress=False), verify=True)
    assert [lay.id for lay in b.models["build"].layers] == ["0-Linear", "1-Linear", "2-Linear"]
    assert [lay.index for lay in b.models["build"].layers] == [0, 1, 2]
