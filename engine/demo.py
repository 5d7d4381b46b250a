"""``layertour demo``: a real end-to-end run that fits a 2-core laptop in a few minutes.

Trains (seeded; cached in the user cache directory) a small CNN on scikit-learn's bundled 8x8
digits (1,797 images, no download), keeping its weights at :data:`DEMO_STEPS` (the untrained
network first, then ever longer gaps: the representation changes fastest early), and records
six of its layers (input, conv1, conv2, fc1, the fc2 logits, softmax; the max-pool layers are left
out to keep the run within a few minutes on two cores: 6 checkpoints x 5 layers are 30 UMAP fits,
plus the input layer once) at every one of those checkpoints: a training run. Each (checkpoint,
layer) is embedded to 15-D with UMAP (each starting from the same layer at the previous
checkpoint, so that images move only where the network changed), everything is aligned into one
frame, and the bundle gets labels, the train/test split, thumbnails and, per checkpoint, the
network's predictions, correctness, confidence and loss.
Viewing or rendering the result is the CLI's job (the engine never imports the viewer).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("layertour")

ARCH_VERSION = 2  # bump when DigitsCNN or the cache's layout changes, so old cached weights are not reused
#: Optimiser steps at which the demo keeps the CNN's weights (23 steps make one epoch of the 1,437
#: training digits at batch size 64; 690 is the end of training).
DEMO_STEPS = (0, 20, 35, 60, 140, 690)
STEPS_PER_EPOCH = 23
DEMO_LAYERS = [  # (id, module name, kind): the study's "<index>-<ModuleClass>" ids
    ("0-Input", "input", "input"),
    ("1-Conv2d", "conv1", "module"),
    ("2-Conv2d", "conv2", "module"),
    ("3-Linear", "fc1", "module"),
    ("4-Linear", "fc2", "module"),
    ("5-Softmax", "softmax", "softmax"),
]


def _build_model():
    import torch.nn as nn

    class DigitsCNN(nn.Module):
        """1x8x8 -> conv(16) -> pool -> conv(32) -> pool -> fc(64) -> fc(10)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(32 * 2 * 2, 64)
            self.relu3 = nn.ReLU()
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            return self.fc2(self.relu3(self.fc1(self.flatten(x))))

    return DigitsCNN()


