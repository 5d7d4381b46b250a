"""Layer-similarity matrix, ResNet-50 (25 layers) x GoogLeNet (21 layers), N = 50,000, p = 15.

Two ways to fill the 25 x 21 matrix: the naive loop (``engine.align.similarity`` once per pair,
525 calls) and the batched ``engine.align.similarity_matrix`` (one float64 product of the
concatenated layers, one batched SVD). Each runs on the CPU (NumPy) and, when CuPy sees a GPU, on
the GPU with the layers already resident there (the upload is timed on its own row); every timed
run ends with a device synchronise. The table gives the median and minimum of ``--repeat`` runs
(after one warm-up), N, the device, and the ratio of the median to the physical floor: the bytes
the matrix needs to read at least once (every layer, float32) divided by the device's measured
copy bandwidth (read + write of a 256 MB array). GFLOP/s counts the batched path's products.

Data: the study's published embeddings (``--data``, default ``../shared/data/umap-tour``); when
absent (a GPU machine has no shared folder) random layers of the same shape stand in, which time
the same work; the output says which. It needs only NumPy (and CuPy for the GPU rows): no cuML,
VisPy or umap-learn. Results are also checked: batched vs naive, and GPU vs CPU.

Usage: python benchmarks/bench_similarity.py [--data DIR] [--synthetic] [--repeat 5]
                                             [--device auto|cpu|cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._common import copy_bandwidth, sync  # noqa: E402
from engine.align import similarity, similarity_matrix  # noqa: E402
from engine.device import CudaUnavailableError, resolve, to_host  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("LAYERTOUR_STUDY_DATA", REPO.parent / "shared" / "data" / "umap-tour"))
SHAPE = (50000, 15)
COUNTS = {"resnet50": 25, "googlenet": 21}


def load_study(root: Path) -> dict[str, list[np.ndarray]]:
    """Every layer of both models, in schema.json order, as host (N, 15) float32."""
    out = {}
    for model in COUNTS:
        ids = [d["id"] for d in json.loads((root / model / "schema.json").read_text())["layers"]]
        out[model] = [np.fromfile(root / model / f"{i}.bin", dtype="<f4").reshape(-1, SHAPE[1]) for i in ids]
    return out


def synthetic(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random anisotropic, off-centre layers of the study's shapes (host float32)."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.3, SHAPE[1])
    return {m: [(rng.standard_normal(SHAPE) * scales + rng.uniform(-5, 5, SHAPE[1])).astype(np.float32)
                for _ in range(k)] for m, k in COUNTS.items()}


def timed(fn, xp, repeat: int, warmup=None):
    """(median s, min s, last result) of ``repeat`` synchronised runs after one warm-up call."""
    (warmup or fn)()
    times, result = [], None
    for _ in range(repeat):
        sync(xp)
        t = time.perf_counter()
        result = fn()
        sync(xp)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), result


def naive(ra, gb):
    """The 525 pairwise calls, assembled on the host as float64 (La, Lb)."""
    return np.array([[similarity(a, b) for b in gb] for a in ra])


def bench_device(backend, data, repeat: int, note: str) -> tuple[list[dict], dict]:
    xp = backend.xp
    n, p = SHAPE
    la, lb = len(data["resnet50"]), len(data["googlenet"])
    in_bytes = (la + lb) * n * p * 4
    bw = copy_bandwidth(xp)
    floor = in_bytes / bw
    flops = 2.0 * n * (la * p) * (lb * p)
    rows, results = [], {}

    t = time.perf_counter()
    ra = [xp.asarray(L) for L in data["resnet50"]]
    gb = [xp.asarray(L) for L in data["googlenet"]]
    sync(xp)
    if xp is not np:
        rows.append(dict(case="upload (host -> device)", median_ms=(time.perf_counter() - t) * 1e3,
                         min_ms=None, runs=1))

    med, lo, S = timed(lambda: similarity_matrix(ra, gb), xp, repeat)
    results["batched"] = to_host(S)
    rows.append(dict(case="batched similarity_matrix", median_ms=med * 1e3, min_ms=lo * 1e3, runs=repeat,
                     gflops=flops / med / 1e9))
    med, lo, S = timed(lambda: naive(ra, gb), xp, repeat, warmup=lambda: similarity(ra[0], gb[0]))
    results["naive"] = S
    rows.append(dict(case="naive loop (525 x similarity)", median_ms=med * 1e3, min_ms=lo * 1e3, runs=repeat))
    for r in rows:
        r.update(device=backend.device_name, backend=backend.name, n=n, p=p, layers=f"{la}x{lb}", data=note,
                 floor_ms=floor * 1e3, bandwidth_gbs=bw / 1e9)
        r["ratio_to_floor"] = r["median_ms"] / r["floor_ms"] if r["min_ms"] is not None else None
    naive_row = rows[-1]
    naive_row["speedup_batched"] = naive_row["median_ms"] / rows[-2]["median_ms"]
    return rows, results


def table(rows: list[dict]) -> str:
    head = f"{'device':<34} {'case':<30} {'N':>6} {'L':>5} {'median ms':>10} {'min ms':>9} {'runs':>4} " \
           f"{'floor ms':>8} {'x floor':>8} {'GFLOP/s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        mn = "-" if r["min_ms"] is None else f"{r['min_ms']:.2f}"
        ratio = "-" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.0f}"
        gf = f"{r['gflops']:.1f}" if "gflops" in r else "-"
        lines.append(f"{r['device'][:34]:<34} {r['case']:<30} {r['n']:>6} {r['layers']:>5} "
                     f"{r['median_ms']:>10.2f} {mn:>9} {r['runs']:>4} {r['floor_ms']:>8.2f} "
                     f"{ratio:>8} {gf:>8}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="umap-tour study folder")
    ap.add_argument("--synthetic", action="store_true", help="use random layers of the same shape")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per case (median reported)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: CPU, plus GPU when CuPy sees one; cpu or cuda: that one only")
    ap.add_argument("--json", type=Path, default=REPO / "bench-results" / "bench_similarity.json")
    args = ap.parse_args(argv)

    if not args.synthetic and (args.data / "googlenet" / "schema.json").exists():
        data, note = load_study(args.data), "study"
    else:
        data, note = synthetic(), "synthetic"
        print(f"data: synthetic 25x21 layers of {SHAPE} (study data not used: {args.data})")
    backends = []
    if args.device in ("auto", "cuda"):
        try:
            backends.append(resolve("cuda"))
        except CudaUnavailableError as exc:
            if args.device == "cuda":
                raise
            print(f"GPU rows skipped: {exc}")
    if args.device in ("auto", "cpu"):
        backends.append(resolve("cpu"))

    payload = {"benchmark": "similarity", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "host": platform.node(), "python": platform.python_version(), "numpy": np.__version__,
               "cpu_count": os.cpu_count(), "data": note, "repeat": args.repeat, "rows": [], "checks": {}}
    results = {}
    for backend in backends:  # GPU first: its rows are saved even if a slow CPU loop is cut short
        rows, res = bench_device(backend, data, args.repeat, note)
        results[backend.name] = res
        payload["rows"].extend(rows)
        err = float(np.abs(res["batched"] - res["naive"]).max())
        payload["checks"][f"{backend.name}: max |batched - naive|"] = err
        if note == "study":
            S = res["batched"]
            payload["checks"][f"{backend.name}: S[0,0], S[1,1], S[24,20], min, max"] = [
                round(float(v), 4) for v in (S[0, 0], S[1, 1], S[24, 20], S.min(), S.max())]
        if "cpu" in results and "cuda" in results:
            payload["checks"]["max |gpu - cpu| (batched)"] = float(
                np.abs(results["cuda"]["batched"] - results["cpu"]["batched"]).max())
        write_json(args.json, payload)
    print(table(payload["rows"]))
    for k, v in payload["checks"].items():
        print(f"check {k}: {v}")
    for r in payload["rows"]:
        if "speedup_batched" in r:
            print(f"{r['backend']}: batched is {r['speedup_batched']:.1f}x faster than the naive loop")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
