"""``layertour info``: the chosen back end, library versions, OpenGL renderer and CUDA device.

Versions come from package metadata (no heavy import); the back end is resolved for real; the
OpenGL renderer is read from a hidden 1x1 VisPy window in a subprocess, so a broken GL stack
cannot take this process down. The offscreen OpenGL a notebook widget would render through (NVIDIA
EGL, Mesa EGL, OSMesa or Xvfb) is what ``python -m viewer.offscreen`` reports, also in a
subprocess: the viewer owns that choice, and the engine never imports it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata

from engine.versions import versions

_GL_PROBE = r"""
import json, vispy
vispy.use("glfw")
from vispy import app, gloo
c = app.Canvas(show=False, size=(1, 1))
c.set_current()
from vispy.gloo import gl
print(json.dumps({"renderer": gl.glGetParameter(gl.GL_RENDERER),
                  "version": gl.glGetParameter(gl.GL_VERSION),
                  "vendor": gl.glGetParameter(gl.GL_VENDOR)}))
c.close()
"""


def gl_renderer(timeout: float = 20.0) -> dict | str:
    """The OpenGL renderer of a hidden window, or the reason none could be made."""
    try:
        proc = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "no OpenGL context (timed out)"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"no OpenGL context ({last})"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def offscreen_gl(timeout: float = 30.0) -> dict | str:
    """What a notebook widget would render through here (``viewer.offscreen.probe``: app, kind,
    vendor, renderer, version), or the reason there is none."""
    try:
        proc = subprocess.run([sys.executable, "-m", "viewer.offscreen"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "none (timed out)"
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        out = {}
    if proc.returncode != 0 or "kind" not in out:
        last = out.get("error") or (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"none ({last})"
    return out


def report(device: str = "auto", gl: bool = True) -> str:
    from engine.device import CudaUnavailableError, resolve

    lines = [f"layertour {metadata.version('layertour') if _installed() else '(source tree)'}",
             f"python     {platform.python_version()} ({sys.executable})"]
    try:
        b = resolve(device)
        lines.append(f"back end   {b.name} — {b.device_name} [{b.reason}]")
    except CudaUnavailableError as exc:
        lines.append(f"back end   unavailable: {exc}")
    lines.append("versions:")
    for name, ver in versions(missing=True).items():
        if name == "layertour":
            continue
        lines.append(f"  {name:<14} {ver or 'not installed'}")
    if gl:
        r = gl_renderer()
        if isinstance(r, dict):
            lines.append(f"OpenGL     {r['renderer']} ({r['vendor']}; {r['version']})")
        else:
            lines.append(f"OpenGL     {r}")
        lines.append(f"render path {_render_path(r)}")
        o = offscreen_gl()
        if isinstance(o, dict):
            lines.append(f"offscreen  {o['kind']} — {o['renderer']} (notebook widget; VisPy app {o['app']})")
        else:
            lines.append(f"offscreen  {o} (notebook widget)")
    return "\n".join(lines)


def _render_path(gl_info) -> str:
    """Which viewer render path ``auto`` would pick (the viewer makes the final choice at run time)."""
    from engine.device import resolve

    try:
        cuda = resolve("auto").is_cuda
    except Exception:
        cuda = False
    nvidia_gl = isinstance(gl_info, dict) and "nvidia" in str(gl_info.get("vendor", "")).lower()
    if cuda and nvidia_gl:
        return "cuda (CUDA-OpenGL interop: the project kernel writes the vertex buffer)"
    if cuda:
        return "copy (CUDA compute, device->host->GL copy: the GL context is not NVIDIA's)"
    return "shader (vertex-shader projection; no CUDA)"


def _installed() -> bool:
    try:
        metadata.version("layertour")
        return True
    except metadata.PackageNotFoundError:
        return False
