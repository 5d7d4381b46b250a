"""``layertour info``: the chosen back end, library versions, and what installed parts add.

Versions come from package metadata (no heavy import); the back end is resolved for real. Parts
above the engine contribute their own lines through the ``layertour.info`` entry points (each a
``report_lines(*, cuda, gl) -> list[str]``): the viewer adds the OpenGL renderer, the render path
``auto`` would pick and the offscreen GL of a notebook widget (:mod:`viewer.sysinfo`), so the
engine neither imports nor runs viewer or VisPy code.
"""

from __future__ import annotations

import logging
import platform
import sys
from importlib import metadata

from engine.versions import versions

__all__ = ["INFO_GROUP", "report", "versions"]

INFO_GROUP = "layertour.info"


def report(device: str = "auto", gl: bool = True) -> str:
    """The text ``layertour info`` prints; ``gl=False`` skips every OpenGL question."""
    from engine.device import CudaUnavailableError, resolve

    lines = [f"layertour {metadata.version('layertour') if _installed() else '(source tree)'}",
             f"python     {platform.python_version()} ({sys.executable})"]
    cuda = False
    try:
        b = resolve(device)
        cuda = b.is_cuda
        lines.append(f"back end   {b.name} — {b.device_name} [{b.reason}]")
    except CudaUnavailableError as exc:
        lines.append(f"back end   unavailable: {exc}")
    lines.append("versions:")
    for name, ver in versions(missing=True).items():
        lines.append(f"  {name:<14} {ver or 'not installed'}")
    for name, part in _parts():
        try:
            lines.extend(part(cuda=cuda, gl=gl))
        except Exception as exc:  # one broken optional part must not hide the rest of the report
            lines.append(f"{name:<10} not reported ({type(exc).__name__}: {exc})")
    return "\n".join(lines)


def _parts() -> list:
    """(name, report_lines) of the installed ``layertour.info`` entry points, in name order."""
    from importlib.metadata import entry_points

    found = []
    for ep in sorted(entry_points(group=INFO_GROUP), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:
            logging.getLogger("layertour").warning("info part %r not loaded: %s", ep.name, exc)
    return found


def _installed() -> bool:
    try:
        metadata.version("layertour")
        return True
    except metadata.PackageNotFoundError:
        return False
