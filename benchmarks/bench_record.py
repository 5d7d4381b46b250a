"""Recording activations: one hooked pass for all layers vs the study's per-layer prefix re-runs.

GoogLeNet (torchvision, random weights: no download) over N synthetic 224² images, the study's 21
layers, pooled with the study's rule. Cases, each the median of ``--repeat`` runs after a warm-up
(CUDA synchronised before every clock read):
- ``forward only``: one plain forward pass over the N images, no hooks (the floor of a one-pass
  recorder: it cannot do less compute);
- ``record, one pass``: ``engine.activations.record`` of all 21 layers, one group (one forward pass
  per batch, pooling and copies into device accumulators included);
- ``prefix re-runs``: the study's method: for each layer, run the network up to that layer over
  all N images and pool (``record`` of that single layer, which stops the forward after it).
The ratio column is time ÷ ``forward only``.

Usage: python benchmarks/bench_record.py [--device auto|cpu|cuda] [--n 64] [--batch 32] [--repeat 3]
       [--json bench-results/record.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--n", type=int, default=None, help="images (default 64 on CPU, 2048 on CUDA)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 32 CPU, 128 CUDA)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=REPO / "bench-results" / "record.json")
    args = ap.parse_args(argv)

    import torch

    from engine.activations import record
    from engine.device import resolve
    from engine.inputs import tensor_inputs
    from engine.models import load_model, resolve_layers

    be = resolve(args.device)
    n = args.n or (2048 if be.is_cuda else 64)
    bs = args.batch or (128 if be.is_cuda else 32)
    torch.manual_seed(0)
    model, name = load_model("googlenet", weights="none")
    layers = resolve_layers(model, "study", name)
    x = torch.randn(n, 3, 224, 224)
    inputs = tensor_inputs(x)
    dev = torch.device("cuda" if be.is_cuda else "cpu")
    model = model.to(dev)

    def sync():
        if be.is_cuda:
            torch.cuda.synchronize()

    def forward_only():
        with torch.no_grad():
            for xb in inputs.batches(bs):
                model(xb.to(dev))

    def one_pass():
        for _spec, arr in record(model, inputs, layers, backend=be, batch_size=bs, progress=False):
            del arr

    def prefix():
        ids = [s.id for s in layers]
        for i in range(len(layers)):  # layers[:i] skipped: the forward stops after layer i's module
            for _spec, arr in record(model, inputs, layers[:i + 1], backend=be, batch_size=bs, progress=False,
                                     skip=ids[:i]):
                del arr

    cases = [("forward only", forward_only), ("record, one pass", one_pass), ("prefix re-runs", prefix)]
    results = []
    for label, fn in cases:
        fn()  # warm-up (cuDNN autotuning, allocator)
        times = []
        for _ in range(args.repeat):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        results.append({"case": label, "median_s": statistics.median(times), "runs": len(times)})
    floor = results[0]["median_s"]
    print(f"recording GoogLeNet's 21 study layers: N={n} images 224², batch {bs}, device {be.device_name}, "
          f"torch {torch.__version__}, median of {args.repeat}")
    print(f"{'case':<20}{'median s':>10}{'images/s':>11}{'x forward':>11}")
    for r in results:
        r["images_per_s"] = n / r["median_s"]
        r["ratio_to_forward"] = r["median_s"] / floor
        print(f"{r['case']:<20}{r['median_s']:>10.3f}{r['images_per_s']:>11.1f}{r['ratio_to_forward']:>11.2f}")
    out = {"benchmark": "record", "device": be.name, "device_name": be.device_name, "n": n, "batch": bs,
           "layers": len(layers), "repeat": args.repeat, "torch": torch.__version__, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
