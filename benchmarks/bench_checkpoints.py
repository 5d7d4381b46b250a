"""Training runs: seconds per (checkpoint, layer), and what ``--init previous-checkpoint`` does.

The demo's CNN (trained once and cached, its checkpoints at ``--steps``), N = 1,797 digits, the
layers ``--layers`` (default conv2, fc1, softmax, plus the input layer, which is embedded once and
copied), recorded at every checkpoint twice:

- ``spectral``: every (checkpoint, layer) from UMAP's spectral init (the study's; equal to K
  separate ``prepare`` runs, see tests/test_training.py), the peer the training run is measured
  against;
- ``previous-checkpoint``: each layer starting from its own embedding at the previous checkpoint
  (the default with ``--checkpoints``).

Per run: wall time, its UMAP and recording parts, and the median seconds per embedded
(checkpoint, layer) with N and p. Continuity: per layer, the median over consecutive checkpoints
of the per-point movement in the one aligned frame (``engine.align.movement``: each embedding
centred and scaled to unit mean row norm, so 0 = the same picture, about 1.4 = unrelated) and the
mean trustworthiness (quality: the cost, if any, of starting from the previous checkpoint). Prints
a table and writes JSON (``--json``). CPU only: a GPU run needs cuML, which this script does not
assume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(init: str, steps, layers, tmp: Path) -> dict:
    import torch

    import engine
    from engine.align import movement
    from engine.demo import DEMO_LAYERS, _build_model, load_digits_data, train_digits_cnn
    from engine.inputs import tensor_inputs
    from engine.jobs import Checkpoint, ModelJob, PrepareConfig
    from engine.models import LayerSpec
    from engine.pipeline import prepare

    _model, _acc, saved = train_digits_cnn(0, steps=steps)
    x, y, _train = load_digits_data(0)
    inputs = tensor_inputs(torch.from_numpy(x), labels=y, label_names=[str(i) for i in range(10)])
    specs = [LayerSpec(i, n, k) for i, n, k in DEMO_LAYERS if i in layers]
    cks = [Checkpoint(f"step-{c['step']}", state=c["state_dict"], meta={"step": c["step"]}) for c in saved]
    t0 = time.perf_counter()
    out = prepare([ModelJob("digits-cnn", _build_model(), specs)], inputs, tmp / f"{init}.lt",
                  PrepareConfig(device="cpu", init=init), checkpoints=cks, progress=False)
    wall = time.perf_counter() - t0
    b = engine.load_bundle(out)
    names = b.checkpoints("digits-cnn")
    states = [b.model_at("digits-cnn", c) for c in names]
    per_pair = [ly.meta["umap_seconds"] for s in states for ly in s.layers
                if "copied_from_checkpoint" not in ly.meta]
    per_layer = {}
    for i, spec in enumerate(specs):
        moves = [float(np.median(np.asarray(movement(a.layers[i].aligned(), c.layers[i].aligned()))))
                 for a, c in zip(states[:-1], states[1:])]
        per_layer[spec.id] = {
            "median_movement": round(float(np.median(moves)), 4),
            "movement_per_step": [round(m, 4) for m in moves],
            "mean_trustworthiness": round(float(np.mean([s.layers[i].meta["trustworthiness"]
                                                         for s in states])), 4),
        }
    timings = b.provenance["timings"]
    return {"init": init, "wall_s": round(wall, 2), "umap_s": timings.get("umap_s"),
            "record_s": timings.get("record_s"), "align_s": timings.get("align_s"),
            "embedded_pairs": len(per_pair), "median_s_per_pair": round(statistics.median(per_pair), 3),
            "checkpoints": names, "layers": per_layer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="0,20,35,60,140,690", help="checkpoint steps of the demo CNN")
    ap.add_argument("--layers", default="0-Input,2-Conv2d,3-Linear,5-Softmax")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    steps = tuple(int(s) for s in args.steps.split(","))
    layers = [s.strip() for s in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LAYERTOUR_CACHE", str(Path(tmp) / "cache"))
        load = os.getloadavg()[0]
        res = [run(init, steps, layers, Path(tmp)) for init in ("spectral", "previous-checkpoint")]
        load = (load, os.getloadavg()[0])
    info = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "load_before_after": [round(v, 2) for v in load], "n": 1797, "p": 15,
            "device": "cpu (umap-learn; no GPU used)", "runs": res}
    print(f"training run: digits CNN, N=1797, p=15, {len(steps)} checkpoints, layers {', '.join(layers)}; "
          f"{os.cpu_count()} cores, load {load[0]:.1f}->{load[1]:.1f}")
    print(f"{'init':22s} {'wall s':>8s} {'umap s':>8s} {'pairs':>6s} {'s/pair':>7s}")
    for r in res:
        print(f"{r['init']:22s} {r['wall_s']:8.1f} {r['umap_s']:8.1f} {r['embedded_pairs']:6d} "
              f"{r['median_s_per_pair']:7.2f}")
    print(f"\n{'layer':12s} {'movement spectral':>18s} {'movement prev-ckpt':>19s} {'trust spectral':>15s} "
          f"{'trust prev-ckpt':>16s}")
    for lid in res[0]["layers"]:
        a, b = res[0]["layers"][lid], res[1]["layers"][lid]
        print(f"{lid:12s} {a['median_movement']:18.3f} {b['median_movement']:19.3f} "
              f"{a['mean_trustworthiness']:15.4f} {b['mean_trustworthiness']:16.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(info, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
