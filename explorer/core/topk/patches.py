"""Patches of a unit's top images (the preprocessed image cropped to the receptive field), their
deconvnet / guided-backprop view (as the Deep Visualization Toolbox showed it), grids and map pictures."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from explorer.core.attribution.backprop import backprop_attribution
from explorer.core.attribution.target import Target
from explorer.core.preprocess import image_to_tensor, load_image, tensor_to_image

VIEWS = ("image", "guided-backprop", "deconvnet")


def patch(entry: dict, loaded, layer: str, unit: int, view: str = "image", fit: str = "crop") -> np.ndarray:
    """(h, w, 3) uint8: ``entry``'s box of its preprocessed image, or of the unit's backprop view there."""
    x = image_to_tensor(load_image(entry["path"]), loaded.spec, fit)
    x0, y0, x1, y1 = entry["box"]
    if view == "image":
        return tensor_to_image(x, loaded.spec)[y0:y1, x0:x1].copy()
    target = Target.for_unit(layer, unit, (entry["y"], entry["x"]))
    grad, _ = backprop_attribution(loaded.module, x.to(loaded.device), target, view)
    g = grad[0].detach().cpu().numpy().transpose(1, 2, 0)[y0:y1, x0:x1]
    if g.shape[2] == 1:
        g = np.repeat(g, 3, 2)
    scale = float(np.abs(g).max()) or 1.0
    return np.clip(127.5 + 127.5 * g / scale, 0, 255).astype(np.uint8)  # the toolbox's grey-centred view


def grid_picture(patches: list[np.ndarray], values: list[float], tile: int = 96, columns: int = 3) -> Image.Image:
    """The patches (each scaled to ``tile``) in a grid, each with its value underneath."""
    rows = max(1, -(-len(patches) // columns))
    label_h = 14
    canvas = Image.new("RGB", (columns * (tile + 4) + 4, rows * (tile + label_h + 4) + 4), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    for i, (p, v) in enumerate(zip(patches, values)):
        r, c = divmod(i, columns)
        x, y = 4 + c * (tile + 4), 4 + r * (tile + label_h + 4)
        img = Image.fromarray(p).resize((tile, tile), Image.NEAREST)
        canvas.paste(img, (x, y))
        draw.text((x + 2, y + tile + 1), f"{v:.3g}", fill=(230, 230, 230))
    return canvas


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def class_colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def map_picture(coords: np.ndarray, paths: list[str], labels: list[str], size: int = 1600, thumb: int = 40,
                names: list[str] | None = None) -> Image.Image:
    """Thumbnails at their map positions, each framed in its label's colour, with a legend."""
    names = names or sorted(set(labels))
    colour = {n: class_colour(i) for i, n in enumerate(names)}
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    c = np.asarray(coords, np.float64)
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pos = (c - lo) / span * (size - thumb - 8) + 4
    for (x, y), path, label in zip(pos, paths, labels):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((thumb - 4, thumb - 4))
        except (OSError, ValueError):
            continue
        frame = Image.new("RGB", (im.width + 4, im.height + 4), colour[label])
        frame.paste(im, (2, 2))
        canvas.paste(frame, (int(x), int(y)))
    draw = ImageDraw.Draw(canvas)
    for i, n in enumerate(names):
        draw.rectangle([8, 8 + 16 * i, 20, 20 + 16 * i], fill=colour[n])
        draw.text((26, 8 + 16 * i), n, fill=(0, 0, 0))
    return canvas
