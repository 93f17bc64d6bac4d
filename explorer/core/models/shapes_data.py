"""Procedurally generated images of six shapes, the bundled model's world.

One shape per image, wholly inside the frame, 20-60 % of the side, random rotation, fill colour and
background (flat, noisy or textured). Every image comes with the shape's pixel mask, so tests can check
that an explanation points at the shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "ring")
BACKGROUNDS: tuple[str, ...] = ("flat", "noisy", "textured")


@dataclass(frozen=True)
class ShapeSample:
    image: np.ndarray  # (H, W, 3) uint8
    label: int  # index into SHAPE_CLASSES
    mask: np.ndarray  # (H, W) bool, True on the shape's pixels
    background: str


def _polygon(kind: str) -> np.ndarray:
    """Vertices of a unit-radius shape centred on the origin, shape (N, 2)."""
    if kind == "triangle":
        ang = np.deg2rad([90, 210, 330])
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    if kind == "square":
        s = 1 / np.sqrt(2)
        return np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    if kind == "star":
        ang = np.deg2rad(90 + 36 * np.arange(10))
        radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
        return np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)
    if kind == "cross":
        a, w = 1 / np.sqrt(2), 0.24
        return np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w],
                         [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w]])
    raise ValueError(kind)


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float,
                supersample: int = 4) -> np.ndarray:
    s = supersample
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    if kind in ("circle", "ring"):
        r = radius * s
        draw.ellipse([cx * s - r, cy * s - r, cx * s + r, cy * s + r], fill=255)
        if kind == "ring":
            ri = 0.55 * r
            draw.ellipse([cx * s - ri, cy * s - ri, cx * s + ri, cy * s + ri], fill=0)
    else:
        pts = _polygon(kind)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T * radius + np.array([cx, cy])
        draw.polygon([tuple(p) for p in pts * s], fill=255)
    small = canvas.resize((size, size), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    base = rng.uniform(0, 255, size=3)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if kind == "noisy":
        img = img + rng.normal(0, rng.uniform(10, 35), size=(size, size, 3))
    elif kind == "textured":
        other = rng.uniform(0, 255, size=3)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        choice = rng.integers(3)
        if choice == 0:  # stripes
            theta, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
            t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
        elif choice == 1:  # checkerboard
            cell = int(rng.integers(6, 20))
            t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
        else:  # smooth blobs: upsampled noise
            coarse = rng.uniform(0, 1, size=(8, 8)).astype(np.float32)
            t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
                (size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        img = img * (1 - t[..., None]) + other * t[..., None]
    return img


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - mean).sum() > 150:
            return colour
    return 255.0 - mean


def generate_shape(rng: np.random.Generator, size: int = 128, label: int | None = None,
                   background: str | None = None) -> ShapeSample:
    """Draw one random shape image.

    Parameters
    ----------
    rng : numpy Generator, the only source of randomness (same seed, same image).
    size : side of the square image in pixels.
    label : force a class (index into SHAPE_CLASSES); random when None.
    background : force "flat", "noisy" or "textured"; random when None.
    """
    label = int(rng.integers(len(SHAPE_CLASSES))) if label is None else int(label)
    kind = SHAPE_CLASSES[label]
    background = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    extent = rng.uniform(0.2, 0.6) * size  # the shape's diameter
    radius = extent / 2
    cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    alpha = _shape_mask(kind, size, cx, cy, radius, angle)
    bg = _background(rng, background, size)
    colour = _contrasting_colour(rng, bg)
    img = bg * (1 - alpha[..., None]) + colour * alpha[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    return ShapeSample(image=img, label=label, mask=alpha > 0.5, background=background)


def generate_batch(seed: int, count: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images (N, H, W, 3) uint8 and labels (N,) int64, balanced over the classes."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.arange(count) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    for i in range(count):
        images[i] = generate_shape(rng, size, int(labels[i])).image
    return images, labels.astype(np.int64)
