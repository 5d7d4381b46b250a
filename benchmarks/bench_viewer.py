"""Viewer frame rate versus N for each render path, off-screen (hidden glfw window or EGL pbuffer).

Each frame: advance the tour by 1/60 s, draw the points (HUD off unless --hud) into the default
framebuffer, flush VisPy's GLIR queue and ``glFinish`` so the GPU (or llvmpipe) work is inside the
timing. Reports median and p95 frame time, fps (1 / median), the GL renderer, and the ratio of
the median to a physical floor: bytes a frame must move / memory bandwidth.

Frames show a steady tour (one layer), or with --blend a running layer transition (two layers).
Bytes per frame (p = 15, q = ceil(p/4) texels, d = 2):
- shader: one layer texture read (q · 16 B; two with --blend) + code/state attributes (8 B) per point;
- copy: two (N, p) float32 layers read + (N, d) written by ``kernels.project``, then (N, d)
  uploaded (plus the 8 B attributes);
- cuda: the same reads as copy, the (N, d) written straight into the vertex buffer (no upload).
Bandwidth: the CUDA device's (clock x bus width) when CuPy sees one, else host memory bandwidth
measured here with a large NumPy copy (llvmpipe renders on the CPU), or --bandwidth-gbs.

With --compare, each size N is the side-by-side view (``viewer.compare.CompareCanvas``): two
models of N points each in one window, one tour, B drawn with the frame Q F; the floor doubles.
It also times the re-alignment on a layer change (``engine.align.procrustes`` of the two newly
shown (N, p) layers, as ``set_layers`` runs it; floor: reading both float32 layers once).

    python benchmarks/bench_viewer.py --sizes 5e4,2e5 --paths shader,copy
    xvfb-run -a python benchmarks/bench_viewer.py      # all sizes and paths that fit
    xvfb-run -a python benchmarks/bench_viewer.py --compare --sizes 5e4,1e6 --paths shader
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

from benchmarks._common import copy_bandwidth  # noqa: E402

DEFAULT_SIZES = "5e4,1e6,1e7,2e7"


def device_bandwidth_gbs() -> tuple[float, str] | None:
    """Measured device copy bandwidth (GB/s) and the GPU's name, or None without CuPy + a GPU."""
    try:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return copy_bandwidth(cp) / 1e9, name
    except Exception:
        return None


def synthetic_bundle(n: int, p: int, rng):
    """An in-memory Bundle with two layers (N, p) float32 and a 20-class label."""
    from engine.store import Attribute, Bundle, Layer, Model

    layers = []
    for i in range(2):
        e = rng.standard_normal((n, p), dtype=np.float32)
        layers.append(Layer(f"{i}-Synthetic", f"layer{i}", i, None, e, np.eye(p), np.zeros(p)))
    labels = rng.integers(0, 20, n).astype(np.int32)
    attrs = {"label": Attribute("label", "categorical", labels, [f"c{j}" for j in range(20)])}
    return Bundle(Path(f"synthetic-{n}"), {}, n, p, {"net": Model("net", layers)}, attrs, "label", None, {})


def synthetic_pair(n: int, p: int, rng, layers: int = 4):
    """An in-memory Bundle with models "a" and "b" of ``layers`` (N, p) float32 layers each (b's are
    a's under a random rotation plus noise, so Procrustes has something to find) and a label."""
    from engine.store import Attribute, Bundle, Layer, Model

    models = {}
    for name in ("a", "b"):
        ls = []
        for i in range(layers):
            e = rng.standard_normal((n, p), dtype=np.float32)
            ls.append(Layer(f"{i}-Synthetic", f"{name}.layer{i}", i, None, e, np.eye(p), np.zeros(p)))
        models[name] = Model(name, ls)
    labels = rng.integers(0, 20, n).astype(np.int32)
    attrs = {"label": Attribute("label", "categorical", labels, [f"c{j}" for j in range(20)])}
    return Bundle(Path(f"synthetic-pair-{n}"), {}, n, p, models, attrs, "label", None, {})


