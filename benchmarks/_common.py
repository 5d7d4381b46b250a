"""Helpers every benchmark shares: device synchronisation and the measured copy bandwidth that
the physical floors are computed from (STYLE: measure the ceiling in the same run, never quote a
datasheet)."""

from __future__ import annotations

import statistics
import time


def sync(xp) -> None:
    """Wait for queued device work (no-op for NumPy)."""
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def copy_bandwidth(xp, nbytes: int = 256 * 2**20, repeat: int = 5) -> float:
    """Copy bandwidth in bytes/s of ``xp`` memory (host for NumPy, device for CuPy), counting
    bytes read plus bytes written: median of ``repeat`` copies of an ``nbytes`` array after one
    warm-up copy."""
    a = xp.ones(nbytes // 4, dtype=xp.float32)
    b = xp.empty_like(a)
    times = []
    for _ in range(repeat + 1):
        sync(xp)
        t = time.perf_counter()
        b[...] = a
        sync(xp)
        times.append(time.perf_counter() - t)
    moved = 2 * a.nbytes
    del a, b
    return moved / statistics.median(times[1:])
