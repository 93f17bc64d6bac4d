"""The bundled default model: a small CNN that names one of six shapes in a 128x128 RGB image."""
from __future__ import annotations

from collections import OrderedDict

import torch
from explorer.core.models.shapes_data import SHAPE_CLASSES
from torch import nn

SHAPES_INPUT_SIZE = (128, 128)
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)
SHAPES_FORMAT = "deep-explorer/bundled-cnn/1"


def _block(i: int, cin: int, cout: int, pool: bool) -> list[tuple[str, nn.Module]]:
    layers = [(f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
              (f"bn{i}", nn.BatchNorm2d(cout)),
              (f"relu{i}", nn.ReLU(inplace=True))]
    if pool:
        layers.append((f"pool{i}", nn.MaxPool2d(2)))
    return layers


class ShapesNet(nn.Module):
    """conv-bn-relu blocks (16, 32, 64, 64, 128 channels) with max-pooling, global average, two FC layers."""

    def __init__(self, num_classes: int = len(SHAPE_CLASSES)):
        super().__init__()
        widths = [3, 16, 32, 64, 64, 128]
        layers: list[tuple[str, nn.Module]] = []
        for i in range(1, len(widths)):
            layers += _block(i, widths[i - 1], widths[i], pool=i < len(widths) - 1)
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(128, 64)), ("relu", nn.ReLU(inplace=True)), ("fc2", nn.Linear(64, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
