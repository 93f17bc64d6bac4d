"""Where the bundled resources live: models, sample images, sample text, icons.

The one definition of the resources folder; inside a PyInstaller bundle it is the bundle's own copy.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _resources_root() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)  # PyInstaller unpacks data files here
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


RESOURCES = _resources_root()
MODELS_DIR = RESOURCES / "models"
SAMPLE_IMAGES = RESOURCES / "images"
SAMPLE_TEXT = RESOURCES / "text" / "threading_sample.py"
APP_ICON = RESOURCES / "icons" / "deep-explorer.png"
