"""Projection pursuit (``engine.pursuit``): seconds per index evaluation and per optimisation at
N in {5e4, 1e6, 2e7} (p = 15, float32 as bundles store them), and the index reached against tourr's
guided tour on the study data.

Data: the study's GoogLeNet layer 13-Inception (50,000 x 15) and its 67 coarse classes, tiled with
a small seeded jitter to larger N (synthetic Gaussian classes when ../shared is absent). Per N:
- ``class_scatter``: the one O(N) pass pair behind lda/pda; then lda/pda cost O(p^2 d) per frame.
- holes per frame: one X @ F pass (O(N d)); the floor is reading X once at the measured copy
  bandwidth (benchmarks/_common.py), and the ratio says how far above it we are.
- purity per frame: O(sample^2), independent of N (default sample 1,000).
- optimise: lda (scatter + closed form), holes (sphere=True; multi-start CG on a 200,000-row sample,
  then up to 50 CG iterations on all rows), purity (its sample).
Against tourr: tests/assets/tourr/reference.json holds tourr 1.2.9's guided tour
(``search_geodesic``) on the same layer, run by tests/assets/tourr/make_reference.py; here our
``optimize`` and our ``GuidedTour`` run on the same data and their values are set beside tourr's.

    python benchmarks/bench_pursuit.py [--json docs/results/cpu-2026-12-01/bench_pursuit.json]
                                        [--sizes 50000,1000000,20000000] [--repeat 5] [--blas-threads 1]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import copy_bandwidth, sync  # noqa: E402
from engine import pursuit as P  # noqa: E402
from engine.device import resolve  # noqa: E402
from engine.tour import GuidedTour  # noqa: E402

STUDY = ROOT.parent / "shared" / "data" / "umap-tour"
LAYER = "13-Inception"
REF = ROOT / "tests" / "assets" / "tourr" / "reference.json"


def study():
    path = STUDY / "googlenet" / f"{LAYER}.bin"
    if not path.exists():
        return None
    X = np.fromfile(path, dtype="<f4").reshape(-1, 15)
    return X, np.fromfile(STUDY / "googlenet" / "labels-coarse.bin", dtype="<u2").astype(np.int32)


def data(n: int, base, xp, seed: int = 0):
    """(n, 15) float32 and (n,) int32 labels in ``xp``: the study layer tiled with jitter."""
    rng = np.random.default_rng(seed)
    if base is None:
        lab = rng.integers(0, 67, 50_000).astype(np.int32)
        X0 = (rng.standard_normal((50_000, 15)) + rng.standard_normal((67, 15))[lab]).astype(np.float32)
    else:
        X0, lab = base
    reps = -(-n // len(X0))
    X = np.empty((n, 15), dtype=np.float32)
    for r in range(reps):
        a, b = r * len(X0), min((r + 1) * len(X0), n)
        X[a:b] = X0[: b - a]
        if r:
            X[a:b] += rng.standard_normal((b - a, 15), dtype=np.float32) * np.float32(0.01)
    return xp.asarray(X), xp.asarray(np.tile(lab, reps)[:n])


def timed(fn, xp, repeat: int):
    """(median seconds, runs, last result) after one warm-up call."""
    out = fn()
    ts = []
    for _ in range(repeat):
        sync(xp)
        t = time.perf_counter()
        out = fn()
        sync(xp)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), repeat, out


def per_size(n: int, base, xp, repeat: int, bw: float) -> dict:
    X, lab = data(n, base, xp)
    rng = np.random.default_rng(1)
    F = np.linalg.qr(rng.standard_normal((15, 2)))[0]
    big = n >= 5_000_000
    r = max(1, repeat // 2) if big else repeat
    row = {"n": n, "p": 15, "d": 2}
    row["class_scatter_s"], row["class_scatter_runs"], _ = timed(lambda: P.class_scatter(X, lab), xp, r)
    lda = P.objective("lda", X, lab)
    pda = P.objective("pda", X, lab, lam=0.2)
    row["lda_frame_s"], row["lda_frame_runs"], _ = timed(lambda: lda.value(F), xp, 200)
    row["pda_frame_s"], row["pda_frame_runs"], _ = timed(lambda: pda.value(F), xp, 200)
    Fx = xp.asarray(F, dtype=X.dtype)
    row["lda_direct_s"], row["lda_direct_runs"], _ = timed(lambda: P.lda(X @ Fx, lab), xp, r)
    holes = P.objective("holes", X, sphere=True)
    row["holes_frame_s"], row["holes_frame_runs"], _ = timed(lambda: holes.value(F), xp, r)
    G = holes.to_pursuit(F)
    row["holes_grad_s"], row["holes_grad_runs"], _ = timed(lambda: holes._value_grad(G), xp, r)
    row["holes_floor_s"] = n * 15 * 4 / bw
    purity = P.objective("purity", X, lab)
    row["purity_frame_s"], row["purity_frame_runs"], _ = timed(lambda: purity.value(F), xp, 3)
    row["opt_lda_s"], _, Fl = timed(lambda: P.optimize(X, "lda", labels=lab), xp, 1 if big else 3)
    row["opt_lda_value"] = lda.value(Fl)
    row["opt_holes_s"], _, Fh = timed(lambda: P.optimize(X, "holes", sphere=True, seed=0), xp, 1)
    row["opt_holes_value"] = holes.value(Fh)
    row["opt_purity_s"], _, Fp = timed(lambda: P.optimize(X, "purity", labels=lab, seed=0, restarts=4), xp, 1)
    row["opt_purity_value"] = purity.value(Fp)
    row["ratio_holes_to_floor"] = row["holes_frame_s"] / row["holes_floor_s"]
    return row


def against_tourr(base) -> dict:
    """Our optimize and GuidedTour vs tourr's guided tour (reference.json) on the study layer."""
    if base is None or not REF.exists():
        return {}
    ref = json.loads(REF.read_text())["guided"]
    X, lab = base
    out = {}
    st = json.loads(REF.read_text())["input"]["study"]
    ls, ps = st["lda_stride"], st["pda_stride"]  # tourr ran LDA and PDA on every k-th row
    cases = {
        "holes_sphered": (lambda: P.objective("holes", X, sphere=True), {"restarts": 8}),
        "lda_subsample": (lambda: P.objective("lda", X[::ls], lab[::ls]), {}),
        "pda_subsample": (lambda: P.objective("pda", X[::ps], lab[::ps], lam=0.2), {}),
    }
    for key, (make, opts) in cases.items():
        t = time.perf_counter()
        obj = make()
        best = obj.maximize(2, seed=0, **opts)
        t_opt = time.perf_counter() - t
        t = time.perf_counter()
        tour = GuidedTour(15, 2, index=obj, seed=0)
        steps = 0
        while tour.status != "finished" and steps < 20000:
            tour.step(0.25)
            steps += 1
        t_tour = time.perf_counter() - t
        runs = ref.get(key, [])
        out[key] = {
            "tourr_values": [r["value"] for r in runs], "tourr_seconds": [r["seconds"] for r in runs],
            "tourr_evaluations": [r["evaluations"] for r in runs],
            "ours_optimize_value": best.value, "ours_optimize_seconds": t_opt, "ours_method": best.method,
            "ours_evaluations": best.evaluations, "ours_guided_value": tour.value,
            "ours_guided_compute_seconds": t_tour, "ours_guided_steps": steps,
            "beats_tourr": bool(runs) and bool(best.value >= max(r["value"] for r in runs)),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--sizes", default="50000,1000000,20000000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--no-tourr", action="store_true", help="skip the comparison with tourr (host-only)")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="cap BLAS threads (threadpoolctl); on a shared, oversubscribed machine 1 thread "
                         "is faster and far steadier for these tall-skinny products")
    args = ap.parse_args(argv)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)
    backend = resolve(args.device)
    xp = backend.xp
    base = study()
    bw = copy_bandwidth(xp)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(per_size(n, base, xp, args.repeat, bw))
        r = rows[-1]
        print(f"N={n:>9,}  scatter {r['class_scatter_s']:.3f}s  lda/frame {r['lda_frame_s'] * 1e6:.0f}us  "
              f"holes/frame {r['holes_frame_s'] * 1e3:.2f}ms ({r['ratio_holes_to_floor']:.1f}x floor)  "
              f"purity/frame {r['purity_frame_s'] * 1e3:.1f}ms  opt lda {r['opt_lda_s']:.2f}s  "
              f"opt holes {r['opt_holes_s']:.2f}s  opt purity {r['opt_purity_s']:.2f}s", flush=True)
    vs = {} if args.no_tourr else against_tourr(base)
    for k, v in vs.items():
        tv = v["tourr_values"] or [float("nan")]
        print(f"{k:>14}: tourr {max(tv):.6f} (best of {len(v['tourr_values'])}, "
              f"median {statistics.median(v['tourr_seconds'] or [float('nan')]):.0f}s)  ours optimize "
              f"{v['ours_optimize_value']:.6f} in {v['ours_optimize_seconds']:.2f}s, guided tour "
              f"{v['ours_guided_value']:.6f}")
    result = {
        "benchmark": "bench_pursuit", "device": backend.device_name, "backend": backend.name,
        "machine": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "copy_bandwidth_bytes_per_s": bw, "blas_threads": args.blas_threads,
        "data": f"googlenet/{LAYER} tiled" if base is not None else "synthetic",
        "sizes": rows, "vs_tourr": vs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
