"""Per-frame cost of the tour's point work: ``kernels.project`` (and friends) against the memory floor.

For N points (p = 15, d = 2) one frame reads A and B and writes the projected positions, so its
floor is bytes / bandwidth, with the bandwidth measured in the same run: a host memcpy for the CPU
rows, a device-to-device copy for the GPU rows (bytes read + bytes written, like the rows).

CPU rows: the NumPy twin (float32 and float16 inputs, and the geodesic variant) and naive NumPy
((1 - s) A + s B) @ F. GPU rows (CuPy and a CUDA device): CuPy matmul on the blend, the custom kernel
(float32 and float16 inputs), project_geodesic, and brush_lasso / brush_rect over 2e7 points. Without
a GPU the GPU rows are listed as "not measured". Needs only NumPy (and CuPy for the GPU rows).

Usage: python benchmarks/bench_tour.py [--sizes 1e4,1e5,1e6,1e7] [--json PATH] [--quick]
       [--no-cpu] [--no-gpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import kernels  # noqa: E402  (after the path set-up, so the script runs from a plain checkout)

P, D = 15, 2
LASSO_N = 20_000_000
GOALS = {  # issue 4's goals, printed beside the measurements (never asserted)
    "gpu kernel fp32 at 1e7: ratio to floor": 1.3,
    "cpu twin fp32 at 2e6: ratio to floor": 1.5,
    "gpu brush_lasso at 2e7: ms": 5.0,
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_median(fn, budget_s: float, min_reps: int = 3, max_reps: int = 50) -> tuple[float, int]:
    """Median seconds of fn() over repetitions filling about budget_s (after one warm-up call)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def device_median(cp, fn, budget_s: float, min_reps: int = 10, max_reps: int = 300) -> tuple[float, int]:
    """Median seconds of fn() on the current stream, each repetition timed with CUDA events."""
    for _ in range(3):
        fn()
    cp.cuda.get_current_stream().synchronize()
    ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        ev0.record()
        fn()
        ev1.record()
        ev1.synchronize()
        times.append(cp.cuda.get_elapsed_time(ev0, ev1) / 1e3)
    return statistics.median(times), len(times)


def project_bytes(n: int, itemsize: int) -> int:
    return n * (2 * P * itemsize + D * 4)


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, device, op, n, dtype, bytes_moved=None, seconds=None, reps=0, bw=None, status="ok"):
        floor = bytes_moved / bw if (bytes_moved and bw) else None
        row = {
            "device": device, "op": op, "n": int(n), "p": P, "d": D, "dtype": dtype,
            "median_ms": None if seconds is None else seconds * 1e3, "reps": reps,
            "bytes_per_point": None if bytes_moved is None else bytes_moved / n,
            "bytes_moved": bytes_moved, "bandwidth_GBps": None if bw is None else bw / 1e9,
            "floor_ms": None if floor is None else floor * 1e3,
            "ratio_to_floor": None if (floor is None or seconds is None) else seconds / floor,
            "status": status,
        }
        self.rows.append(row)
        print(self.format(row), flush=True)

    @staticmethod
    def header() -> str:
        return (f"{'device':6} {'op':28} {'N':>10} {'dtype':7} {'median ms':>10} {'reps':>5} "
                f"{'B/pt':>6} {'floor ms':>9} {'ratio':>6}  status")

    @staticmethod
    def format(r: dict) -> str:
        def num(v, fmt):
            return format(v, fmt) if v is not None else "-"

        return (f"{r['device']:6} {r['op']:28} {r['n']:>10} {r['dtype']:7} {num(r['median_ms'], '10.4f')} "
                f"{r['reps']:>5} {num(r['bytes_per_point'], '6.0f')} {num(r['floor_ms'], '9.4f')} "
                f"{num(r['ratio_to_floor'], '6.2f')}  {r['status']}")


def star_polygon(k: int = 32) -> np.ndarray:
    ang = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
    r = np.where(np.arange(2 * k) % 2 == 0, 0.9, 0.45)
    return np.c_[r * np.cos(ang), r * np.sin(ang)]


def geodesic_params(rng, p=P, d=D):
    q, _ = np.linalg.qr(rng.standard_normal((p, 2 * d)))
    va, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q[:, :d].copy(), q[:, d:].copy(), va, np.array([1.1, 0.4])[:d]


# ------------------------------------------------------------------------------------------- CPU


def host_copy_bandwidth(nbytes: int, budget_s: float) -> float:
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    sec, _ = host_median(lambda: np.copyto(dst, src), budget_s, min_reps=5)
    return 2 * src.nbytes / sec


