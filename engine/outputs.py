"""A classifier's outputs as per-image attributes: the study's confidence and loss, and more.

When the recorded model is a classifier over the inputs' classes, its logits give, per image,
what the original study shipped with its bundles (the softmax probability of the true class and
the cross-entropy) and what a researcher asks next: the predicted class, whether it is correct and
the top-1 confidence. :func:`classifier_outputs` computes them once from the logits and the true
classes; ``prepare`` calls it for a plain model and for every checkpoint of a training run, so both
give the same attributes (:data:`OUTPUT_ATTRIBUTES`), and the accuracy and mean loss go into the
model's (or the checkpoint's) meta.

Whether a model is such a classifier is :func:`classifier_targets`'s call: the model's output is an
(N, K) tensor and the inputs' labels index its K classes (``label_names`` has K entries, or the
inputs carry ``targets``: (N,) indices into the model's classes, for a folder whose classes
are a subset of the model's). For any other model the output is just another layer.

Pure array code: logits may be NumPy or CuPy (the maths runs where they live, in float64); results
come back as host NumPy arrays (N values each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.device import array_module, to_host

__all__ = ["OUTPUTS_LAYER_ID", "OUTPUT_ATTRIBUTES", "ClassifierHook", "ClassifierOutputs",
           "classifier_outputs", "classifier_targets"]

#: The attributes :meth:`ClassifierOutputs.attributes` gives, in this order.
OUTPUT_ATTRIBUTES = ("prediction", "correct", "confidence", "top1_confidence", "loss")
#: The id under which ``prepare`` records the logits for the outputs (never a bundle layer: "@"
#: cannot appear in a layer id, so it cannot collide with one).
OUTPUTS_LAYER_ID = "@outputs"


@dataclass(frozen=True)
class ClassifierOutputs:
    """Per-image outputs of a classifier, host arrays of N values.

    prediction : int32 index of the top class (into the model's classes)
    correct : bool, prediction == target
    confidence : float32 softmax probability of the true class (the study's ``confidence``)
    top1_confidence : float32 softmax probability of the predicted class
    loss : float32 cross-entropy ``-log p(true class)`` (the study's ``error``), natural log
    """

    prediction: np.ndarray
    correct: np.ndarray
    confidence: np.ndarray
    top1_confidence: np.ndarray
    loss: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.loss, dtype=np.float64))

    def summary(self) -> dict:
        """What goes into a model's or a checkpoint's meta: accuracy and mean loss (JSON)."""
        return {"accuracy": round(self.accuracy, 6), "loss": round(self.mean_loss, 6)}

    def attributes(self, class_names) -> dict:
        """The attribute specs ``prepare`` stores (name -> values, kind, categories, extent), in
        :data:`OUTPUT_ATTRIBUTES` order. ``class_names`` : the model's K class names (the
        prediction's categories)."""
        names = [str(c) for c in class_names]
        if int(self.prediction.max()) >= len(names):
            raise ValueError(f"prediction {int(self.prediction.max())} is outside the {len(names)} "
                             "class names")
        top = float(self.loss.max())
        return {
            "prediction": {"values": self.prediction.astype(np.int32), "kind": "categorical",
                           "categories": names},
            "correct": {"values": self.correct.astype(np.int32), "kind": "categorical",
                        "categories": ["wrong", "correct"]},
            "confidence": {"values": self.confidence, "kind": "continuous", "extent": [0.0, 1.0]},
            "top1_confidence": {"values": self.top1_confidence, "kind": "continuous", "extent": [0.0, 1.0]},
            "loss": {"values": self.loss, "kind": "continuous", "extent": [0.0, top if top > 0 else 1.0]},
        }


def classifier_outputs(logits, targets) -> ClassifierOutputs:
    """Outputs of a classifier from its logits and the true classes.

    logits : (N, K) float array, NumPy or CuPy (the maths runs there, in float64).
    targets : (N,) integers in [0, K): each image's true class in the model's output space.
    The softmax is evaluated stably (log-sum-exp with the row maximum subtracted), so a loss stays
    finite however confident the model is. Raises ValueError for shapes that do not match, targets
    outside [0, K) or non-finite logits.
    """
    xp = array_module(logits)
    z = xp.asarray(logits, dtype=xp.float64)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 2:
        raise ValueError(f"classifier outputs: logits must be (N, K) with K >= 2, got shape {tuple(z.shape)}")
    t = np.asarray(to_host(targets))
    if t.shape != (z.shape[0],) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"classifier outputs: targets must be ({z.shape[0]},) integers, "
                         f"got {t.shape} {t.dtype}")
    if t.min() < 0 or t.max() >= z.shape[1]:
        raise ValueError(f"classifier outputs: targets must lie in [0, {z.shape[1]}), "
                         f"got [{int(t.min())}, {int(t.max())}]")
    if not bool(xp.isfinite(z).all()):
        raise ValueError("classifier outputs: the logits hold NaN or Inf")
    top = z.max(axis=1)
    lse = top + xp.log(xp.exp(z - top[:, None]).sum(axis=1))
    td = xp.asarray(t)
    logp_true = z[xp.arange(z.shape[0]), td] - lse
    pred = xp.argmax(z, axis=1)
    host = [np.asarray(to_host(a)) for a in (pred, logp_true, top - lse)]
    pred_h, logp_h, logp_top = host
    return ClassifierOutputs(prediction=pred_h.astype(np.int32), correct=pred_h == t,
                             confidence=np.exp(logp_h).astype(np.float32),
                             top1_confidence=np.exp(logp_top).astype(np.float32),
                             loss=(-logp_h).astype(np.float32))


def classifier_targets(output_shape, labels, label_names, model_targets=None) -> np.ndarray | None:
    """The true classes of the images in the model's output space, or None when the model is not a
    classifier over the inputs' classes (then its output is just another layer).

    output_shape : the model's output shape for one image, e.g. ``(1, K)`` (None: not a tensor).
    labels : (N,) int label indices into ``label_names``, or None (no labels).
    model_targets : optional (N,) ints, the true class of each image as an index into the model's
        K classes (for inputs whose classes are a subset of the model's, e.g. an ImageNet folder of a
        few wnids); used instead of ``labels`` when given.
    The model counts as such a classifier when its output is (1, K) with K >= 2 and either
    ``model_targets`` lie in [0, K) or ``label_names`` has exactly K entries.
    """
    if output_shape is None or len(output_shape) != 2 or int(output_shape[1]) < 2:
        return None
    k = int(output_shape[1])
    if model_targets is not None:
        t = np.asarray(model_targets)
        if t.ndim == 1 and np.issubdtype(t.dtype, np.integer) and t.size and 0 <= t.min() and t.max() < k:
            return t.astype(np.int64)
        return None
    if labels is None or label_names is None or len(label_names) != k:
        return None
    return np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class ClassifierHook:
    """The outputs of a classifier chunk by chunk, for a streaming run (an
    :class:`engine.stream.OutputHook`: small and picklable, so Dask workers run it too).

    class_names : the model's K class names (the prediction's categories).
    uses_targets : the true class of an image is its ``targets`` entry (the inputs' classes are a
        subset of the model's, e.g. an ImageNet folder), else its label.
    The values equal :func:`classifier_outputs` of the whole set's logits row for row (the maths is
    per row); the loss's extent is the streamed values' (min, max) instead of (0, max).
    """

    class_names: tuple
    uses_targets: bool = False

    def specs(self) -> dict:
        return {"prediction": {"kind": "categorical", "categories": [str(c) for c in self.class_names],
                               "dtype": "int32"},
                "correct": {"kind": "categorical", "categories": ["wrong", "correct"], "dtype": "int32"},
                "confidence": {"kind": "continuous", "extent": [0.0, 1.0], "dtype": "float32"},
                "top1_confidence": {"kind": "continuous", "extent": [0.0, 1.0], "dtype": "float32"},
                "loss": {"kind": "continuous", "dtype": "float32"}}

    def __call__(self, a: int, b: int, outputs, labels, targets) -> dict:
        t = targets if self.uses_targets else labels
        if t is None:
            raise ValueError(f"classifier outputs: rows [{a}, {b}) have no targets")
        out = classifier_outputs(outputs, np.asarray(t, dtype=np.int64))
        return {"prediction": out.prediction, "correct": out.correct.astype(np.int32),
                "confidence": out.confidence, "top1_confidence": out.top1_confidence, "loss": out.loss}

    @staticmethod
    def summary(values: dict) -> dict:
        """Accuracy and mean loss (a model's meta, as :meth:`ClassifierOutputs.summary`) from the
        streamed ``correct`` and ``loss`` values; {} when they are missing."""
        if "correct" not in values or "loss" not in values:
            return {}
        return {"accuracy": round(float(np.mean(np.asarray(values["correct"]) == 1)), 6),
                "loss": round(float(np.mean(values["loss"], dtype=np.float64)), 6)}
