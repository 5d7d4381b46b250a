"""Streaming ``prepare`` at scale: peak memory and wall time against N, quality against a full
fit, and image decoding throughput.

Cases (``--case``):

- ``scale``: a small CNN (3x32x32 -> conv 8 -> ... -> 10, its first convolution 8,192 floats per
  image) over N procedural images (``engine.inputs.synthetic_inputs``), two layers (the first
  convolution, PCA to 256, and the 10 logits), ``--stream`` with a fixed fit sample M and memory
  budget. Each N runs in a fresh process: one small warm-up run first (numba compiles UMAP), then
  the peak RSS is reset (``/proc/self/clear_refs``) and the real run measured: wall time, peak
  RSS (VmHWM) and its growth over the warm process, the stage times. A least-squares line of
  time against N gives the slope (seconds per image) and the intercept (the fits); the spread of
  the peaks says whether memory stays flat.
- ``quality``: at the N where both fit, the in-memory full UMAP fit against the stream: the
  trustworthiness of the stream's transformed rows and of the full fit on the same held-out rows
  (the fit sample's complement), in the layers' own activation space.
- ``decode``: real JPEG files (``--images`` of 500x375 smooth random photos-like images written
  to a temporary folder): the parallel decode check (``scan_images``, threads) and the full
  decode + Resize 256 + CenterCrop 224 pipeline (``image_inputs``' DataLoader, worker
  processes), in images/s.

Every result is printed as a table and written as JSON with the machine, the date and the load
average at the start and the end (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_cnn():
    """The benchmark's model (random weights, seeded by the caller)."""
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def _job():
    import torch

    from engine.models import LayerSpec
    from engine.pipeline import ModelJob

    torch.manual_seed(0)
    model = build_cnn().eval()
    return ModelJob("cnn", model, [LayerSpec("0-Conv2d", "0"), LayerSpec("1-Linear", "7")])


