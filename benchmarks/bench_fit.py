"""How well every layer fills the plot: the 2-98 % box of drawn pixels, and points outside the view.

For each layer of each model of a bundle, render the tour's first frame at --size without the HUD
(the default framing of ``viewer.fit``), find the pixels that differ from the background, and
report the 2 % .. 98 % quantile box of their x and y as a fraction of the plot's width and height
(the larger of the two is the "fill" the viewer promises to keep >= 0.6), plus the share of the N
points whose projected position falls outside the plot. Also steps the tour for --seconds at 30
fps on one layer and reports the largest frame-to-frame relative change of the framing radius.

    xvfb-run -a python benchmarks/bench_fit.py /tmp/study.lt --size 800x600
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fill_of(img: np.ndarray, bg: np.ndarray) -> tuple[float, float]:
    """(fx, fy): 2-98 % box of lit pixels as fractions of the image width and height."""
    lit = np.abs(img[..., :3].astype(np.int16) - bg).sum(axis=2) > 24
    ys, xs = np.nonzero(lit)
    if len(xs) < 10:
        return 0.0, 0.0
    h, w = lit.shape
    x0, x1 = np.quantile(xs, [0.02, 0.98])
    y0, y1 = np.quantile(ys, [0.02, 0.98])
    return float((x1 - x0) / w), float((y1 - y0) / h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--size", default="800x600")
    ap.add_argument("--models", help="comma-separated (default: all)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from viewer.headless import ensure_backend, parse_size

    ensure_backend()
    from engine import load_bundle
    from viewer.canvas import TourCanvas
    from viewer.colors import BACKGROUND

    bundle = load_bundle(args.bundle)
    size = parse_size(args.size)
    bg = np.round(np.asarray(BACKGROUND[:3]) * 255).astype(np.int16)
    rows = []
    models = args.models.split(",") if args.models else list(bundle.models)
    for m in models:
        c = TourCanvas(bundle, model=m, size=size, show=False, animate=False, device="cpu")
        try:
            c.show_hud = False
            for i in range(len(c.model.layers)):
                c.set_layer(i, animate=False)
                c.reset_view()
                img = c.render()
                fx, fy = fill_of(img, bg)
                px = c.data_to_pixels(np.asarray(c.project_current())[:, :2])
                out = float(np.mean((px[:, 0] < 0) | (px[:, 0] >= size[0])
                                    | (px[:, 1] < 0) | (px[:, 1] >= size[1])))
                rows.append({"model": m, "layer": c.model.layers[i].id, "fill_x": fx, "fill_y": fy,
                             "fill": max(fx, fy), "outside": out})
                print(f"{m:<10} {c.model.layers[i].id:<24} fill {fx:.2f} x {fy:.2f}  (max {max(fx, fy):.2f}) "
                      f"outside {100 * out:.2f} %", flush=True)
        finally:
            c.close()
    # smoothness: relative change of the framing radius per frame while the tour plays
    c = TourCanvas(bundle, model=models[0], layer=len(bundle.models[models[0]].layers) // 2, size=size,
                   show=False, animate=False, device="cpu")
    try:
        radii = []
        for _ in range(int(args.seconds * 30)):
            c.advance(1 / 30)
            radii.append(c.view.fit.radius)
        r = np.asarray(radii)
        step = float(np.max(np.abs(np.diff(np.log(r))))) if len(r) > 1 else 0.0
    finally:
        c.close()
    fills = np.array([r["fill"] for r in rows])
    outs = np.array([r["outside"] for r in rows])
    print(f"\n{len(rows)} layers: fill min {fills.min():.2f}, median {np.median(fills):.2f}; "
          f"outside max {100 * outs.max():.2f} %, median {100 * np.median(outs):.2f} %; "
          f"framing radius max change per frame at 30 fps: {100 * step:.2f} %")
    if args.json:
        args.json.write_text(json.dumps({"size": size, "rows": rows, "max_radius_step": step}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
