"""From image files (or .npy tensors) to the model's input tensor, and back for display."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from explorer.core.errors import ImageTooLargeError, InputError
from explorer.core.models.spec import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
                  ".tga", ".ico"}
FIT_MODES = ("crop", "stretch", "letterbox")

# Images are decoded only up to this many pixels (100 megapixels: 10000x10000, 300 MB as RGB), so that
# a decompression bomb (a small file of huge dimensions) is refused before it is decoded. The
# environment variable DEEP_EXPLORER_MAX_IMAGE_PIXELS changes it (0 turns the limit off).
MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_ENV = "DEEP_EXPLORER_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int | None:
    """The pixel limit for decoding one image (None: no limit)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "").replace(",", "")
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels") from None
    return value if value > 0 else None


def _too_large(name: str, pixels: int | None, limit: int) -> InputError:
    size = f" has {pixels:,} pixels, more than" if pixels else " is larger than"
    return ImageTooLargeError(f"{name}{size} the limit of {limit:,} pixels for one image (a decompression "
                              f"bomb?); set {MAX_PIXELS_ENV} to raise it (0 for no limit)")


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow image as (H, W, 3) uint8: grey is repeated, alpha composited on white, 16-bit scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        else:
            arr = arr / top * 255.0
        grey = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8; an unreadable file raises :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image")
    limit = max_image_pixels()
    # Pillow refuses images above twice its own limit while opening them; ours is checked before decoding.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                if limit is not None and img.width * img.height > limit:
                    raise _too_large(p.name, img.width * img.height, limit)
                img.seek(0)
                img.load()
                return pil_to_rgb_array(img)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(p.name, int(found.group(1)) if found else None, limit or MAX_IMAGE_PIXELS) from None
    except UnidentifiedImageError:
        raise InputError(f"{p.name} is not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {p.name}: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"no such folder: {p}")
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def fit_image(image: np.ndarray, size: tuple[int, int], mode: str = "crop") -> np.ndarray:
    """Resize (H, W, 3) uint8 to ``size`` = (H, W).

    ``crop``: scale the shorter side to fit, cut the centre; ``stretch``: scale each axis;
    ``letterbox``: scale the longer side to fit, pad with black.
    """
    if mode not in FIT_MODES:
        raise InputError(f"fit mode must be one of {', '.join(FIT_MODES)}, not {mode!r}")
    th, tw = size
    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    if mode == "stretch" or (h, w) == (th, tw):
        return np.asarray(pil.resize((tw, th), Image.BILINEAR)) if (h, w) != (th, tw) else image.copy()
    if mode == "crop":
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
        top, left = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(resized[top:top + th, left:left + tw])
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
    out = np.zeros((th, tw, 3), np.uint8)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def image_to_tensor(image: np.ndarray, spec: InputSpec, fit: str = "crop") -> torch.Tensor:
    """(H, W, 3) uint8 image → normalised (1, C, H, W) float32 tensor for the model."""
    fitted = fit_image(image, spec.size, fit)
    x = torch.from_numpy(np.array(fitted, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
    if spec.channels == 1:
        # ITU-R 601 luma, as Pillow's "L" conversion
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()


def prepare_input(image: np.ndarray, spec: InputSpec, fit: str = "crop") -> tuple[torch.Tensor, np.ndarray]:
    """The model's input (1, C, H, W) for a picture, and the (H, W, 3) uint8 picture the model sees."""
    x = image_to_tensor(image, spec, fit)
    return x, tensor_to_image(x, spec)


def tensor_to_image(x: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """Inverse of :func:`image_to_tensor` for display: (1, C, H, W) or (C, H, W) → (H, W, 3) uint8."""
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    img = (x * std + mean).clamp(0, 1).mul(255).round().byte()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


def load_npy_input(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """An already preprocessed tensor from .npy, of shape (C, H, W) or (1, C, H, W) matching ``spec``."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {p.name} as a .npy array: {exc}") from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape) != spec.shape:
        raise InputError(f"{p.name} holds shape {tuple(arr.shape)}, but the model takes {spec.shape} "
                         f"(C, H, W) after preprocessing")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{p.name} holds {arr.dtype} values; a preprocessed input must be floating point")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - finite.sum())
        kinds = " and ".join(k for k, hit in (("NaN", np.isnan(arr).any()), ("infinite", np.isinf(arr).any()))
                             if hit)
        raise InputError(f"{p.name} holds {bad:,} {kinds} value{'s' if bad != 1 else ''} (of {arr.size:,}); "
                         f"an input must be finite numbers")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).unsqueeze(0)


def load_input(path: str | Path, spec: InputSpec, fit: str = "crop") -> tuple[torch.Tensor, np.ndarray]:
    """An image file or a .npy tensor → ((1, C, H, W) input, (H, W, 3) uint8 picture of what the model sees)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        x = load_npy_input(p, spec)
        return x, tensor_to_image(x, spec)
    image = load_image(p)
    x = image_to_tensor(image, spec, fit)
    return x, tensor_to_image(x, spec)


def read_picture(path: str | Path, spec: InputSpec | None = None) -> np.ndarray:
    """An image file, or a .npy tensor shown as the picture it encodes (needs ``spec``), as (H, W, 3) uint8."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        if spec is None:
            raise InputError("load a model before opening a .npy tensor")
        return tensor_to_image(load_npy_input(p, spec), spec)
    return load_image(p)


def expand_inputs(paths: list[str | Path], keep_missing: bool = False) -> list[Path]:
    """Files and folders as named on a command line → the list of input files (folders expanded).

    A folder without images raises :class:`InputError`. A missing file raises too, unless
    ``keep_missing``: it is then kept in the list, so that reading it fails on its own (and the others
    are still processed).
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = list_images(p) + sorted(f for f in p.glob("*.npy") if f.is_file())
            if not found:
                raise InputError(f"folder {p} holds no images")
            out.extend(found)
        elif p.exists() or keep_missing:
            out.append(p)
        else:
            raise InputError(f"no such file or folder: {p}")
    return out