def child(spec: dict) -> dict:
    """One measured run in this (fresh) process; see the module docstring."""
    import gc

    from engine.inputs import synthetic_inputs
    from engine.pipeline import PrepareConfig, prepare
    from engine.store import load_bundle

    cfg = dict(device="cpu", umap_backend="umap-learn", memory_budget_gib=spec["budget"],
               transform_chunk=spec["chunk"], batch_size=spec["batch"])
    out = Path(spec["out"])
    warm = spec.get("warm", 2 * spec["fit_sample"] + 2000)  # the same code paths (M >= 4096: NN-descent)
    prepare([_job()], synthetic_inputs(warm, seed=3), out.with_name("warm.lt"),
            PrepareConfig(**cfg, stream=True, fit_sample=min(spec["fit_sample"], warm // 2)), overwrite=True,
            progress=False)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status()
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    stream = spec.get("stream", True)
    config = PrepareConfig(**cfg, stream=stream, fit_sample=spec["fit_sample"] if stream else None)
    path = prepare([_job()], synthetic_inputs(spec["n"], seed=1), out, config, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    peak = _status()
    b = load_bundle(path)
    keys = ("trustworthiness", "fit_sample", "reduction", "umap_seconds")
    layers = {lay.id: {k: lay.meta.get(k) for k in keys} for lay in b.models["cnn"].layers}
    return {"n": spec["n"], "stream": stream, "wall_s": round(wall, 2), "base_rss": base["VmRSS"],
            "peak_rss": peak["VmHWM"], "peak_growth": peak["VmHWM"] - base["VmRSS"],
            "rss_anon_end": peak["RssAnon"], "timings": b.provenance.get("timings"),
            "plan": b.provenance.get("stream"), "layers": layers, "loadavg": [load0, os.getloadavg()]}


def run_child(spec: dict, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                         text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child run failed ({spec}):\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def case_scale(args, tmp: Path) -> dict:
    rows = []
    for n in args.n:
        spec = {"n": n, "out": str(tmp / f"s{n}.lt"), "budget": args.budget, "chunk": args.chunk,
                "batch": args.batch, "fit_sample": args.fit_sample}
        r = run_child(spec, args.timeout)
        rows.append(r)
        print(f"  N={n:>9,}: {r['wall_s']:8.1f} s, peak RSS {r['peak_rss'] / 2**20:7.0f} MiB "
              f"(+{r['peak_growth'] / 2**20:5.0f} MiB over the warm process), load {r['loadavg'][1][0]:.1f}",
              flush=True)
    ns = np.array([r["n"] for r in rows], dtype=np.float64)
    ts = np.array([r["wall_s"] for r in rows])
    slope, icpt = np.polyfit(ns, ts, 1) if len(rows) > 1 else (ts[0] / ns[0], 0.0)
    growth = [r["peak_growth"] for r in rows]
    return {"rows": rows, "fit": {"seconds_per_image": slope, "intercept_s": icpt,
                                  "ms_per_image_per_layer": 1e3 * slope / 2},
            "memory": {"peak_growth_min": min(growth), "peak_growth_max": max(growth),
                       "budget_bytes": int(args.budget * 2**30)}}


def _held_trust(path: Path, n: int, fit_sample: int, batch: int) -> dict:
    """Trustworthiness of a bundle's layers on the held-out rows of the fit sample of size M."""
    from engine.activations import record
    from engine.embed import trustworthiness
    from engine.inputs import synthetic_inputs
    from engine.layerjob import sampled_plan
    from engine.pipeline import PrepareConfig
    from engine.store import load_bundle

    held = sampled_plan(n, PrepareConfig(fit_sample=fit_sample))["held_idx"]
    job = _job()
    b = load_bundle(path)
    out = {}
    for spec, X in record(job.module, synthetic_inputs(n, seed=1).subset(held), job.layers, backend="cpu",
                          batch_size=batch, progress=False):
        Y = np.asarray(b.models["cnn"].layer(spec.id).embedding)[held]
        out[spec.id] = trustworthiness(X, Y, k=15, n_sample=len(held))
    return out


def case_quality(args, tmp: Path) -> dict:
    rows = []
    for n in args.n:
        common = {"n": n, "budget": args.budget, "chunk": args.chunk, "batch": args.batch,
                  "fit_sample": args.fit_sample}
        st = run_child({**common, "out": str(tmp / f"q{n}.lt")}, args.timeout)
        full = run_child({**common, "out": str(tmp / f"f{n}.lt"), "stream": False,
                          "budget": max(args.budget, 1.5 * n * 8192 * 4 / 2**30)}, args.timeout)
        tf = _held_trust(tmp / f"f{n}.lt", n, args.fit_sample, args.batch)
        for lid, meta in st["layers"].items():
            fs = meta["fit_sample"]
            rows.append({"n": n, "layer": lid, "fit_sample": fs["n"], "chunk": fs["transform_chunk"],
                         "stream_transformed_rows": fs["trustworthiness_transformed_rows"],
                         "stream_fit_rows": fs["trustworthiness_fit_rows"], "full_fit_same_rows": tf[lid],
                         "full_fit_trust_sample": full["layers"][lid]["trustworthiness"],
                         "stream_wall_s": st["wall_s"], "full_wall_s": full["wall_s"],
                         "stream_peak_growth": st["peak_growth"], "full_peak_growth": full["peak_growth"]})
            r = rows[-1]
            print(f"  N={n:,} {lid}: transformed {r['stream_transformed_rows']:.4f} vs full fit "
                  f"{r['full_fit_same_rows']:.4f} on the same {n - fs['n']:,}-row complement "
                  f"(stream {st['wall_s']:.0f} s, full {full['wall_s']:.0f} s)", flush=True)
    return {"rows": rows}


def _write_jpegs(root: Path, count: int, size=(500, 375)) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "n01440764").mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    for i in range(count):
        low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC)
        px = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
        p = root / "n01440764" / f"img_{i:05d}.JPEG"
        Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def case_decode(args, tmp: Path) -> dict:
    import torch

    from engine.inputs import image_inputs, scan_images

    paths = _write_jpegs(tmp / "jpeg", args.images)
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        r = scan_images([str(p) for p in paths], threads)
        rows.append({"step": "decode check (scan_images)", "parallel": f"{threads} thread(s)",
                     "images_per_s": r["images_per_s"]})
    for workers in sorted({0, 1, max(1, (os.cpu_count() or 2) - 1), os.cpu_count() or 1}):
        inputs = image_inputs(tmp / "jpeg", workers=workers, strict=True)
        t0 = time.perf_counter()
        count = sum(int(x.shape[0]) for x in inputs.batches(64))
        dt = time.perf_counter() - t0
        rows.append({"step": "decode + resize 256 + crop 224 + normalise (DataLoader)",
                     "parallel": f"{workers} worker process(es)", "images_per_s": round(count / dt, 1)})
    for r in rows:
        print(f"  {r['step']:<58} {r['parallel']:<22} {r['images_per_s']:8.1f} images/s")
    torch.set_num_threads(torch.get_num_threads())
    return {"rows": rows, "images": args.images, "size": "500x375 JPEG q90"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["scale", "quality", "decode"], default="scale")
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--fit-sample", type=int, default=5_000)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--budget", type=float, default=1.0, help="GiB")
    p.add_argument("--images", type=int, default=1000, help="JPEGs for --case decode")
    p.add_argument("--timeout", type=float, default=6 * 3600)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from engine.info import versions

    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp_s:
        case = {"scale": case_scale, "quality": case_quality, "decode": case_decode}[args.case]
        result = case(args, Path(tmp_s))
    result.update({
        "benchmark": "bench_stream", "case": args.case,
        "settings": {"n": args.n, "fit_sample": args.fit_sample, "chunk": args.chunk, "batch": args.batch,
                     "budget_gib": args.budget,
                     "model": "3x32x32 CNN, layers conv1 (8,192 -> PCA 256) and fc (10)",
                     "inputs": "engine.inputs.synthetic_inputs(seed=1)"},
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "elapsed_s": round(time.time() - t0, 1),
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "versions": {k: v for k, v in versions().items()
                     if k in ("torch", "umap-learn", "numpy", "pynndescent", "numba", "scikit-learn") and v}})
    if args.case == "scale":
        f = result["fit"]
        m = result["memory"]
        print(f"\ntime = {f['intercept_s']:.1f} s + {1e3 * f['seconds_per_image']:.3f} ms x N "
              f"({f['ms_per_image_per_layer']:.3f} ms per image per layer); peak RSS growth "
              f"{m['peak_growth_min'] / 2**20:.0f}-{m['peak_growth_max'] / 2**20:.0f} MiB "
              f"(budget {m['budget_bytes'] / 2**20:.0f} MiB)")
    print(f"load average {result['loadavg_start'][0]:.1f} -> {result['loadavg_end'][0]:.1f}")
    out = args.json or Path("bench-results") / f"bench_stream_{args.case}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
