"""Bundle store: import time of the two study models, and the cost of opening the 46-layer bundle and
reading every layer, against plain ``np.fromfile`` of the study's original ``.bin`` files.

Cases (each run ``--repeat`` times after one warm-up, interleaved so that both see the same page
cache; the files are read from a warm page cache, as in repeated use):
- ``fromfile``: ``np.fromfile`` every original layer file and sum it (the baseline);
- ``bundle sum``: ``load_bundle`` (manifest parse + validation + one memmap per array) and sum every
  layer's embedding (``np.asarray(layer.embedding).sum()``), the way a reader materialises data;
- ``bundle copy``: the same, copying each layer into RAM first (``np.array``), as fromfile does;
- ``open only``: ``load_bundle`` alone.
The physical floor is the bytes of all layers divided by the memory read bandwidth (a float32 sum
over a resident array of the same size); the goal is bundle sum <= 1.2x fromfile.

Usage: python benchmarks/bench_store.py [--data DIR] [--repeat 5] [--json bench-results/store.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.store import load_bundle  # noqa: E402
from engine.studyformat import import_umap_tour  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _fromfile(files, n, dim) -> float:
    total = 0.0
    for f in files:
        total += float(np.fromfile(f, dtype="<f4").reshape(n, dim).sum(dtype=np.float64))
    return total


def _bundle(path, copy: bool) -> float:
    b = load_bundle(path)
    total = 0.0
    for m in b.models.values():
        for lay in m.layers:
            a = np.array(lay.embedding) if copy else np.asarray(lay.embedding)
            total += float(a.sum(dtype=np.float64))
    return total


def _read_bandwidth(nbytes: int, repeat: int) -> float:
    """Bytes/s of a float32 sum over a resident array of ``nbytes`` (the reduction's own floor)."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    a.sum(dtype=np.float64)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        a.sum(dtype=np.float64)
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("LAYERTOUR_STUDY_DATA", REPO.parent / "shared" / "data" /
                                                "umap-tour")), help="the study data folder")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=REPO / "bench-results" / "store.json")
    ap.add_argument("--workdir", type=Path, help="where to write the bundle (default: a temp dir)")
    args = ap.parse_args(argv)
    dirs = [args.data / "googlenet", args.data / "resnet50"]
    if not all((d / "schema.json").exists() for d in dirs):
        print(f"study data not found under {args.data} (need googlenet/ and resnet50/)", file=sys.stderr)
        return 2
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)  # a new --workdir is made, not an error
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    try:
        out = work / "study.lt"
        import_times = []
        for _ in range(3):
            t = time.perf_counter()
            import_umap_tour(dirs, out, overwrite=True)
            import_times.append(time.perf_counter() - t)
        b = load_bundle(out)
        n, dim = b.n, b.dim
        layers = sum(len(m.layers) for m in b.models.values())
        files = [d / f"{lay.id}.bin" for d, m in zip(dirs, b.models.values()) for lay in m.layers]
        nbytes = sum(f.stat().st_size for f in files)
        del b
        cases = {"fromfile": lambda: _fromfile(files, n, dim), "bundle sum": lambda: _bundle(out, False),
                 "bundle copy": lambda: _bundle(out, True), "open only": lambda: load_bundle(out)}
        sums = {k: f() for k, f in cases.items()}  # warm-up, and the answers must agree
        assert sums["fromfile"] == sums["bundle sum"] == sums["bundle copy"], sums
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeat):
            for k, f in cases.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        bw = _read_bandwidth(nbytes, args.repeat)
        floor = nbytes / bw
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    device = f"CPU: {_cpu()}"
    rows = []
    print(f"bundle store: {layers} layers, N={n}, p={dim}, {nbytes / 1e6:.1f} MB of layers; {device}; "
          f"median of {args.repeat}, warm page cache; read bandwidth {bw / 1e9:.1f} GB/s -> floor "
          f"{floor * 1e3:.1f} ms")
    print(f"{'case':<14}{'median ms':>11}{'min ms':>9}{'vs fromfile':>13}{'vs floor':>10}")
    for k in cases:
        ratio_ff = med[k] / med["fromfile"]
        ratio_floor = med[k] / floor if k != "open only" else None
        print(f"{k:<14}{med[k] * 1e3:>11.1f}{min(times[k]) * 1e3:>9.1f}{ratio_ff:>12.2f}x"
              f"{'-' if ratio_floor is None else f'{ratio_floor:.2f}x':>10}")
        rows.append({"case": k, "median_s": med[k], "min_s": min(times[k]), "times_s": times[k],
                     "ratio_to_fromfile": ratio_ff, "ratio_to_floor": ratio_floor})
    imp = statistics.median(import_times)
    print(f"{'import (2 dirs -> 46-layer bundle)':<36} median {imp:.2f} s of {len(import_times)} "
          f"({nbytes / imp / 1e6:.0f} MB/s)")
    goal = med["bundle sum"] / med["fromfile"]
    print(f"goal bundle sum <= 1.2x fromfile: {goal:.2f}x -> {'met' if goal <= 1.2 else 'NOT met'}")
    result = {"benchmark": "store", "device": device, "n": n, "p": dim, "layers": layers, "bytes": nbytes,
              "repeat": args.repeat, "read_bandwidth_Bps": bw, "floor_s": floor, "cases": rows,
              "import_s": import_times, "import_median_s": imp, "goal_ratio": goal, "goal_met": goal <= 1.2,
              "python": platform.python_version(), "numpy": np.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
