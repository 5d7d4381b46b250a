"""``prepare`` on Dask: the demo (digits CNN, 8 layers, N=1,797) with 1 and 2 workers vs one process.

Cases (each the median of --repeats runs; every run writes a fresh bundle and checks that it equals
the single-process one to 1e-5):

- ``single``: ``build_demo_bundle`` in this process, warm (after one unmeasured run: numba's JIT of
  UMAP is paid once per process);
- ``local:N cold``: ``--cluster local:N`` as the CLI runs it: a new ``LocalCluster`` per run, so the
  time includes starting N worker processes and their UMAP JIT;
- ``scheduler N warm``: a ``LocalCluster`` of N workers kept between runs (``--scheduler``), after
  one unmeasured run: the steady-state cost of distribution.

The physical floor of a run is the warm single-process time divided by min(N, CPU cores): perfect
parallel speed-up of independent layers. ``floor/measured`` is the fraction of it reached. Times
depend on other load on the machine: the load average is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _same(a, b) -> float:
    """Largest |difference| between the two bundles' embeddings (raises if layers differ)."""
    from engine.store import load_bundle

    A, B = load_bundle(a), load_bundle(b)
    worst = 0.0
    for name, ma in A.models.items():
        for la, lb in zip(ma.layers, B.models[name].layers, strict=True):
            worst = max(worst, float(np.abs(np.asarray(la.embedding) - np.asarray(lb.embedding)).max()))
    return worst


def _timed(fn, out: Path) -> tuple[float, dict]:
    from engine.store import load_bundle

    t0 = time.perf_counter()
    path = fn(out)
    wall = time.perf_counter() - t0
    return wall, load_bundle(path).provenance.get("timings", {})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("bench-results/bench_scale.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from dask.distributed import LocalCluster

    from engine.demo import build_demo_bundle, train_digits_cnn
    from engine.distributed import ClusterOptions
    from engine.info import versions

    rows = []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        os.environ.setdefault("LAYERTOUR_CACHE", str(tmp / "cache"))
        train_digits_cnn(0)  # trained once, cached; not part of any measured run
        k = [0]

        def out() -> Path:
            k[0] += 1
            return tmp / f"b{k[0]}.lt"

        def single(o):
            return build_demo_bundle(o, device="cpu", progress=False)

        ref = single(out())  # warm-up (JIT) and the reference bundle
        cases = [("single", 1, single, None)]
        for n in args.workers:
            opts = ClusterOptions(cluster=f"local:{n}")
            cases.append((f"local:{n} cold", n,
                          lambda o, opts=opts: build_demo_bundle(o, device="cpu", progress=False,
                                                                 cluster_options=opts), None))
        for n in args.workers:
            cases.append((f"scheduler {n} warm", n, None, n))
        for name, n, fn, warm_n in cases:
            cluster = None
            if warm_n is not None:
                cluster = LocalCluster(n_workers=warm_n, processes=True, threads_per_worker=1,
                                       dashboard_address=None, host="127.0.0.1",
                                       silence_logs=logging.CRITICAL)
                opts = ClusterOptions(scheduler=cluster.scheduler_address)

                def fn(o, opts=opts):
                    return build_demo_bundle(o, device="cpu", progress=False, cluster_options=opts)

                fn(out())  # warm-up: workers JIT UMAP and cache the model
            try:
                walls, stages, diff = [], [], 0.0
                for _ in range(args.repeats):
                    o = out()
                    wall, timings = _timed(fn, o)
                    walls.append(wall)
                    stages.append(timings)
                    diff = max(diff, _same(ref, o))
            finally:
                if cluster is not None:
                    cluster.close()
            rows.append({"case": name, "workers": n, "runs": args.repeats,
                         "median_s": statistics.median(walls),
                         "walls_s": [round(w, 2) for w in walls], "max_abs_diff_vs_single": diff,
                         "stages_s": stages[len(stages) // 2]})
            print(f"  {name}: {[round(w, 1) for w in walls]} s", flush=True)
    single_s = rows[0]["median_s"]
    cores = os.cpu_count() or 1
    for r in rows:
        floor = single_s / min(r["workers"], cores)
        r["floor_s"] = round(floor, 2)
        r["floor_over_measured"] = round(floor / r["median_s"], 3)
        r["speedup_vs_single"] = round(single_s / r["median_s"], 3)
        r["overhead_s"] = round(r["median_s"] - floor, 2)
    for n in args.workers:
        c1 = next(r for r in rows if r["case"] == f"local:{n} cold")
        w1 = next(r for r in rows if r["case"] == f"scheduler {n} warm")
        c1["speedup_vs_1_worker"] = round(next(r for r in rows if r["case"] == "local:1 cold")["median_s"]
                                          / c1["median_s"], 3) if 1 in args.workers else None
        w1["speedup_vs_1_worker"] = round(next(r for r in rows if r["case"] == "scheduler 1 warm")["median_s"]
                                          / w1["median_s"], 3) if 1 in args.workers else None
    load1 = os.getloadavg()
    result = {"benchmark": "bench_scale", "case": "demo: digits CNN, 8 layers, N=1797, p=15, umap-learn",
              "device": f"cpu ({platform.processor() or platform.machine()}, {cores} cores)",
              "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
              "versions": {k: v for k, v in versions().items() if k in ("dask", "torch", "umap-learn",
                                                                        "numpy") and v},
              "rows": rows}
    print(f"\nbench_scale: {result['case']} on {result['device']} (load {load0[0]:.1f} -> {load1[0]:.1f})")
    print(f"{'case':<20}{'N':>3}{'runs':>6}{'median s':>10}{'floor s':>9}{'floor/meas':>11}"
          f"{'x single':>9}{'x 1 wkr':>8}{'overhead s':>11}{'max|diff|':>11}")
    for r in rows:
        x1 = r.get("speedup_vs_1_worker")
        print(f"{r['case']:<20}{r['workers']:>3}{r['runs']:>6}{r['median_s']:>10.1f}{r['floor_s']:>9.1f}"
              f"{r['floor_over_measured']:>11.2f}{r['speedup_vs_single']:>9.2f}"
              f"{'' if x1 is None else f'{x1:.2f}':>8}{r['overhead_s']:>11.1f}"
              f"{r['max_abs_diff_vs_single']:>11.1e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
