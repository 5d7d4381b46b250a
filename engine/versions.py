"""The one report of library versions: for ``layertour info`` and for every bundle's provenance.

A leaf module: versions come from installed package metadata (``importlib.metadata``), so nothing
heavy is imported to read them.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["PACKAGES", "versions"]

#: (label, distribution name) of every library that shapes a bundle or the viewer, in report order.
PACKAGES = [
    ("layertour", "layertour"), ("numpy", "numpy"), ("scipy", "scipy"), ("torch", "torch"),
    ("torchvision", "torchvision"), ("CuPy", "cupy-cuda13x"), ("CuPy (cu12)", "cupy-cuda12x"),
    ("cuML", "cuml-cu13"), ("cuML (cu12)", "cuml-cu12"), ("cuda-core", "cuda-core"),
    ("cuda-bindings", "cuda-bindings"), ("umap-learn", "umap-learn"), ("scikit-learn", "scikit-learn"),
    ("VisPy", "vispy"), ("glfw", "glfw"), ("PyOpenGL", "PyOpenGL"), ("jupyter-rfb", "jupyter-rfb"),
    ("ipywidgets", "ipywidgets"), ("dask", "dask"),
]


def versions(*, missing: bool = False) -> dict[str, str | None]:
    """label -> installed version. ``missing=True`` also lists what is not installed (as None),
    except the CUDA-12 twins of the CUDA-13 packages, which are listed only when installed."""
    out: dict[str, str | None] = {}
    for label, dist in PACKAGES:
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if missing and not label.endswith("(cu12)"):
                out.setdefault(label, None)
    if out.get("CuPy") is None:  # CuPy may be installed under its generic name (a source build)
        try:
            out["CuPy"] = metadata.version("cupy")
        except metadata.PackageNotFoundError:
            pass
    return out
