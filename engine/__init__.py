"""layertour's compute engine: activations -> UMAP -> Procrustes alignment -> bundle, and the tour math.

One module per stage (``activations``, ``embed``, ``align``, ``store``, ``pipeline``, ``tour``),
plus ``device`` (back-end selection), ``cli`` (the ``layertour`` command), ``stream`` (``prepare``
in memory independent of N) and the small modules they share (``errors``, ``files``, ``replace``,
``versions``, ``frames``, ``jobs``, ``layerjob``, ``labels``).
The modules form layers, checked by an import-linter contract in ``pyproject.toml``.

Importing ``engine`` is cheap: it imports neither torch, CuPy, cuML, umap-learn nor VisPy and
touches no GPU; heavy back ends load on first use. The engine never imports the viewer.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_bundle", "__version__"]


def load_bundle(path, *, verify: bool = False):
    """Open a bundle directory written by :mod:`engine.store` (arrays are memory-mapped).

    ``verify=True`` reads every layer whole (CRC-32 and NaN/Inf checks). Returns an
    :class:`engine.store.Bundle`; raises :class:`engine.store.BundleError` naming the file.
    """
    from engine.store import load_bundle as _load

    return _load(path, verify=verify)
