"""Offscreen OpenGL for windows nobody sees on a screen (the notebook widget): which VisPy app back
end gives a context without a display, what that context is, reading frames back, and freeing it.

Order tried (:data:`ORDER`; ``LAYERTOUR_OFFSCREEN=egl|osmesa|glfw`` or ``select_app(prefer)``
forces one): **EGL** — on an NVIDIA driver a device context that CUDA–OpenGL interop can register
buffers with, on Mesa the surfaceless platform (``EGL_PLATFORM=surfaceless`` is set when absent);
**OSMesa** — Mesa's software context in plain memory (needs ``libOSMesa``; it must be chosen before
VisPy's GL library is first loaded in the process); **glfw** with a hidden window when an X display
is set (Xvfb on a server). VisPy runs one app back end per process: when one already runs (a
desktop window or a test session chose glfw), it is kept.

VisPy's EGL and OSMesa back ends leave the native context alive when a canvas closes (vispy issue
#2653), so a notebook that opens and closes widgets would keep every layer's buffers: :func:`release`
closes the canvas *and* destroys its context.

Run ``python -m viewer.offscreen`` to print, as JSON, what a widget would get here (``layertour
info`` shows it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ORDER = ("egl", "osmesa", "glfw")
ENV = "LAYERTOUR_OFFSCREEN"


class OffscreenUnavailable(RuntimeError):
    """No offscreen OpenGL context can be made; the message lists what each back end said."""


@dataclass(frozen=True)
class OffscreenGL:
    """What renders a widget: ``app`` (VisPy back end: egl, osmesa, glfw), ``kind`` ("NVIDIA
    EGL", "Mesa EGL", "OSMesa", "Xvfb", "X display :0", ...), the GL ``vendor``, ``renderer`` and
    ``version`` strings, and ``display`` (the X display for glfw, else None)."""

    app: str
    kind: str
    vendor: str
    renderer: str
    version: str
    display: str | None = None

    def describe(self) -> str:
        """One line for a status bar: "Mesa EGL · llvmpipe (LLVM 15.0.6, 256 bits)"."""
        return f"{self.kind} · {self.renderer}"


def _display() -> str | None:
    return os.environ.get("DISPLAY") or None


def _nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists()


def running_app() -> str | None:
    """Name of the VisPy app back end this process already runs, or None. Does not import VisPy's
    app module (importing it loads the GL library, which fixes the choice for OSMesa)."""
    mod = sys.modules.get("vispy.app._default_app")
    app = getattr(mod, "default_app", None)
    return None if app is None else str(app.backend_name).lower().split()[0]


def _egl_initializes() -> None:
    """Raise :class:`OffscreenUnavailable` unless EGL's default display initialises — the calls
    VisPy's EGL back end makes when it loads, made here first because loading VisPy's app module
    loads its GL library, after which OSMesa could no longer be chosen."""
    name = ctypes.util.find_library("EGL")
    if name is None:
        raise OffscreenUnavailable("libEGL not found (Debian: apt-get install libegl1 libegl-mesa0)")
    lib = ctypes.CDLL(name)
    lib.eglGetDisplay.restype = ctypes.c_void_p
    lib.eglGetDisplay.argtypes = [ctypes.c_void_p]
    lib.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    display = os.environ.pop("DISPLAY", None)  # as VisPy does: NVIDIA's EGL fails on a remote X display
    try:
        dpy = lib.eglGetDisplay(None)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        ok = bool(dpy) and bool(lib.eglInitialize(dpy, ctypes.byref(major), ctypes.byref(minor)))
    finally:
        if display is not None:
            os.environ["DISPLAY"] = display
    if not ok:
        raise OffscreenUnavailable(f"eglInitialize failed (EGL error 0x{lib.eglGetError():x}, "
                                   f"EGL_PLATFORM={os.environ.get('EGL_PLATFORM')})")


def _prepare(name: str) -> None:
    """Environment a back end needs before VisPy loads it; raises OffscreenUnavailable when it
    cannot work here."""
    if name == "egl":
        if not _nvidia_driver():
            # Mesa picks its platform from EGL_PLATFORM; without a display only surfaceless works.
            # NVIDIA's EGL finds its device platform for the default display by itself.
            os.environ.setdefault("EGL_PLATFORM", "surfaceless")
        _egl_initializes()
    elif name == "osmesa":
        lib = os.environ.get("OSMESA_LIBRARY") or _library_path("OSMesa")
        if lib is None:
            raise OffscreenUnavailable("libOSMesa not found (Debian: apt-get install libosmesa6)")
        if "vispy.gloo.gl.gl2" in sys.modules and os.environ.get("VISPY_GL_LIB") != lib:
            raise OffscreenUnavailable("VisPy's GL library is already loaded from libGL in this process; "
                                       f"set {ENV}=osmesa before the first viewer window")
        # OSMesa contexts need OSMesa's own GL entry points: VisPy loads its GL library from
        # OSMESA_LIBRARY when the osmesa back end is chosen (a path; the bare soname is not enough)
        os.environ["OSMESA_LIBRARY"] = lib
    elif name == "glfw" and not _display():
        raise OffscreenUnavailable("no X display (DISPLAY is not set)")


def _library_path(name: str) -> str | None:
    """Full path of shared library ``lib<name>.so*`` from the dynamic linker's cache, or None."""
    import subprocess

    soname = ctypes.util.find_library(name)
    if soname is None:
        return None
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            if line.strip().startswith(soname) and "=>" in line:
                return line.split("=>", 1)[1].strip()
    return None


def select_app(prefer: str | None = None) -> str:
    """Choose (once per process) and return the VisPy app back end for offscreen windows.

    prefer : "egl", "osmesa" or "glfw" to require one (default: ``$LAYERTOUR_OFFSCREEN``, else
    :data:`ORDER`, first that works). Raises :class:`OffscreenUnavailable` naming every back end's
    failure, or when ``prefer`` differs from the back end this process already runs.
    """
    prefer = prefer or os.environ.get(ENV) or None
    if prefer is not None and prefer not in ORDER:
        raise ValueError(f"offscreen back end {prefer!r} is not one of {', '.join(ORDER)} "
                         f"(argument gl= or ${ENV})")
    current = running_app()
    if current is not None:
        if prefer is not None and prefer != current:
            raise OffscreenUnavailable(f"VisPy already runs the {current} back end in this process; "
                                       f"{prefer} can only be chosen in a fresh kernel")
        return current
    errors = []
    for name in (prefer,) if prefer else ORDER:
        try:
            _prepare(name)
            import vispy

            vispy.use(app=name)
            return name
        except Exception as exc:  # each back end fails in its own way (OSError, RuntimeError, ...)
            errors.append(f"{name}: {exc}")
    raise OffscreenUnavailable("no offscreen OpenGL context: " + "; ".join(errors))


def is_xvfb(display: str | None) -> bool:
    """Whether an Xvfb process on this machine serves X display ``display`` (":99")."""
    if not display:
        return False
    num = display.split(":")[-1].split(".")[0]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == "Xvfb" and f":{num}".encode() in argv:
            return True
    return False


def kind_of(app: str, vendor: str, renderer: str, display: str | None = None) -> str:
    """Name the offscreen GL: "NVIDIA EGL", "Mesa EGL", "EGL (<vendor>)", "OSMesa", "Xvfb" or
    "X display <display>"."""
    text = f"{vendor} {renderer}".lower()
    if app == "egl":
        if "nvidia" in text:
            return "NVIDIA EGL"
        if any(s in text for s in ("mesa", "llvmpipe", "softpipe", "zink")):
            return "Mesa EGL"
        return f"EGL ({vendor})"
    if app == "osmesa":
        return "OSMesa"
    if app == "glfw":
        return "Xvfb" if is_xvfb(display) else f"X display {display}"
    return app


def describe(canvas) -> OffscreenGL:
    """What renders ``canvas`` (its context is made current)."""
    from vispy.gloo import gl

    canvas.set_current()
    vendor, renderer, version = (str(gl.glGetParameter(k))
                                 for k in (gl.GL_VENDOR, gl.GL_RENDERER, gl.GL_VERSION))
    app = str(canvas.app.backend_name).lower().split()[0]
    display = _display() if app == "glfw" else None
    return OffscreenGL(app, kind_of(app, vendor, renderer, display), vendor, renderer, version, display)


class FrameReader:
    """Draws a canvas into a framebuffer object kept between frames (resized with the canvas) and
    reads it back: what the window would show, without a window system."""

    def __init__(self, canvas):
        self.canvas = canvas
        self._fbo = None
        self._size: tuple[int, int] | None = None

    def read(self) -> np.ndarray:
        """Draw now and return the image: (H, W, 3) uint8, C-contiguous, row 0 at the top.
        One device -> host copy of W·H·4 bytes (glReadPixels)."""
        from vispy import gloo

        c = self.canvas
        c.set_current()
        w, h = (int(v) for v in c.physical_size)
        if self._fbo is None:
            self._fbo = gloo.FrameBuffer(color=gloo.RenderBuffer((h, w, 4)), depth=gloo.RenderBuffer((h, w)))
        elif self._size != (w, h):
            self._fbo.resize((h, w))
        self._size = (w, h)
        with self._fbo:
            c.events.draw(region=None)
            rgba = self._fbo.read(alpha=True)
        return np.ascontiguousarray(rgba[..., :3])

    def release(self) -> None:
        if self._fbo is not None:
            self.canvas.set_current()
            for buf in (self._fbo.color_buffer, self._fbo.depth_buffer):
                if buf is not None:
                    buf.delete()
            self._fbo.delete()
            self._fbo = None


def _egl_lib():
    lib = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    lib.eglDestroyContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
    lib.eglQueryContext.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_int)]
    return lib


