"""Small synthetic directories in the UMAP Tour study layout, written with plain NumPy/json/csv.

Used by test_studyformat.py and test_cli.py; independent of engine.studyformat (it is the oracle
for what the importer must read).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FINE = ["tench", "goldfish", "great_white_shark", "cock", "hen", "ostrich"]
COARSE = ["fish", "shark", "bird"]
FINE_TO_COARSE = [0, 0, 1, 2, 2, 2]
LAYER_IDS = ["0-Input", "1-Conv2d", "2-ReLU", "3-Linear"]


def study_labels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fine, coarse) uint16 label codes, sorted by class as in the study."""
    fine = np.sort(rng.integers(0, len(FINE), n)).astype("<u2")
    coarse = np.asarray(FINE_TO_COARSE, dtype="<u2")[fine]
    return fine, coarse


def write_study(root: Path, name: str, rng: np.random.Generator, *, n: int = 40, dim: int = 15,
                layer_ids=LAYER_IDS, labels=None, meta: bool = True, csv_rows=None) -> Path:
    """Write ``root/name/`` (schema.json, <id>.bin, labels*.bin, attributes.csv) and, when ``meta``,
    ``root/meta-<name>-<dim>D.json``. Returns the model directory."""
    d = root / name
    d.mkdir(parents=True)
    fine, coarse = labels if labels is not None else study_labels(rng, n)
    layers = []
    for lid in layer_ids:
        emb = (rng.standard_normal((n, dim)) * rng.uniform(0.5, 20)).astype("<f4")
        emb.tofile(d / f"{lid}.bin")
        layers.append({"id": lid, "shape": [n, dim], "residual": float(rng.uniform())})
    schema = {"archIndex": 0, "labels": {"id": "labels-coarse", "shape": n}, "layers": layers}
    (d / "schema.json").write_text(json.dumps(schema, indent=2))
    fine.tofile(d / "labels.bin")
    coarse.tofile(d / "labels-coarse.bin")
    conf = rng.uniform(0, 1, n).astype(np.float32)
    err = (-np.log(np.maximum(conf, 1e-6))).astype(np.float32)
    lines = [",label,label_coarse,confidence,error"]
    for i in range(n):
        lines.append(f"{i},{FINE[fine[i]]},{COARSE[coarse[i]]},{conf[i]!s},{err[i]!s}")
    if csv_rows is not None:
        lines = csv_rows(lines)
    (d / "attributes.csv").write_text("\n".join(lines) + "\n")
    if meta:
        m = {"data_shape": [n, dim], "attribute_url": f"data/{name}/attributes.csv",
             "attributes": {"label_coarse": {"type": "categorical", "order": COARSE},
                            "label": {"type": "categorical", "order": FINE},
                            "confidence": {"type": "continuous", "extent": [0, 1]},
                            "error": {"type": "continuous", "extent": [0, 5]}},
             "image_urls": ["data/images/x.png"]}
        (root / f"meta-{name}-{dim}D.json").write_text(json.dumps(m))
    return d


def leftovers(root: Path) -> list[str]:
    """Staging directories, temp files or half-written bundles under ``root`` (recursively)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".partial", ".tmp", ".old", ".lock")) or ".old-" in p.name)
