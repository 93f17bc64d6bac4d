"""Text coloured by a cell's value: the diverging colour map, an HTML page and a PNG (Pillow, no Qt).

Values are clipped to [−1, 1] and shown on a blue–white–red map (negative blue, positive red), as in
Karpathy, Johnson & Fei-Fei (2016). Gates, which live in [0, 1], use the white-to-red half.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

from explorer.core.colormaps import LEVELS, lookup_table
from explorer.core.errors import InputError



LUT = lookup_table("diverging")


def color_indices(values: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Values → uint8 indices into the LUT: −1 → 0, 0 → levels/2, +1 → levels − 1 (clipped; NaN → 0)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    idx = np.rint((np.clip(v, -1.0, 1.0) + 1.0) * 0.5 * (levels - 1))
    return idx.astype(np.uint8)


def value_colors(values: np.ndarray) -> np.ndarray:
    """(T,) values → (T, 3) uint8 RGB background colours."""
    return LUT[color_indices(values)]


def text_color_for(rgb: np.ndarray) -> np.ndarray:
    """Black or white text, whichever reads better on each background (ITU-R BT.601 luma)."""
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.where(luma[..., None] > 120, 0, 255).astype(np.uint8).repeat(3, axis=-1)


def render_html(text: str, values: np.ndarray, title: str = "") -> str:
    """A standalone HTML page: the text in a monospace block, each character's background its value.

    Consecutive characters of the same colour share one ``<span>`` so that 100,000 characters make a
    page of reasonable size; every span's title gives the value of its first character.
    """
    if len(values) != len(text):
        raise InputError(f"{len(values)} values for {len(text)} characters")
    idx = color_indices(values)
    colors = ["#%02x%02x%02x" % tuple(c) for c in LUT]
    fg = ["#000" if v else "#fff" for v in (text_color_for(LUT)[:, 0] == 0)]
    parts = []
    n = len(text)
    change = np.nonzero(np.diff(idx.astype(np.int16)) != 0)[0] + 1
    bounds = np.concatenate([[0], change, [n]]).astype(np.int64)
    # Newlines close spans so that each line's colour runs end at the line end.
    for s, e in zip(bounds[:-1], bounds[1:]):
        k = idx[s]
        chunk = html.escape(text[s:e])
        parts.append(f'<span style="background:{colors[k]};color:{fg[k]}" title="{values[s]:.3f}">{chunk}</span>')
    body = "".join(parts)
    legend = "".join(f'<span style="background:{colors[k]}">&nbsp;</span>' for k in range(0, LEVELS, 8))
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
            "pre{font-family:Menlo,Consolas,'DejaVu Sans Mono',monospace;font-size:13px;line-height:1.35}"
            f"</style></head><body><h3>{html.escape(title)}</h3>"
            f"<div>−1 {legend} +1</div><pre>{body}</pre></body></html>\n")


def render_png(text: str, values: np.ndarray, path: str | Path, title: str = "", max_lines: int = 200,
               max_columns: int = 120, font_size: int = 14) -> tuple[int, int]:
    """Draw the text on a character grid with each cell's background its value; returns (W, H).

    Long lines are cut at ``max_columns`` and only the first ``max_lines`` lines are drawn (a PNG of a
    whole library file would be tens of thousands of pixels tall).
    """
    from PIL import Image, ImageDraw  # noqa: PLC0415

    if len(values) != len(text):
        raise InputError(f"{len(values)} values for {len(text)} characters")
    font = _monospace_font(font_size)
    cw = max(1, int(round(font.getlength("M")))) if hasattr(font, "getlength") else font_size // 2 + 1
    ch = font_size + 5
    lines = text.split("\n")[:max_lines]
    cols = min(max_columns, max((len(line) + 1 for line in lines), default=1))
    top = ch + 6 if title else 4
    W, H = cols * cw + 8, top + len(lines) * ch + 4
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    bg = value_colors(values)
    fg = text_color_for(bg)
    pos = 0
    for row, line in enumerate(lines):
        y = top + row * ch
        for col in range(min(len(line) + 1, cols)):  # + 1: the newline's own cell
            k = pos + col
            if k >= len(text):
                break
            x = 4 + col * cw
            draw.rectangle([x, y, x + cw - 1, y + ch - 1], fill=tuple(int(c) for c in bg[k]))
            if col < len(line) and not line[col].isspace():
                draw.text((x, y + 2), line[col], fill=tuple(int(c) for c in fg[k]), font=font)
        pos += len(line) + 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return W, H


def _monospace_font(size: int):
    from PIL import ImageFont  # noqa: PLC0415

    for name in ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "Menlo.ttc", "consola.ttf", "cour.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def line_offsets(text: str) -> np.ndarray:
    """Start offset of every line (the character after each newline), int64, beginning with 0."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.concatenate([[0], np.nonzero(codes == 10)[0] + 1]).astype(np.int64)


def heat_strip(rows: Sequence[np.ndarray], start: int, end: int) -> np.ndarray:
    """(N, end − start, 3) uint8: the colours of N cells' values over characters [start, end)."""
    if not rows:
        return np.zeros((0, max(0, end - start), 3), dtype=np.uint8)
    return np.ascontiguousarray(np.stack([value_colors(r[start:end]) for r in rows]))


def display_values(quantity: str, values: np.ndarray) -> np.ndarray:
    """What the colour map shows for a quantity: the LSTM cell state c, which is unbounded, divided by
    its largest magnitude over the text (a counting cell keeps its ramp, where tanh(c) would saturate
    after a few characters); every other quantity as it is."""
    if quantity != "c":
        return values
    peak = float(np.max(np.abs(values))) if len(values) else 0.0
    return values / peak if peak > 0 else values
