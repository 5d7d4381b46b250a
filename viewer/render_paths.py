"""The three ways the viewer turns aligned (N, p) layer data into point positions on screen.

- ``"shader"``: each layer's data are uploaded once, as ``q = ceil(p/4)`` vec4 vertex attributes
  when q <= 7 (p <= 28), else as an RGBA32F texture (q texels per point, any p); per frame only
  the blend ``s`` and the (p, d) frame (a uniform array, or a tiny texture for very large p)
  change, and the vertex shader projects. No per-frame transfer of N-sized data. GL 3.0.
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
from abc import ABC, abstractmethod
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


def _source(vertex_file: str, dims: int, defines: dict | None = None) -> tuple[str, str]:
    body = _read(vertex_file)
    if "$POS_TYPE" in body:
        body = body.replace("$POS_TYPE", f"vec{dims}")
        body = body.replace("$POS_Z", "pos.z = a_pos.z;" if dims == 3 else "")
    defines = dict(defines or {})
    size = defines.pop("LT_MAX_FRAME_VEC4", None)
    if size is not None:  # VisPy parses uniform array sizes only from literal integers
        body = body.replace("LT_MAX_FRAME_VEC4", str(size))
    head = "#version 130\n" + "".join(f"#define {k} {v}\n" for k, v in defines.items())
    vert = head + _read("points_common.glsl") + "\n" + body
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


MAX_FRAME_VEC4 = 192  # uniform vec4s for the frame (GL 3.0 guarantees 256 vertex uniform vectors)


def texture_layout(n: int, p: int, max_size: int) -> tuple[int, int, int, int]:
    """(q, per_row, width, height) of a data texture: q = ceil(p/4) texels per point, per_row whole
    points per texture row (width = q * per_row texels), height rows.

    Raises ValueError when the points do not fit in one max_size x max_size texture.
    """
    q = max(1, -(-p // 4))
    if q > max_size:
        raise ValueError(f"p={p} needs {q} texels per point, more than a {max_size}-texel texture row")
    per_row = int(min(max_size // q, max(n, 1)))
    height = -(-max(n, 1) // per_row)
    if height > max_size:
        raise ValueError(f"{n} points x {p} dims need {n * q} texels: more than one "
                         f"{max_size}x{max_size} texture holds; use the copy or cuda render path")
    return q, per_row, q * per_row, height


def pack_layer(data: np.ndarray, max_size: int) -> np.ndarray:
    """(height, width, 4) float32 host array of the data texture for (N, p) ``data`` (host)."""
    data = np.asarray(data, dtype=np.float32)
    n, p = data.shape
    q, per_row, width, height = texture_layout(n, p, max_size)
    flat = np.zeros((height * per_row, q * 4), np.float32)
    flat[:n, :p] = data
    return flat.reshape(height, width, 4)


def pack_frame(F: np.ndarray) -> np.ndarray:
    """(d, q, 4) float32 blocks: [c, k] = F[4k:4k+4, c] (zero-padded), for the (p, d) frame F."""
    F = np.asarray(F, dtype=np.float64)
    p, d = F.shape
    q = max(1, -(-p // 4))
    out = np.zeros((d, q * 4), np.float32)
    out[:, :p] = F.T
    return out.reshape(d, q, 4)


class PointsPath(ABC):
    """GL state common to every path: the program, per-point code/state buffers, the palette."""

    name = "base"
    vertex_file = ""

    def __init__(self, n: int, p: int, dims: int, max_texture_size: int, defines: dict | None = None):
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self._init_common(n, p, dims, max_texture_size, _source(self.vertex_file, dims, defines))

    def _init_common(self, n, p, dims, max_texture_size, sources) -> None:
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        _quiet_builtin_warning()
        self.n, self.p, self.dims, self.max_texture_size = n, p, dims, max_texture_size
        self.program = gloo.Program(*sources)
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
    @abstractmethod
    def prepare(self, a_key, a, b_key, b, s: float, F: np.ndarray) -> None:
        """Make the next draw show ((1-s) a + s b) F. a, b : (N, p) float32 (NumPy or CuPy)."""

    def after_draw(self, context) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Called after each draw with ``context`` (the canvas's GL context) current; interop
        registers its buffer here."""

    def release(self) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Free path-specific resources (interop registrations, cached textures)."""

    def describe(self) -> str:
        return self.name


ATTRIB_MAX_Q = 7  # 2 * 7 vec4 attributes + code + state = 16, GL's guaranteed minimum


def _attrib_source(q: int, dims: int) -> tuple[str, str]:
    decls = "".join(f"attribute vec4 a_a{k};\nattribute vec4 a_b{k};\n" for k in range(q))
    lines = []
    for k in range(q):
        lines.append(f"    v = a_a{k}; if (u_s != 0.0) v = mix(v, a_b{k}, u_s);")
        lines.append(f"    pos.x += dot(v, u_frame[{k}]); pos.y += dot(v, u_frame[{q + k}]);")
        if dims == 3:
            lines.append(f"    pos.z += dot(v, u_frame[{2 * q + k}]);")
    body = _read("points_attrib.vert.glsl").replace("$DECLS", decls).replace("$BODY", "\n".join(lines))
    body = body.replace("LT_MAX_FRAME_VEC4", str(q * dims))  # VisPy needs literal array sizes
    vert = "#version 130\n" + _read("points_common.glsl") + "\n" + body
    return vert, "#version 130\n" + _read("points.frag.glsl")


class ShaderPath(PointsPath):
    """Projection in the vertex shader; layer data uploaded once per layer (see module docstring).

    mode "attributes" (q <= ATTRIB_MAX_Q: q vec4 vertex attributes per layer) or "texture" (any p:
    an RGBA32F texture per layer read with texelFetch); "auto" picks attributes when they fit.
    """

    name = "shader"
    vertex_file = "points_shader.vert.glsl"

    def __init__(self, n, p, dims, max_texture_size, cache_bytes: int = 2 << 30, mode: str = "auto"):
        self.q = max(1, -(-p // 4))
        if mode == "auto":
            mode = "attributes" if self.q <= ATTRIB_MAX_Q else "texture"
        if mode not in ("attributes", "texture"):
            raise ValueError(f"shader path mode must be auto, attributes or texture, got {mode!r}")
        if mode == "attributes" and self.q > ATTRIB_MAX_Q:
            raise ValueError(f"p={p} needs {self.q} vec4 attributes per layer; at most {ATTRIB_MAX_Q} fit")
        self.mode = mode
        self._bound: tuple | None = None
        if mode == "attributes":
            self._init_common(n, p, dims, max_texture_size, _attrib_source(self.q, dims))
            self._layer_bytes = n * self.q * 16
        else:
            self.q, self.per_row, self.tex_w, self.tex_h = texture_layout(n, p, max_texture_size)
            self.frame_in_texture = self.q * dims > MAX_FRAME_VEC4
            defines = ({"LT_FRAME_TEXTURE": 1} if self.frame_in_texture
                       else {"LT_MAX_FRAME_VEC4": self.q * dims})
            super().__init__(n, p, dims, max_texture_size, defines)
            self.program["u_q"] = self.q
            self.program["u_per_row"] = self.per_row
            if self.frame_in_texture:
                self.frame_tex = gloo.Texture2D(np.zeros((dims, self.q, 4), np.float32),
                                                internalformat="rgba32f", interpolation="nearest")
                self.program["u_frame_tex"] = self.frame_tex
            self._layer_bytes = self.tex_w * self.tex_h * 16
        self._cache: OrderedDict = OrderedDict()
        self._max_cached = max(2, cache_bytes // max(self._layer_bytes, 1))

    def describe(self) -> str:
        return "shader" if self.mode == "attributes" else "shader (texture)"

    def _upload(self, key, data):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        from engine.device import to_host

        host = to_host(data)
        if self.mode == "texture":
            obj = gloo.Texture2D(pack_layer(host, self.max_texture_size), internalformat="rgba32f",
                                 interpolation="nearest")
        else:
            arr = np.zeros(self.n, [(f"f{k}", np.float32, 4) for k in range(self.q)])
            flat = arr.view(np.float32).reshape(self.n, 4 * self.q)
            flat[:, : self.p] = host
            obj = gloo.VertexBuffer(arr)
        self._cache[key] = obj
        while len(self._cache) > self._max_cached:
            _, old = self._cache.popitem(last=False)
            old.delete()
        return obj

    def prepare(self, a_key, a, b_key, b, s, F):
        A, B = self._upload(a_key, a), self._upload(b_key, b)
        if self._bound != (a_key, b_key):
            if self.mode == "texture":
                self.program["u_data_a"] = A
                self.program["u_data_b"] = B
            else:
                for k in range(self.q):
                    self.program[f"a_a{k}"] = A[f"f{k}"]
                    self.program[f"a_b{k}"] = B[f"f{k}"]
            self._bound = (a_key, b_key)
        self.program["u_s"] = float(s)
        blocks = pack_frame(F)
        if self.mode == "texture" and self.frame_in_texture:
            self.frame_tex.set_data(blocks)
        else:
            self.program["u_frame"] = blocks.reshape(-1, 4)

    def release(self):
        for obj in self._cache.values():
            obj.delete()
        self._cache.clear()
        self._bound = None


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

    def _gl_handle(self, context) -> int | None:
        obj = context.shared.parser.get_object(self.pos_vbo.id)
        return None if obj is None else int(obj.handle)

    def after_draw(self, context) -> None:
        if self.failed is not None:
            return
        nbytes = self.n * self.dims * 4
        if self._interop is not None and self._registered_nbytes == nbytes:
            return
        handle = self._gl_handle(context)
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
        need = self.n * self.dims * 4
        try:
            ptr, size = self._interop.map(stream.ptr)
        except InteropError as exc:
            return self._give_up(exc, a_key, a, b_key, b, s, F)
        error = None
        try:
            if size < need:
                raise InteropError(f"mapped buffer has {size} bytes, need {need}")
            mem = cp.cuda.UnownedMemory(ptr, size, self)
            out = cp.ndarray((self.n * self.dims,), cp.float32, cp.cuda.MemoryPointer(mem, 0))
            # the kernel runs on `stream`, the stream the buffer is mapped on; unmap orders GL after it
            kernels.project(a, b, float(s), np.asarray(F, np.float64), out=out, stride=self.dims, offset=0)
        except InteropError as exc:
            error = exc
        finally:
            try:
                self._interop.unmap()
            except InteropError as exc:
                error = error or exc
        if error is not None:
            self._give_up(error, a_key, a, b_key, b, s, F)

    def _give_up(self, exc, a_key, a, b_key, b, s, F) -> None:
        """Interop broke mid-session: say so, stop using it, draw this frame through the copy path."""
        self.failed = self.fallback_reason = str(exc)
        log.warning("CUDA-GL interop failed (%s): using the copy path", exc)
        if self._interop is not None:
            self._interop.close()
            self._interop = None
        CopyPath.prepare(self, a_key, a, b_key, b, s, F)

    def describe(self):
        if self.failed is not None:
            return f"copy (CUDA interop failed: {self.failed})"
        return "cuda" if self._interop is not None else "cuda (registering)"

    def release(self):
        if self._interop is not None:
            self._interop.close()
            self._interop = None


def choose_path(requested: str, cuda_ok: bool, gl_vendor: str | None = None) -> str:
    """Resolve ``--render-path``: auto -> cuda when CuPy has a device and the GL context is
    NVIDIA's (interop can only register there), copy on CuPy when the GL is someone else's
    (Mesa, remote X), else shader. ``gl_vendor`` None means unknown (cuda is tried; it degrades to
    copy by itself if registration fails). Raises ValueError for an unknown name and for "cuda"
    without a CUDA device.
    """
    if requested not in (*PATHS, "auto"):
        raise ValueError(f"render path {requested!r} is not one of auto, {', '.join(PATHS)}")
    if requested == "auto":
        if not cuda_ok:
            return "shader"
        return "cuda" if gl_vendor is None or "nvidia" in gl_vendor.lower() else "copy"
    if requested == "cuda" and not cuda_ok:
        raise ValueError("--render-path cuda needs CuPy and a CUDA device (none usable here)")
    return requested


SHADER_MODE = "auto"  # benchmarks set "texture" to time the texture variant at small p


def make_path(name: str, n: int, p: int, dims: int, max_texture_size: int) -> PointsPath:
    if name == "shader":
        return ShaderPath(n, p, dims, max_texture_size, mode=SHADER_MODE)
    cls = {"copy": CopyPath, "cuda": CudaPath}[name]
    return cls(n, p, dims, max_texture_size)
