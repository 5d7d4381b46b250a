"""Back-end selection: ``auto | cuda | cpu``, resolved once per run and reported.

``resolve("auto")`` picks CUDA when CuPy imports and sees a working device, else the CPU, and logs
the choice. ``resolve("cuda")`` raises :class:`CudaUnavailableError` when there is no usable
device: never a silent fallback. The environment variable ``LAYERTOUR_DEVICE`` overrides the
argument given to ``resolve`` when that argument is ``"auto"`` (an explicit choice wins).

``array_module(*arrays)`` is the single ``xp`` helper of the code base: it returns ``cupy`` when any
argument is a CuPy array and ``numpy`` otherwise, without importing CuPy unless it is already
loaded (so NumPy-only callers never pay for it).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

from engine.errors import UserError

log = logging.getLogger("layertour")

CHOICES = ("auto", "cuda", "cpu")
ENV_VAR = "LAYERTOUR_DEVICE"


class CudaUnavailableError(UserError, RuntimeError):
    """CUDA was requested (``--device cuda`` or ``LAYERTOUR_DEVICE=cuda``) but cannot be used."""


@dataclass(frozen=True)
class Backend:
    """The resolved compute back end.

    name : "cuda" or "cpu"
    xp : the array module (``cupy`` or ``numpy``)
    device_name : human-readable device ("NVIDIA H100 80GB HBM3", or the CPU description)
    reason : why this back end was chosen (logged and shown by ``layertour info``)
    """

    name: str
    xp: ModuleType
    device_name: str
    reason: str

    @property
    def is_cuda(self) -> bool:
        return self.name == "cuda"

    def asarray(self, a, dtype=None):
        """Move ``a`` to this back end (host -> device copy on CUDA; no copy when already there)."""
        return self.xp.asarray(a, dtype=dtype)


@cache
def _resolve(choice: str) -> Backend:
    if choice == "cpu":
        return Backend("cpu", np, cpu_name(), "requested")
    from kernels import cuda_status  # the one CUDA probe (kernels stands below the engine)

    ok, info = cuda_status()
    if choice == "cuda":
        if not ok:
            raise CudaUnavailableError(
                f"CUDA back end requested but unavailable: {info}. "
                "Install the GPU extras (pip install '.[gpu]') on a machine with an NVIDIA driver, "
                "or use --device cpu."
            )
        import cupy

        return Backend("cuda", cupy, info, "requested")
    if ok:
        import cupy

        backend = Backend("cuda", cupy, info, "auto: CUDA device found")
    else:
        backend = Backend("cpu", np, cpu_name(), f"auto: {info}")
    log.info("layertour back end: %s (%s; %s)", backend.name, backend.device_name, backend.reason)
    return backend


def resolve(device: str | None = "auto") -> Backend:
    """Resolve ``device`` ("auto", "cuda" or "cpu") to a :class:`Backend`, once per process.

    ``LAYERTOUR_DEVICE`` replaces ``"auto"``/``None``. Raises ``ValueError`` for an unknown name
    and :class:`CudaUnavailableError` for ``"cuda"`` without a usable device.
    """
    choice = (device or "auto").lower()
    if choice == "auto":
        choice = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        source = ENV_VAR
    else:
        source = "device"
    if choice not in CHOICES:
        raise ValueError(f"{source}={choice!r} is not one of {', '.join(CHOICES)}")
    return _resolve(choice)


def cpu_name() -> str:
    """The CPU's model name and core count ("AMD EPYC 9654 (16 cores)"), for reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def is_cupy_array(a) -> bool:
    """True when ``a`` is a CuPy array; never imports CuPy."""
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(a, cp.ndarray)


def array_module(*arrays) -> ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (the ``xp`` of STYLE.md)."""
    for a in arrays:
        if is_cupy_array(a):
            return sys.modules["cupy"]
    return np


def to_host(a) -> np.ndarray:
    """Return ``a`` as a NumPy array (device -> host copy for CuPy arrays; no copy for NumPy)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def like(a, ref):
    """Return ``a`` in the array type of ``ref`` (NumPy or CuPy), copying between host and device."""
    if is_cupy_array(ref):
        return sys.modules["cupy"].asarray(a)
    return to_host(a)
