"""One streaming pass over a folder: the top-k images of every unit of some layers, and every image's code.

:func:`scan_steps` is a generator (:mod:`explorer.core.steps`): it yields :class:`ScanProgress` after
each batch and returns the :class:`~explorer.core.topk.index.TopKIndex`. Images are decoded and
preprocessed by a small thread pool while the model runs, in batches on the model's device. A forward
hook on each chosen layer reduces its output at once to each unit's maximum over positions and where it
is reached (nothing of the layer's size is kept), and the running top-k of every unit is merged on the
device (a stable sort: among equal values the earlier image stays first, as a brute-force pass in file
order would keep it). The index is saved every ``save_every_s`` seconds and when the generator ends or
is closed (a cancel), so a later scan with the same settings resumes from it; an image that cannot be
read is skipped and named in the index's ``skipped`` list.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from explorer.core.errors import ExplorerError, InputError
from explorer.core.models.spec import LoadedModel
from explorer.core.preprocess import IMAGE_SUFFIXES, image_to_tensor, load_image
from explorer.core.probe import first_tensor
from explorer.core.probe import get_layer as _get_layer
from explorer.core.receptive_field import WHOLE, receptive_fields
from explorer.core.topk.index import FORMAT, LayerTop, TopKIndex, weights_id

DEFAULT_K = 9
CLASSIFIER_INPUT = "classifier input"  # the code layer meaning: the input of the model's last Linear


@dataclass
class ScanProgress:
    done: int  # images handled (read or skipped), this run and resumed ones
    total: int
    skipped: int
    elapsed_s: float
    eta_s: float | None  # seconds left at this run's rate; None before the first batch
    note: str = ""  # an image just skipped, or "resumed ..."

    def describe(self) -> str:
        eta = f", about {self.eta_s:.0f} s left" if self.eta_s is not None else ""
        return f"{self.done}/{self.total} images{eta}" + (f", {self.skipped} skipped" if self.skipped else "")


def folder_images(folder: str | Path) -> list[tuple[Path, str]]:
    """Images in ``folder`` and in its sub-folders (one level: a class per sub-folder), sorted by path,
    each with its class ('' directly in the folder)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"no such folder: {root}")
    out = []
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            out.append((entry, ""))
        elif entry.is_dir() and not entry.name.startswith("."):
            out += [(f, entry.name) for f in sorted(entry.iterdir())
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        raise InputError(f"folder {root} holds no images")
    return out


def classifier_input_layer(module: nn.Module) -> str | None:
    """The name of the model's last Linear layer (its input is the image's code), or None."""
    last = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last


def _read(path: Path, spec, fit: str) -> torch.Tensor | Exception:
    try:
        return image_to_tensor(load_image(path), spec, fit)[0]
    except ExplorerError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure skips the file, named
        return InputError(f"cannot read image {path.name}: {type(exc).__name__}: {exc}")


def iter_batches(paths: list[Path], spec, fit: str, batch_size: int, workers: int = 2
                 ) -> Iterator[tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]]:
    """Batches of preprocessed images, decoded ahead by ``workers`` threads: (batch or None, indices into
    ``paths`` of its rows, [(index, error)] of the files that could not be read)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()
        it = iter(range(len(paths)))
        ahead = batch_size * 2

        def fill() -> None:
            while len(pending) < ahead:
                i = next(it, None)
                if i is None:
                    return
                pending.append((i, pool.submit(_read, paths[i], spec, fit)))

        try:
            fill()
            while pending:
                rows, ok, failed = [], [], []
                while pending and len(rows) + len(failed) < batch_size:
                    i, fut = pending.popleft()
                    value = fut.result()
                    if isinstance(value, Exception):
                        failed.append((i, str(value)))
                    else:
                        rows.append(value)
                        ok.append(i)
                    fill()
                yield (torch.stack(rows) if rows else None), ok, failed
        finally:
            for _, fut in pending:
                fut.cancel()


def get_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return _get_layer(model, name)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


def _code_of(t: torch.Tensor) -> torch.Tensor:
    return (t.flatten(2).mean(2) if t.dim() > 2 else t.flatten(1)).float()


def scan_steps(loaded: LoadedModel, folder: str | Path, layers: list[str], *, k: int = DEFAULT_K,
               code_layer: str | None = CLASSIFIER_INPUT, out: str | Path | None = None, fit: str = "crop",
               batch_size: int | None = None, workers: int = 2, resume: bool = True,
               save_every_s: float = 10.0, weights: str | None = None) -> Generator[ScanProgress, None, TopKIndex]:
    """Scan ``folder`` (images, or class sub-folders of images) once; return the index.

    ``layers``: the layers whose units get their top ``k``. ``code_layer``: the layer whose output (its
    average over positions) is kept per image for the map of codes; :data:`CLASSIFIER_INPUT` for the
    input of the last Linear layer, None for no codes. ``out``: the index file (saved as the scan goes
    and resumed from when its settings match). ``weights``: the weights identity when already known.
    """
    if k < 1:
        raise InputError("k must be at least 1")
    model, spec, device = loaded.module, loaded.spec, loaded.device
    files = folder_images(folder)
    for name in layers:
        get_layer(model, name)
    if code_layer == CLASSIFIER_INPUT:
        code_layer = classifier_input_layer(model)
        code_is_input = code_layer is not None
    else:
        code_is_input = False
        if code_layer is not None:
            get_layer(model, code_layer)
    batch_size = batch_size or (64 if device.type == "cuda" else 16)
    meta = {"format": FORMAT, "model": loaded.name, "weights": weights or weights_id(model),
            "folder": str(Path(folder).resolve()), "fit": fit,
            "input": {"size": list(spec.size), "channels": spec.channels, "mean": list(spec.mean),
                      "std": list(spec.std)},
            "k": k, "code_layer": (f"{code_layer} (input)" if code_is_input else code_layer),
            "complete": False, "skipped": [], "seconds": 0.0}
    fields, _traced = receptive_fields(model, spec.shape)

    index, note = None, ""
    if out is not None and resume and Path(out).is_file():
        try:
            old = TopKIndex.load(out)
        except InputError:
            old = None
        same = old is not None and all(old.meta.get(key) == meta[key] for key in
                                       ("model", "weights", "fit", "input", "k", "code_layer")) \
            and list(old.layers) == list(layers)
        if same:
            index = old
            index.meta["complete"] = False
            note = f"resumed: {len(index.paths) + len(index.skipped)} images already done"
    seen = set()
    if index is None:
        index = TopKIndex(meta)
    else:
        seen = set(index.paths) | {s["path"] for s in index.skipped}
    todo = [(p, c) for p, c in files if str(p) not in seen]
    total = len(todo) + len(seen)

    # running top-k on the device, per layer: values (C, k), image index (C, k), flat position (C, k)
    state: dict[str, list[torch.Tensor]] = {}
    widths: dict[str, int] = {}
    for name, lt in index.layers.items():
        state[name] = [torch.from_numpy(lt.values).to(device), torch.from_numpy(lt.images).long().to(device),
                       torch.from_numpy(lt.positions[..., 0] * (lt.shape[-1] if len(lt.shape) > 2 else 1)
                                        + lt.positions[..., 1]).long().to(device)]
        widths[name] = lt.shape[-1] if len(lt.shape) > 2 else 1
    shapes = {name: lt.shape for name, lt in index.layers.items()}
    codes = [torch.from_numpy(np.asarray(index.codes))] if index.codes is not None and len(index.codes) else []

    batch_out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    batch_code: list[torch.Tensor] = []
    handles = []

    def reduce_hook(_m, _inputs, output, name):
        t = first_tensor(output)
        if t is None:
            return
        shapes[name] = tuple(t.shape[1:])
        if t.dim() > 2:
            widths[name] = t.shape[-1]
            batch_out[name] = t.detach().flatten(2).max(2)  # last call wins (a shared module)
        else:
            widths[name] = 1
            flat = t.detach().flatten(1)
            batch_out[name] = (flat, torch.zeros_like(flat, dtype=torch.long))

    for name in layers:
        handles.append(get_layer(model, name).register_forward_hook(
            lambda m, i, o, name=name: reduce_hook(m, i, o, name)))
    if code_layer is not None:
        module = get_layer(model, code_layer)
        if code_is_input:
            handles.append(module.register_forward_pre_hook(
                lambda m, inputs: batch_code.append(_code_of(inputs[0].detach()))))
        else:
            handles.append(module.register_forward_hook(
                lambda m, i, o: batch_code.append(_code_of(first_tensor(o).detach()))))

    def save() -> None:
        for name in layers:
            if name not in state:
                continue
            vals, imgs, flat = (t.cpu() for t in state[name])
            w = widths[name]
            pos = torch.stack([flat // w, flat % w], -1).numpy().astype(np.int32)
            index.layers[name] = LayerTop(name, shapes[name], fields.get(name, WHOLE),
                                          vals.numpy().astype(np.float32), imgs.numpy().astype(np.int32), pos)
        if codes:
            index.codes = torch.cat(codes).numpy()
        if out is not None:
            index.save(out)

    start = time.perf_counter()
    seconds_before = float(index.meta.get("seconds", 0.0))
    last_save = start
    done_now = 0
    finished = False
    try:
        if note:
            yield ScanProgress(len(seen), total, len(index.skipped), 0.0, None, note)
        paths = [p for p, _ in todo]
        for batch, ok, failed in iter_batches(paths, spec, fit, batch_size, workers):
            skipped_note = ""
            for i, error in failed:
                index.skipped.append({"path": str(paths[i]), "error": error})
                skipped_note = f"skipped {paths[i].name}: {error}"
            if batch is not None:
                batch_out.clear()
                batch_code.clear()
                with torch.no_grad():
                    logits = first_tensor(model(batch.to(device, non_blocking=True)))
                first = len(index.paths)
                ids = torch.arange(first, first + len(ok), device=device)
                for name in layers:
                    if name not in batch_out:
                        raise InputError(f"layer {name} does not run in the model's forward pass")
                    vals, pos = batch_out[name]  # (B, C)
                    vals, pos = vals.float().t(), pos.t()  # (C, B)
                    if name not in state:
                        c = vals.shape[0]
                        state[name] = [torch.full((c, k), float("-inf"), device=device),
                                       torch.full((c, k), -1, dtype=torch.long, device=device),
                                       torch.zeros((c, k), dtype=torch.long, device=device)]
                    cur_v, cur_i, cur_p = state[name]
                    all_v = torch.cat([cur_v, vals], 1)
                    order = torch.sort(all_v, dim=1, descending=True, stable=True).indices[:, :k]
                    all_i = torch.cat([cur_i, ids.expand(vals.shape[0], -1)], 1)
                    all_p = torch.cat([cur_p, pos], 1)
                    state[name] = [all_v.gather(1, order), all_i.gather(1, order), all_p.gather(1, order)]
                if batch_code:
                    codes.append(batch_code[-1].cpu())
                index.paths += [str(paths[i]) for i in ok]
                index.classes += [todo[i][1] for i in ok]
                index.predictions += logits.flatten(1).argmax(1).cpu().tolist()
            done_now += len(ok) + len(failed)
            elapsed = time.perf_counter() - start
            index.meta["seconds"] = seconds_before + elapsed
            if out is not None and time.perf_counter() - last_save > save_every_s:
                save()
                last_save = time.perf_counter()
            left = len(todo) - done_now
            yield ScanProgress(len(seen) + done_now, total, len(index.skipped), elapsed,
                               elapsed / done_now * left if done_now else None, skipped_note)
        finished = True
        index.meta["complete"] = True
    finally:
        for h in handles:
            h.remove()
        if finished or out is not None:
            save()
    if not index.paths:
        raise InputError(f"no image in {folder} could be read ({len(index.skipped)} skipped)")
    return index


def plain_pass_steps(loaded: LoadedModel, folder: str | Path, *, fit: str = "crop", batch_size: int | None = None,
                     workers: int = 2) -> Generator[int, None, int]:
    """The reference for the scan's cost: the same decoding, preprocessing and forward, nothing kept.
    Yields images done; returns the number of images read."""
    model, spec, device = loaded.module, loaded.spec, loaded.device
    paths = [p for p, _ in folder_images(folder)]
    batch_size = batch_size or (64 if device.type == "cuda" else 16)
    n = 0
    for batch, ok, failed in iter_batches(paths, spec, fit, batch_size, workers):
        if batch is not None:
            with torch.no_grad():
                logits = first_tensor(model(batch.to(device, non_blocking=True)))
            logits.flatten(1).argmax(1).cpu()
        n += len(ok)
        yield n
    return n