def cpu_size(table: Table, n: int, budget_s: float, rng, bw: float, frame, geo) -> None:
    """CPU rows for N points (arrays live only inside this call)."""
    a = rng.standard_normal((n, P), dtype=np.float32)
    b = rng.standard_normal((n, P), dtype=np.float32)
    out = np.empty((n, D), np.float32)
    a16, b16 = a.astype(np.float16), b.astype(np.float16)
    f32 = frame.astype(np.float32)
    s = 0.37
    cases = [
        ("project twin", "float32", 4, lambda: kernels.project(a, b, s, frame, out=out)),
        ("project twin", "float16", 2, lambda: kernels.project(a16, b16, s, frame, out=out)),
        ("project_geodesic twin", "float32", 4,
         lambda: kernels.project_geodesic(a, b, s, *geo, 0.3, out=out)),
        ("naive numpy ((1-s)A+sB)@F", "float32", 4, lambda: ((1 - s) * a + s * b) @ f32),
    ]
    for op, dtype, item, fn in cases:
        sec, reps = host_median(fn, budget_s)
        table.add("cpu", op, n, dtype, project_bytes(n, item), sec, reps, bw)


def run_cpu(table: Table, sizes, budget_s: float, rng, copy_bytes: int, meta: dict) -> None:
    bw = host_copy_bandwidth(copy_bytes, budget_s)
    meta["host_copy_GBps"] = bw / 1e9
    table.add("cpu", "memcpy (bandwidth probe)", copy_bytes // 4, "float32", 2 * copy_bytes,
              2 * copy_bytes / bw, 5, bw)
    frame = np.linalg.qr(rng.standard_normal((P, D)))[0]
    geo = geodesic_params(rng)
    for n in sizes:
        cpu_size(table, n, budget_s, rng, bw, frame, geo)
    n = min(max(sizes), 1_000_000)
    xy = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    poly = star_polygon()
    sec, reps = host_median(lambda: kernels.brush_lasso(xy, poly), budget_s, max_reps=10)
    table.add("cpu", f"brush_lasso twin ({len(poly)} vertices)", n, "float32", 9 * n, sec, reps, bw)


# ------------------------------------------------------------------------------------------- GPU

GPU_OPS = [
    ("cupy matmul ((1-s)A+sB)@F", "float32"), ("project kernel", "float32"), ("project kernel", "float16"),
    ("project_geodesic kernel", "float32"), ("project_geodesic kernel", "float16"),
]


