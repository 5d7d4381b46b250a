#!/usr/bin/env bash
# Prepares what benchmarks/gpu_check.sh needs carried to a lent GPU machine (which has torch, CuPy
# and numba but no network): small Python wheels in .whl/ (umap-learn, pynndescent, VisPy, glfw,
# PyOpenGL, freetype-py, hsluv; for the machine's Python 3.12) and the GL/EGL/fontconfig loaders
# as Debian packages in .gl/. Both folders are git-ignored; name them in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
mkdir -p .whl .gl /tmp/amd64/partial
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in umap-learn==0.5.12 pynndescent vispy==0.17.0 glfw==2.11.0 PyOpenGL==3.1.10 freetype-py hsluv; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg"
done
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
apt-get "${o[@]}" update -qq
(cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 \
   libfontconfig1 fontconfig-config libfreetype6 libpng16-16 libbrotli1 fonts-dejavu-core libexpat1)
du -sh .whl .gl
