"""Cheap imports and one-way layers: importing the engine loads no heavy back end and touches no GPU,
and the import-linter contracts of pyproject.toml hold."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Everything a user may import from the engine; modules still being written are skipped by name.
ENGINE_MODULES = ["engine", "engine.store", "engine.studyformat", "engine.align", "engine.tour",
                  "engine.device", "engine.info", "engine.cli"]
# None of these may be loaded by those imports: heavy compute back ends, anything that can create a
# CUDA context (cupy, cuml, cuda-bindings), and the viewer's GUI stack.
HEAVY = ["torch", "torchvision", "cupy", "cupyx", "cuml", "cuda", "umap", "numba", "sklearn", "vispy",
         "glfw", "OpenGL", "viewer"]

_PROBE = """
import importlib, json, sys
mods = json.loads(sys.argv[1])
for m in mods:
    importlib.import_module(m)
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted(h for h in heavy if h in sys.modules)))
"""


def test_importing_the_engine_is_cheap():
    present = [m for m in ENGINE_MODULES if importlib.util.find_spec(m) is not None]
    assert "engine.store" in present and "engine.device" in present
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(present), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {present} loaded {loaded}"


def test_the_probe_would_notice_a_heavy_import():
    """The check above can fail: importing a module that pulls in a listed library is caught."""
    victim = next((h for h in ("sklearn", "torch", "vispy") if importlib.util.find_spec(h)), None)
    if victim is None:
        pytest.skip("none of sklearn, torch, vispy is installed")
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(["engine", victim]), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert victim in json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_contracts_hold():
    tool = Path(sys.executable).parent / "lint-imports"
    if not tool.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.skip("import-linter is not installed (pip install '.[dev]')")
        tool = Path(found)
    proc = subprocess.run([str(tool)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout
