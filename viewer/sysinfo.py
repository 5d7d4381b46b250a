"""The viewer's lines of ``layertour info``: the OpenGL renderer of a window, the render path
``auto`` would pick, and the offscreen GL a notebook widget would render through.

Registered as the ``layertour.info`` entry point ``viewer``; :func:`engine.info.report` calls
:func:`report_lines` without importing the viewer. Each GL question is asked in a subprocess
(``python -m viewer.sysinfo window`` / ``python -m viewer.offscreen``), so a broken GL stack or a
hanging driver cannot take ``layertour info`` down; a timeout or failure becomes one line that
says why.
"""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["gl_renderer", "offscreen_gl", "render_path", "report_lines"]


def _ask(args: list[str], timeout: float) -> dict | str:
    """JSON printed last by ``python -m <args>``, or a short reason why there is none."""
    try:
        proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out"
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        out = {}
    if proc.returncode != 0 or not isinstance(out, dict) or "error" in out or not out:
        why = (out.get("error") if isinstance(out, dict) and out.get("error")
               else (proc.stderr.strip().splitlines() or ["unknown error"])[-1])
        return " ".join(str(why).split())  # one line, whatever the driver printed
    return out


def gl_renderer(timeout: float = 20.0) -> dict | str:
    """``{"renderer", "vendor", "version"}`` of a hidden 1x1 glfw window, or why none could be made."""
    got = _ask(["viewer.sysinfo", "window"], timeout)
    return got if isinstance(got, dict) else f"no OpenGL context ({got})"


def offscreen_gl(timeout: float = 30.0) -> dict | str:
    """What a notebook widget would render through here (:func:`viewer.offscreen.probe`: app,
    kind, vendor, renderer, version), or why there is none."""
    got = _ask(["viewer.offscreen"], timeout)
    return got if isinstance(got, dict) and "kind" in got else f"none ({got})"


def render_path(gl_info, cuda: bool) -> str:
    """Which render path ``auto`` would pick for a window on ``gl_info`` (the viewer makes the
    final choice at run time): CUDA-GL interop needs both CUDA and NVIDIA's GL."""
    nvidia_gl = isinstance(gl_info, dict) and "nvidia" in str(gl_info.get("vendor", "")).lower()
    if cuda and nvidia_gl:
        return "cuda (CUDA-OpenGL interop: the project kernel writes the vertex buffer)"
    if cuda:
        return "copy (CUDA compute, device->host->GL copy: the GL context is not NVIDIA's)"
    return "shader (vertex-shader projection; no CUDA)"


def report_lines(*, cuda: bool = False, gl: bool = True) -> list[str]:
    """The viewer's part of ``layertour info`` (nothing when ``gl`` is False)."""
    if not gl:
        return []
    r = gl_renderer()
    lines = [f"OpenGL     {r['renderer']} ({r['vendor']}; {r['version']})" if isinstance(r, dict)
             else f"OpenGL     {r}",
             f"render path {render_path(r, cuda)}"]
    o = offscreen_gl()
    lines.append(f"offscreen  {o['kind']} — {o['renderer']} (notebook widget; VisPy app {o['app']})"
                 if isinstance(o, dict) else f"offscreen  {o} (notebook widget)")
    return lines


def _window_probe() -> dict:
    import vispy

    vispy.use("glfw")
    from vispy import app
    from vispy.gloo import gl

    c = app.Canvas(show=False, size=(1, 1))
    try:
        c.set_current()
        return {"renderer": gl.glGetParameter(gl.GL_RENDERER), "version": gl.glGetParameter(gl.GL_VERSION),
                "vendor": gl.glGetParameter(gl.GL_VENDOR)}
    finally:
        c.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["window"]:
        sys.exit("usage: python -m viewer.sysinfo window")
    try:
        print(json.dumps(_window_probe()))
    except Exception as exc:  # any GL failure is the answer to the question asked
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
