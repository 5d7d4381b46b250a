"""Per-stage times of ``prepare``.

CPU (default): the demo end to end (train/load CNN, record its 6 layers of 1,797 digits at each of
its 6 checkpoints, UMAP each (checkpoint, layer), align, write), stage times from the bundle's
provenance; ``benchmarks/bench_checkpoints.py`` breaks a training run down further.

GPU (``--gpu``): torchvision GoogLeNet with random weights over N synthetic 224² images (default
50,000) for the study's 21 layers: forward passes + pooling + accumulation on the device (memory-
planned groups), the cuML UMAP per layer when cuML is installed (else "not measured"), and
umap-learn on one layer of the same data on the same machine for the CPU/GPU ratio (on a sample
when --umap-sample is given). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bench_cpu(args) -> dict:
    from engine.demo import build_demo_bundle
    from engine.store import load_bundle

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LAYERTOUR_CACHE", str(Path(tmp) / "cache"))
        t0 = time.perf_counter()
        path = build_demo_bundle(Path(tmp) / "demo.lt", device="cpu", progress=False)
        wall = time.perf_counter() - t0
        b = load_bundle(path)
        prov = b.provenance
        names = b.checkpoints("digits-cnn")
        layers = [(c, layer.id, layer.source_dim, layer.meta.get("umap_seconds"),
                   layer.meta.get("trustworthiness"))
                  for c in names for layer in b.model_at("digits-cnn", c).layers]
        shape = f"{len(names)} checkpoints x {len(b.models['digits-cnn'].layers)} layers"
    return {"case": f"demo (digits CNN, {shape}, N=1797)", "device": "cpu", "wall_s": round(wall, 2),
            "timings": prov.get("timings", {}), "layers": layers}


def bench_gpu(args) -> dict:
    import cupy as cp
    import torch

    from engine.activations import record
    from engine.device import resolve
    from engine.models import load_model, resolve_layers

    backend = resolve("cuda")
    model, name = load_model("googlenet", weights="none")
    layers = resolve_layers(model, "study", name)
    n = args.n

    from engine.inputs import InputSet

    def random_batches(batch_size):
        """Seeded random 3x224x224 images made on the GPU batch by batch (no 30 GB host tensor)."""
        g = torch.Generator(device="cuda").manual_seed(0)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            yield torch.randn((b, 3, 224, 224), generator=g, device="cuda"), None

    inputs = InputSet(name="random", description=f"{n} random 3x224x224 images", labels=np.zeros(n, np.int64),
                      label_names=["all"], batch_fn=random_batches,
                      thumbnails=np.zeros((n, 32, 32, 3), np.uint8))
    out = {"case": f"googlenet random weights, {len(layers)} layers, N={n}", "device": backend.device_name}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    dims, sample_layer, ready_at = {}, None, {}
    for spec, X in record(model, inputs, layers, backend=backend, batch_size=args.batch_size,
                          progress=False):
        cp.cuda.Device().synchronize()
        ready_at[spec.id] = round(time.perf_counter() - t0, 2)
        dims[spec.id] = int(X.shape[1])
        if spec.id == args.umap_layer:
            sample_layer = cp.asnumpy(X[: args.umap_sample])
        del X
    cp.cuda.Device().synchronize()
    out["record_s"] = round(time.perf_counter() - t0, 2)
    out["dims"] = dims
    out["layer_ready_s"] = ready_at  # seconds from the start until each layer's (N, D) array was ready
    out["activation_bytes"] = int(sum(dims.values()) * n * 4)
    print("recorded:", json.dumps(out), flush=True)  # printed now: the UMAP step may hit a time limit
    try:
        import cuml  # noqa: F401

        out["cuml"] = "installed"
    except ImportError:
        out["cuml"] = "not installed: cuML UMAP not measured"
    if sample_layer is not None and not args.no_umap:
        from engine.embed import embed

        t0 = time.perf_counter()
        res = embed(sample_layer, backend="umap-learn", seed=42)
        out["umap_learn_one_layer"] = {"layer": args.umap_layer, "n": int(sample_layer.shape[0]),
                                       "d": int(sample_layer.shape[1]),
                                       "seconds": round(time.perf_counter() - t0, 2),
                                       "knn": res.knn_algorithm}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the GoogLeNet/50k GPU case instead of the CPU demo")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--umap-layer", default="19-Linear", help="layer timed with umap-learn for the ratio")
    ap.add_argument("--umap-sample", type=int, default=5_000)
    ap.add_argument("--no-umap", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("bench-results/prepare.json"))
    args = ap.parse_args()
    res = bench_gpu(args) if args.gpu else bench_cpu(args)
    res.update(host=platform.node(), python=platform.python_version(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps(res, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
