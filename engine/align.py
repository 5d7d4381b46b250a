"""Alignment stage: orthogonal Procrustes, the canonical frame, layer similarity and movement.

Every function derives its array module from its inputs (:func:`engine.device.array_module`), so
NumPy arrays (``numpy.memmap`` included) stay on the host and CuPy arrays stay on the device;
results come back in the caller's array type. Large ``(N, p)`` inputs are read in row chunks and
cast to float64 chunk by chunk, so a float32 memmap is never copied whole; the small ``p x p``
products are accumulated in float64 and their SVDs run in float64 (on the host for single
matrices, where a device SVD would be pure launch overhead).

Maths (``../shared/research/anchors-umap-tour.md`` §A.4, §A.7, §A.10):

- Procrustes: ``Q = argmin_{Q in O(p)} ||A Q - B||_F = U V^T`` with ``A^T B = U S V^T``.
- Canonical frame: every layer is centred; layer 0 keeps its axes; layer k is rotated onto its
  already-aligned predecessor, so ``aligned_k = (E_k - center_k) @ rotation_k`` puts every layer
  of a model in layer 0's frame (no path dependence when jumping between layers).
- Training runs (several checkpoints of one model, :func:`align_grid`): the last checkpoint's layers
  form the chain above; layer l of checkpoint k is rotated onto the already-aligned layer l of
  checkpoint k + 1, so every (checkpoint, layer) embedding has one place in one frame and jumping
  between any two shows only real change.
- Similarity: ``S(A, B) = ||A'^T B'||_* / sqrt(||A'^T A'||_* ||B'^T B'||_*)`` on centred ``A'``,
  ``B'``; since ``A'^T A'`` is PSD its nuclear norm is ``||A'||_F^2``. ``S`` is the cosine between
  the embeddings after the best orthogonal alignment: ``min_Q ||A^ Q - B^||_F^2 = 2 (1 - S)`` for
  unit-Frobenius ``A^``, ``B^``.
- Movement: ``d_i = ||x_i Q - y_i||`` with each centred embedding divided by its mean row norm and
  ``Q`` fitted on a seeded sample of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.device import array_module, to_host

__all__ = [
    "Alignment",
    "center",
    "procrustes",
    "canonical_alignment",
    "ChainEnd",
    "PairStats",
    "align_grid",
    "align_models",
    "align_training",
    "chain",
    "chain_similarities",
    "cross_model_rotation",
    "extend_chain",
    "join_frames",
    "link",
    "pair_stats",
    "similarity",
    "similarity_matrix",
    "consecutive_similarity",
    "movement",
]

# Bytes of float64 scratch one row chunk may take (bounds memory on 1M-point inputs).
CHUNK_BYTES = 128 * 2**20


@dataclass(frozen=True)
class Alignment:
    """One layer's place in the canonical frame: ``aligned = (E - center) @ rotation``.

    rotation : (p, p) float64, orthogonal, in the embeddings' array type (NumPy or CuPy)
    center : (p,) float64, the layer's column mean, same array type
    residual : normalised Procrustes residual against the layer it was rotated onto,
        ``||A^ Q - B^||_F^2`` with both centred and scaled to unit Frobenius norm (0 = rigid
        copy, 2 = unrelated; 0 for layer 0)
    """

    rotation: object
    center: object
    residual: float

    def apply(self, E):
        """Aligned copy of ``E`` ((N, p), NumPy or CuPy): ``(E - center) @ rotation``, in E's float dtype."""
        xp = array_module(E, self.rotation)
        E = xp.asarray(E)
        dtype = E.dtype if E.dtype.kind == "f" else xp.float64
        R = xp.asarray(self.rotation, dtype=dtype)
        c = xp.asarray(self.center, dtype=dtype)
        return (E.astype(dtype, copy=False) - c) @ R


# ----------------------------------------------------------------------------------------- helpers


