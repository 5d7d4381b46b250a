"""A tiny MLP for pipeline tests: ``layertour prepare --model tests/assets/tiny_mlp.py:build``."""

import torch.nn as nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 10))
