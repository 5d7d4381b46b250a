"""The three ways the viewer turns aligned (N, p) layer data into point positions on screen.

- ``"shader"``: each layer's data are uploaded once as an RGBA32F texture (``ceil(p/4)`` texels per
  point, any p); per frame only the blend ``s`` and the (p, d) frame (a tiny texture) change, and
  the vertex shader projects. No per-frame transfer of N-sized data. Works on any GL 3.0 driver.
- ``"copy"``: ``kernels.project`` (NumPy twin on the host, or the CUDA kernel on CuPy data followed
  by a device -> host copy) computes (N, d) float32 positions each frame, then ``vbo.set_data``
  uploads them. The fallback, and what ``"cuda"`` degrades to when interop cannot register.
- ``"cuda"``: CuPy data on the device; ``kernels.project`` writes positions straight into the GL
  vertex buffer mapped through CUDA–OpenGL interop (``cuda.bindings.runtime``:
  ``cudaGraphicsGLRegisterBuffer`` / map / unmap; CuPy has no interop API). The buffer is
  registered once after the first draw (VisPy creates the GL object lazily), re-registered when
  it is reallocated, mapped/unmapped per frame on the GUI thread, and never ``set_data``'d.
  Needs an NVIDIA GL/EGL context.

All GL calls happen with the canvas's context current (VisPy's GLIR queue is flushed on draw).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
from vispy import gloo

log = logging.getLogger("layertour.viewer")

SHADER_DIR = Path(__file__).resolve().parent / "shaders"
PATHS = ("cuda", "copy", "shader")


class InteropError(RuntimeError):
    """CUDA–OpenGL interop could not register or map the vertex buffer."""


def _read(name: str) -> str:
    return (SHADER_DIR / name).read_text()


def _source(vertex_file: str, dims: int) -> tuple[str, str]:
    body = _read(vertex_file)
    if "$POS_TYPE" in body:
        body = body.replace("$POS_TYPE", f"vec{dims}")
        body = body.replace("$POS_Z", "pos.z = a_pos.z;" if dims == 3 else "")
    vert = "#version 130\n" + _read("points_common.glsl") + "\n" + body
    frag = "#version 130\n" + _read("points.frag.glsl")
    return vert, frag


def _quiet_builtin_warning() -> None:
    # Mesa lists gl_VertexID among a program's active attributes and VisPy then warns that it is
    # "unset"; it is a GLSL built-in, so the warning is noise.
    vlog = logging.getLogger("vispy")
    if not any(getattr(f, "_lt_builtin", False) for f in vlog.filters):
        class _F(logging.Filter):
            _lt_builtin = True

            def filter(self, record):
                return "gl_VertexID" not in record.getMessage()

        vlog.addFilter(_F())


def texture_layout(n: int, p: int, max_size: int) -> tuple[int, int, int]:
    """(q, width, height) of the data texture: q = ceil(p/4) texels per point, rows of ``width``.

    Raises ValueError when N·q texels do not fit in a max_size² texture.
    """
    q = max(1, -(-p // 4))
    total = n * q
    width = int(min(max_size, max(total, 1)))
    height = -(-total // width)
    if height > max_size:
        raise ValueError(f"{n} points x {p} dims need {total} texels: more than one "
                         f"{max_size}x{max_size} texture holds; use the copy or cuda render path")
    return q, width, height


def pack_layer(data: np.ndarray, max_size: int) -> np.ndarray:
    """(height, width, 4) float32 host array of the data texture for (N, p) ``data`` (host)."""
    data = np.asarray(data, dtype=np.float32)
    n, p = data.shape
    q, width, height = texture_layout(n, p, max_size)
    flat = np.zeros(height * width * 4, np.float32)
    padded = flat[: n * q * 4].reshape(n, q * 4)
    padded[:, :p] = data
    return flat.reshape(height, width, 4)


def pack_frame(F: np.ndarray) -> np.ndarray:
    """(d, q, 4) float32: texel (k, c) = F[4k:4k+4, c] (zero-padded), for (p, d) frame F."""
    F = np.asarray(F, dtype=np.float64)
    p, d = F.shape
    q = max(1, -(-p // 4))
    out = np.zeros((d, q * 4), np.float32)
    out[:, :p] = F.T
    return out.reshape(d, q, 4)


class PointsPath:
    """GL state common to every path: the program, per-point code/state buffers, the palette."""

    name = "base"
    vertex_file = ""

    def __init__(self, n: int, p: int, dims: int, max_texture_size: int):
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        _quiet_builtin_warning()
        self.n, self.p, self.dims, self.max_texture_size = n, p, dims, max_texture_size
        vert, frag = _source(self.vertex_file, dims)
        self.program = gloo.Program(vert, frag)
        self.code_vbo = gloo.VertexBuffer(np.zeros(n, np.float32))
        self.state_vbo = gloo.VertexBuffer(np.ones(n, np.float32))
        self.program["a_code"] = self.code_vbo
        self.program["a_state"] = self.state_vbo
        self.palette_tex = gloo.Texture2D(np.zeros((2, 1, 4), np.float32), internalformat="rgba32f",
                                          interpolation="nearest")
        self.program["u_palette"] = self.palette_tex
        self.program["u_atlas"] = gloo.Texture2D(np.zeros((1, 1, 4), np.uint8))
        self.program["u_cell_uv"] = (1.0, 1.0)
        self.program["u_image_mode"] = 0
        self.program["u_atlas_base"] = 0
        self.program["u_atlas_cols"] = 1
        self.program["u_image_scale"] = 1.0
        self.program["u_filter_on"] = 0
        self.program["u_dims"] = dims

    # -- per-point attributes --
    def set_codes(self, codes: np.ndarray) -> None:
        """codes : (N,) float32 host palette rows."""
        self.code_vbo.set_data(np.ascontiguousarray(codes, dtype=np.float32))

    def set_states(self, states: np.ndarray) -> None:
        """states : (N,) float32 host, 0 faded / 1 normal / 2 highlighted."""
        self.state_vbo.set_data(np.ascontiguousarray(states, dtype=np.float32))

    def set_palette(self, palette: np.ndarray, enabled: np.ndarray | None) -> None:
        """palette : (K, 4) float32; enabled : (K,) bool legend filter, or None (no filter)."""
        k = len(palette)
        tex = np.zeros((2, k, 4), np.float32)
        tex[0] = palette
        tex[1, :, 0] = 1.0 if enabled is None else np.asarray(enabled, np.float32)
        self.palette_tex.set_data(tex)
        self.program["u_filter_on"] = 0 if enabled is None else 1

    def set_view(self, *, center, scale, extent, point_size, alpha, fade_alpha) -> None:
        pr = self.program
        pr["u_center"] = tuple(float(c) for c in center)
        pr["u_scale"] = tuple(float(c) for c in scale)
        pr["u_extent"] = float(extent)
        pr["u_point_size"] = float(point_size)
        pr["u_alpha"] = float(alpha)
        pr["u_fade_alpha"] = float(fade_alpha)

    def set_image_pass(self, atlas=None, *, base=0, cols=1, cell_uv=(1.0, 1.0), scale=1.0) -> None:
        """Bind one atlas texture for an image-mode pass (None: plain dots)."""
        pr = self.program
        pr["u_image_mode"] = 0 if atlas is None else 1
        if atlas is not None:
            pr["u_atlas"] = atlas
            pr["u_atlas_base"] = int(base)
            pr["u_atlas_cols"] = int(cols)
            pr["u_cell_uv"] = tuple(float(c) for c in cell_uv)
            pr["u_image_scale"] = float(scale)

    def draw(self, indices=None) -> None:
        self.program.draw("points", indices)

    # -- per-path --
    def prepare(self, a_key, a, b_key, b, s: float, F: np.ndarray) -> None:
        """Make the next draw show ((1-s) a + s b) F. a, b : (N, p) float32 (NumPy or CuPy)."""
        raise NotImplementedError

    def after_draw(self, canvas) -> None:
        """Called after each draw with the context current (interop registers here)."""

    def release(self) -> None:
        """Free path-specific resources (interop registrations, cached textures)."""

    def describe(self) -> str:
        return self.name


class ShaderPath(PointsPath):
    """Projection in the vertex shader from per-layer float textures (see module docstring)."""

    name = "shader"
    vertex_file = "points_shader.vert.glsl"

    def __init__(self, n, p, dims, max_texture_size, cache_bytes: int = 2 << 30):
        super().__init__(n, p, dims, max_texture_size)
        self.q, self.tex_w, self.tex_h = texture_layout(n, p, max_texture_size)
        self.program["u_q"] = self.q
        self.program["u_tex_w"] = self.tex_w
        self.frame_tex = gloo.Texture2D(np.zeros((dims, self.q, 4), np.float32), internalformat="rgba32f",
                                        interpolation="nearest")
        self.program["u_frame"] = self.frame_tex
        self._textures: OrderedDict = OrderedDict()
        self._layer_bytes = self.tex_w * self.tex_h * 16
        self._max_cached = max(2, cache_bytes // max(self._layer_bytes, 1))

    def _texture(self, key, data) -> gloo.Texture2D:
        if key in self._textures:
            self._textures.move_to_end(key)
            return self._textures[key]
        from engine.device import to_host

        tex = gloo.Texture2D(pack_layer(to_host(data), self.max_texture_size), internalformat="rgba32f",
                             interpolation="nearest")
        self._textures[key] = tex
        while len(self._textures) > self._max_cached:
            _, old = self._textures.popitem(last=False)
            old.delete()
        return tex

    def prepare(self, a_key, a, b_key, b, s, F):
        self.program["u_data_a"] = self._texture(a_key, a)
        self.program["u_data_b"] = self._texture(b_key, b)
        self.program["u_s"] = float(s)
        self.frame_tex.set_data(pack_frame(F))

    def release(self):
        for tex in self._textures.values():
            tex.delete()
        self._textures.clear()


class CopyPath(PointsPath):
    """Per-frame ``kernels.project`` then ``vbo.set_data`` (device -> host copy when on CuPy)."""

    name = "copy"
    vertex_file = "points_copy.vert.glsl"

    def __init__(self, n, p, dims, max_texture_size):
        super().__init__(n, p, dims, max_texture_size)
        self.pos_vbo = gloo.VertexBuffer(np.zeros((n, dims), np.float32))
        self.program["a_pos"] = self.pos_vbo
        self.fallback_reason: str | None = None

    def prepare(self, a_key, a, b_key, b, s, F):
        import kernels
        from engine.device import array_module, to_host

        xp = array_module(a, b)
        pos = kernels.project(a, b, float(s), xp.asarray(np.asarray(F, np.float64)))
        self.pos_vbo.set_data(np.ascontiguousarray(to_host(pos), dtype=np.float32))

    def describe(self):
        if self.fallback_reason is None:
            return self.name
        return f"copy (CUDA interop off: {self.fallback_reason})"


class _Interop:
    """One GL buffer registered with CUDA (``cuda.bindings.runtime``, write-discard):
    ``map(stream)`` -> (device pointer, nbytes), ``unmap()``, ``close()``. GUI thread only."""

    def __init__(self, gl_handle: int):
        try:
            from cuda.bindings import runtime as rt
        except ImportError as exc:
            raise InteropError(f"cuda-bindings is not installed ({exc})") from exc
        self._rt = rt
        self.handle = int(gl_handle)
        self._stream = 0
        flag = rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        try:
            err, res = rt.cudaGraphicsGLRegisterBuffer(self.handle, flag)
        except Exception as exc:  # the binding raises when no CUDA/GL driver pair exists
            raise InteropError(f"{type(exc).__name__}: {exc}") from exc
        if err != rt.cudaError_t.cudaSuccess:
            raise InteropError(f"cudaGraphicsGLRegisterBuffer: {err.name}")
        self._res = res

    def map(self, stream_ptr: int) -> tuple[int, int]:
        rt = self._rt
        (err,) = rt.cudaGraphicsMapResources(1, self._res, stream_ptr)
        if err != rt.cudaError_t.cudaSuccess:
            raise InteropError(f"cudaGraphicsMapResources: {err.name}")
        self._stream = stream_ptr
        err, ptr, size = rt.cudaGraphicsResourceGetMappedPointer(self._res)
        if err != rt.cudaError_t.cudaSuccess:
            rt.cudaGraphicsUnmapResources(1, self._res, stream_ptr)
            raise InteropError(f"cudaGraphicsResourceGetMappedPointer: {err.name}")
        return int(ptr), int(size)

    def unmap(self) -> None:
        (err,) = self._rt.cudaGraphicsUnmapResources(1, self._res, self._stream)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise InteropError(f"cudaGraphicsUnmapResources: {err.name}")

    def close(self) -> None:
        if self._res is not None:
            self._rt.cudaGraphicsUnregisterResource(self._res)
            self._res = None


class CudaPath(CopyPath):
    """CuPy data; ``kernels.project`` writes into the interop-mapped vertex buffer (no host copy).

    Until the first draw has created the GL buffer, and whenever interop fails, frames go through
    the copy path; ``failed`` then holds the reason (the canvas shows it in the HUD and log).
    """

    name = "cuda"

    def __init__(self, n, p, dims, max_texture_size):
        super().__init__(n, p, dims, max_texture_size)
        self._interop: _Interop | None = None
        self._registered_nbytes = 0
        self.failed: str | None = None

    def _gl_handle(self, canvas) -> int | None:
        obj = canvas.context.shared.parser.get_object(self.pos_vbo.id)
        return None if obj is None else int(obj.handle)

    def after_draw(self, canvas) -> None:
        if self.failed is not None:
            return
        nbytes = self.n * self.dims * 4
        if self._interop is not None and self._registered_nbytes == nbytes:
            return
        handle = self._gl_handle(canvas)
        if handle is None:
            return
        if self._interop is not None:
            self._interop.close()
            self._interop = None
        try:
            self._interop = _Interop(handle)
            self._registered_nbytes = nbytes
            log.info("CUDA-GL interop: registered GL buffer %d (%d bytes)", handle, nbytes)
        except InteropError as exc:
            self.failed = str(exc)
            self.fallback_reason = self.failed
            log.warning("CUDA-GL interop unavailable (%s): using the copy path", exc)

    def prepare(self, a_key, a, b_key, b, s, F):
        if self._interop is None or self.failed is not None:
            return CopyPath.prepare(self, a_key, a, b_key, b, s, F)
        import cupy as cp

        import kernels

        stream = cp.cuda.get_current_stream()
        try:
            ptr, size = self._interop.map(stream.ptr)
        except InteropError as exc:
            self.failed = self.fallback_reason = str(exc)
            log.warning("CUDA-GL interop map failed (%s): using the copy path", exc)
            return CopyPath.prepare(self, a_key, a, b_key, b, s, F)
        try:
            if size < self.n * self.dims * 4:
                raise InteropError(f"mapped buffer has {size} bytes, need {self.n * self.dims * 4}")
            mem = cp.cuda.UnownedMemory(ptr, size, self)
            out = cp.ndarray((self.n * self.dims,), cp.float32, cp.cuda.MemoryPointer(mem, 0))
            kernels.project(a, b, float(s), cp.asarray(np.asarray(F, np.float64)), out=out,
                            stride=self.dims, offset=0)
        finally:
            self._interop.unmap()

    def describe(self):
        if self.failed is not None:
            return f"copy (CUDA interop failed: {self.failed})"
        return "cuda" if self._interop is not None else "cuda (registering)"

    def release(self):
        if self._interop is not None:
            self._interop.close()
            self._interop = None


def choose_path(requested: str, cuda_ok: bool) -> str:
    """Resolve ``--render-path``: auto -> cuda when CuPy has a device, else shader.

    ("copy" on CuPy is what the cuda path itself degrades to when interop fails.) Raises ValueError
    for an unknown name and for "cuda" without a CUDA device.
    """
    if requested not in (*PATHS, "auto"):
        raise ValueError(f"render path {requested!r} is not one of auto, {', '.join(PATHS)}")
    if requested == "auto":
        return "cuda" if cuda_ok else "shader"
    if requested == "cuda" and not cuda_ok:
        raise ValueError("--render-path cuda needs CuPy and a CUDA device (none usable here)")
    return requested


def make_path(name: str, n: int, p: int, dims: int, max_texture_size: int) -> PointsPath:
    cls = {"shader": ShaderPath, "copy": CopyPath, "cuda": CudaPath}[name]
    return cls(n, p, dims, max_texture_size)
