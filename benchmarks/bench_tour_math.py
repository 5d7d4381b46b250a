"""Host cost of the tour math in ``engine.tour`` (float64 NumPy, small matrices): one tour step
(geodesic and torus), building a geodesic and a view path, evaluating a view-path frame, and the two
handle drags, for p in {3, 15, 64} and d in {2, 3}.

These are small-matrix operations whose cost is Python and NumPy call overhead, not memory traffic
(a 64 x 3 frame is 1.5 kB), so the "floor" column is the measured time of a single minimal NumPy
call (``np.add`` of two (p, d) arrays into a buffer) on the same machine: ratio = how many such calls
the operation costs. The budget column is the fraction of a 60 fps frame (16.7 ms).

    python benchmarks/bench_tour_math.py [--json bench-results/tour_math.json] [--quick]
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

from engine import tour  # noqa: E402
from engine.device import resolve  # noqa: E402

FRAME_BUDGET_S = 1 / 60


def per_call(fn, calls: int, repeats: int) -> tuple[float, int]:
    """Median over ``repeats`` blocks of the mean seconds per call; returns (median, calls*repeats)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times), calls * repeats


def cases(p: int, d: int, rng, scale: int):
    Fa, Fz = tour.random_frame(p, d, rng), tour.random_frame(p, d, rng)
    view = tour.view_path(Fa, Fz)
    c = rng.standard_normal(p)
    t = 0.5 * np.linalg.norm(c) * tour.random_frame(d, 1, rng)[:, 0]
    geo = tour.GrandTour(p, d, seed=1)
    tor = tour.GrandTour(p, d, seed=1, method="torus")
    heavy = 64 if p >= 64 else 1
    return [
        ("step geodesic", lambda: geo.step(1 / 60), 2000 // scale),
        ("step torus", lambda: tor.step(1 / 60), max(2000 // scale // heavy, 5)),
        ("geodesic()", lambda: tour.geodesic(Fa, Fz), 300 // scale),
        ("view_path()", lambda: tour.view_path(Fa, Fz), 300 // scale),
        ("view frame(f)", lambda: view.frame(0.37), 2000 // scale),
        ("drag_handle", lambda: tour.drag_handle(Fa, c, t), 500 // scale),
        ("drag_axis", lambda: tour.drag_axis(Fa, 1, t / np.linalg.norm(c)), 500 // scale),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="bench-results/tour_math.json", help="where to write the results")
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = ap.parse_args(argv)
    scale = 10 if args.quick else 1
    repeats = 5
    rng = np.random.default_rng(0)
    device = resolve("cpu").device_name
    rows = []
    for p in (3, 15, 64):
        for d in (d for d in (2, 3) if d < p):
            A, B, out = np.ones((p, d)), np.ones((p, d)), np.empty((p, d))
            floor, _ = per_call(lambda A=A, B=B, out=out: np.add(A, B, out=out), 5000 // scale, repeats)
            for name, fn, calls in cases(p, d, rng, scale):
                med, n = per_call(fn, max(calls, 1), repeats)
                rows.append({"op": name, "p": p, "d": d, "median_us": med * 1e6, "calls": n,
                             "floor_us": floor * 1e6, "ratio_to_floor": med / floor,
                             "frame_budget_fraction": med / FRAME_BUDGET_S})
    print(f"engine.tour host cost on {device}; median of {repeats} blocks; floor = one np.add call")
    print(f"{'op':<15}{'p':>4}{'d':>3}{'median us':>12}{'N calls':>9}{'floor us':>10}{'x floor':>9}"
          f"{'of 60fps':>10}")
    for r in rows:
        print(f"{r['op']:<15}{r['p']:>4}{r['d']:>3}{r['median_us']:>12.1f}{r['calls']:>9}"
              f"{r['floor_us']:>10.2f}{r['ratio_to_floor']:>9.0f}{100 * r['frame_budget_fraction']:>9.2f}%")
    result = {"benchmark": "tour_math", "device": device, "machine": platform.machine(),
              "python": platform.python_version(), "numpy": np.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": args.quick, "rows": rows}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
