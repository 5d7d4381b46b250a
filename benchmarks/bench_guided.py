"""Per-frame cost the guided tour adds to the viewer (``viewer.guided``), against the grand tour.

One window (``viewer.canvas.TourCanvas``, HUD on, 800x800, the render path chosen) on a synthetic
bundle of N points, p = 15, two layers with 20 planted classes (class means in a random 4-D
subspace, unit noise: the climb has something to find). Per N: F frames of the grand tour, then per
index F frames of the guided tour started from where the grand tour stopped (the climb, the restart
search and the rest all fall inside those F frames at the default speed). Each frame is what the
interactive window does: ``advance(1/60)`` (tour step, the guided search work, framing, the
controllers), then ``on_draw`` (points, HUD, the guided badge) and ``glFinish``. Reported: the
median, 95th percentile and maximum of the ``advance`` time (where the guided work happens) and of
the whole frame, the mean added per frame (guided minus grand, amortising the climbs), and the
one-off costs: starting the guided tour (the objective: lda/pda one class-scatter pass over N,
holes/cmass one sphering pass, purity its sample), re-targeting on a layer change and the
selection view (``w``: two class-scatter passes of a ~10 % selection and the closed form). Medians with
N, p and the GL renderer; no floor applies to the search work (it is bounded by the row samples
of ``viewer.guided.index_options``, not by N).

    xvfb-run -a python benchmarks/bench_guided.py --sizes 5e4,1e6 --indices lda,holes,purity
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def planted_bundle(n: int, p: int, rng, k: int = 20):
    """An in-memory Bundle: two (N, p) float32 layers with ``k`` classes apart in a random 4-D
    subspace (per layer) plus unit noise, and the categorical attribute "label"."""
    from engine.store import Attribute, Bundle, Layer, Model

    labels = rng.integers(0, k, n).astype(np.int32)
    layers = []
    for i in range(2):
        basis = np.linalg.qr(rng.standard_normal((p, 4)))[0]
        means = (2.0 * rng.standard_normal((k, 4)) @ basis.T).astype(np.float32)
        e = rng.standard_normal((n, p), dtype=np.float32)
        e += means[labels]
        layers.append(Layer(f"{i}-Planted", f"layer{i}", i, None, e, np.eye(p), np.zeros(p)))
    attrs = {"label": Attribute("label", "categorical", labels, [f"c{j}" for j in range(k)])}
    return Bundle(Path(f"planted-{n}"), {}, n, p, {"net": Model("net", layers)}, attrs, "label", None, {})


def run(canvas, frames: int, draw: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(advance seconds, whole-frame seconds) of ``frames`` frames at 60 fps of tour time (without
    ``draw`` the frame is the advance alone)."""
    from vispy.gloo import gl

    adv, tot = [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        canvas.advance(1 / 60)
        t1 = time.perf_counter()
        if draw:
            canvas.set_current()
            canvas.on_draw(None)
            canvas.context.flush_commands()
            gl.glFinish()
        t2 = time.perf_counter()
        adv.append(t1 - t0)
        tot.append(t2 - t0)
    return np.asarray(adv), np.asarray(tot)


def summary(t: np.ndarray) -> dict:
    ms = t * 1e3
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5e4,1e6", help="comma-separated N (default 5e4,1e6)")
    ap.add_argument("--indices", default="lda,holes,purity", help="comma-separated guided indices")
    ap.add_argument("--path", default="shader", choices=["auto", "shader", "copy", "cuda"],
                    help="render path (default shader)")
    ap.add_argument("--p", type=int, default=15)
    ap.add_argument("--frames", type=int, default=240, help="frames per mode (at 1/60 s of tour each)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-draw", dest="draw", action="store_false",
                    help="time advance() only (the guided work; llvmpipe takes ~1 s to draw 1e6 points)")
    ap.add_argument("--window", default="800x800")
    ap.add_argument("--json", type=Path, help="result file (default bench-results/guided-<time>.json)")
    args = ap.parse_args(argv)

    from viewer.headless import ensure_backend, parse_size

    backend = ensure_backend()
    from viewer.canvas import TourCanvas
    from viewer.guided import GuidedController

    w, h = parse_size(args.window)
    rng = np.random.default_rng(0)
    rows, renderer, data = [], None, None
    for n in [int(float(s)) for s in args.sizes.split(",") if s.strip()]:
        bundle = planted_bundle(n, args.p, rng)
        c = TourCanvas(bundle, size=(w, h), show=False, animate=False, render_path=args.path, color="label")
        try:
            c.show_fps = False
            renderer = c.gl_renderer
            ctrl = GuidedController()
            c.add_controller(ctrl)
            for i in range(2):
                c.layer_data(i)  # both layers cached: the layer change times the re-target, not the read
            data = type(c.layer_data(0)).__module__.split(".")[0]
            run(c, args.warmup)
            g_adv, g_tot = run(c, args.frames, args.draw)
            rows.append({"n": n, "mode": "grand", "frames": args.frames, "drawn": args.draw,
                         "advance": summary(g_adv),
                         "frame": summary(g_tot)})
            for index in [s.strip() for s in args.indices.split(",") if s.strip()]:
                t = time.perf_counter()
                ctrl.enable(c, index)
                start_ms = (time.perf_counter() - t) * 1e3
                adv, tot = run(c, args.frames, args.draw)
                status = c.tour.status
                t = time.perf_counter()
                c.set_layer(1 - c.layer_index, animate=False)  # re-targets on the other layer
                retarget_ms = (time.perf_counter() - t) * 1e3
                run(c, args.warmup, args.draw)
                ctrl.disable(c)
                rows.append({"n": n, "mode": index, "frames": args.frames, "drawn": args.draw,
                             "advance": summary(adv),
                             "frame": summary(tot), "start_ms": start_ms, "retarget_ms": retarget_ms,
                             "status_after": status, "describe": ctrl.mode.describe(ctrl.mode.objective(
                                 index, c.layer_data(c.layer_index), ("net", c.layer_index),
                                 np.asarray(bundle.attributes["label"].values), "label")),
                             "added_mean_ms": float((adv.mean() - g_adv.mean()) * 1e3),
                             "added_median_ms": float((np.median(tot) - np.median(g_tot)) * 1e3)})
            c.set_selection(np.asarray(bundle.attributes["label"].values) < 2)  # ~10 % selected
            t = time.perf_counter()
            hold = ctrl.select_view(c)
            sel_ms = (time.perf_counter() - t) * 1e3
            rows.append({"n": n, "mode": "w", "selection_ms": sel_ms, "selected": hold.count,
                         "lda_before": hold.before, "lda_after": hold.after})
        finally:
            c.close()
        del bundle

    device = platform.processor() or platform.machine()
    print(f"guided tour, per-frame cost — GL renderer: {renderer}; back end {backend}; data in {data}; "
          f"device {device}; window {w}x{h}; HUD on; p {args.p}; {args.frames} frames per mode at 1/60 s"
          + ("" if args.draw else "; not drawn (frame = advance)"))
    print(f"{'N':>10} {'mode':<7}{'adv med':>9}{'p95':>8}{'max':>8}{'frame med':>11}{'p95':>8}{'max':>8}"
          f"{'+mean adv':>11}{'start':>9}{'retarget':>10}  status")
    for r in rows:
        if r["mode"] == "w":
            print(f"{r['n']:>10,} w      selection view of {r['selected']:,} points: "
                  f"{r['selection_ms']:.1f} ms (1-Lambda {r['lda_before']:.3f} -> {r['lda_after']:.3f})")
            continue
        a, f = r["advance"], r["frame"]
        extra = "" if r["mode"] == "grand" else (
            f"{r['added_mean_ms']:>11.2f}{r['start_ms']:>9.1f}{r['retarget_ms']:>10.1f}  {r['status_after']}"
            f" ({r['describe']})")
        print(f"{r['n']:>10,} {r['mode']:<7}{a['median_ms']:>9.2f}{a['p95_ms']:>8.2f}{a['max_ms']:>8.1f}"
              f"{f['median_ms']:>11.2f}{f['p95_ms']:>8.2f}{f['max_ms']:>8.1f}{extra}")
    out = args.json or Path("bench-results") / f"guided-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "guided", "date": datetime.now(timezone.utc).isoformat(),
                               "gl_renderer": renderer, "app_backend": backend, "device": device,
                               "data": data, "window": [w, h], "p": args.p, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
