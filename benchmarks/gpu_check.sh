#!/usr/bin/env bash
# One prepared run on a lent GPU machine (torch, CuPy, numba; no cuML, VisPy or umap-learn there,
# and no network): installs the small wheels carried in .whl/, the GL/EGL loaders carried in .gl/,
# then runs the `gpu` tests with LAYERTOUR_REQUIRE_GPU=1 (a missing GPU fails instead of skipping)
# and the benchmarks, writing logs and JSON under $OUT (default ./gpu-check-out).
#
#   here first:  bash benchmarks/device_carry.sh         (fills the git-ignored .whl/ and .gl/)
#   device run:  bash benchmarks/gpu_check.sh            (carry: .whl .gl)
#   budget:      ~8 minutes in all; each step has its own timeout so one hang cannot eat the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} LAYERTOUR_REQUIRE_GPU=1
export LAYERTOUR_CACHE=/tmp/layertour-cache NUMBA_CACHE_DIR=/tmp/numba-cache
PY=${PY:-python3}
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; $PY -V; nvcc --version | tail -1; } 2>&1 | tee "$OUT/machine.txt"

step "carried wheels and GL loaders"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && \
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
$PY -m engine.cli info --no-gl 2>&1 | tee "$OUT/info.txt"

[ -n "${SKIP_NVCC:-}" ] || {
step "nvcc: every kernel for sm_80/sm_90, warnings as errors, no spills"
timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_kernels_nvcc.py 2>&1 | tail -5 | tee "$OUT/nvcc.txt"
}

step "gpu tests (LAYERTOUR_REQUIRE_GPU=1)"
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors --junitxml="$OUT/gpu-tests.xml" -ra 2>&1 \
  | tee "$OUT/gpu-tests.log" | tail -40

step "benchmarks"
[ -n "${SKIP_TOUR:-}" ] || timeout 50 $PY benchmarks/bench_tour.py --no-cpu --json "$OUT/bench_tour.json" 2>&1 | tee "$OUT/bench_tour.txt" | tail -30
timeout 45 $PY benchmarks/bench_similarity.py --synthetic --repeat 3 --json "$OUT/bench_similarity.json" 2>&1 | tee "$OUT/bench_similarity.txt" | tail -12
timeout 90 $PY benchmarks/bench_prepare.py --gpu --umap-sample 2000 --json "$OUT/bench_prepare.json" 2>&1 | tee "$OUT/bench_prepare.txt" | tail -30
timeout 45 $PY benchmarks/bench_viewer.py --sizes 5e4,1e6,1e7,2e7 --frames 20 --json "$OUT/bench_viewer.json" 2>&1 | tee "$OUT/bench_viewer.txt" | tail -20
[ -n "${SKIP_PURSUIT:-}" ] || timeout 120 $PY benchmarks/bench_pursuit.py --device cuda --repeat 3 --no-tourr --json "$OUT/bench_pursuit.json" 2>&1 | tee "$OUT/bench_pursuit.txt" | tail -8
# the guided tour's per-frame cost at 2e7 points on the cuda path (the claim docs/benchmarks.md leaves open)
[ -n "${SKIP_GUIDED:-}" ] || timeout 90 $PY benchmarks/bench_guided.py --path cuda --sizes 2e7 --frames 120 --indices lda,holes --json "$OUT/bench_guided.json" 2>&1 | tee "$OUT/bench_guided.txt" | tail -8

step "done"
ls -la "$OUT"
