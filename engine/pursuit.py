"""Projection pursuit: how interesting a view is, and the frame that makes it most interesting.

Index functions on a projected array ``Y`` (n, d), NumPy or CuPy, returning a Python float. They
are defined exactly as the R package tourr 1.2.9 defines them (ggobi/tourr,
``R/interesting-indices.r``), so their values agree with tourr's to floating-point accuracy
(``tests/assets/tourr/reference.json`` holds values computed by tourr itself):

- ``holes(Y)``: (1 - mean_i exp(-|y_i|^2 / 2)) / (1 - exp(-d/2)), Cook & Swayne (2007), on Y as
  given: no centring or sphering (tourr's users sphere first; here that is ``sphere=True`` of
  :func:`objective`, :func:`optimize` and the guided tour). ``cmass(Y) = 1 - holes(Y)``.
- ``lda(Y, labels)``: 1 - Wilks' Lambda = 1 - det(W) / det(W + B), W and B the within- and
  between-class sums of squares and cross-products of Y (classes as categories, Y need not be
  centred). This is tourr's ``lda_pp(factor(cl))`` for d >= 2 (``stats::manova``, Wilks); at
  d = 1 tourr returns the ANOVA F statistic instead, here the same 1 - SSW/SST holds for every
  d >= 1, so values stay in [0, 1]. (tourr's ``lda_pp`` given a *numeric* class vector regresses
  on it as a covariate; here labels are always categories.)
- ``pda(Y, labels, lam=0.2)``: Lee & Cook (2009) penalised LDA, tourr's ``pda_pp``:
  1 - det((1-lam) W + lam n I) / det((1-lam) (W + B) + lam n I) with the *unnormalised* scatter
  W, B and n the number of rows, so pda depends on the scale of Y (lam = 0 is ``lda``). As in
  tourr, 0 is returned when the penalised total determinant is below 1e-8.
- ``purity(Y, labels, bandwidth=0.2, sample=1000)`` (ours, for activation embeddings): the soft
  k-NN class purity of the view. Around each point a Gaussian kernel of standard deviation
  ``bandwidth`` x the view's RMS spread per axis weighs the other points; the index is the mean
  over points of the weighted fraction of neighbours that share the point's class (chance level
  ~ sum of squared class shares, 1 when the classes form separate clumps). LDA rewards views in
  which class *means* lie far apart relative to a pooled Gaussian spread; UMAP activation
  embeddings are clumpy, curved and multi-modal per class, and what a researcher reads off the
  picture is whether neighbours on screen share a class - the same neighbourhood notion that
  judges the embedding itself (trustworthiness). Invariant to in-plane rotation, uniform scaling
  and class relabelling; smooth (a kernel, not a hard k-NN), so it has a gradient; evaluated on a
  fixed seeded sample of rows, O(sample^2 d) per view.

Large data: LDA and PDA reduce to the p x p within/between scatter of X (``class_scatter``,
two passes over N rows in float64 chunks, in the data's array module), after which a view costs
O(p^2 d): W_F = F^T W F. holes/cmass are O(N d) per view (one X @ F); their gradient is one more
pass. Only p x p or p x d matrices and scalars cross between device and host.

Optimiser (``optimize`` / ``Objective.maximize``), and why:
- LDA and PDA have closed forms. Wilks' ratio det(F^T W F) / det(F^T T F) does not change when
  F -> F A for any invertible A, so it is a function of span(F); its maximum is the span of the
  leading generalised eigenvectors of (B, W), with 1 - Lambda = 1 - prod_{i<=d} 1/(1+mu_i). For
  orthonormal F, lam n I = F^T (lam n I) F, so PDA is the same ratio for the pencil
  ((1-lam) B, (1-lam) W + lam n I) and has the same closed form. No search can beat it; tourr's
  random geodesic search only approaches it.
- holes, cmass and purity have none: Riemannian conjugate gradient (Polak-Ribiere+, with
  projection as the vector transport and an Armijo backtracking line search) along exact
  Grassmann geodesics, exp_F(tH) = F V cos(t S) V^T + U sin(t S) V^T for H = U S V^T, from
  several seeded random starts (and ``start``). Every index here is invariant under F -> F Q
  (Q orthogonal), so the Grassmannian is the right manifold. Analytic gradients make each step
  cost about one index evaluation, where tourr's ``search_geodesic`` (``R/search-geodesic.r``:
  ``find_best_dir`` probes 5 random directions both ways, ``find_path_peak`` line-searches
  +-pi/4 with ``stats::optimize``) spends ~10 evaluations per probe and ~15 more per line search,
  ~2,500 per guided tour on the study data. On big N the search runs on a seeded row sample
  (``sample``, default 200,000) and the winner is polished on all rows (``polish``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from engine.device import array_module, like, to_host
from engine.frames import orthonormalize, random_frame

__all__ = [
    "INDICES", "Objective", "Optimum", "Scatter", "class_scatter", "cmass", "holes", "lda",
    "lda_frame", "objective", "optimize", "pda", "purity", "scatter_objective", "selection_view",
]

INDICES = ("holes", "cmass", "lda", "pda", "purity")
ROW_CHUNK = 1 << 18          # rows per float64 chunk in the O(N) passes (~32 MB at p = 15)
PDA_ZERO_VARIANCE = 1e-8     # tourr's .CalIndex threshold on the penalised total determinant
PURITY_SAMPLE = 1000         # purity's default row sample: ~10 ms per view and ~1/sqrt(1000) noise
PURITY_MAX_SAMPLE = 10_000   # purity is O(sample^2): an (m, m) bool class mask, 100 MB at 10,000
SEARCH_SAMPLE = 200_000      # optimize's default row sample for holes/cmass on big N


# ------------------------------------------------------------------------------------ inputs


def _matrix(X, name: str, func: str, min_cols: int = 1):
    xp = array_module(X)
    X = xp.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < min_cols:
        cols = f" and at least {min_cols} columns" if min_cols > 1 else ""
        raise ValueError(f"{func}: {name} must be a 2-D (n, columns) array, n >= 2{cols}; got {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{func}: {name} must be numeric, got dtype {X.dtype}")
    return X


def _codes(labels, n: int, func: str, ref):
    """(codes (n,) int64 in ref's array module, number of classes) for arbitrary class labels."""
    if labels is None:
        raise ValueError(f"{func}: this index needs class labels (labels=...)")
    xl = array_module(labels)
    lab = xl.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"{func}: labels must have shape ({n},) (one per row), got {lab.shape}")
    if lab.dtype.kind == "f" and not bool(xl.isfinite(lab).all()):
        raise ValueError(f"{func}: labels contain NaN or infinite values")
    uniq, codes = xl.unique(lab, return_inverse=True)
    return like(codes.reshape(-1).astype(np.int64), ref), int(uniq.shape[0])


def _need_classes(k: int, func: str) -> None:
    if k < 2:
        raise ValueError(f"{func}: needs at least two classes, got {k}")


# ------------------------------------------------------------------------------ class scatter


@dataclass(frozen=True)
class Scatter:
    """Class statistics of n rows of a p-column array (float64 NumPy on the host, all of them).

    n : number of rows; counts : (k,) rows per class (class order = sorted unique labels);
    means : (k, p) class means; mean : (p,) overall mean;
    W : (p, p) within-class sum of squares and cross-products, sum_i (x_i - m_c(i))(x_i - m_c(i))^T;
    B : (p, p) between-class, sum_c n_c (m_c - m)(m_c - m)^T; the total is T = W + B.
    Unnormalised sums, as tourr's PDA uses them (LDA's ratio does not care).
    """

    n: int
    counts: np.ndarray
    means: np.ndarray
    mean: np.ndarray
    W: np.ndarray
    B: np.ndarray

    @property
    def T(self) -> np.ndarray:
        return self.W + self.B

    def project(self, F) -> Scatter:
        """The scatter of X @ F for a (p, d) matrix F: O(p^2 d), no pass over the rows."""
        F = np.asarray(F, dtype=np.float64)
        return Scatter(self.n, self.counts, self.means @ F, self.mean @ F, F.T @ self.W @ F, F.T @ self.B @ F)


def class_scatter(X, labels=None) -> Scatter:
    """Within/between scatter of X (n, p) by class, in two passes over row chunks.

    X : (n, p) float32/float64, NumPy (memmaps too) or CuPy; each chunk of ROW_CHUNK rows is cast to
        float64 where it lives. labels : (n,) any class labels (NumPy or CuPy), or None for one class
        (then B = 0 and W is the total scatter about the mean). Pass 1 accumulates class counts and
        sums (``bincount`` per column), pass 2 the within-class products about the class means, so
        W is never a difference of large numbers. Returns a host :class:`Scatter` (p x p crosses).
    Raises ValueError for a bad shape or non-finite values.
    """
    X = _matrix(X, "X", "class_scatter")
    xp = array_module(X)
    n, p = X.shape
    if labels is None:
        codes, k = xp.zeros(n, dtype=np.int64), 1
    else:
        codes, k = _codes(labels, n, "class_scatter", X)
    sums = xp.zeros((k, p), dtype=np.float64)
    for a in range(0, n, ROW_CHUNK):
        C = X[a:a + ROW_CHUNK].astype(np.float64)
        c = codes[a:a + ROW_CHUNK]
        for j in range(p):
            sums[:, j] += xp.bincount(c, weights=C[:, j], minlength=k)
    counts = xp.bincount(codes, minlength=k).astype(np.float64)
    means = sums / counts[:, None]
    if not bool(xp.isfinite(means).all()):
        raise ValueError("class_scatter: X contains NaN or infinite values")
    W = xp.zeros((p, p), dtype=np.float64)
    for a in range(0, n, ROW_CHUNK):
        R = X[a:a + ROW_CHUNK].astype(np.float64) - means[codes[a:a + ROW_CHUNK]]
        W += R.T @ R
    mean = sums.sum(axis=0) / n
    D = means - mean
    B = (D * counts[:, None]).T @ D
    W, B = to_host(W), to_host(B)
    return Scatter(n, to_host(counts).astype(np.int64), to_host(means), to_host(mean),
                   0.5 * (W + W.T), 0.5 * (B + B.T))


def _wilks(W: np.ndarray, T: np.ndarray) -> float:
    """det(W) / det(T) for small symmetric matrices (log-determinants; 0 when W is singular)."""
    sT, lT = np.linalg.slogdet(T)
    if sT <= 0:
        raise ValueError("the view has no total scatter (all points project to one point)")
    sW, lW = np.linalg.slogdet(W)
    return 0.0 if sW <= 0 else float(np.exp(lW - lT))


def _pda_value(W: np.ndarray, B: np.ndarray, n: int, lam: float) -> float:
    d = W.shape[0]
    Wp = (1.0 - lam) * W + (lam * n) * np.eye(d)
    tot = np.linalg.det(Wp + (1.0 - lam) * B)
    if tot < PDA_ZERO_VARIANCE:
        return 0.0
    return float(1.0 - np.linalg.det(Wp) / tot)


def _lam(lam) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"pda: lam must lie in [0, 1], got {lam!r}")
    return lam


# ------------------------------------------------------------------------- index functions


def holes(Y) -> float:
    """Holes index of a view Y (n, d), NumPy or CuPy, on Y as given (tourr's ``holes()``).

    (1 - (1/n) sum_i exp(-|y_i|^2 / 2)) / (1 - exp(-d/2)); large when the centre is empty.
    Accumulated in float64.
    """
    Y = _matrix(Y, "Y", "holes")
    xp = array_module(Y)
    n, d = Y.shape
    Y = Y.astype(np.float64)
    s = float(xp.exp(-0.5 * (Y * Y).sum(axis=1)).sum())
    return (1.0 - s / n) / (1.0 - np.exp(-d / 2.0))


def cmass(Y) -> float:
    """Central mass index of Y (n, d) (tourr's ``cmass()``): 1 - holes(Y)."""
    return 1.0 - holes(Y)


def lda(Y, labels) -> float:
    """1 - Wilks' Lambda of the view Y (n, d) by class ``labels`` (n,), for every d >= 1.

    = 1 - det(W) / det(W + B) (within/between sums of squares of Y; Y need not be centred). Equals
    tourr's ``lda_pp(factor(labels))`` for d >= 2; at d = 1 it is 1 - SSW/SST (tourr: the F value).
    Raises ValueError with fewer than two classes or when all points project to one point.
    """
    Y = _matrix(Y, "Y", "lda")
    S = class_scatter(Y, labels)
    _need_classes(len(S.counts), "lda")
    return 1.0 - _wilks(S.W, S.T)


def pda(Y, labels, lam: float = 0.2) -> float:
    """Penalised LDA index of Y (n, d) (Lee & Cook 2009; tourr's ``pda_pp(labels, lambda = lam)``).

    1 - det((1-lam) W + lam n I) / det((1-lam)(W + B) + lam n I), W, B unnormalised within/between
    scatter of Y, n rows; 0 when the denominator is below 1e-8 (tourr's "ZERO VARIANCE!" case).
    lam in [0, 1]; lam = 0 gives ``lda``.
    """
    lam = _lam(lam)
    Y = _matrix(Y, "Y", "pda")
    S = class_scatter(Y, labels)
    _need_classes(len(S.counts), "pda")
    return _pda_value(S.W, S.B, S.n, lam)


def _purity_terms(Y, same, bandwidth: float, grad: bool):
    """Soft k-NN purity of Y (m, d) float64 given ``same`` (m, m) bool (rows i, j share a class),
    both in one array module; with ``grad`` also d purity / d Y (m, d). Returns (value, dY or None).

    Rows are processed in blocks of about 2 MB of (block, m) scratch so each kernel matrix stays in
    cache. With D_ij = |y_i - y_j|^2, u = 1 / (2 (bandwidth s)^2), w_ij = exp(-u D_ij) (i != j),
    Z_i = sum_j w_ij, P_i = sum_j [c_j = c_i] w_ij / Z_i and E_ij = w_ij ([c_j = c_i] - P_i) / (m Z_i)
    (so that purity = mean P and d purity = -sum_ij E_ij (u dD_ij + D_ij du)):
    d purity / d Y = -2 u L Y + (sum E*D) (u / s^2) 2 Yc / (m d), L = diag(colsum E) - E - E^T
    (E's row sums vanish). Each row of D is shifted by its minimum before exp: P and E are unchanged.
    """
    xp = array_module(Y)
    m, d = Y.shape
    Yc = Y - Y.mean(axis=0)
    s2 = float((Yc * Yc).sum()) / (m * d)
    if not s2 > 0:
        raise ValueError("purity: the view has no spread (all points project to one point)")
    u = 1.0 / (2.0 * bandwidth * bandwidth * s2)
    sq = (Yc * Yc).sum(axis=1)
    step = max(32, (1 << 18) // m)
    P = xp.empty(m)
    if grad:
        EY, ETY, col, ED = xp.empty((m, d)), xp.zeros((m, d)), xp.zeros(m), 0.0
    for r0 in range(0, m, step):
        r1 = min(r0 + step, m)
        b = r1 - r0
        D = Yc[r0:r1] @ Yc.T
        D *= -2.0
        D += sq[r0:r1, None]
        D += sq[None, :]
        diag = (xp.arange(b), xp.arange(r0, r1))
        D[diag] = xp.inf
        D -= D.min(axis=1, keepdims=True)  # also clips the rounding negatives of the expansion
        w = xp.exp(xp.maximum(D * -u, -50.0))  # e^-50 ~ 2e-22: exp's slow underflow path avoided
        WS = w * same[r0:r1]
        Z = w.sum(axis=1)
        Pb = WS.sum(axis=1) / Z
        P[r0:r1] = Pb
        if not grad:
            continue
        D[diag] = 0.0
        a = 1.0 / (Z * m)
        c = Pb * a
        EY[r0:r1] = a[:, None] * (WS @ Yc) - c[:, None] * (w @ Yc)
        ETY += WS.T @ (a[:, None] * Yc[r0:r1]) - w.T @ (c[:, None] * Yc[r0:r1])
        col += WS.T @ a - w.T @ c
        ED += float(a @ (WS * D).sum(axis=1) - c @ (w * D).sum(axis=1))
    value = float(P.mean())
    if not grad:
        return value, None
    LY = col[:, None] * Yc - EY - ETY
    return value, -2.0 * u * LY + ED * (u / s2) * (2.0 / (m * d)) * Yc


def _same(codes):
    """(m, m) bool: rows i and j have the same class code."""
    return codes[:, None] == codes[None, :]


def _sample_rows(n: int, sample: int | None, seed: int):
    if sample is None or sample >= n:
        return None
    if isinstance(sample, bool) or int(sample) < 2:
        raise ValueError(f"sample must be an integer >= 2 (rows), got {sample!r}")
    return np.sort(np.random.default_rng(seed).choice(n, int(sample), replace=False))


def _purity_sample(sample, func: str) -> int:
    ok = isinstance(sample, (int, np.integer)) and not isinstance(sample, bool)
    if not ok or not 2 <= sample <= PURITY_MAX_SAMPLE:
        raise ValueError(f"{func}: sample must be an integer in [2, {PURITY_MAX_SAMPLE}] (purity costs "
                         f"O(sample^2)), got {sample!r}")
    return int(sample)


def _bandwidth(bandwidth, func: str) -> float:
    b = float(bandwidth)
    if not (np.isfinite(b) and b > 0):
        raise ValueError(f"{func}: bandwidth must be a positive number, got {bandwidth!r}")
    return b


def purity(Y, labels, *, bandwidth: float = 0.2, sample: int = PURITY_SAMPLE, seed: int = 0) -> float:
    """Soft k-NN class purity of the view Y (n, d) (our index; see the module docstring).

    With s^2 the view's variance per axis, w_ij = exp(-|y_i - y_j|^2 / (2 (bandwidth s)^2)), i != j:
    purity = (1/m) sum_i sum_{j: c_j = c_i} w_ij / sum_j w_ij over m = min(n, sample) rows drawn
    once with ``seed`` (all rows when n <= sample). In [0, 1]; O(m^2 d), computed where Y lives.
    """
    Y = _matrix(Y, "Y", "purity")
    sample = _purity_sample(sample, "purity")
    bandwidth = _bandwidth(bandwidth, "purity")
    codes, k = _codes(labels, Y.shape[0], "purity", Y)
    _need_classes(k, "purity")
    rows = _sample_rows(Y.shape[0], sample, seed)
    if rows is not None:
        rows = like(rows, Y)
        Y, codes = Y[rows], codes[rows]
    return _purity_terms(Y.astype(np.float64), _same(codes), bandwidth, grad=False)[0]


# -------------------------------------------------------------------------------- objectives


def _orth(G: np.ndarray) -> np.ndarray:
    """QR orthonormalisation with a positive-diagonal sign fix (host float64)."""
    Q, R = np.linalg.qr(G)
    return Q * np.where(np.diagonal(R) < 0, -1.0, 1.0)


class Objective(ABC):
    """One index bound to one data set, evaluated on (p, d) frames (float64 host) of the data.

    Built by :func:`objective`. ``value(F)`` is the index of the view X @ F (with ``sphere``: of the
    sphered data in the corresponding plane, as tourr evaluates ``sphere = TRUE``); ``maximize``
    and ``climb`` search frames. Internally frames live in *pursuit coordinates*
    Z = (X - centre) M (M = I, or the sphering matrix V D^(-1/2)); a data frame F corresponds to
    orth(M^-1 F) and back, F = orth(M G), spanning the same picture up to an in-plane linear map.

    Attributes: ``name``, ``p``, ``n`` (rows the index is evaluated on), ``spec`` (JSON-able dict:
    everything but the data needed to rebuild it), ``fingerprint`` (floats identifying the data).
    """

    name: str

    def __init__(self, spec: dict, p: int, n: int, M: np.ndarray | None, fingerprint: list[float]):
        self.spec, self.p, self.n, self._M = spec, p, n, M
        self._Minv = None if M is None else np.linalg.inv(M)
        self.fingerprint = fingerprint
        self.name = spec["index"]

    # frames ---------------------------------------------------------------------------------
    def _frame(self, F, func: str) -> np.ndarray:
        F = orthonormalize(F)
        if F.shape[0] != self.p:
            raise ValueError(f"{func}: frame has {F.shape[0]} rows, the data have p = {self.p} columns")
        return F

    def to_pursuit(self, F: np.ndarray) -> np.ndarray:
        return F if self._Minv is None else _orth(self._Minv @ F)

    def to_data(self, G: np.ndarray) -> np.ndarray:
        return G if self._M is None else _orth(self._M @ G)

    def value(self, F) -> float:
        """The index at data frame F (p, d)."""
        return self._value(self.to_pursuit(self._frame(F, f"{self.name}.value")))

    @abstractmethod
    def _value(self, G: np.ndarray) -> float:
        """The index at pursuit frame G (p, d)."""

    @abstractmethod
    def _value_grad(self, G: np.ndarray) -> tuple[float, np.ndarray]:
        """The index at G and its (p, d) Euclidean gradient."""

    def _closed_form(self, d: int) -> np.ndarray | None:
        return None

    # search ---------------------------------------------------------------------------------
    def climb(self, F, *, maxiter: int = 200, tol: float = 1e-10) -> list[np.ndarray]:
        """Local ascent from data frame F: the iterates of Riemannian CG (data frames, F first)."""
        G = self.to_pursuit(self._frame(F, f"{self.name}.climb"))
        return [self.to_data(H) for H in _ascend(self, G, maxiter, tol)[3]]

    def maximize(self, d: int = 2, *, start=None, seed=0, restarts: int = 8, maxiter: int = 300,
                 tol: float = 1e-10, closed_form: bool = True) -> Optimum:
        """Best frame found: the closed form where one exists (lda, pda) unless ``closed_form`` is
        False, else Riemannian CG from ``start`` (a data frame) and ``restarts`` seeded Haar-random
        frames, keeping the best."""
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d < self.p:
            raise ValueError(f"maximize: d must be an integer with 1 <= d < p = {self.p}, got {d!r}")
        if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 0:
            raise ValueError(f"maximize: restarts must be an integer >= 0, got {restarts!r}")
        cf = self._closed_form(int(d)) if closed_form else None
        if cf is not None:
            return Optimum(self.to_data(cf), self._value(cf), self.name, "closed form", 1, 0, 1)
        rng = np.random.default_rng(seed)
        starts = [] if start is None else [self.to_pursuit(self._frame(start, "maximize"))]
        if start is not None and starts[0].shape[1] != d:
            raise ValueError(f"maximize: start has d = {starts[0].shape[1]} columns, expected {d}")
        starts += [random_frame(self.p, int(d), rng) for _ in range(restarts)]
        if not starts:
            raise ValueError("maximize: no start (give start= or restarts >= 1)")
        best, iters, evals = None, 0, 0
        for G0 in starts:
            G, f, ev, path = _ascend(self, G0, maxiter, tol)
            iters, evals = iters + len(path) - 1, evals + ev
            if best is None or f > best[1]:
                best = (G, f)
        return Optimum(self.to_data(best[0]), best[1], self.name, "conjugate gradient", len(starts),
                       iters, evals)


@dataclass(frozen=True)
class Optimum:
    """Result of :meth:`Objective.maximize`: ``frame`` (p, d) float64 orthonormal data frame,
    ``value`` (index there), ``index``, ``method`` ("closed form" | "conjugate gradient"),
    ``starts``, ``iterations`` and ``evaluations`` (value+gradient calls) summed over starts."""

    frame: np.ndarray = field(repr=False)
    value: float
    index: str
    method: str
    starts: int
    iterations: int
    evaluations: int


class _ScatterObjective(Objective):
    """lda / pda from the p x p scatter (pursuit coordinates): O(p^2 d) per frame."""

    def __init__(self, spec, S: Scatter, M, fingerprint):
        super().__init__(spec, S.W.shape[0], S.n, M, fingerprint)
        Mm = np.eye(self.p) if M is None else M
        W, B = Mm.T @ S.W @ Mm, Mm.T @ S.B @ Mm
        self._lam = spec.get("lam", 0.0) if spec["index"] == "pda" else 0.0
        lam = self._lam
        # orthonormal G: F^T (lam n I) F = lam n I, so both indices are Wilks ratios of a pencil
        self._Wp = (1.0 - lam) * W + (lam * S.n) * np.eye(self.p)
        self._Tp = self._Wp + (1.0 - lam) * B
        self._B = (1.0 - lam) * B
        self._raw = (W, B, S.n)
        self.scatter = S  # in data coordinates

    def _value(self, G):
        W, B, n = self._raw
        if self.name == "pda":
            return _pda_value(G.T @ W @ G, G.T @ B @ G, n, self._lam)
        return 1.0 - _wilks(G.T @ W @ G, G.T @ (W + B) @ G)

    def _value_grad(self, G):
        WG, TG = self._Wp @ G, self._Tp @ G
        A, C = G.T @ WG, G.T @ TG
        ratio = _wilks(A, C)
        # d(1 - det A / det C) = ratio * (d log det C - d log det A)
        grad = 2.0 * ratio * (TG @ np.linalg.inv(C) - WG @ np.linalg.inv(A))
        return self._value(G), grad

    def _closed_form(self, d):
        import scipy.linalg as sl

        try:
            mu, V = sl.eigh(self._B, self._Wp)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"{self.name}: the within-class scatter is singular (a direction is "
                             "constant within every class), so the discriminant is undefined; use pda, "
                             "lam > 0") from exc
        rank = int(np.sum(mu > 1e-12 * max(mu.max(), 1e-300)))
        k = min(d, rank)
        G = _orth(V[:, ::-1][:, :k]) if k else np.zeros((self.p, 0))
        if k < d:  # fewer separating directions than view axes: the rest show the most spread
            R = self._Tp - G @ (G.T @ self._Tp)
            R = R - (R @ G) @ G.T
            ev, U = np.linalg.eigh(0.5 * (R + R.T))
            G = np.hstack([G, U[:, ::-1][:, : d - k]])
        return _orth(G)


class _HolesObjective(Objective):
    """holes / cmass: Y = (X - c) M G, one pass over the rows per value, two per gradient."""

    def __init__(self, spec, X, c: np.ndarray, M, fingerprint):
        super().__init__(spec, X.shape[1], X.shape[0], M, fingerprint)
        self._X, self._c = X, c
        self._sign = 1.0 if spec["index"] == "holes" else -1.0
        self._xp = array_module(X)

    def _terms(self, G, grad: bool):
        xp, X = self._xp, self._X
        A = G if self._M is None else self._M @ G
        Y = X @ xp.asarray(A, dtype=X.dtype) - xp.asarray(self._c @ A, dtype=X.dtype)
        e = xp.exp(-0.5 * (Y * Y).sum(axis=1))
        n, d = Y.shape
        den = 1.0 - np.exp(-d / 2.0)
        h = (1.0 - float(e.sum(dtype=np.float64)) / n) / den
        v = h if self._sign > 0 else 1.0 - h
        if not grad:
            return v, None
        eY = e[:, None] * Y
        gA = to_host(X.T @ eY).astype(np.float64)
        gA -= np.outer(self._c, to_host(eY.sum(axis=0, dtype=np.float64)))
        gA *= self._sign / (n * den)
        return v, gA if self._M is None else self._M.T @ gA

    def _value(self, G):
        return self._terms(G, False)[0]

    def _value_grad(self, G):
        return self._terms(G, True)

    def subsample(self, sample: int, seed: int = 0) -> _HolesObjective:
        """The same index (same centre and sphering) on ``sample`` seeded rows of this one's."""
        rows = _sample_rows(self.n, sample, seed)
        if rows is None:
            return self
        spec = {**self.spec, "sample": int(sample), "seed": int(seed)}
        return _HolesObjective(spec, self._X[like(rows, self._X)], self._c, self._M, self.fingerprint)


class _PurityObjective(Objective):
    """purity on a fixed sample of rows Z (m, p) float64 in pursuit coordinates: O(m^2 d)."""

    def __init__(self, spec, Z, codes, fingerprint, M):
        super().__init__(spec, Z.shape[1], Z.shape[0], M, fingerprint)
        self._Z, self._bw = Z, spec["bandwidth"]
        self._same = _same(codes)

    def _value(self, G):
        Y = self._Z @ like(G, self._Z)
        return _purity_terms(Y, self._same, self._bw, False)[0]

    def _value_grad(self, G):
        Y = self._Z @ like(G, self._Z)
        v, dY = _purity_terms(Y, self._same, self._bw, True)
        return v, to_host(self._Z.T @ dY)


def _sphering(S: Scatter, func: str) -> np.ndarray:
    """M = V D^(-1/2) from the covariance (n - 1 denominator), as tourr's sphere_data scales."""
    ev, V = np.linalg.eigh(S.T / (S.n - 1))
    if ev[0] <= 1e-12 * ev[-1]:
        raise ValueError(f"{func}: sphere=True needs a covariance of full rank; the data are (nearly) "
                         f"constant along some direction (eigenvalues {ev[0]:.3g} ... {ev[-1]:.3g})")
    return V / np.sqrt(ev)


def objective(index: str, X, labels=None, *, sphere: bool = False, sample: int | None = None, seed: int = 0,
              lam: float = 0.2, bandwidth: float = 0.2) -> Objective:
    """Bind index ``index`` (one of INDICES) to data X (n, p), NumPy or CuPy, for frame searches.

    labels : (n,) class labels (lda, pda, purity). sphere : evaluate on the sphered data
    (tourr's ``sphere = TRUE``: principal components scaled to unit variance). sample : rows to
    evaluate on, drawn once with ``seed`` (holes/cmass: None = all rows; purity: default 1000,
    at most 10,000; lda/pda: always all rows, through the scatter). lam : pda's penalty.
    bandwidth : purity's kernel width relative to the view's RMS spread.
    Costs at construction: lda/pda and ``sphere``: two passes over X (``class_scatter``); holes,
    cmass: one pass (the mean, for the fingerprint); purity: the sample only.
    """
    if index not in INDICES:
        raise ValueError(f"unknown index {index!r}: choose one of {', '.join(INDICES)}")
    X = _matrix(X, "X", "objective", min_cols=2)
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    n, p = X.shape
    spec = {"index": index, "sphere": bool(sphere), "seed": int(seed)}
    if index in ("lda", "pda", "purity") and labels is None:
        raise ValueError(f"{index}: this index needs class labels (labels=...)")
    if index in ("lda", "pda"):
        if sample is not None:
            raise ValueError(f"{index}: sample does not apply (the scatter is computed over all rows once)")
        return scatter_objective(index, class_scatter(X, labels), sphere=sphere, seed=seed, lam=lam)
    if index in ("holes", "cmass"):
        S = class_scatter(X) if sphere else None
        rows = _sample_rows(n, sample, seed)
        spec["sample"] = None if rows is None else int(sample)
        Xs = X if rows is None else X[like(rows, X)]
        mean = S.mean if S is not None else to_host(Xs.mean(axis=0, dtype=np.float64))
        if not np.all(np.isfinite(mean)):
            raise ValueError("objective: X contains NaN or infinite values")
        if sphere:
            return _HolesObjective(spec, Xs, S.mean, _sphering(S, "objective"), [n, p, *S.mean.tolist()])
        return _HolesObjective(spec, Xs, np.zeros(p), None, [n, p, *mean.tolist()])
    # purity
    sample = _purity_sample(PURITY_SAMPLE if sample is None else sample, "purity")
    spec.update(sample=sample, bandwidth=_bandwidth(bandwidth, "purity"))
    codes, k = _codes(labels, n, "purity", X)
    _need_classes(k, "purity")
    rows = _sample_rows(n, sample, seed)
    if rows is not None:
        r = like(rows, X)
        Xs, codes = X[r].astype(np.float64), codes[r]
    else:
        Xs = X.astype(np.float64)
    c = Xs.mean(axis=0)
    if not bool(array_module(Xs).isfinite(c).all()):
        raise ValueError("objective: X contains NaN or infinite values")
    M = _sphering(class_scatter(X), "objective") if sphere else None
    Z = Xs - c if M is None else (Xs - c) @ like(M, Xs)
    return _PurityObjective(spec, Z, codes, [n, p, k, *to_host(c).tolist()], M)


def scatter_objective(index: str, S: Scatter, *, sphere: bool = False, seed: int = 0,
                      lam: float = 0.2) -> Objective:
    """lda or pda bound to the class statistics ``S`` of some data X (from ``class_scatter(X,
    labels)``), without another pass over X: one Scatter serves both indices (and every lam).

    The result is the Objective ``objective(index, X, labels, sphere=sphere, seed=seed, lam=lam)``
    builds: the same ``spec`` and ``fingerprint``, so ``GuidedTour.from_state`` accepts either.
    Costs O(p^3) on the host. Raises ValueError for another index or fewer than two classes.
    """
    if index not in ("lda", "pda"):
        raise ValueError(f"scatter_objective: index must be 'lda' or 'pda' (they need only the scatter), "
                         f"got {index!r}")
    if not isinstance(S, Scatter):
        raise TypeError(f"scatter_objective: S must be a Scatter (class_scatter), got {type(S).__name__}")
    _need_classes(len(S.counts), index)
    spec = {"index": index, "sphere": bool(sphere), "seed": int(seed)}
    if index == "pda":
        spec["lam"] = _lam(lam)
    M = _sphering(S, "objective") if sphere else None  # T = W + B whatever the labels
    n, p = S.n, S.W.shape[0]
    return _ScatterObjective(spec, S, M, [n, p, *S.counts.tolist(), *S.mean.tolist()])


# --------------------------------------------------------------------------------- optimiser


def _tangent(G: np.ndarray, E: np.ndarray) -> np.ndarray:
    return E - G @ (G.T @ E)


def _exp(G: np.ndarray, H: np.ndarray, t: float) -> np.ndarray:
    """Grassmann geodesic from G along tangent H for time t (orthonormal to rounding, re-QR'd)."""
    U, s, Vt = np.linalg.svd(H, full_matrices=False)
    return _orth(((G @ Vt.T) * np.cos(t * s)) @ Vt + (U * np.sin(t * s)) @ Vt)


def _ascend(obj: Objective, G: np.ndarray, maxiter: int, tol: float):
    """Riemannian CG (PR+, Armijo backtracking). Returns (G, value, evaluations, path of iterates)."""
    f, E = obj._value_grad(G)
    g = _tangent(G, E)
    gg = float(np.sum(g * g))
    dirn = g
    path, evals, angle, flat = [G], 1, 0.2, 0  # first trial step turns the view by 0.2 rad
    for _ in range(maxiter):
        if gg <= 1e-30:
            break
        slope = float(np.sum(g * dirn))
        if slope <= 0.0:
            dirn, slope = g, gg
        nrm = float(np.linalg.norm(dirn))
        t = min(angle, np.pi / 4) / nrm
        for _ in range(40):
            Gn = _exp(G, dirn, t)
            fn, En = obj._value_grad(Gn)
            evals += 1
            if fn >= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        gn = _tangent(Gn, En)
        beta = max(0.0, float(np.sum(gn * (gn - _tangent(Gn, g)))) / gg)
        dirn = gn + beta * _tangent(Gn, dirn)
        angle = 2.0 * t * nrm
        gain = fn - f
        G, f, g, gg = Gn, fn, gn, float(np.sum(gn * gn))
        path.append(G)
        flat = flat + 1 if gain <= tol * max(abs(f), 1e-12) else 0
        if flat >= 3:  # three negligible steps in a row (one alone can follow a CG restart)
            break
    return G, f, evals, path


def optimize(X, index, *, labels=None, d: int = 2, start=None, seed: int = 0, **options) -> np.ndarray:
    """The best (p, d) orthonormal float64 frame found for X (n, p) under ``index``.

    index : a name from INDICES, or an :class:`Objective` already bound to X (then ``labels`` and
        the build options below are taken from it).
    start : optional (p, d) data frame, one more start for the search.
    options : build options of :func:`objective` (``sphere``, ``sample``, ``lam``, ``bandwidth``)
        and search options of :meth:`Objective.maximize` (``restarts``, ``maxiter``, ``tol``,
        ``closed_form``), plus ``polish`` (CG iterations on all rows after a sampled search,
        default 50; it stops earlier once converged).
    lda/pda: the closed form (exact). holes/cmass: with n > 200,000 rows and no ``sample`` given,
    the multi-start search runs on a seeded 200,000-row sample and the best frame is then polished
    on all rows. purity: on its sample (default 1,000 rows). See the module docstring for why.
    """
    search_keys = {"restarts", "maxiter", "tol", "closed_form"}
    build_keys = {"sphere", "sample", "lam", "bandwidth"}
    unknown = set(options) - search_keys - build_keys - {"polish"}
    if unknown:
        raise TypeError(f"optimize: unknown option(s) {', '.join(sorted(unknown))}")
    search = {k: v for k, v in options.items() if k in search_keys}
    build = {k: v for k, v in options.items() if k in build_keys}
    polish = options.get("polish", 50)
    if isinstance(index, Objective):
        if build:
            raise TypeError(f"optimize: {', '.join(sorted(build))} cannot change an existing Objective")
        return index.maximize(d, start=start, seed=seed, **search).frame
    X = _matrix(X, "X", "optimize", min_cols=2)
    n = X.shape[0]
    sampled = index in ("holes", "cmass") and "sample" not in build and n > SEARCH_SAMPLE
    full = objective(index, X, labels, seed=seed, **build)
    if not sampled:
        return full.maximize(d, start=start, seed=seed, **search).frame
    best = full.subsample(SEARCH_SAMPLE, seed).maximize(d, start=start, seed=seed, **search)
    if not polish:
        return best.frame
    return full.climb(best.frame, maxiter=int(polish), tol=search.get("tol", 1e-10))[-1]


def lda_frame(X, labels, d: int = 2, *, lam: float = 0.0) -> np.ndarray:
    """Closed-form LDA (lam = 0) or PDA frame (p, d) of X (n, p) by class, ordered by separation.

    The first columns span the leading generalised eigenvectors of (B, W) (the most separating
    direction first); with fewer than d separating directions (k classes give at most k - 1) the
    remaining columns are the directions of largest total scatter orthogonal to them.
    """
    obj = objective("pda" if lam > 0 else "lda", X, labels, lam=lam)
    return obj.maximize(d).frame


def selection_view(X, mask, d: int = 2) -> np.ndarray:
    """The view (p, d) that best separates the selected rows from the rest: LDA of a boolean mask.

    X : (n, p) NumPy or CuPy; mask : (n,) bool (True = selected), same array module or host.
    Column 0 is the discriminant direction, signed so the selection lies to its positive side
    (right of the rest on screen); further columns show the largest remaining spread.
    Raises ValueError when the mask selects no row or every row.
    """
    X = _matrix(X, "X", "selection_view", min_cols=2)
    m = array_module(mask).asarray(mask)
    if m.shape != (X.shape[0],) or m.dtype != np.bool_:
        raise ValueError(f"selection_view: mask must be a boolean array of shape ({X.shape[0]},), "
                         f"got {m.dtype} {m.shape}")
    k = int(m.sum())
    if k == 0 or k == X.shape[0]:
        raise ValueError(f"selection_view: the mask selects {k} of {X.shape[0]} rows; it needs some "
                         "selected and some unselected rows")
    obj = objective("lda", X, m)
    F = obj.maximize(d).frame.copy()
    S = obj.scatter
    if (S.means[1] - S.means[0]) @ F[:, 0] < 0:  # class 1 is True
        F[:, 0] = -F[:, 0]
    return F
