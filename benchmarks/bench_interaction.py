"""Latency of the viewer's interactions: brush (rectangle, lasso), hover pick, handle centroid
and handle drag, versus N, through the same viewer functions the controllers call.

Each case runs on NumPy and, when CuPy sees a GPU, on CuPy (synchronised before the clock stops),
after a warm-up; the table gives the median and p95 of ``--repeat`` runs, N, p, the device, and
the ratio of the median to the physical floor: bytes the operation must touch divided by the
measured copy bandwidth of that device (a large-array copy, read + write). The brush and pick
touch 8 B per point (x, y float32) plus a 1-byte mask for the brush; the centroid reads p floats
per member; a handle drag is small-matrix math (no floor: reported as "-").

Usage: python benchmarks/bench_interaction.py [--n 50000 1000000] [--repeat 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import copy_bandwidth, sync  # noqa: E402


def _time(fn, xp, repeat):
    fn()
    times = []
    for _ in range(repeat):
        sync(xp)
        t = time.perf_counter()
        fn()
        sync(xp)
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def _device_name(xp) -> str:
    if xp.__name__ == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    from engine.device import cpu_name

    return cpu_name()


def run(xp, n, p, repeat, rng) -> list[dict]:
    from viewer.handles import HandleSet, drag_frame
    from viewer.picking import Affine2, nearest
    from viewer.selection import brush_lasso, brush_rect

    to_px = Affine2(np.array([[80.0, 0.0], [0.0, -80.0]]), np.array([400.0, 400.0]))
    to_data = to_px.inverse()
    xy = xp.asarray(rng.normal(size=(n, 2)).astype(np.float32) * 2)
    data = xp.asarray(rng.normal(size=(n, p)).astype(np.float32))
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    r = 150 + 60 * np.sin(5 * t)  # concave, star-like lasso of 64 vertices
    lasso = np.stack([400 + r * np.cos(t), 400 + r * np.sin(t)], axis=1)
    members = rng.choice(n, size=max(1, n // 100), replace=False)
    hs = HandleSet(p)
    h = hs.add_centroid(members)
    frame, _ = np.linalg.qr(rng.normal(size=(p, 2)))
    bw = copy_bandwidth(xp)

    def centroid():
        hs._centroids.clear()
        hs.point(h, lambda i: data, 0)

    def drag():
        point = hs.point(h, lambda i: data, 0)
        drag_frame(h, point, frame, 0.9 * (point @ frame), 1.0)

    cases = [
        ("brush rect", lambda: brush_rect(xy, (250, 260), (520, 610), to_data), 9 * n),
        ("brush lasso (64 vertices)", lambda: brush_lasso(xy, lasso, to_data), 9 * n),
        ("hover pick", lambda: nearest(xy, (411.0, 389.0), to_px, 8.0), 8 * n),
        ("handle centroid (1% members)", centroid, 4 * p * members.size),
        ("handle drag (p x 2 frame)", drag, None),
    ]
    rows = []
    for name, fn, nbytes in cases:
        med, p95 = _time(fn, xp, repeat)
        floor = nbytes / bw if nbytes else None
        rows.append({"case": name, "n": n, "p": p, "array": xp.__name__, "median_ms": med * 1e3,
                     "p95_ms": p95 * 1e3, "floor_ms": None if floor is None else floor * 1e3,
                     "ratio_to_floor": None if floor is None else med / floor,
                     "bandwidth_GBps": bw / 1e9, "repeat": repeat})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50_000, 1_000_000])
    ap.add_argument("--p", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", type=Path, default=Path("bench-results/interaction.json"))
    args = ap.parse_args(argv)
    modules = [np]
    from kernels import cuda_status

    if cuda_status()[0]:  # the one CUDA probe; NumPy only without a device
        import cupy

        modules.append(cupy)
    rng = np.random.default_rng(0)
    rows = []
    for xp in modules:
        device = _device_name(xp)
        for n in args.n:
            for row in run(xp, n, args.p, args.repeat, rng):
                row["device"] = device
                rows.append(row)
    print(f"{'case':30s} {'array':6s} {'N':>10s} {'median ms':>10s} {'p95 ms':>9s} {'floor ms':>9s} "
          f"{'x floor':>8s}  device")
    for r in rows:
        floor = "-" if r["floor_ms"] is None else f"{r['floor_ms']:.3f}"
        ratio = "-" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.1f}"
        print(f"{r['case']:30s} {r['array']:6s} {r['n']:>10d} {r['median_ms']:>10.3f} {r['p95_ms']:>9.3f} "
              f"{floor:>9s} {ratio:>8s}  {r['device']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": "interaction", "python": platform.python_version(),
                                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "rows": rows}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