def _check_2d(A, name: str):
    shape = getattr(A, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D (N, p) array, got shape {shape}")
    if shape[0] < 2 or shape[1] < 1:
        raise ValueError(f"{name} must have at least 2 rows and 1 column, got shape {tuple(shape)}")
    return A


def _check_rows(A, B, name_a: str, name_b: str) -> None:
    if A.shape[0] != B.shape[0]:
        raise ValueError(
            f"{name_a} has {A.shape[0]} rows but {name_b} has {B.shape[0]}: rows must be the same points"
        )


def _chunk_rows(width: int) -> int:
    return max(1024, CHUNK_BYTES // (8 * max(width, 1)))


def _ones(rows: int, xp):
    return xp.ones(rows, dtype=xp.float64)


def _mean64(A, xp):
    """Column mean of (N, p) ``A`` as (p,) float64 in ``xp``: row chunks summed by a matrix-vector
    product (fast on both back ends; a CuPy axis-0 reduction over few columns is not)."""
    step = _chunk_rows(A.shape[1])
    total = xp.zeros(A.shape[1], dtype=xp.float64)
    for s in range(0, A.shape[0], step):
        c = xp.asarray(A[s : s + step], dtype=xp.float64)
        total += _ones(c.shape[0], xp) @ c
    return total / A.shape[0]


def _fill64(cols, s: int, e: int, shift, buf, xp):
    """Rows ``s:e`` of the column blocks ``cols`` side by side, minus ``shift``, as float64.

    Written into ``buf[: e - s]`` (a float64 scratch reused across chunks, so its pages are touched
    once) when given, else into a fresh array (a single block: one cast copy).
    """
    if buf is None:
        out = xp.array(cols[0][s:e], dtype=xp.float64)
    else:
        out = buf[: e - s]
        j = 0
        for c in cols:
            out[:, j : j + c.shape[1]] = xp.asarray(c[s:e])
            j += c.shape[1]
    out -= shift
    return out


@dataclass(frozen=True)
class _Moments:
    """Centred second moments of two column groups A (N, wa) and B (N, wb), float64 in ``xp``."""

    mean_a: object  # (wa,)
    mean_b: object  # (wb,)
    cross: object  # (wa, wb) = A'^T B'
    sq_a: object  # (wa,) column sums of squares of A'
    sq_b: object  # (wb,)
    gram_a: object = None  # (wa, wa) = A'^T A' when asked for
    gram_b: object = None


def _moments(cols_a: list, cols_b: list, xp, grams: bool = False) -> _Moments:
    """One pass over the rows of the horizontally joined ``cols_a`` and ``cols_b`` ((N, p_i) each).

    Each row chunk is cast to float64 once and shifted by the first row (so the sums do not cancel
    whatever the offset); the shift is undone exactly at the end: for shifted data ``X``, ``Y`` with
    column sums ``u``, ``v``, the centred product is ``X^T Y - u v^T / N``.
    """
    n = cols_a[0].shape[0]
    shift_a = xp.concatenate([xp.asarray(c[0], dtype=xp.float64) for c in cols_a])
    shift_b = xp.concatenate([xp.asarray(c[0], dtype=xp.float64) for c in cols_b])
    wa, wb = shift_a.shape[0], shift_b.shape[0]
    u, v = xp.zeros(wa, dtype=xp.float64), xp.zeros(wb, dtype=xp.float64)
    cross = xp.zeros((wa, wb), dtype=xp.float64)
    sq_a, sq_b = xp.zeros(wa, dtype=xp.float64), xp.zeros(wb, dtype=xp.float64)
    ga = xp.zeros((wa, wa), dtype=xp.float64) if grams else None
    gb = xp.zeros((wb, wb), dtype=xp.float64) if grams else None
    step = min(n, _chunk_rows(wa + wb))
    buf_a = xp.empty((step, wa), dtype=xp.float64) if len(cols_a) > 1 else None
    buf_b = xp.empty((step, wb), dtype=xp.float64) if len(cols_b) > 1 else None
    for s in range(0, n, step):
        e = min(n, s + step)
        a = _fill64(cols_a, s, e, shift_a, buf_a, xp)
        b = _fill64(cols_b, s, e, shift_b, buf_b, xp)
        ones = _ones(e - s, xp)
        u += ones @ a
        v += ones @ b
        cross += a.T @ b
        if grams:
            ga += a.T @ a
            gb += b.T @ b
        else:
            sq_a += xp.einsum("ij,ij->j", a, a)
            sq_b += xp.einsum("ij,ij->j", b, b)
    cross -= xp.outer(u, v) / n
    if grams:  # the sums of squares are the Grams' diagonals
        ga -= xp.outer(u, u) / n
        gb -= xp.outer(v, v) / n
        sq_a, sq_b = xp.diagonal(ga).copy(), xp.diagonal(gb).copy()
    else:
        sq_a -= u * u / n
        sq_b -= v * v / n
    return _Moments(shift_a + u / n, shift_b + v / n, cross, sq_a, sq_b, ga, gb)


def _cross64(A, B, xp):
    """``A^T B`` (no centring) as (pa, pb) float64 in ``xp``, accumulated over row chunks."""
    step = _chunk_rows(A.shape[1] + B.shape[1])
    out = xp.zeros((A.shape[1], B.shape[1]), dtype=xp.float64)
    for s in range(0, A.shape[0], step):
        out += xp.asarray(A[s : s + step], dtype=xp.float64).T @ xp.asarray(B[s : s + step], dtype=xp.float64)
    return out


def _rotation_from_cross(M: np.ndarray, rotation_only: bool) -> np.ndarray:
    """Orthogonal (p, p) float64 maximising trace(Q^T M), from the host (p, p) float64 ``M``."""
    if not np.all(np.isfinite(M)):
        raise ValueError("Procrustes cross-product has non-finite entries (NaN or inf in the input)")
    U, _, Vt = np.linalg.svd(M)
    if rotation_only and np.linalg.det(U) * np.linalg.det(Vt) < 0:
        U = U.copy()
        U[:, -1] = -U[:, -1]
    return U @ Vt


# ------------------------------------------------------------------------------------------ public


def center(A):
    """Centre the columns of ``A``.

    A : (N, p) float array, NumPy (memmap ok) or CuPy.
    Returns ``(A - mean, mean)``: the centred (N, p) array in A's float dtype (float64 for integer
    input) and the (p,) float64 mean, both in A's array type. The mean is accumulated in float64.
    """
    _check_2d(A, "A")
    xp = array_module(A)
    A = xp.asarray(A)
    mu = _mean64(A, xp)
    dtype = A.dtype if A.dtype.kind == "f" else xp.float64
    return A - mu.astype(dtype), mu


def procrustes(A, B, *, rotation_only: bool = False):
    """Orthogonal ``Q`` (p, p) minimising ``||A Q - B||_F`` (no centring: centre first if needed).

    A, B : (N, p) arrays, same N and p, NumPy or CuPy (the products run where the data live).
    rotation_only : if True, restrict to det(Q) = +1 (a proper rotation); by default reflections
        are allowed, as in the study.
    Returns (p, p) float64 in the inputs' array type. ``A^T B`` is accumulated in float64 over row
    chunks; its p x p SVD runs on the host in float64.
    """
    _check_2d(A, "A")
    _check_2d(B, "B")
    _check_rows(A, B, "A", "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A has {A.shape[1]} columns but B has {B.shape[1]}: Procrustes needs the same p")
    xp = array_module(A, B)
    M = to_host(_cross64(A, B, xp))
    return xp.asarray(_rotation_from_cross(M, rotation_only))


def _iter_layers(embeddings) -> Iterable:
    if callable(embeddings):
        embeddings = embeddings()
    if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Iterable):
        raise TypeError(
            "embeddings must be a sequence of (N, p) arrays, an iterable yielding them, "
            f"or a zero-argument callable returning such an iterable; got {type(embeddings).__name__}"
        )
    return embeddings


@dataclass(frozen=True)
class PairStats:
    """What aligning layer E onto its chain target T needs: small host float64 moments.

    center : (p,) column mean of E; cross : (p, p) ``(E - mean E)^T (T - mean T)``;
    sq, sq_target : ``||E - mean E||_F^2`` and ``||T - mean T||_F^2``.
    """

    center: np.ndarray
    cross: np.ndarray
    sq: float
    sq_target: float


def pair_stats(E, T) -> PairStats:
    """One pass over the rows of E and T ((N, p) each, NumPy, memmap or CuPy; the products run
    where the data live) -> :class:`PairStats` on the host. ``pair_stats(E, E)`` gives a chain's
    first layer. This is the part of the chain that can run apart (a Dask task per pair)."""
    _check_2d(E, "E")
    _check_2d(T, "T")
    _check_rows(E, T, "E", "T")
    if E.shape[1] != T.shape[1]:
        raise ValueError(f"E has {E.shape[1]} columns but its target has {T.shape[1]}")
    m = _moments([E], [T], array_module(E, T))
    return PairStats(to_host(m.mean_a), to_host(m.cross), float(m.sq_a.sum()), float(m.sq_b.sum()))


def link(stats: PairStats, target_rotation=None, *, rotation_only: bool = False,
         name: str = "E") -> Alignment:
    """The chain step: E's :class:`Alignment` given its :class:`PairStats` against the target T and
    T's own rotation ``R_t`` ((p, p), host; None for a chain's first layer, which keeps its axes).

    ``rotation = polar((E - mean E)^T (T - mean T) R_t)`` puts E onto the *aligned* target, and the
    normalised residual is ``2 - 2 tr(R^T M) / sqrt(sq sq_target)`` (0 = rigid copy, 2 = unrelated).
    Host float64 results. Raises ValueError naming ``name`` for a constant or non-finite layer.
    """
    if not stats.sq > 0.0 or not np.isfinite(stats.sq):
        raise ValueError(f"{name} has zero variance (a constant embedding) or non-finite values")
    p = stats.cross.shape[0]
    if target_rotation is None:
        return Alignment(np.eye(p), stats.center, 0.0)
    if not stats.sq_target > 0.0 or not np.isfinite(stats.sq_target):
        raise ValueError(f"the target of {name} has zero variance or non-finite values")
    M = stats.cross @ np.asarray(to_host(target_rotation), dtype=np.float64)
    R = _rotation_from_cross(M, rotation_only)
    residual = max(0.0, 2.0 - 2.0 * float(np.trace(R.T @ M)) / np.sqrt(stats.sq * stats.sq_target))
    return Alignment(R, stats.center, float(residual))


def chain(stats: Sequence[PairStats], *, rotation_only: bool = False) -> list[Alignment]:
    """Alignments of a chain from its precomputed stats: ``stats[0] = pair_stats(E_0, E_0)``,
    ``stats[k] = pair_stats(E_k, E_(k-1))``. Host float64; equals :func:`canonical_alignment`."""
    out: list[Alignment] = []
    for k, st in enumerate(stats):
        out.append(link(st, out[-1].rotation if out else None, rotation_only=rotation_only,
                        name=f"embeddings[{k}]"))
    if not out:
        raise ValueError("chain: no layers")
    return out


@dataclass(frozen=True)
class ChainEnd:
    """The last layer of a chain so far: ``layer`` (N, p) raw, as given, and its ``rotation``."""

    layer: object
    rotation: np.ndarray


def extend_chain(end: ChainEnd | None, E, *, rotation_only: bool = False,
                 name: str = "E") -> tuple[Alignment, ChainEnd]:
    """Align E onto the chain ending at ``end`` (None: E starts the chain); returns E's
    :class:`Alignment` (arrays in E's array type) and the new end. The incremental form of
    :func:`canonical_alignment`, for stages that need each aligned layer before the next exists
    (``prepare --init previous``)."""
    _check_2d(E, name)
    T = E if end is None else end.layer
    if T.shape[1] != E.shape[1]:
        raise ValueError(f"{name} has {E.shape[1]} columns but the chain has {T.shape[1]}")
    _check_rows(T, E, "the chain's last layer", name)
    al = link(pair_stats(E, T), None if end is None else end.rotation, rotation_only=rotation_only, name=name)
    xp = array_module(E)
    return Alignment(xp.asarray(al.rotation), xp.asarray(al.center), al.residual), ChainEnd(E, al.rotation)


def canonical_alignment(embeddings, chain: bool = True, *, rotation_only: bool = False) -> list[Alignment]:
    """Put every layer of one model into layer 0's frame.

    embeddings : a sequence of (N, p) arrays (NumPy, memmap or CuPy), an iterable that yields them
        one at a time, or a zero-argument callable returning such an iterable. At most two layers
        (three with ``chain=False``) are held at once, so a generator over a bundle aligns any
        number of layers in bounded memory.
    chain : True rotates layer k onto the already-aligned layer k-1 (small steps, smooth
        transitions); False rotates every layer directly onto layer 0.
    Returns one :class:`Alignment` per layer; layer 0's rotation is the identity. The aligned
    layer is ``(E_k - center_k) @ rotation_k`` and lands in layer 0's (centred) frame. Each step is
    :func:`pair_stats` + :func:`link` (see :func:`chain` for precomputed stats).
    """
    out: list[Alignment] = []
    end = first = None
    for k, E in enumerate(_iter_layers(embeddings)):
        al, new_end = extend_chain(end if chain else first, E, rotation_only=rotation_only,
                                   name=f"embeddings[{k}]")
        out.append(al)
        end = new_end
        first = first or new_end
    if not out:
        raise ValueError("embeddings is empty: nothing to align")
    return out


def cross_model_rotation(ref_a_aligned, ref_b_aligned, *, rotation_only: bool = False):
    """Rotation taking model B's canonical frame into model A's.

    ref_a_aligned, ref_b_aligned : (N, p) aligned embeddings of the same N points (rows in the same
        order), one per model; by default each model's input layer. They are centred here again,
        which is a no-op for aligned layers.
    Returns ``Q`` (p, p) float64 in the inputs' array type with ``ref_b_aligned @ Q ~ ref_a_aligned``.
    Combine with the per-layer alignments of model B as ``rotation_b' = rotation_b @ Q`` (centres
    unchanged): then ``(E_b - center_b) @ rotation_b'`` lies in model A's frame.
    """
    _check_2d(ref_a_aligned, "ref_a_aligned")
    _check_2d(ref_b_aligned, "ref_b_aligned")
    _check_rows(ref_a_aligned, ref_b_aligned, "ref_a_aligned", "ref_b_aligned")
    xp = array_module(ref_a_aligned, ref_b_aligned)
    M = to_host(_moments([ref_b_aligned], [ref_a_aligned], xp).cross)
    return xp.asarray(_rotation_from_cross(M, rotation_only))


@dataclass(frozen=True)
class ModelsAlignment:
    """Every layer of every model in one canonical frame, plus the comparisons a bundle stores.

    alignments : model name -> list of :class:`Alignment` in layer order; model B's rotations
        already include the cross-model rotation into the first model's frame. For a training run
        these are its last checkpoint's.
    similarity : (model a, model b) -> (La, Lb) float64 layer-similarity matrix, for every pair
        in the given order (a before b) (last checkpoints).
    consecutive : model name -> (L - 1,) similarities of consecutive layers (last checkpoint).
    grids : model name -> per checkpoint (training order) a list of :class:`Alignment` per layer,
        every one in the same frame (:func:`align_training`; empty from :func:`align_models`).
    checkpoint_similarity : model name -> (K - 1, L) float64, entry (k, l) the similarity of layer
        l between checkpoints k and k + 1.
    layer_similarity : model name -> (K, L, L) float64, each checkpoint's layer-similarity matrix.
    """

    alignments: dict
    similarity: dict
    consecutive: dict
    grids: dict = field(default_factory=dict)
    checkpoint_similarity: dict = field(default_factory=dict)
    layer_similarity: dict = field(default_factory=dict)


def join_frames(alignments: dict, first_layers: dict, *, rotation_only: bool = False) -> dict:
    """Express every model's chain in the first model's frame.

    alignments : model name -> list of :class:`Alignment` (each model's own chain, layer 0 first);
    first_layers : model name -> its layer 0, (N, p) raw (same N points, same row order).
    Returns name -> alignments with ``rotation @ Q`` for every model after the first, where Q is
    :func:`cross_model_rotation` between the models' aligned first layers (centres unchanged).
    """
    out, ref = {}, None
    for name, al in alignments.items():
        if ref is None:
            ref = al[0].apply(first_layers[name])
            out[name] = list(al)
            continue
        Q = cross_model_rotation(ref, al[0].apply(first_layers[name]), rotation_only=rotation_only)
        out[name] = [Alignment(a.rotation @ Q, a.center, a.residual) for a in al]
    return out


def chain_similarities(alignments: Sequence[Alignment]) -> np.ndarray:
    """(L - 1,) float64 similarities of consecutive layers, read off a chain's residuals: for
    centred, unit-norm layers residual = 2 (1 - S), so no second pass over the layers is needed."""
    return np.array([1.0 - a.residual / 2.0 for a in alignments[1:]], dtype=np.float64)


def align_grid(grid, *, rotation_only: bool = False,
               name: str = "grid") -> tuple[list[list[Alignment]], np.ndarray]:
    """Put every (checkpoint, layer) embedding of one training run into one frame.

    grid : per checkpoint in training order, the same number L of (N, p) layers (NumPy, memmap or
        CuPy; the products run where the data live, at most two layers held at once).
    The last checkpoint's layers are chained as :func:`canonical_alignment` does (layer 0 keeps
    its axes); then, from the second-to-last checkpoint backwards, layer l of checkpoint k is
    rotated onto checkpoint k + 1's aligned layer l (:func:`pair_stats` + :func:`link`). Every
    embedding gets one absolute alignment, so the frame of (k, l) does not depend on how the viewer
    got there. Returns ``(alignments[k][l], S)`` with host float64 alignments and S (K - 1, L) the
    similarity of each layer between consecutive checkpoints (read off the residuals, as
    :func:`chain_similarities` does). Raises ValueError naming ``name[k][l]`` for an empty grid,
    rows of different lengths or a constant layer.
    """
    grid = [list(row) for row in grid]
    if not grid or not grid[-1]:
        raise ValueError(f"{name}: no checkpoints or no layers to align")
    n_layers = len(grid[-1])
    for k, row in enumerate(grid):
        if len(row) != n_layers:
            raise ValueError(f"{name}[{k}] has {len(row)} layers but the last checkpoint has {n_layers}")
    last: list[Alignment] = []
    end = None
    for i, E in enumerate(grid[-1]):
        al, end = extend_chain(end, E, rotation_only=rotation_only, name=f"{name}[{len(grid) - 1}][{i}]")
        last.append(Alignment(np.asarray(to_host(al.rotation), dtype=np.float64),
                              np.asarray(to_host(al.center), dtype=np.float64), al.residual))
    out: list[list[Alignment]] = [last]
    for k in range(len(grid) - 2, -1, -1):
        nxt = out[0]
        row = []
        for i, E in enumerate(grid[k]):
            where = f"{name}[{k}][{i}]"
            _check_2d(E, where)
            st = pair_stats(E, grid[k + 1][i])
            row.append(link(st, nxt[i].rotation, rotation_only=rotation_only, name=where))
        out.insert(0, row)
    sims = np.array([[1.0 - a.residual / 2.0 for a in row] for row in out[:-1]], dtype=np.float64)
    return out, sims.reshape(len(grid) - 1, n_layers)


def align_training(models: dict, *, layer_similarity: bool = True) -> ModelsAlignment:
    """Align the training runs of one or more models of the same N points into one frame.

    models : name -> grid (per checkpoint in training order, a sequence of (N, p) layers in network
        order; one checkpoint is a plain model). Each grid goes through :func:`align_grid`; every
        model after the first is then expressed in the first model's frame through its last
        checkpoint's layer 0 (:func:`join_frames`; the same rotation applies to all its
        checkpoints). ``layer_similarity`` : also compute each checkpoint's (L, L) layer-similarity
        matrix of every model with more than one checkpoint (:func:`similarity_matrix`, one batched
        pass per checkpoint).
    Returns a :class:`ModelsAlignment` whose ``alignments``, ``similarity`` and ``consecutive``
    describe the last checkpoints (exactly what :func:`align_models` gives for them) and whose
    ``grids``, ``checkpoint_similarity`` and ``layer_similarity`` hold the training axis.
    """
    if not models:
        raise ValueError("align_training: no models given")
    grids, csims = {}, {}
    for mname, grid in models.items():
        grids[mname], csims[mname] = align_grid(grid, name=mname)
    joined = join_frames({m: g[-1] for m, g in grids.items()},
                         {m: list(models[m])[-1][0] for m in models})
    for mname, g in grids.items():
        Q = np.asarray(to_host(joined[mname][0].rotation), dtype=np.float64)  # layer 0 of the last is I @ Q
        grids[mname] = [[Alignment(a.rotation @ Q, a.center, a.residual) for a in row] for row in g[:-1]] \
            + [list(joined[mname])]
    alignments = {m: g[-1] for m, g in grids.items()}
    consecutive = {m: chain_similarities(al) for m, al in alignments.items()}
    names = list(models)
    last = {m: list(models[m])[-1] for m in names}
    sims = {(a, b): to_host(similarity_matrix(last[a], last[b]))
            for i, a in enumerate(names) for b in names[i + 1:]}
    lsims = {}
    if layer_similarity:  # for training runs (more than one checkpoint)
        lsims = {m: np.stack([np.asarray(to_host(similarity_matrix(row, row)), dtype=np.float64)
                              for row in models[m]]) for m in names if len(list(models[m])) > 1}
    return ModelsAlignment(alignments, sims, consecutive, grids, csims, lsims)


def align_models(models: dict) -> ModelsAlignment:
    """Align the layers of one or more models of the same N points into one frame and compare them.

    models : name -> sequence of (N, p) embeddings in network order (NumPy, memmap or CuPy); the
        first model's first layer defines the frame. Each model is chained layer to layer
        (:func:`canonical_alignment`), then expressed in the first model's frame through its first
        layer (:func:`join_frames`). Used by ``prepare`` and by ``layertour import``; the Dask
        runner builds the same result from :func:`pair_stats` tasks and :func:`chain`. This is
        :func:`align_training` with one checkpoint per model (one chain for both); host float64
        alignments.
    """
    if not models:
        raise ValueError("align_models: no models given")
    res = align_training({name: [list(layers)] for name, layers in models.items()}, layer_similarity=False)
    return ModelsAlignment(res.alignments, res.similarity, res.consecutive)


def similarity(A, B) -> float:
    """Layer similarity ``||A'^T B'||_* / sqrt(||A'^T A'||_* ||B'^T B'||_*)`` of centred A', B'.

    A : (N, pa), B : (N, pb) arrays of the same N points, NumPy or CuPy. Evaluates the formula
    literally (three nuclear norms of float64 products); :func:`similarity_matrix` is the batched
    form. Returns a Python float in [0, 1], invariant to translation, rotation and scaling of either
    input, and symmetric.
    """
    _check_2d(A, "A")
    _check_2d(B, "B")
    _check_rows(A, B, "A", "B")
    xp = array_module(A, B)
    m = _moments([A], [B], xp, grams=True)
    nuc = [float(np.linalg.svd(to_host(M), compute_uv=False).sum()) for M in (m.cross, m.gram_a, m.gram_b)]
    if not np.all(np.isfinite(nuc)):
        raise ValueError("similarity: non-finite values (NaN or inf) in A or B")
    if nuc[1] <= 0.0 or nuc[2] <= 0.0:
        which = "A" if nuc[1] <= 0.0 else "B"
        raise ValueError(f"similarity: {which} has zero variance (a constant embedding)")
    return nuc[0] / float(np.sqrt(nuc[1] * nuc[2]))


def _stack_layers(layers, side: str) -> list:
    layers = list(layers)
    if not layers:
        raise ValueError(f"{side} is empty")
    for i, L in enumerate(layers):
        _check_2d(L, f"{side}[{i}]")
        if L.shape != layers[0].shape:
            raise ValueError(
                f"{side}[{i}] has shape {tuple(L.shape)} but {side}[0] has {tuple(layers[0].shape)}"
            )
    return layers


def similarity_matrix(layers_a: Sequence, layers_b: Sequence, *, xp=None):
    """Similarity of every layer of ``layers_a`` with every layer of ``layers_b``, batched.

    layers_a : La arrays (N, pa); layers_b : Lb arrays (N, pb); NumPy (memmaps read in row
        chunks) or CuPy. xp : array module to compute in (default: that of the layers; pass
        ``cupy`` to upload host layers chunk by chunk).
    Returns (La, Lb) float64 in ``xp``. One pass over the rows: each row chunk of all layers is
    cast to float64 and concatenated horizontally, and a single (La*pa x Lb*pb) product is
    accumulated (centred exactly at the end); then the La*Lb blocks go through one batched SVD
    (compute_uv=False) and are divided by ``||A'_i||_F ||B'_j||_F`` (the square roots of the Gram
    nuclear norms). Memory: float64 scratch of about ``CHUNK_BYTES`` plus the (La*pa, Lb*pb) product.
    """
    la = _stack_layers(layers_a, "layers_a")
    lb = _stack_layers(layers_b, "layers_b")
    _check_rows(la[0], lb[0], "layers_a[0]", "layers_b[0]")
    if xp is None:
        xp = array_module(*la, *lb)
    pa, pb = la[0].shape[1], lb[0].shape[1]
    m = _moments(la, lb, xp)
    cross, sq_a, sq_b = m.cross, m.sq_a, m.sq_b
    blocks = cross.reshape(len(la), pa, len(lb), pb).transpose(0, 2, 1, 3).reshape(-1, pa, pb)
    nuc = xp.linalg.svd(blocks, compute_uv=False).sum(axis=-1).reshape(len(la), len(lb))
    fa = sq_a.reshape(len(la), pa).sum(axis=1)
    fb = sq_b.reshape(len(lb), pb).sum(axis=1)
    _check_variance(fa, "layers_a")
    _check_variance(fb, "layers_b")
    S = nuc / xp.sqrt(fa[:, None] * fb[None, :])
    if not bool(xp.isfinite(S).all()):
        raise ValueError("similarity_matrix: non-finite values (NaN or inf) in the layers")
    return S


def _check_variance(sq, side: str) -> None:
    bad = np.flatnonzero(to_host(sq) <= 0.0)
    if bad.size:
        raise ValueError(f"{side}[{int(bad[0])}] has zero variance (a constant embedding)")


def consecutive_similarity(layers):
    """Similarity of each layer with the next one: (L-1,) float64 in the layers' array type.

    layers : a sequence or iterable of (N, p) arrays (NumPy, memmap or CuPy), read one at a time.
    Entry k is ``similarity(layers[k], layers[k+1])`` computed with the Gram identity
    ``||A'^T A'||_* = ||A'||_F^2``.
    """
    vals: list[float] = []
    prev = None
    xp = np
    for k, L in enumerate(_iter_layers(layers)):
        _check_2d(L, f"layers[{k}]")
        xp = array_module(L)
        if prev is not None:
            _check_rows(prev, L, f"layers[{k - 1}]", f"layers[{k}]")
            m = _moments([prev], [L], array_module(prev, L))
            sq_p, sq = float(m.sq_a.sum()), float(m.sq_b.sum())
            if not (sq_p > 0.0 and sq > 0.0):
                bad = k - 1 if not sq_p > 0.0 else k
                raise ValueError(f"layers[{bad}] has zero variance (a constant embedding) or non-finite "
                                 "values")
            nuc = float(np.linalg.svd(to_host(m.cross), compute_uv=False).sum())
            vals.append(nuc / float(np.sqrt(sq_p * sq)))
        prev = L
    if prev is None:
        raise ValueError("layers is empty")
    return xp.asarray(np.asarray(vals, dtype=np.float64))


def movement(A, B, sample: int = 25000, seed: int = 0):
    """Per-point displacement between two embeddings of the same points after alignment.

    A, B : (N, p) arrays, NumPy or CuPy. Each is centred and divided by its mean row norm; ``Q`` is
    the Procrustes rotation of A onto B fitted on ``min(sample, N)`` rows drawn with ``seed``.
    Returns (N,) ``||a_i Q - b_i||`` in the inputs' array type, float32 for float32 input (else
    float64). Zero for a rotated, shifted or uniformly scaled copy.
    """
    _check_2d(A, "A")
    _check_2d(B, "B")
    _check_rows(A, B, "A", "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A has {A.shape[1]} columns but B has {B.shape[1]}: movement needs the same p")
    if sample < A.shape[1]:
        raise ValueError(f"sample={sample} must be at least p={A.shape[1]}")
    xp = array_module(A, B)
    dtype = xp.result_type(xp.asarray(A).dtype, xp.asarray(B).dtype, xp.float32)
    scaled = []
    for X, name in ((A, "A"), (B, "B")):
        Xc, _ = center(xp.asarray(X))
        Xc = Xc.astype(dtype, copy=False)
        r = float(xp.sqrt((Xc.astype(xp.float64) ** 2).sum(axis=1)).mean())
        if not np.isfinite(r) or r <= 0.0:
            raise ValueError(f"movement: {name} has zero spread or non-finite values")
        scaled.append(Xc / dtype.type(r))
    a, b = scaled
    n = a.shape[0]
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    idx = xp.asarray(idx)
    Q = procrustes(a[idx], b[idx])
    return xp.sqrt(((a @ Q.astype(dtype) - b) ** 2).sum(axis=1))
