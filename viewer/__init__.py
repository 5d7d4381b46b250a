"""layertour's desktop viewer: a VisPy (glfw, or EGL headless) window on a bundle.

Thin by design: it owns GL objects, events and overlays; tour math comes from ``engine.tour``,
per-frame projection and brushing from ``kernels``. It may import ``engine``, ``kernels``, vispy,
glfw, PIL and imageio; nothing in ``engine`` or ``kernels`` imports it (``engine.cli`` hands the
``view``/``render`` subcommands to :mod:`viewer.cli`).

Modules: ``canvas`` (:class:`TourCanvas`), ``compare`` (``CompareCanvas``: two models side by
side, one tour; ``heatmap``: its layer-similarity panel), ``render_paths`` (shader / copy / cuda), ``colors``,
``overlay`` (2-D drawing and HUD widgets), ``atlas`` (image mode), ``headless``
(:func:`render_tour`), ``cli``; in a notebook: ``notebook`` (:func:`show`: the window drawn
offscreen on the server, streamed as frames), ``offscreen`` (EGL / OSMesa / Xvfb contexts),
``remote_events`` (browser events -> VisPy events); interaction: ``selection``, ``handles``,
``picking``, ``viewstate``, ``controllers``.

Importing ``viewer`` is cheap: VisPy loads when a submodule that needs it is imported.
"""

from __future__ import annotations

__all__ = ["TourCanvas", "render_tour", "show"]


def __getattr__(name):
    if name == "TourCanvas":
        from viewer.canvas import TourCanvas

        return TourCanvas
    if name == "render_tour":
        from viewer.headless import render_tour

        return render_tour
    if name == "show":
        from viewer.notebook import show

        return show
    raise AttributeError(f"module 'viewer' has no attribute {name!r}")
