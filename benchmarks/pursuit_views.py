"""Reference render for docs/: the study layer seen through a random frame, tourr's guided-tour
result, our LDA optimum and our purity optimum, coloured by the 67 coarse classes (the viewer's
palette), each panel titled with its LDA and purity values. A picture to judge the indices by eye.

    python benchmarks/pursuit_views.py [--out docs/pursuit-views.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import pursuit as P  # noqa: E402
from viewer.colors import categorical_palette  # noqa: E402

STUDY = ROOT.parent / "shared" / "data" / "umap-tour" / "googlenet"
REF = ROOT / "tests" / "assets" / "tourr" / "reference.json"


def panel(Y, labels, colors, title, size=480):
    img = Image.new("RGB", (size, size + 28), (18, 18, 22))
    c = Y - np.median(Y, axis=0)
    r = np.percentile(np.abs(c), 99.5) * 1.05
    xy = np.clip((c / r * 0.5 + 0.5) * (size - 1), 0, size - 1).astype(int)
    px = np.asarray(img).copy()
    order = np.random.default_rng(0).permutation(len(Y))  # no class painted last everywhere
    px[28 + (size - 1 - xy[order, 1]), xy[order, 0]] = (colors[labels[order], :3] * 255).astype(np.uint8)
    img = Image.fromarray(px)
    ImageDraw.Draw(img).text((8, 8), title, fill=(230, 230, 230))
    return img


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "pursuit-views.png")
    args = ap.parse_args(argv)
    X = np.fromfile(STUDY / "13-Inception.bin", dtype="<f4").reshape(-1, 15)
    labels = np.fromfile(STUDY / "labels-coarse.bin", dtype="<u2").astype(int)
    colors = categorical_palette(int(labels.max()) + 1)
    ref = json.loads(REF.read_text())
    k = ref["input"]["study"]["lda_stride"]
    tourr = max(ref["guided"]["lda_subsample"], key=lambda r: r["value"])
    lda_obj = P.objective("lda", X, labels)
    pur = P.objective("purity", X, labels, sample=1000)
    frames = {
        "random frame": np.linalg.qr(np.random.default_rng(1).standard_normal((15, 2)))[0],
        f"tourr guided tour (LDA, rows 1::{k})": np.array(tourr["frame"]),
        "ours: LDA closed form": lda_obj.maximize(2).frame,
        "ours: purity, CG x4 starts": pur.maximize(2, restarts=4, seed=0).frame,
    }
    tiles = [panel(X @ F, labels, colors, f"{name}   lda {lda_obj.value(F):.4f}  purity {pur.value(F):.3f}")
             for name, F in frames.items()]
    sheet = Image.new("RGB", (2 * tiles[0].width + 8, 2 * tiles[0].height + 8), (40, 40, 44))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % 2) * (t.width + 8), (i // 2) * (t.height + 8)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
