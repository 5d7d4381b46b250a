"""Shared fixtures and the hardware probes behind the ``gpu`` and ``gl`` markers.

- ``gpu`` tests run only where CuPy sees a working CUDA device. With ``LAYERTOUR_REQUIRE_GPU=1``
  a missing device is a failure, not a skip, so a run on a GPU machine cannot pass by skipping.
- ``gl`` tests need an OpenGL context through VisPy's glfw back end (Xvfb + Mesa in CI).
- ``study_data`` is ``../shared/data/umap-tour`` (real published embeddings), skipped when absent.
"""

from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
STUDY_DIR = Path(os.environ.get("LAYERTOUR_STUDY_DATA", REPO.parent / "shared" / "data" / "umap-tour"))
REQUIRE_GPU = os.environ.get("LAYERTOUR_REQUIRE_GPU", "") not in ("", "0")


def gpu_status() -> tuple[bool, str]:
    """(available, device name or reason): the project's one CUDA probe, ``kernels.cuda_status``."""
    from kernels import cuda_status

    return cuda_status()


@functools.cache
def gl_status() -> tuple[bool, str]:
    """(available, reason) for an OpenGL context through VisPy + glfw."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False, "no display (run under Xvfb: make test does)"
    try:
        import vispy

        vispy.use("glfw")
        from vispy import app, gloo

        c = app.Canvas(show=False, size=(8, 8))
        c.set_current()
        gloo.clear("black")
        c.close()
        return True, "ok"
    except Exception as exc:
        return False, f"no OpenGL context via VisPy/glfw ({type(exc).__name__}: {exc})"


def pytest_runtest_setup(item):
    if "gpu" in item.keywords:
        ok, reason = gpu_status()
        if not ok:
            if REQUIRE_GPU:
                pytest.fail(f"LAYERTOUR_REQUIRE_GPU=1 but {reason}", pytrace=False)
            pytest.skip(f"GPU test: {reason}")
    if "gl" in item.keywords:
        ok, reason = gl_status()
        if not ok:
            if REQUIRE_GPU and "gpu" in item.keywords:
                # A GPU+GL test (CUDA-OpenGL interop) must not pass a GPU run by skipping.
                pytest.fail(f"LAYERTOUR_REQUIRE_GPU=1 but no OpenGL context: {reason}", pytrace=False)
            pytest.skip(f"OpenGL test: {reason}")


@pytest.fixture
def study_data() -> Path:
    """The published UMAP Tour embeddings (../shared/data/umap-tour); skip if absent."""
    if not (STUDY_DIR / "googlenet" / "schema.json").exists():
        pytest.skip(f"study data not found at {STUDY_DIR} (shared data folder absent)")
    return STUDY_DIR


def seed_for_test(nodeid: str) -> int:
    """The ``rng`` seed of a test: fixed per test id (CRC-32), so a run is reproducible and a red
    CI is the code's fault, not the draw's; ``LAYERTOUR_TEST_SEED=K`` shifts every seed by K
    (explore other draws), ``=random`` draws fresh seeds. A failing test reports its seed."""
    mode = os.environ.get("LAYERTOUR_TEST_SEED", "").strip()
    if mode == "random":
        return int.from_bytes(os.urandom(4), "little")
    base = zlib.crc32(nodeid.encode("utf-8"))
    try:
        shift = int(mode) if mode else 0
    except ValueError:
        raise pytest.UsageError(f"LAYERTOUR_TEST_SEED must be an integer or 'random', got {mode!r}") from None
    return (base + shift) % 2**32


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A NumPy generator seeded by :func:`seed_for_test` (the seed is in the failure report)."""
    seed = seed_for_test(request.node.nodeid)
    request.node.user_properties.append(("seed", seed))
    request.node.add_report_section("setup", "rng seed", f"np.random.default_rng({seed})")
    return np.random.default_rng(seed)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Run a test body once on NumPy and, where a GPU exists, once on CuPy."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy
