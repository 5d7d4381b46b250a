"""The types of a ``prepare`` run, shared by the single-process runner (:mod:`engine.pipeline`)
and the Dask runner (:mod:`engine.distributed`): its parameters, the models to record and one
embedded layer.

Plain dataclasses over NumPy: importing this module loads neither torch nor a GPU library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from engine.embed import BACKENDS, SEED_LIMIT
from engine.store import MIN_DIM

__all__ = ["CONTENT_FIELDS", "INITS", "SAMPLE_FIELDS", "TRANSFORM_CHUNK", "Checkpoint", "LayerEmbedding",
           "ModelJob", "PrepareConfig"]

#: UMAP inits of a run: the study's spectral init; the previous layer's aligned embedding; the same
#: layer's embedding at the previous checkpoint of a training run (the default with checkpoints).
INITS = ("spectral", "previous", "previous-checkpoint")

#: The PrepareConfig fields that decide a bundle's content (the others only decide how fast or
#: where it is computed): a resumed run must have the same values.
CONTENT_FIELDS = ("dim", "n_neighbors", "min_dist", "init", "seed", "umap_backend", "pooling", "max_dim",
                  "max_width", "fit_sample")
#: Content fields that matter only when UMAP is fitted on a sample (``fit_sample`` set, or streaming).
SAMPLE_FIELDS = ("reduce_dims", "transform_chunk")
#: Rows per umap ``transform`` call: umap-learn's result for a row depends on the rows transformed
#: with it (the epochs, and the edge weights cut relative to the chunk's largest), so the chunks are
#: fixed in rows, never derived from the cluster size or the memory budget.
TRANSFORM_CHUNK = 8192


@dataclass(frozen=True)
class PrepareConfig:
    """Parameters of a ``prepare`` run (all recorded in the bundle's provenance).

    Every value is checked here, and the message names the command-line option.
    """

    dim: int = 15
    n_neighbors: int = 15
    min_dist: float = 0.1
    init: str = "spectral"  # one of INITS
    seed: int = 42
    umap_backend: str = "auto"
    pooling: str = "avg"
    max_dim: int = 51_200
    max_width: int = 16
    batch_size: int = 64
    memory_budget_gib: float | None = None
    device: str = "auto"
    trust_sample: int = 5_000
    fit_sample: int | None = None  # fit UMAP on this many seeded rows, transform the rest
    stream: bool | None = None  # stream activations in chunks: None = when the memory budget requires it
    reduce_dims: int = 256  # sample fits: randomised-PCA basis of this many dims (0 = none) before UMAP
    transform_chunk: int = TRANSFORM_CHUNK  # sample fits: rows per UMAP transform call
    trust_checkpoints: bool = False  # load checkpoints that are pickled modules (they can run code)

    def __post_init__(self):
        def integer(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if self.init not in INITS:
            raise ValueError(f"--init {self.init!r}: expected one of {', '.join(INITS)}")
        if not integer(self.dim) or self.dim < MIN_DIM:
            raise ValueError(f"--dim {self.dim}: the tour shows p-dimensional points in 2-D or 3-D views and "
                             f"needs p > d, so the dimension must be at least {MIN_DIM}")
        if not integer(self.n_neighbors) or self.n_neighbors < 2:
            raise ValueError(f"--n-neighbors {self.n_neighbors}: must be an integer >= 2")
        md = self.min_dist
        if not (isinstance(md, (int, float)) and not isinstance(md, bool) and np.isfinite(md) and md >= 0):
            raise ValueError(f"--min-dist {self.min_dist}: must be a finite number >= 0")
        if not integer(self.seed) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"--seed {self.seed}: must be an integer in [0, 2**32) (cuML's seed range)")
        if self.umap_backend not in BACKENDS:
            raise ValueError(f"--umap-backend {self.umap_backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"--pooling {self.pooling!r}: expected 'avg' or 'max'")
        for name, v in (("--batch-size", self.batch_size), ("max_dim", self.max_dim),
                        ("max_width", self.max_width), ("trust_sample", self.trust_sample)):
            if not integer(v) or v < 1:
                raise ValueError(f"{name} {v}: must be an integer >= 1")
        if self.memory_budget_gib is not None and not (np.isfinite(self.memory_budget_gib)
                                                       and self.memory_budget_gib > 0):
            raise ValueError(f"--memory-budget {self.memory_budget_gib}: must be a positive number of GiB")
        if self.fit_sample is not None and (not integer(self.fit_sample)
                                            or self.fit_sample <= 2 * self.n_neighbors):
            raise ValueError(f"--fit-sample {self.fit_sample}: must exceed 2 * n_neighbors "
                             f"= {2 * self.n_neighbors}")
        if self.stream not in (None, True, False):
            raise ValueError(f"stream={self.stream!r}: expected None (automatic), True or False")
        if not integer(self.reduce_dims) or not (self.reduce_dims == 0 or self.reduce_dims >= self.dim):
            raise ValueError(f"--reduce-dims {self.reduce_dims}: must be 0 (no reduction) or at least "
                             f"--dim = {self.dim}")
        if not integer(self.transform_chunk) or self.transform_chunk < 1:
            raise ValueError(f"transform_chunk {self.transform_chunk}: must be an integer >= 1")

    @property
    def sampled(self) -> bool:
        """Whether UMAP is fitted on a sample (``fit_sample``, set by the caller or by streaming)."""
        return bool(self.fit_sample)

    def content_params(self) -> dict:
        """The fields of :data:`CONTENT_FIELDS` (and :data:`SAMPLE_FIELDS` for a sample fit) as a
        JSON-ready dict."""
        d = asdict(self)
        return {k: d[k] for k in CONTENT_FIELDS + (SAMPLE_FIELDS if self.sampled else ())}


@dataclass(frozen=True)
class Checkpoint:
    """One state of a model during its training.

    name : the checkpoint's name in the bundle (letters, digits, ``_ . + -``), e.g. ``epoch-3``.
    path : a file holding its weights (a state dict, a dict with one, or a saved module), or None.
    state : the state dict itself (name -> tensor, in memory), when there is no file.
    meta : JSON about it (``step``, ``epoch``, ...), stored with the checkpoint in the bundle.
    Exactly one of ``path`` and ``state`` is given (:mod:`engine.checkpoints` finds and loads them).
    """

    name: str
    path: str | None = None
    state: dict | None = field(default=None, repr=False, compare=False)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.path is None) == (self.state is None):
            raise ValueError(f"checkpoint {self.name!r}: give exactly one of path and state")


@dataclass
class ModelJob:
    """One model to record: a name for the bundle, the module (eval mode) and its layers in order.

    checkpoints : the states of a training run to record, in training order (each a
    :class:`Checkpoint` loaded into ``module`` in turn); None records ``module`` as it is.
    """

    name: str
    module: object  # torch.nn.Module (typed loosely so importing this module needs no torch)
    layers: list  # list[engine.models.LayerSpec]
    meta: dict = field(default_factory=dict)
    recipe: object = None  # engine.distributed.ModelRecipe: how Dask workers rebuild the module
    checkpoints: list | None = None  # list[Checkpoint] in training order


@dataclass(frozen=True)
class LayerEmbedding:
    """One embedded layer: ``embedding`` (N, p) float32 host array, ``meta`` (JSON: trustworthiness,
    back end, seconds, parameters), ``source_dim`` (D of the activations), ``seconds`` (UMAP fit)."""

    embedding: np.ndarray
    meta: dict
    source_dim: int
    seconds: float
