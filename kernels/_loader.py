"""Compile the package's ``*.cu`` sources with CuPy and launch their kernels.

Sources are read as package data (``importlib.resources``) and compiled with
``cupy.RawModule(code=..., options=...)`` (NVRTC). The compiled modules are memoised per
(device id, options, SHA-256 of the source): an edited source is recompiled even when CuPy's own
disk cache would have missed the change (CuPy keys on the code string, not on included headers, and
our sources include none). CuPy appends ``-ftz=true`` to NVRTC options: float32 denormals flush to
zero inside the kernels (documented per kernel where it matters).

CuPy is imported lazily, on the first compile or launch; importing this module imports only NumPy.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import sys
import threading
from functools import cache

# Options per source. The tunables the Python side relies on are passed explicitly so that the
# launch code and the compiled kernel agree; every other tunable keeps the default in its .cu file.
PROJECT_TILE = 128
BRUSH_BLOCK = 256
BRUSH_MAX_VERTICES = 4096
CENTROID_BLOCK = 256
BASE_OPTIONS = ("-std=c++17",)
OPTIONS = {
    "project.cu": BASE_OPTIONS + (f"-DPROJECT_TILE={PROJECT_TILE}",),
    "brush.cu": BASE_OPTIONS + (f"-DBRUSH_BLOCK={BRUSH_BLOCK}", f"-DBRUSH_MAX_VERTICES={BRUSH_MAX_VERTICES}"),
    "centroid.cu": BASE_OPTIONS + (f"-DCENTROID_BLOCK={CENTROID_BLOCK}",),
}
# Every kernel each source defines (the nvcc test checks this list against the compiler's report).
KERNELS = {
    "project.cu": tuple(
        f"project_{geo}{t}_d{d}" for geo in ("", "geo_") for t in ("f32", "f16") for d in (2, 3)
    ),
    "brush.cu": ("brush_rect", "brush_lasso"),
    "centroid.cu": ("centroid_mask", "centroid_index"),
}
# Blocks per SM in a capped grid-stride launch: enough resident warps to cover memory latency
# (256-thread blocks: 8 fill an SM; project's 128-thread blocks: up to 16, as registers allow).
BLOCKS_PER_SM = 8
PROJECT_BLOCKS_PER_SM = 16
SYNC_ENV = "LAYERTOUR_KERNEL_SYNC"

_modules: dict = {}
_lock = threading.Lock()


def source(name: str) -> str:
    """Text of the kernel source ``name`` (e.g. "project.cu") from the installed package."""
    if name not in OPTIONS:
        raise ValueError(f"unknown kernel source {name!r}; known: {', '.join(OPTIONS)}")
    return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@cache
def _source_and_hash(name: str) -> tuple[str, str]:
    code = source(name)
    return code, hashlib.sha256(code.encode()).hexdigest()


@cache
def cuda_status() -> tuple[bool, str]:
    """The one CUDA probe of the code base (engine, kernels, tests, benchmarks), memoised:
    ``(True, device name)`` when CuPy imports, sees a CUDA device and a tiny allocation on it
    works (which catches driver/runtime mismatches), else ``(False, reason)``."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy found no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        cupy.arange(4).sum().item()
        return True, name
    except Exception as exc:
        return False, f"CUDA device unusable ({type(exc).__name__}: {exc})"


def module(name: str):
    """The compiled ``cupy.RawModule`` of source ``name`` on the current device (memoised)."""
    import cupy

    code, digest = _source_and_hash(name)
    options = OPTIONS[name]
    key = (cupy.cuda.Device().id, options, digest)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            mod = cupy.RawModule(code=code, options=options)
            _modules[key] = mod
    return mod


def function(name: str, kernel: str):
    """The kernel ``kernel`` of source ``name`` (compiles the module on first use)."""
    if kernel not in KERNELS[name]:
        raise ValueError(f"{name} has no kernel {kernel!r}; it defines {', '.join(KERNELS[name])}")
    return module(name).get_function(kernel)


def compile_all() -> dict[str, tuple[str, ...]]:
    """Compile every source for the current device now and fetch each kernel (startup check).

    Returns {source: kernel names}. Raises RuntimeError when CuPy or a CUDA device is missing, and
    CuPy's CompileException (with the NVRTC log) when a source does not compile.
    """
    ok, reason = cuda_status()
    if not ok:
        raise RuntimeError(f"cannot compile the CUDA kernels: {reason}")
    for name, kernels in KERNELS.items():
        mod = module(name)
        for k in kernels:
            mod.get_function(k)
    return dict(KERNELS)


@cache
def _sm_count(device_id: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def grid_for(work_blocks: int, per_sm: int = BLOCKS_PER_SM) -> int:
    """Blocks for a grid-stride launch over ``work_blocks`` blocks of work on the current device."""
    import cupy

    cap = per_sm * _sm_count(cupy.cuda.Device().id)
    return max(1, min(int(work_blocks), cap))


def launch(name: str, kernel: str, grid: int, block: int, args: tuple, shared_mem: int = 0) -> None:
    """Launch a kernel on CuPy's current stream.

    Launch failures raise at once (CuPy checks the launch status). With LAYERTOUR_KERNEL_SYNC=1
    the stream is synchronised after the launch so that an asynchronous fault (an illegal address,
    say) is reported here, naming the kernel, instead of at a later unrelated call.
    """
    fn = function(name, kernel)
    fn((int(grid),), (int(block),), args, shared_mem=int(shared_mem))
    if os.environ.get(SYNC_ENV, "") not in ("", "0"):
        cupy = sys.modules["cupy"]
        try:
            cupy.cuda.get_current_stream().synchronize()
        except Exception as exc:
            raise RuntimeError(f"kernel {kernel} ({name}) failed: {exc}") from exc