def cache_dir() -> Path:
    """$LAYERTOUR_CACHE, else $XDG_CACHE_HOME/layertour, else ~/.cache/layertour."""
    if os.environ.get("LAYERTOUR_CACHE"):
        return Path(os.environ["LAYERTOUR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layertour"


def load_digits_data(seed: int = 0):
    """Digits as float32 (N,1,8,8) in [0,1], int64 labels, and a seeded 80/20 train mask."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    train[rng.permutation(len(y))[: int(0.8 * len(y))]] = True
    return x, y, train


def train_digits_cnn(seed: int = 0, epochs: int = 30, use_cache: bool = True, steps=DEMO_STEPS):
    """Train (or load from cache) the demo CNN. Returns (model in eval mode, test accuracy,
    checkpoints): ``checkpoints`` is a list of dicts (``step``, ``epoch``, ``state_dict``,
    ``test_accuracy``), one per entry of ``steps`` (optimiser steps; 0 = before training; a step
    beyond the end of training is the end)."""
    import torch

    steps = sorted({int(s) for s in steps})
    tag = "-".join(str(s) for s in steps)
    path = cache_dir() / f"digits-cnn-v{ARCH_VERSION}-seed{seed}-e{epochs}-s{tag}.pt"
    model = _build_model()
    if use_cache and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
            log.info("demo: loaded cached CNN from %s (test accuracy %.3f)", path, float(saved["accuracy"]))
            return model.eval(), float(saved["accuracy"]), list(saved["checkpoints"])
        except Exception as exc:  # a corrupt cache file is retrained, not fatal
            log.warning("demo: ignoring unreadable cache %s (%s)", path, exc)
    x, y, train = load_digits_data(seed)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    xs, ys = torch.from_numpy(x[~train]), y[~train]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    checkpoints = []

    def keep(step: int) -> None:
        model.eval()
        with torch.no_grad():
            acc = float((model(xs).argmax(1).numpy() == ys).mean())
        checkpoints.append({"step": step, "epoch": round(step / STEPS_PER_EPOCH, 3), "test_accuracy": acc,
                            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        model.train()

    t0 = time.perf_counter()
    step = 0
    if 0 in steps:
        keep(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=g)
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
            step += 1
            if step in steps:
                keep(step)
    if not checkpoints or checkpoints[-1]["step"] != step:
        if any(s >= step for s in steps):
            keep(step)  # the end of training stands in for steps beyond it
    model.eval()
    with torch.no_grad():
        pred = model(xs).argmax(1).numpy()
    acc = float((pred == ys).mean())
    log.info("demo: trained CNN in %.1fs, test accuracy %.3f", time.perf_counter() - t0, acc)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "accuracy": acc, "checkpoints": checkpoints}, tmp)
        os.replace(tmp, path)
    return model, acc, checkpoints


def build_demo_bundle(out: str | Path = "demo.lt", device: str = "auto", resume: bool = False,
                      seed: int = 0, progress: bool = True, cluster: str | None = None,
                      scheduler: str | None = None, cluster_options=None, steps=DEMO_STEPS) -> Path:
    """Train/load the CNN, then ``prepare`` its layers over all 1,797 digits at every checkpoint of
    ``steps`` (see :data:`DEMO_STEPS`; ``steps=None`` records the trained network only) into ``out``.

    cluster ("local:N") / scheduler ("tcp://HOST:PORT") run the work on Dask; the CNN's states
    travel to the workers as state dicts. ``cluster_options`` (:class:`engine.distributed.ClusterOptions`,
    its ``inputs`` filled in here) gives full control instead.
    """
    import torch

    from engine.inputs import tensor_inputs
    from engine.jobs import Checkpoint
    from engine.models import LayerSpec
    from engine.pipeline import ModelJob, PrepareConfig, prepare

    model, acc, saved = train_digits_cnn(seed, steps=steps or ())
    x, y, train = load_digits_data(seed)
    names = [str(i) for i in range(10)]
    inputs = tensor_inputs(torch.from_numpy(x), labels=y, label_names=names)
    layers = [LayerSpec(id=i, name=n, kind=k) for i, n, k in DEMO_LAYERS]
    checkpoints = [Checkpoint(f"step-{c['step']}", state=c["state_dict"],
                              meta={"step": c["step"], "epoch": c["epoch"],
                                    "test_accuracy": round(c["test_accuracy"], 4)}) for c in saved] or None
    job = ModelJob(name="digits-cnn", module=model, layers=layers, checkpoints=checkpoints,
                   meta={"source": "engine.demo.DigitsCNN", "test_accuracy": round(acc, 4),
                         "train_images": int(train.sum())})
    extra = {"split": {"values": train.astype(np.int32), "kind": "categorical",
                       "categories": ["test", "train"]}}
    if cluster is not None or scheduler is not None or cluster_options is not None:
        from dataclasses import replace

        from engine.distributed import ClusterOptions, InputRecipe, ModelRecipe

        opts = cluster_options or ClusterOptions(cluster=cluster, scheduler=scheduler)
        cluster_options = replace(opts, inputs=InputRecipe.tensor(x))
        job.recipe = ModelRecipe.from_module(_build_model, model)
    config = PrepareConfig(device=device, seed=42, init="previous-checkpoint" if checkpoints else "spectral")
    return prepare([job], inputs, out, config, resume=resume, overwrite=True, progress=progress,
                   extra_attributes=extra, cluster=cluster_options,
                   provenance={"demo": {"cnn_test_accuracy": round(acc, 4), "seed": seed,
                                        "steps": [c["step"] for c in saved]}})