def device_copy_bandwidth(cp, nbytes: int, budget_s: float) -> float:
    src = cp.ones(nbytes // 4, cp.float32)
    dst = cp.empty_like(src)
    sec, _ = device_median(cp, lambda: cp.copyto(dst, src), budget_s)
    return 2 * src.nbytes / sec


def gpu_size(cp, table: Table, n: int, budget_s: float, gen, bw: float, frame, geo) -> None:
    """GPU rows for N points (device arrays live only inside this call)."""
    a = gen.standard_normal((n, P), dtype=cp.float32)
    b = gen.standard_normal((n, P), dtype=cp.float32)
    a16, b16 = a.astype(cp.float16), b.astype(cp.float16)
    out = cp.empty(n * D, cp.float32)
    s = 0.37
    fns = {
        GPU_OPS[0]: lambda: ((1 - s) * a + s * b) @ frame,
        GPU_OPS[1]: lambda: kernels.project(a, b, s, frame, out=out),
        GPU_OPS[2]: lambda: kernels.project(a16, b16, s, frame, out=out),
        GPU_OPS[3]: lambda: kernels.project_geodesic(a, b, s, *geo, 0.3, out=out),
        GPU_OPS[4]: lambda: kernels.project_geodesic(a16, b16, s, *geo, 0.3, out=out),
    }
    for (op, dtype), fn in fns.items():
        sec, reps = device_median(cp, fn, budget_s)
        table.add("gpu", op, n, dtype, project_bytes(n, 4 if dtype == "float32" else 2), sec, reps, bw)


def gpu_brush(cp, table: Table, budget_s: float, gen, bw: float) -> list[str]:
    """brush_lasso and brush_rect over LASSO_N device points; checks the lasso against its twin."""
    xy = gen.uniform(-1, 1, (LASSO_N, 2), dtype=cp.float32)
    mask = cp.empty(LASSO_N, bool)
    poly = star_polygon()
    sec, reps = device_median(cp, lambda: kernels.brush_lasso(xy, poly, out=mask), budget_s)
    table.add("gpu", f"brush_lasso ({len(poly)} vertices)", LASSO_N, "float32", 9 * LASSO_N, sec, reps, bw)
    rect = (-0.5, -0.2, 0.4, 0.7)
    sec, reps = device_median(cp, lambda: kernels.brush_rect(xy, rect, out=mask), budget_s)
    table.add("gpu", "brush_rect", LASSO_N, "float32", 9 * LASSO_N, sec, reps, bw)
    sub = xy[:1_000_000]
    if not np.array_equal(kernels.brush_lasso(sub.get(), poly), kernels.brush_lasso(sub, poly).get()):
        return ["brush_lasso kernel and twin disagree on the benchmark points"]
    return []


def run_gpu(table: Table, sizes, budget_s: float, rng, meta: dict) -> list[str]:
    import cupy as cp

    errors: list[str] = []
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    meta.update(gpu=name, cupy=cp.__version__, cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                sm_count=dev.attributes["MultiProcessorCount"])
    t0 = time.perf_counter()
    kernels.compile_all()
    meta["compile_all_s"] = time.perf_counter() - t0
    nbytes = 1 << 30
    bw = device_copy_bandwidth(cp, nbytes, budget_s)
    meta["device_copy_GBps"] = bw / 1e9
    table.add("gpu", "d2d copy (bandwidth probe)", nbytes // 4, "float32", 2 * nbytes, 2 * nbytes / bw,
              10, bw)
    cp.get_default_memory_pool().free_all_blocks()
    gen = cp.random.default_rng(int(rng.integers(2**31)))
    frame = cp.asarray(np.linalg.qr(rng.standard_normal((P, D)))[0], dtype=cp.float32)
    geo = tuple(cp.asarray(x) for x in geodesic_params(rng))  # uploaded once, as per segment
    for n in sizes:
        try:
            gpu_size(cp, table, n, budget_s, gen, bw, frame, geo)
        except Exception as exc:  # keep going: the other sizes and the brushes still get measured
            errors.append(f"gpu project N={n}: {exc!r}")
            traceback.print_exc()
        cp.get_default_memory_pool().free_all_blocks()
    try:
        errors += gpu_brush(cp, table, budget_s, gen, bw)
    except Exception as exc:
        errors.append(f"gpu brush: {exc!r}")
        traceback.print_exc()
    cp.get_default_memory_pool().free_all_blocks()
    return errors


def not_measured(table: Table, sizes, reason: str) -> None:
    for n in sizes:
        for op, dtype in GPU_OPS:
            table.add("gpu", op, n, dtype, status=f"not measured ({reason})")
    table.add("gpu", "brush_lasso (64 vertices)", LASSO_N, "float32", status=f"not measured ({reason})")


def goals(rows: list[dict]) -> dict:
    def find(device, op, n, dtype, key):
        for r in rows:
            if (r["device"], r["op"], r["n"], r["dtype"]) == (device, op, n, dtype) and r[key] is not None:
                return r[key]
        return None

    got = {
        "gpu kernel fp32 at 1e7: ratio to floor":
            find("gpu", "project kernel", 10_000_000, "float32", "ratio_to_floor"),
        "cpu twin fp32 at 2e6: ratio to floor":
            find("cpu", "project twin", 2_000_000, "float32", "ratio_to_floor"),
        "gpu brush_lasso at 2e7: ms":
            find("gpu", "brush_lasso (64 vertices)", LASSO_N, "float32", "median_ms"),
    }
    return {k: {"goal": GOALS[k], "measured": v, "met": None if v is None else v <= GOALS[k]}
            for k, v in got.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="comma-separated N (e.g. 1e4,1e5,1e6,1e7)")
    ap.add_argument("--cpu-extra", default="2e6", help="extra CPU-only sizes (the issue's 2e6 goal)")
    ap.add_argument("--json", default=str(REPO / "bench-results" / "bench_tour.json"),
                    help="JSON output path (default bench-results/bench_tour.json)")
    ap.add_argument("--quick", action="store_true", help="short time budget per row and smaller CPU sizes")
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--no-gpu", action="store_true")
    args = ap.parse_args(argv)
    try:
        sizes = sorted({int(float(x)) for x in args.sizes.split(",") if x.strip()})
        cpu_sizes = sorted(set(sizes) | {int(float(x)) for x in args.cpu_extra.split(",") if x.strip()})
    except ValueError as exc:
        ap.error(f"--sizes/--cpu-extra: {exc}")
    if any(n < 1 for n in cpu_sizes):
        ap.error("--sizes: every N must be >= 1")
    budget = 0.25 if args.quick else 1.0
    if args.quick:
        cpu_sizes = [n for n in cpu_sizes if n <= 2_000_000]
    rng = np.random.default_rng()
    meta = {
        "script": "benchmarks/bench_tour.py", "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
        "host": platform.node(), "cpu": cpu_name(), "cpu_cores": cpu_cores(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__, "p": P, "d": D, "quick": args.quick, "time_budget_per_row_s": budget,
        "goals_from": "issue 4", "floor": "bytes moved / copy bandwidth measured in this run (read + write)",
    }
    table = Table()
    errors: list[str] = []
    print(Table.header())
    if not args.no_cpu:
        run_cpu(table, cpu_sizes, budget, rng, (128 if args.quick else 512) << 20, meta)
    ok, reason = kernels.cuda_status()
    if args.no_gpu:
        not_measured(table, sizes, "--no-gpu")
    elif not ok:
        not_measured(table, sizes, reason)
        meta["gpu"] = f"none ({reason})"
    else:
        errors += run_gpu(table, sizes, budget, rng, meta)
    summary = goals(table.rows)
    print("\ngoals (issue 4):")
    for k, v in summary.items():
        got = "not measured"
        if v["measured"] is not None:
            got = f"{v['measured']:.3f} ({'met' if v['met'] else 'NOT met'})"
        print(f"  {k:42} <= {v['goal']:<5} {got}")
    for e in errors:
        print(f"ERROR: {e}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "rows": table.rows, "goals": summary, "errors": errors}
    path.write_text(json.dumps(doc, indent=1))
    print(f"\nwrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
