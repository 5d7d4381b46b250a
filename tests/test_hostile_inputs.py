"""Property tests: mutated manifests, ``.npy`` headers and saved views are refused cleanly or work.

Each example must end in success, a ``BundleError`` / ``ViewStateError`` (or, through the command
line, exit status 2 with one error line), never another exception, never a hang (every example
runs under a SIGALRM watchdog), and never a write outside the command's target directory.
Modest ``max_examples`` and a deadline keep this within a few seconds per property on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.store import BundleError, BundleWriter, load_bundle
from engine.tour import GrandTour

N, P = 30, 4
WATCHDOG_S = 20


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds=WATCHDOG_S):
    """Turn a hang into a test failure (SIGALRM interrupts blocking calls and Python loops)."""
    def fire(*_):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _tree(root: Path, skip: Path | None = None) -> dict:
    """path -> (size, mtime_ns) of every file under root, except under ``skip``."""
    out = {}
    for p in root.rglob("*"):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        try:
            st_ = p.lstat()
        except FileNotFoundError:
            continue
        out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("hostile")
    w = BundleWriter(root / "b.lt", n=N, dim=P)
    meta = {"source": "umap-tour", "umap_tour": {
        "columns": {"label": "label", "conf": "conf"}, "label_files": {"labels.bin": "label"},
        "csv_columns": ["label", "conf"], "schema": {"labels": {"id": "labels", "shape": N}},
        "meta": {"note": "x"}, "meta_attributes": {"conf": {"extent": [0, 1]}}}}
    for model in ("a", "b"):
        w.add_model(model, meta=meta)
        for i in range(2):
            w.write_layer(model, f"L{i}", rng.standard_normal((N, P)), name=f"layer {i}")
            q, _ = np.linalg.qr(rng.standard_normal((P, P)))
            w.set_alignment(model, f"L{i}", q, rng.standard_normal(P))
    w.set_attribute("label", rng.integers(0, 3, N), "categorical", categories=["x", "y", "z"])
    w.set_attribute("conf", rng.uniform(0, 1, N), "continuous", extent=(0, 1))
    w.set_similarity("a", "b", rng.uniform(0, 1, (2, 2)))
    return w.commit()


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


_hostile_text = st.sampled_from(["../../escape.bin", "ABSOLUTE", "labels/../../x.bin", "a\nb", "\x00",
                                 "models/a/L0.npy", "models/a/L0.rotation.npy", "attributes/conf.npy",
                                 "labels.bin", "x" * 300, "\u202e", ""])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8) | _hostile_text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6) | _hostile_text, kids,
                                                               max_size=3),
    max_leaves=12)


def _mutate(doc, where, i, value, delete):
    *parent, key = where[i]
    node = doc
    for k in parent:
        node = node[k]
    if delete:
        del node[key]
    else:
        node[key] = value
    return doc


def _copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def test_mutated_manifests_never_escape_crash_or_hang(good_bundle, tmp_path_factory, capsys):
    work = tmp_path_factory.mktemp("manifests")
    bundle = _copy_bundle(good_bundle, work / "b.lt")
    good = json.loads((bundle / "manifest.json").read_text())
    where = [p for p in _paths(good) if p]

    @settings(max_examples=60, deadline=10_000, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.integers(0, len(where) - 1), _values, st.booleans(), st.none() | _hostile_text)
    def check(i, value, delete, label_file):
        m = _mutate(json.loads(json.dumps(good)), where, i, value, delete)
        if label_file is not None:  # the paths export takes from a bundle's model meta
            if label_file == "ABSOLUTE":  # an absolute path, inside the watched directory
                label_file = str(work / "abs.bin")
            with contextlib.suppress(Exception):
                m["models"][0]["meta"]["umap_tour"]["label_files"] = {label_file: "label"}
        (bundle / "manifest.json").write_text(json.dumps(m))
        out = work / "out"
        before = _tree(work, skip=out)
        with watchdog():
            try:
                b = load_bundle(bundle)
                for model in b.models.values():
                    for lay in model.layers:
                        lay.aligned()
            except BundleError:
                pass
            for argv in (["export", str(bundle), "--out", str(out)],
                         ["similarity", str(bundle), "a", "b", "--out", str(out / "S.csv"),
                          "--device", "cpu"]):
                rc = main(argv)
                err = capsys.readouterr().err
                assert rc in (0, 2), argv
                if rc == 2:
                    assert err.startswith(f"layertour {argv[0]}: error: ") and "Traceback" not in err
        after = _tree(work, skip=out)
        assert after == before, "a write outside the export directory"
        import shutil

        shutil.rmtree(out, ignore_errors=True)

    check()


def test_mutated_npy_headers_are_bundle_errors(good_bundle, tmp_path_factory):
    work = tmp_path_factory.mktemp("headers")
    bundle = _copy_bundle(good_bundle, work / "b.lt")
    files = sorted((bundle / "models").rglob("*.npy")) + sorted((bundle / "attributes").rglob("*.npy"))
    originals = {f: f.read_bytes() for f in files}

    @settings(max_examples=80, deadline=5_000, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.integers(0, len(files) - 1), st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)),
                                                    min_size=1, max_size=6),
           st.sampled_from(["flip", "truncate", "insert"]))
    def check(k, edits, how):
        f = files[k]
        raw = bytearray(originals[f])
        if how == "flip":
            for pos, byte in edits:
                raw[pos] = byte
        elif how == "truncate":
            raw = raw[: edits[0][0]]
        else:
            raw[edits[0][0]:edits[0][0]] = bytes(b for _, b in edits)
        f.write_bytes(bytes(raw))
        try:
            with watchdog():
                try:
                    b = load_bundle(bundle, verify=bool(edits[0][1] % 2))
                    for model in b.models.values():
                        for lay in model.layers:
                            lay.aligned()
                except BundleError as exc:
                    assert f.name in str(exc) or "manifest.json" in str(exc)
        finally:
            f.write_bytes(originals[f])

    check()


def _view(p=5, d=2):
    tour = GrandTour(p, d, seed=3, speed=0.3)
    tour.step(2.0)
    return json.loads(json.dumps({
        "format": "layertour-view", "version": 1, "bundle": "b.lt", "n": 40, "p": p, "model": "net",
        "layer": 1, "frame": np.asarray(tour.frame).tolist(), "tour": tour.state(),
        "view": {"zoom": 1.2, "center": [0.0, 0.5], "color": "label", "speed": 0.3, "dims": d},
        "handles": [{"label": "h", "kind": "centroid", "color": [1, 0, 0, 1], "members": [1, 2]}],
        "selection": [3]}))


def test_mutated_saved_views_load_or_are_refused_and_never_hang(tmp_path):
    from viewer import viewstate

    good = _view()
    where = [p for p in _paths(good) if p]
    f = tmp_path / "v.json"
    numbers = st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e300, -1e300, 2**64, 1e-320, 3])

    @settings(max_examples=120, deadline=5_000, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.integers(0, len(where) - 1), _values | numbers, st.booleans())
    def check(i, value, delete):
        state = _mutate(json.loads(json.dumps(good)), where, i, value, delete)
        f.write_text(json.dumps(state))
        with watchdog():
            try:
                back = viewstate.load(f)
            except viewstate.ViewStateError:
                return
            tour = GrandTour.from_state(back["tour"])
            for _ in range(30):  # what render does per frame: bounded work whatever was saved
                tour.step(1 / 30)

    check()