def time_realign(canvas, reps: int) -> np.ndarray:
    """Seconds of the Procrustes re-alignment for ``reps`` layer changes to pairs not seen before
    (layer data already cached, as after the first visit; the rotation cache is cleared)."""
    a, b = canvas.panels
    la, lb = len(a.model.layers), len(b.model.layers)
    for i in range(la):
        a.layer_data(i)
    for j in range(lb):
        b.layer_data(j)
    times = []
    for k in range(reps):
        canvas._rotations.clear()
        i, j = (k + 1) % la, (2 * k + 1) % lb
        t = time.perf_counter()
        canvas.rotation_for(i, j)
        times.append(time.perf_counter() - t)
    return np.asarray(times)


def bytes_per_frame(path: str, n: int, p: int, d: int, blend: bool) -> int:
    q = -(-p // 4)
    layers = 2 if blend else 1
    attrs = 8 * n
    if path == "shader":
        return layers * q * 16 * n + attrs
    if path == "copy":
        return (2 * p * 4 + 2 * d * 4) * n + attrs
    return (2 * p * 4 + d * 4) * n + attrs


def run(canvas, frames: int, warmup: int, blend: bool) -> np.ndarray:
    from vispy.gloo import gl

    times = []
    if blend:
        canvas.set_layer(1, animate=True)
    for i in range(warmup + frames):
        t = time.perf_counter()
        canvas.advance(1 / 60)
        canvas.set_current()
        canvas.on_draw(None)
        canvas.context.flush_commands()
        gl.glFinish()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if blend and canvas.transition is None:
            canvas.set_layer(1 - canvas.layer_index, animate=True)
    return np.asarray(times)


def run_compare(canvas, frames: int, warmup: int, blend: bool) -> np.ndarray:
    """Frame times of a CompareCanvas: advance, draw both panels, flush and glFinish."""
    from vispy.gloo import gl

    times = []
    a, b = canvas.panels
    if blend:
        canvas.set_layers(1, 1, animate=True)
    for i in range(warmup + frames):
        t = time.perf_counter()
        canvas.advance(1 / 60)
        canvas.set_current()
        canvas.on_draw(None)
        canvas.context.flush_commands()
        gl.glFinish()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if blend and a.transition is None:
            canvas.set_layers(1 - a.layer_index, 1 - b.layer_index, animate=True)
    return np.asarray(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated N (default {DEFAULT_SIZES})")
    ap.add_argument("--paths", default="auto",
                    help="comma-separated of shader,copy,cuda (default: all usable)")
    ap.add_argument("--p", type=int, default=15)
    ap.add_argument("--dims", type=int, default=2, choices=[2, 3])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", default="800x800", help="window size WxH in pixels (default 800x800)")
    ap.add_argument("--blend", action="store_true",
                    help="keep a layer transition running (two layers read per frame), not a steady tour")
    ap.add_argument("--shader-mode", default="auto", choices=["auto", "attributes", "texture"],
                    help="shader path variant (auto: vec4 attributes when p <= 28, else a float texture)")
    ap.add_argument("--hud", action="store_true", help="draw the HUD too (text, legend, layer strip)")
    ap.add_argument("--compare", action="store_true",
                    help="time the side-by-side compare view (2 x N points) and its re-alignment")
    ap.add_argument("--realign-reps", type=int, default=9, help="layer changes timed per size (--compare)")
    ap.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth for the floor (default: measured)")
    ap.add_argument("--json", type=Path, help="result file (default bench-results/viewer-<time>.json)")
    args = ap.parse_args(argv)

    from viewer.headless import ensure_backend, parse_size

    backend = ensure_backend()
    from viewer import render_paths
    from viewer.canvas import TourCanvas
    from viewer.compare import CompareCanvas

    render_paths.SHADER_MODE = args.shader_mode

    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    dev = device_bandwidth_gbs()
    if args.paths == "auto":
        paths = ["shader", "copy"] + (["cuda"] if dev is not None else [])
    else:
        paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    rng = np.random.default_rng(0)
    if args.bandwidth_gbs:
        bw, bw_src = args.bandwidth_gbs, "given"
    elif dev is not None:
        bw, bw_src = dev[0], f"{dev[1]} (device copy, measured)"
    else:
        bw, bw_src = copy_bandwidth(np) / 1e9, "host copy (llvmpipe renders on the CPU)"
    try:
        w, h = parse_size(args.window)
    except ValueError:
        ap.error(f"--window must look like 800x600 (width x height in pixels), got {args.window!r}")
    rows = []
    renderer = None
    realign = []
    views = 2 if args.compare else 1
    for n in sizes:
        bundle = synthetic_pair(n, args.p, rng) if args.compare else synthetic_bundle(n, args.p, rng)
        for path in paths:
            try:
                if args.compare:
                    c = CompareCanvas(bundle, "a", "b", size=(w, h), show=False, animate=False,
                                      render_path=path, dims=args.dims, controllers=False)
                    c.show_heatmap = args.hud
                else:
                    c = TourCanvas(bundle, size=(w, h), show=False, animate=False, render_path=path,
                                   dims=args.dims)
            except (ValueError, MemoryError) as exc:
                print(f"skip {path} N={n}: {exc}", file=sys.stderr)
                continue
            try:
                c.show_hud = args.hud
                renderer = c.gl_renderer
                t = run_compare(c, args.frames, args.warmup, args.blend) if args.compare else \
                    run(c, args.frames, args.warmup, args.blend)
                active = c.panels[0].points.describe() if args.compare else c.render_path
                if args.compare and path == paths[0]:
                    tr = time_realign(c, args.realign_reps)
                    floor_r = 2 * n * args.p * 4 / (bw * 1e9)
                    med_r = float(np.median(tr))
                    realign.append({"n": n, "p": args.p, "reps": len(tr), "median_ms": med_r * 1e3,
                                    "floor_ms": floor_r * 1e3, "ratio": med_r / floor_r,
                                    "data": type(c.panels[0].layer_data(0)).__module__.split(".")[0]})
            except MemoryError as exc:
                print(f"skip {path} N={n}: {exc}", file=sys.stderr)
                continue
            finally:
                c.close()
            med, p95 = float(np.median(t)), float(np.percentile(t, 95))
            floor = views * bytes_per_frame(path, n, args.p, args.dims, args.blend) / (bw * 1e9)
            rows.append({"path": active, "blend": args.blend, "n": n, "views": views, "p": args.p,
                         "frames": len(t), "median_ms": med * 1e3, "p95_ms": p95 * 1e3, "fps": 1 / med,
                         "floor_ms": floor * 1e3, "ratio": med / floor})
        del bundle

    device = dev[1] if dev is not None else platform.processor() or platform.machine()
    print(f"viewer frame time — GL renderer: {renderer}; back end {backend}; device {device}; "
          f"window {w}x{h}; HUD {'on' if args.hud else 'off'}; {'blending' if args.blend else 'steady'}; "
          f"floor bandwidth {bw:.1f} GB/s ({bw_src})")
    if args.compare:
        print("compare view: two models side by side, N points each, one tour")
    print(f"{'path':<18}{'N':>12}{'frames':>8}{'median ms':>11}{'p95 ms':>9}{'fps':>8}"
          f"{'floor ms':>10}{'ratio':>8}")
    for r in rows:
        print(f"{r['path'][:18]:<18}{r['n']:>12,}{r['frames']:>8}{r['median_ms']:>11.2f}{r['p95_ms']:>9.2f}"
              f"{r['fps']:>8.1f}{r['floor_ms']:>10.3f}{r['ratio']:>8.1f}")
    if realign:
        print("re-alignment on a layer change (Procrustes of the two shown layers, float64 accumulation)")
        print(f"{'N':>12}{'reps':>6}{'median ms':>11}{'floor ms':>10}{'ratio':>8}  data")
        for r in realign:
            print(f"{r['n']:>12,}{r['reps']:>6}{r['median_ms']:>11.2f}{r['floor_ms']:>10.3f}{r['ratio']:>8.1f}"
                  f"  {r['data']}")
    kind = "viewer-compare" if args.compare else "viewer"
    out = args.json or Path("bench-results") / f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": kind, "date": datetime.now(timezone.utc).isoformat(), "gl_renderer": renderer,
        "app_backend": backend, "device": device, "window": [w, h], "hud": args.hud, "blend": args.blend,
        "dims": args.dims,
        "bandwidth_gbs": bw, "bandwidth_source": bw_src, "rows": rows, "realign": realign,
    }, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
