"""Regenerate tests/assets/tourr/reference.json: tourr's own values for the pursuit tests.

    python tests/assets/tourr/make_reference.py TOURR_DIR [STUDY_DIR]

TOURR_DIR is a checkout of ggobi/tourr at version 1.2.9 (its DESCRIPTION is checked); STUDY_DIR
defaults to ../shared/data/umap-tour. Needs Rscript (Debian: r-base-core r-cran-mass r-cran-tibble
r-cran-dplyr r-cran-jsonlite). This writes small synthetic views and seeded frames, runs
reference.R (which sources tourr's R files and evaluates holes, cmass, lda_pp, pda_pp and the
guided tour with search_geodesic), and stores inputs and outputs together, so the CI test needs
neither R nor tourr. It takes ~20 minutes on 2 busy cores (tourr's LDA index costs ~0.25 s per
view at N = 50,000, so its guided tours run on row subsamples; see reference.R).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LAYER = "13-Inception"
LAMBDAS = [0.0, 0.2, 0.5, 0.9]


def synthetic_cases(rng: np.random.Generator) -> list[dict]:
    def blobs(sizes, d, shift, scale=1.0, offset=0.0, codes=None):
        codes = list(range(len(sizes))) if codes is None else codes
        Y = np.vstack([rng.standard_normal((m, d)) + shift * rng.standard_normal(d) for m in sizes])
        lab = np.concatenate([[c] * m for c, m in zip(codes, sizes)])
        perm = rng.permutation(len(lab))  # classes interleaved, as real data are
        return (Y[perm] * scale + offset), lab[perm]

    cases = []
    for name, args in [
        ("three_unequal_uncentred_d2", dict(sizes=[50, 40, 30], d=2, shift=1.5, offset=3.0)),
        ("four_classes_d1", dict(sizes=[30, 20, 25, 15], d=1, shift=1.0)),
        ("five_odd_codes_d3", dict(sizes=[40, 30, 30, 25, 25], d=3, shift=1.2, codes=[7, 3, 11, 42, 5])),
        ("two_classes_small_scale_d2", dict(sizes=[60, 40], d=2, shift=2.0, scale=0.01)),
        ("tiny_scale_zero_variance_d2", dict(sizes=[60, 40], d=2, shift=2.0, scale=1e-4)),
    ]:
        Y, lab = blobs(**args)
        cases.append({"name": name, "Y": Y.tolist(), "labels": lab.tolist()})
    t = rng.uniform(0, 2 * np.pi, 200)  # a ring: a hole in the middle
    Y = np.c_[np.cos(t), np.sin(t)] * rng.uniform(1.5, 2.0, 200)[:, None]
    cases.append({"name": "ring_d2", "Y": Y.tolist(), "labels": (np.arange(200) % 2).tolist()})
    return cases


def main(tourr_dir: str, study_dir: str | None = None) -> None:
    tourr = Path(tourr_dir)
    desc = (tourr / "DESCRIPTION").read_text()
    version = re.search(r"^Version:\s*(\S+)", desc, re.M).group(1)
    if version != "1.2.9":
        sys.exit(f"{tourr}: tourr {version}, expected 1.2.9")
    study = Path(study_dir) if study_dir else HERE.parents[3] / "shared" / "data" / "umap-tour"
    rng = np.random.default_rng(20261201)
    frames = [np.linalg.qr(rng.standard_normal((15, d)))[0] for d in (2, 2, 2, 3)]
    job = {
        "tourr_version": version, "lambdas": LAMBDAS, "indices": synthetic_cases(rng),
        "study": {"path": str(study / "googlenet" / f"{LAYER}.bin"), "n": 50000, "p": 15,
                  "labels": str(study / "googlenet" / "labels-coarse.bin"), "lda_stride": 5, "pda_stride": 25,
                  "frames": [F.tolist() for F in frames]},
        "seeds": [1, 2, 3],
    }
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(job))
        subprocess.run(["Rscript", str(HERE / "reference.R"), str(tourr), str(src), str(dst)], check=True)
        out = json.loads(dst.read_text())
    job["study"].pop("path")
    job["study"].pop("labels")
    job["study"].update(model="googlenet", layer=LAYER, labels_file="labels-coarse.bin")
    ref = {
        "produced_by": "tests/assets/tourr/make_reference.py + reference.R (sourcing ggobi/tourr R/*.r)",
        "tourr": version, "R": out["R"], "input": job,
        "indices": out["indices"], "frames": out["frames"], "guided": out["guided"],
        "notes": "lda = tourr lda_pp(factor(labels)) for d >= 2; at d = 1 R's aov 1 - SSW/SST "
                 "(tourr itself returns the F value, kept as lda_tourr_F). pda[i] = pda_pp(labels, "
                 "lambda = lambdas[i]). holes_scaled/cmass_scaled use scale(X). Guided tours: "
                 "guided_tour(index, search_f = search_geodesic) via save_history(max_bases = 200) "
                 "after set.seed(seed); holes on sphere_data(X) (all rows); lda and pda on every "
                 "lda_stride-th / pda_stride-th row (R rows 1, 1 + stride, ...) as tourr needs "
                 "thousands of index evaluations per tour.",
    }
    (HERE / "reference.json").write_text(json.dumps(ref, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {HERE / 'reference.json'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
