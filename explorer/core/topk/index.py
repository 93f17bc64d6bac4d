"""The top-k index: for every unit of some layers, the k images of a folder where it fires most.

File format (``deep-explorer/topk-index/1``), one uncompressed NumPy ``.npz`` archive, read with
``allow_pickle=False``:

``meta``
    a 0-d unicode array holding a JSON object: ``format``, ``model`` (name), ``weights`` (identity:
    a SHA-256 of the state dict's names, shapes, dtypes and bytes), ``folder``, ``fit``, ``input``
    (size, channels, mean, std), ``k``, ``layers`` (a list of ``{"name", "shape", "rf"}``: the output
    shape without the batch axis and the receptive field as :meth:`ReceptiveField.to_dict`),
    ``code_layer`` (the layer whose codes are kept), ``complete`` (False while a scan is partway:
    resuming continues it), ``skipped`` (``[{"path", "error"}]``: unreadable files, named), ``seconds``.
``paths``
    (N,) unicode: the images read, in the order they were read (``images`` below index it).
``classes``
    (N,) unicode: each image's class sub-folder ('' for an image directly in the folder).
``predictions``
    (N,) int32: the model's top class for each image.
``codes``
    (N, D) float32: the code of each image at ``code_layer`` (a spatial layer's code is its average
    over positions), for the map of codes.
``layer{i}_values``, ``layer{i}_images``, ``layer{i}_positions``
    for layer ``i`` of ``meta["layers"]`` with C units: (C, k) float32 values (each the unit's maximum
    over positions in that image, in descending order; -inf in an unfilled slot), (C, k) int32 indices
    into ``paths`` (-1 unfilled), (C, k, 2) int32 (y, x) of the maximum in the layer's output.

The receptive-field box of an entry is ``ReceptiveField.box((y, x), input size)`` in pixels of the
preprocessed image (``image_to_tensor`` with ``fit``); the patch is that box of that image, cropped when
shown. Files are written under a temporary name and renamed (never half-written).

Indexes live in the user's cache (:func:`index_path`): ``$XDG_CACHE_HOME/deep-explorer/index/<model>-
<weights id>/<folder id>-<key>.npz`` (``~/.cache`` without XDG_CACHE_HOME; DEEP_EXPLORER_INDEX_DIR
replaces the ``index`` folder), keyed by model, weights, folder, layers, code layer, k and fit.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.outputs import atomic_write
from explorer.core.receptive_field import ReceptiveField

FORMAT = "deep-explorer/topk-index/1"
INDEX_DIR_ENV = "DEEP_EXPLORER_INDEX_DIR"


@dataclass
class LayerTop:
    """The top-k of every unit of one layer."""

    name: str
    shape: tuple[int, ...]
    rf: ReceptiveField
    values: np.ndarray  # (C, k) float32, descending; -inf unfilled
    images: np.ndarray  # (C, k) int32 into TopKIndex.paths; -1 unfilled
    positions: np.ndarray  # (C, k, 2) int32 (y, x)

    @property
    def units(self) -> int:
        return int(self.values.shape[0])

    def top(self, unit: int, index: "TopKIndex") -> list[dict]:
        """Unit ``unit``'s entries, best first: path, value, y, x, box (x0, y0, x1, y1)."""
        if not 0 <= unit < self.units:
            raise InputError(f"unit {unit} is out of range: layer {self.name} has {self.units} units")
        out = []
        for j in range(self.values.shape[1]):
            i = int(self.images[unit, j])
            if i < 0:
                break
            y, x = (int(v) for v in self.positions[unit, j])
            out.append({"path": index.paths[i], "value": float(self.values[unit, j]), "y": y, "x": x,
                        "box": list(self.rf.box((y, x), index.input_size))})
        return out


@dataclass
class TopKIndex:
    meta: dict
    paths: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    codes: np.ndarray | None = None
    layers: dict[str, LayerTop] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.meta["input"]["size"])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def skipped(self) -> list[dict]:
        return self.meta.setdefault("skipped", [])

    def layer(self, name: str) -> LayerTop:
        if name not in self.layers:
            raise InputError(f"the index holds layers {', '.join(self.layers) or '(none)'}, not {name}")
        return self.layers[name]

    def to_dict(self) -> dict:
        """The JSON of ``deep-explorer topk``: every layer, every unit, its top entries; the skipped files."""
        return {"layers": [{"layer": name, "units": [{"unit": u, "top": lt.top(u, self)} for u in range(lt.units)]}
                           for name, lt in self.layers.items()],
                "skipped": list(self.skipped)}

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta)
        meta["layers"] = [{"name": lt.name, "shape": list(lt.shape), "rf": lt.rf.to_dict()}
                          for lt in self.layers.values()]
        arrays = {"meta": np.array(json.dumps(meta)),
                  "paths": np.array(self.paths, dtype=str) if self.paths else np.zeros(0, "<U1"),
                  "classes": np.array(self.classes, dtype=str) if self.classes else np.zeros(0, "<U1"),
                  "predictions": np.asarray(self.predictions, np.int32)}
        if self.codes is not None:
            arrays["codes"] = np.asarray(self.codes, np.float32)
        for i, lt in enumerate(self.layers.values()):
            arrays[f"layer{i}_values"] = lt.values.astype(np.float32)
            arrays[f"layer{i}_images"] = lt.images.astype(np.int32)
            arrays[f"layer{i}_positions"] = lt.positions.astype(np.int32)
        with atomic_write(p) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "TopKIndex":
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise InputError(f"{p.name} is not a top-k index ({FORMAT})")
                index = cls(meta, [str(s) for s in z["paths"]], [str(s) for s in z["classes"]],
                            [int(v) for v in z["predictions"]], z["codes"] if "codes" in z else None)
                for i, info in enumerate(meta["layers"]):
                    index.layers[info["name"]] = LayerTop(
                        info["name"], tuple(info["shape"]), ReceptiveField.from_dict(info["rf"]),
                        z[f"layer{i}_values"], z[f"layer{i}_images"], z[f"layer{i}_positions"])
        except FileNotFoundError:
            raise InputError(f"no such index: {p}") from None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read index {p.name}: {exc}") from None
        return index


def weights_id(module: torch.nn.Module) -> str:
    """The identity of a model's weights: SHA-256 over its state dict (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_root() -> Path:
    if os.environ.get(INDEX_DIR_ENV):
        return Path(os.environ[INDEX_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "deep-explorer" / "index"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name if os.sep in text else text)[:60] or "model"


def model_dir(model_name: str, weights: str) -> Path:
    return cache_root() / f"{_slug(model_name)}-{weights[:16]}"


def folder_id(folder: str | Path) -> str:
    return hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]


def index_key(layers: list[str], code_layer: str | None, k: int, fit: str, size: tuple[int, int]) -> str:
    text = json.dumps([sorted(layers), code_layer, k, fit, list(size)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def index_path(model_name: str, weights: str, folder: str | Path, layers: list[str], code_layer: str | None,
               k: int, fit: str, size: tuple[int, int]) -> Path:
    """Where the index of these settings lives in the user's cache."""
    return model_dir(model_name, weights) / f"{folder_id(folder)}-{index_key(layers, code_layer, k, fit, size)}.npz"


def find_cached(model_name: str, weights: str, folder: str | Path, layer: str | None = None,
                code_layer: str | None = None, fit: str | None = None, complete: bool = True) -> Path | None:
    """The newest cached index for this model, weights and folder holding ``layer`` (its top-k) and/or
    ``code_layer`` (its codes); None when there is none."""
    d = model_dir(model_name, weights)
    if not d.is_dir():
        return None
    found = sorted(d.glob(f"{folder_id(folder)}-*.npz"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in found:
        try:
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue
        if complete and not meta.get("complete"):
            continue
        if fit is not None and meta.get("fit") != fit:
            continue
        if layer is not None and layer not in [info["name"] for info in meta.get("layers", [])]:
            continue
        if code_layer is not None and meta.get("code_layer") != code_layer:
            continue
        return f
    return None
