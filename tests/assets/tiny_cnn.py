"""A tiny CNN on 3x32x32 images for streaming tests: its first convolution's activations are
8 x 32 x 32 = 8,192 floats per image, so a few thousand images outgrow a small memory budget."""

import torch.nn as nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))