EGL_CONFIG_ID = 0x3028


def native_context(canvas):
    """The canvas's native context handle (EGL/OSMesa), or None for back ends that free it on
    close (glfw)."""
    return getattr(getattr(canvas, "_backend", None), "_native_context", None)


def context_alive(app: str, handle) -> bool:
    """Whether a native context returned by :func:`native_context` still exists (EGL: queried
    from the driver; other back ends: not queryable, reported False once released)."""
    if app != "egl" or handle is None:
        return False
    from vispy.app.backends import _egl

    value = ctypes.c_int(0)
    return bool(_egl_lib().eglQueryContext(_egl._EGL_DISPLAY, handle, EGL_CONFIG_ID, ctypes.byref(value)))


def release(canvas) -> None:
    """Close ``canvas`` and free its GL context and everything in it (buffers, textures).

    glfw destroys the context with the window. VisPy's EGL back end only destroys the surface and
    keeps every canvas in a module list for good; its OSMesa back end keeps the canvas (and so the
    context) in such a list too: both are finished here. The windows the widget creates never
    share contexts, so destroying one cannot pull objects from under another window."""
    app = str(canvas.app.backend_name).lower().split()[0]
    backend = getattr(canvas, "_backend", None)
    handle = native_context(canvas)
    canvas.close()
    if backend is None or handle is None:
        return
    if app == "egl":
        from vispy.app.backends import _egl

        lib = _egl_lib()
        lib.eglMakeCurrent(_egl._EGL_DISPLAY, None, None, None)
        lib.eglDestroyContext(_egl._EGL_DISPLAY, handle)
        if backend in _egl._VP_EGL_ALL_WINDOWS:
            _egl._VP_EGL_ALL_WINDOWS.remove(backend)
    elif app == "osmesa":  # VisPy's context wrapper destroys the OSMesa context when collected
        from vispy.app.backends import _osmesa

        if backend in _osmesa._VP_OSMESA_ALL_WINDOWS:
            _osmesa._VP_OSMESA_ALL_WINDOWS.remove(backend)
        backend._pixels = None
    backend._native_context = None
    backend._vispy_canvas = None


def probe(prefer: str | None = None) -> dict:
    """Make a 16×16 offscreen window, describe it, free it: the dict of :class:`OffscreenGL`."""
    select_app(prefer)
    from vispy import app

    c = app.Canvas(show=False, size=(16, 16))
    try:
        return asdict(describe(c))
    finally:
        release(c)


if __name__ == "__main__":
    try:
        print(json.dumps(probe(sys.argv[1] if len(sys.argv) > 1 else None)))
    except (OffscreenUnavailable, ValueError) as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(1)
