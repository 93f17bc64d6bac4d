"""The one place colour maps live: what the window shows and what the command line's PNGs hold.

Each map is a (256, 3) uint8 lookup table built from a few anchor colours by linear interpolation
(inferno, magma and viridis after matplotlib's perceptually uniform maps; turbo after Google's;
``diverging`` is ColorBrewer's RdBu: blue for negative, white for zero, red for positive). The
window's image views get the same tables with an alpha column (:func:`lookup_table` with ``alpha=True``).
"""
from __future__ import annotations

import numpy as np

LEVELS = 256

# (position, (r, g, b)) anchors
_ANCHORS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "inferno": ((0.0, (0, 0, 4)), (0.125, (31, 12, 72)), (0.25, (85, 15, 109)), (0.375, (136, 34, 106)),
                (0.5, (186, 54, 85)), (0.625, (227, 89, 51)), (0.75, (249, 140, 10)), (0.875, (249, 201, 50)),
                (1.0, (252, 255, 164))),
    "magma": ((0.0, (0, 0, 4)), (0.125, (28, 16, 68)), (0.25, (79, 18, 123)), (0.375, (129, 37, 129)),
              (0.5, (181, 54, 122)), (0.625, (229, 80, 100)), (0.75, (251, 135, 97)), (0.875, (254, 194, 135)),
              (1.0, (252, 253, 191))),
    "viridis": ((0.0, (68, 1, 84)), (0.125, (72, 40, 120)), (0.25, (62, 74, 137)), (0.375, (49, 104, 142)),
                (0.5, (38, 130, 142)), (0.625, (31, 158, 137)), (0.75, (53, 183, 121)), (0.875, (109, 205, 89)),
                (1.0, (253, 231, 37))),
    "turbo": ((0.0, (48, 18, 59)), (0.125, (70, 107, 227)), (0.25, (40, 187, 236)), (0.375, (49, 242, 153)),
              (0.5, (162, 252, 60)), (0.625, (237, 208, 58)), (0.75, (251, 128, 34)), (0.875, (208, 47, 5)),
              (1.0, (122, 4, 3))),
    "grey": ((0.0, (0, 0, 0)), (1.0, (255, 255, 255))),
}
COLORMAPS = ("auto", "inferno", "magma", "viridis", "turbo", "diverging", "grey")


def diverging_lut(levels: int = LEVELS) -> np.ndarray:
    """(levels, 3) uint8 RGB: blue (−1) → white (0) → red (+1), through light tints for readability."""
    t = np.linspace(-1.0, 1.0, levels)
    neg = np.array([33, 102, 172], dtype=np.float64)  # ColorBrewer RdBu ends
    pos = np.array([178, 24, 43], dtype=np.float64)
    white = np.array([247, 247, 247], dtype=np.float64)
    a = np.abs(t)[:, None] ** 0.8
    rgb = np.where(t[:, None] < 0, white + (neg - white) * a, white + (pos - white) * a)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _from_anchors(name: str, levels: int = LEVELS) -> np.ndarray:
    pos = np.array([p for p, _ in _ANCHORS[name]])
    rgb = np.array([c for _, c in _ANCHORS[name]], dtype=np.float64)
    t = np.linspace(0.0, 1.0, levels)
    out = np.stack([np.interp(t, pos, rgb[:, k]) for k in range(3)], axis=1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


_TABLES: dict[str, np.ndarray] = {}


def auto_colormap(signed: bool) -> str:
    """The default map: ``diverging`` for values of both signs (centred on zero), ``inferno`` otherwise."""
    return "diverging" if signed else "inferno"


def lookup_table(name: str, alpha: bool = False) -> np.ndarray:
    """(256, 3) uint8 RGB table of a colour map (``(256, 4)`` with an opaque alpha column for the image views)."""
    name = "grey" if name == "gray" else name
    if name not in _TABLES:
        if name == "diverging":
            _TABLES[name] = diverging_lut()
        elif name in _ANCHORS:
            _TABLES[name] = _from_anchors(name)
        else:
            raise ValueError(f"unknown colour map {name!r}; known: {', '.join(COLORMAPS[1:])}")
        _TABLES[name].setflags(write=False)
    table = _TABLES[name]
    if alpha:
        return np.ascontiguousarray(np.concatenate([table, np.full((LEVELS, 1), 255, np.uint8)], axis=1))
    return table


def map_levels(values: np.ndarray) -> tuple[float, float, bool]:
    """(low, high, signed) to show a map: symmetric around 0 when it has both signs."""
    finite = values[np.isfinite(values)] if values.size else values
    if finite.size == 0:
        return 0.0, 1.0, False
    lo, hi = float(finite.min()), float(finite.max())
    if lo < 0 < hi:
        m = max(-lo, hi)
        return -m, m, True
    if lo == hi:
        return lo, lo + 1.0, False
    return lo, hi, False


def colorize(values: np.ndarray, levels: tuple[float, float], name: str) -> np.ndarray:
    """(H, W) values → (H, W, 3) uint8 RGB through ``name``'s table, ``levels`` mapping to its ends."""
    lo, hi = levels
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.nan_to_num(values, nan=lo) - lo) * scale, 0, 255).astype(np.uint8)
    return lookup_table(name)[idx]


def colorbar(name: str, height: int = 256, width: int = 16) -> np.ndarray:
    """(height, width, 3) uint8: the map from its high end (top) to its low end (bottom)."""
    column = lookup_table(name)[np.linspace(255, 0, height).astype(np.uint8)]
    return np.ascontiguousarray(np.repeat(column[:, None, :], width, axis=1))
