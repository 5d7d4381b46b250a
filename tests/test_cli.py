"""The ``layertour`` command: import / export / info through engine.cli.main, and the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _studyfiles import leftovers, study_labels, write_study

import engine.device
from engine.cli import main
from engine.store import load_bundle


@pytest.fixture
def two_dirs(tmp_path, rng):
    labels = study_labels(rng, 32)
    src = tmp_path / "src"
    return (write_study(src, "googlenet", rng, n=32, labels=labels),
            write_study(src, "resnet50", rng, n=32, labels=labels, layer_ids=["0-Input", "1-Conv2d"]))


def test_import_then_export(tmp_path, two_dirs, capsys):
    a, b = two_dirs
    out = tmp_path / "s.lt"
    assert main(["import", str(a), str(b), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    bun = load_bundle(out)
    assert list(bun.models) == ["googlenet", "resnet50"]
    assert main(["export", str(out), "--format", "umap-tour", "--out", str(tmp_path / "exp")]) == 0
    printed = capsys.readouterr().out
    for d in (a, b):
        assert f"wrote {tmp_path / 'exp' / d.name}" in printed
        for f in d.glob("*.bin"):
            assert (tmp_path / "exp" / d.name / f.name).read_bytes() == f.read_bytes()


def test_import_names_and_model_selection(tmp_path, two_dirs, capsys):
    a, b = two_dirs
    out = tmp_path / "s.lt"
    assert main(["import", str(a), str(b), "--out", str(out), "--name", "g", "--name", "r"]) == 0
    assert list(load_bundle(out).models) == ["g", "r"]
    assert main(["export", str(out), "--model", "r", "--out", str(tmp_path / "exp")]) == 0
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["meta-r-15D.json", "r"]


def test_existing_out_needs_force(tmp_path, two_dirs, capsys):
    a, _ = two_dirs
    out = tmp_path / "s.lt"
    assert main(["import", str(a), "--out", str(out)]) == 0
    first = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["import", str(a), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layertour import: error: ") and str(out) in err and "--force" in err
    assert (out / "manifest.json").read_bytes() == first
    assert main(["import", str(a), "--out", str(out), "--force"]) == 0
    assert leftovers(tmp_path) == []


def test_import_errors_exit_2_and_name_the_culprit(tmp_path, two_dirs, capsys):
    a, b = two_dirs
    bad = b / "1-Conv2d.bin"
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["import", str(a), str(b), "--out", str(tmp_path / "s.lt")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "Traceback" not in err
    assert not (tmp_path / "s.lt").exists() and leftovers(tmp_path) == []


def test_export_errors_exit_2(tmp_path, capsys):
    (tmp_path / "notabundle").mkdir()
    assert main(["export", str(tmp_path / "notabundle"), "--out", str(tmp_path / "exp")]) == 2
    assert "manifest.json: missing" in capsys.readouterr().err


def test_info_without_gl(capsys, monkeypatch):
    monkeypatch.delenv("LAYERTOUR_DEVICE", raising=False)
    engine.device._resolve.cache_clear()
    assert main(["info", "--no-gl", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "back end   cpu" in out and f"numpy          {np.__version__}" in out
    assert not any(line.startswith(("OpenGL", "render path")) for line in out.splitlines())
    engine.device._resolve.cache_clear()


def test_info_reports_unavailable_cuda(capsys, monkeypatch):
    from conftest import gpu_status

    if gpu_status()[0]:
        pytest.skip("this machine has a CUDA device")
    engine.device._resolve.cache_clear()
    assert main(["info", "--no-gl", "--device", "cuda"]) == 0
    assert "back end   unavailable: CUDA back end requested but unavailable" in capsys.readouterr().out
    engine.device._resolve.cache_clear()


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "import" in capsys.readouterr().out


def test_console_script(tmp_path, two_dirs):
    script = Path(sys.executable).parent / "layertour"
    if not script.exists():
        pytest.skip(f"console script not installed at {script} (pip install -e . creates it)")
    a, b = two_dirs
    out = tmp_path / "s.lt"
    ok = subprocess.run([str(script), "import", str(a), str(b), "--out", str(out)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert load_bundle(out).n == 32
    again = subprocess.run([str(script), "import", str(a), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr and str(out) in again.stderr


def test_viewer_commands_are_registered_not_imported(capsys):
    """view/render come from the viewer's ``layertour.commands`` entry point, carry the viewer's
    own options and handler, and a viewer error is a one-line user error of the engine's CLI."""
    from engine.cli import COMMAND_GROUP, build_parser
    from engine.errors import UserError

    parser = build_parser()
    assert {"view", "render"} <= set(parser.commands)
    args = parser.parse_args(["render", "b.lt", "--out", "x.png", "--walk", "1"])
    assert args.handler.__module__ == "viewer.cli" and args.walk == 1.0
    from viewer.cli import ViewerCliError

    assert issubclass(ViewerCliError, UserError)
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group=COMMAND_GROUP)] == ["viewer.cli:register"]
    src = (Path(__file__).resolve().parent.parent / "engine" / "cli.py").read_text()
    assert "import viewer" not in src and "from viewer" not in src
    assert main(["render", "/nonexistent/b.lt", "--out", "x.png", "--size", "12xx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layertour render: error: ") and "Traceback" not in err
