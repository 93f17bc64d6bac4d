"""Two checkpoints side by side, layer by layer: how far each layer's weights moved, and linear CKA.

A is the current model, B the second checkpoint (the same architecture, or another one: then only the
layers found in both under the same name, with the same parameter and output shapes, are compared).

- Relative weight change of a layer: ``||W_B - W_A|| / ||W_A||`` over the layer's own parameters (weight
  and bias as one vector, Frobenius norm); 0 for a frozen layer.
- Linear CKA (Kornblith et al. 2019) with the minibatch estimator of Nguyen, Raghu & Kornblith 2021 ("Do
  wide and deep networks learn the same things?", eq. 3): for each minibatch of n images, with X and Y the
  two layers' activations flattened per image and centred over the minibatch (which leaves HSIC_1
  unchanged, see :func:`gram`), K = X X^T and L = Y Y^T (float64 from there on), accumulate the unbiased
  HSIC_1 of Song et al. 2012::

      HSIC_1(K, L) = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))

  (K~, L~: K and L with their diagonals set to zero), then
  ``CKA = sum HSIC_1(K, L) / sqrt(sum HSIC_1(K, K) * sum HSIC_1(L, L))``. Only n x n Gram matrices are
  kept (one per layer per minibatch, computed in the forward hook), so memory does not grow with the
  folder; every (A layer, B layer) pair gives the heatmap, the pairs of the same layer its diagonal.

:func:`compare_steps` is a generator (:mod:`explorer.core.steps`): it yields :class:`CompareProgress`
after each minibatch and returns the :class:`Comparison`.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from explorer.core.errors import InputError
from explorer.core.models.spec import InputSpec, LoadedModel
from explorer.core.probe import first_tensor, get_layer, run_forward, top_k
from explorer.core.topk.index import TopKIndex
from explorer.core.topk.scan import folder_images, iter_batches

MIN_BATCH = 4  # the unbiased HSIC needs n > 3


# --- the estimator -------------------------------------------------------------------------------------

def gram(features: torch.Tensor) -> torch.Tensor:
    """The linear Gram matrix (n, n), returned in float64, of ``features`` (n, ...) flattened per row,
    centred over the minibatch first.

    HSIC_1 with a linear kernel is unchanged when every row is shifted by the same vector (its
    4-tuple form uses only differences of rows), so the Gram of the centred features gives the same
    CKA. Centring removes the large common part that would cancel in the estimator, which lets the
    product of float32 features run in float32 (about 4x faster than float64 on a CPU) and only the
    (n, n) result and everything after it be float64; float64 features stay float64 throughout.
    """
    x = features.detach().flatten(1)
    if x.dtype != torch.float64:
        x = x.float()
    x = x - x.mean(0, keepdim=True)
    return (x @ x.T).to(torch.float64)


def hsic1(grams_k: torch.Tensor, grams_l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 (Song et al. 2012) of every pair: ``grams_k`` (p, n, n), ``grams_l`` (q, n, n) → (p, q)."""
    n = grams_k.shape[-1]
    if n < MIN_BATCH:
        raise InputError(f"the unbiased CKA estimator needs minibatches of at least {MIN_BATCH} images, not {n}")
    eye = torch.eye(n, dtype=torch.bool, device=grams_k.device)
    k = grams_k.masked_fill(eye, 0.0)
    l = grams_l.masked_fill(eye, 0.0)
    trace = torch.einsum("aij,bij->ab", k, l)  # tr(K~ L~) with both symmetric
    sum_k, sum_l = k.sum((1, 2)), l.sum((1, 2))
    col_k, col_l = k.sum(1), l.sum(1)  # (p, n), (q, n): 1'K~
    return (trace + torch.outer(sum_k, sum_l) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * col_k @ col_l.T) / (n * (n - 3))


@dataclass
class CKAAccumulator:
    """Sums of HSIC_1 over minibatches for ``p`` A layers and ``q`` B layers."""

    p: int
    q: int
    xy: torch.Tensor = None  # (p, q)
    xx: torch.Tensor = None  # (p,)
    yy: torch.Tensor = None  # (q,)
    batches: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self.xy = torch.zeros(self.p, self.q, dtype=torch.float64)
        self.xx = torch.zeros(self.p, dtype=torch.float64)
        self.yy = torch.zeros(self.q, dtype=torch.float64)

    def add(self, grams_a: torch.Tensor, grams_b: torch.Tensor) -> None:
        """One minibatch: Gram matrices (p, n, n) of A's layers and (q, n, n) of B's."""
        self.xy += hsic1(grams_a, grams_b).cpu()
        self.xx += torch.diagonal(hsic1(grams_a, grams_a)).cpu()
        self.yy += torch.diagonal(hsic1(grams_b, grams_b)).cpu()
        self.batches += 1
        self.samples += int(grams_a.shape[-1])

    def matrix(self) -> np.ndarray:
        """CKA (p, q); NaN where a layer's self-HSIC is not positive (a constant layer)."""
        denom = torch.sqrt(torch.clamp(torch.outer(self.xx, self.yy), min=0.0))
        out = torch.where(denom > 0, self.xy / torch.where(denom > 0, denom, 1.0), float("nan"))
        return out.numpy()


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> float:
    """Linear CKA of features ``x`` (N, ...) and ``y`` (N, ...) of the same N examples, by the minibatch
    estimator (a last minibatch under :data:`MIN_BATCH` rows joins the one before)."""
    acc = CKAAccumulator(1, 1)
    for start, stop in batch_bounds(len(x), batch_size):
        acc.add(gram(x[start:stop])[None], gram(y[start:stop])[None])
    return float(acc.matrix()[0, 0])


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of minibatches of ``batch_size`` rows; a remainder under :data:`MIN_BATCH` joins the last."""
    if n < MIN_BATCH:
        raise InputError(f"CKA needs at least {MIN_BATCH} images, not {n}")
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_BATCH:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def load_checkpoint_b(path: str | Path, a_name: str | None, **options) -> LoadedModel:
    """Checkpoint B: its architecture detected from the file (it may differ from A's), else taken to be
    ``a_name`` (A's, or the one the user named). ``options`` go to :func:`~explorer.core.models.load_model`."""
    from explorer.core.errors import UnknownArchitectureError  # noqa: PLC0415
    from explorer.core.models import load_model  # noqa: PLC0415

    try:
        return load_model(None, checkpoint=path, **options)
    except UnknownArchitectureError:
        if a_name is None:
            raise
        return load_model(a_name, checkpoint=path, **options)


# --- matching the two models' layers ---------------------------------------------------------------

def _own_parameters(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters(recurse=False)}


def output_shapes(model: nn.Module, shape: tuple[int, ...], device: torch.device | str = "cpu"
                  ) -> dict[str, tuple[int, ...]]:
    """Each leaf module's output shape (without the batch axis) for one zero input of ``shape`` (C, H, W)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    me = threading.get_ident()
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def hook(_m, _i, out, key=name):
                if threading.get_ident() != me:  # another panel runs the same module meanwhile
                    return
                t = first_tensor(out)
                if t is not None:
                    shapes[key] = tuple(t.shape[1:])
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros((2, *shape), device=device))
    finally:
        for h in handles:
            h.remove()
    return shapes


@dataclass
class LayerMatch:
    """The layers of A and B that can be compared (same name, same parameter and output shapes)."""

    matched: list[str]  # in A's order of execution
    only_a: list[str]
    only_b: list[str]
    differ: list[str]  # in both by name, shapes differ
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def match_layers(a: LoadedModel, b: LoadedModel) -> LayerMatch:
    """Match A's and B's leaf layers by name and shape (parameters and output for A's input shape)."""
    if a.spec.shape != b.spec.shape:
        raise InputError(f"A takes inputs of shape {tuple(a.spec.shape)}, B of {tuple(b.spec.shape)}: "
                         f"they cannot see the same images")
    out_a = output_shapes(a.module, a.spec.shape, a.device)
    out_b = output_shapes(b.module, b.spec.shape, b.device)
    mods_a, mods_b = dict(a.module.named_modules()), dict(b.module.named_modules())
    matched, differ = [], []
    for name, shape in out_a.items():  # dicts keep the order the hooks fired: the order of execution
        if name not in out_b:
            continue
        if out_b[name] == shape and _own_parameters(mods_a[name]) == _own_parameters(mods_b[name]):
            matched.append(name)
        else:
            differ.append(name)
    return LayerMatch(matched, [n for n in out_a if n not in out_b], [n for n in out_b if n not in out_a],
                      differ, {n: out_a[n] for n in matched})


def default_layers(model: nn.Module, matched: Sequence[str]) -> list[str]:
    """The layers compared when none are named: the matched layers that hold weights (conv, linear, norm)."""
    mods = dict(model.named_modules())
    return [n for n in matched if _own_parameters(mods[n])] or list(matched)


def weight_change(a: nn.Module, b: nn.Module, layer: str) -> float | None:
    """``||W_B - W_A|| / ||W_A||`` over ``layer``'s own parameters (None for a layer with no parameters;
    inf when A's are all zero and B's are not)."""
    pa = dict(get_layer(a, layer).named_parameters(recurse=False))
    pb = dict(get_layer(b, layer).named_parameters(recurse=False))
    if not pa:
        return None
    diff = math.sqrt(sum(float(((pb[k].detach().double().cpu() - v.detach().double().cpu()) ** 2).sum())
                         for k, v in pa.items()))
    norm = math.sqrt(sum(float((v.detach().double() ** 2).sum()) for v in pa.values()))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / norm


# --- the pass over a folder ------------------------------------------------------------------------

@dataclass
class CompareProgress:
    done: int  # images handled (read or skipped)
    total: int
    skipped: int
    elapsed_s: float
    note: str = ""  # an image just skipped

    def describe(self) -> str:
        return f"{self.done}/{self.total} images" + (f", {self.skipped} skipped" if self.skipped else "")


@dataclass
class Comparison:
    """The result: CKA of every (A layer, B layer) pair; per layer weight change and CKA with itself."""

    layers_a: list[str]
    layers_b: list[str]
    cka: np.ndarray  # (len(layers_a), len(layers_b)) float64
    weight_change: dict[str, float | None]  # per layer of layers_a that B has too
    images: int
    batches: int
    skipped: list[dict] = field(default_factory=list)
    match: LayerMatch | None = None
    seconds: float = 0.0

    def layer_cka(self) -> dict[str, float]:
        """CKA of each layer of A with the same layer of B (the heatmap's diagonal where names agree)."""
        cols = {n: j for j, n in enumerate(self.layers_b)}
        return {n: float(self.cka[i, cols[n]]) for i, n in enumerate(self.layers_a) if n in cols}

    def to_dict(self) -> dict:
        cka = self.layer_cka()
        return {"layers_a": self.layers_a, "layers_b": self.layers_b,
                "cka": [[_finite(v) for v in row] for row in self.cka.tolist()],
                "layers": [{"layer": n, "cka": _finite(cka.get(n)), "weight_change": _finite(self.weight_change.get(n))}
                           for n in self.layers_a],
                "images": self.images, "batches": self.batches, "skipped": list(self.skipped),
                "seconds": self.seconds,
                "unmatched": None if self.match is None else {
                    "only_a": self.match.only_a, "only_b": self.match.only_b, "shapes_differ": self.match.differ}}


def _finite(v):
    return None if v is None or not math.isfinite(v) else float(v)


def convert_input(x: torch.Tensor, spec_from: InputSpec, spec_to: InputSpec) -> torch.Tensor:
    """``x`` preprocessed for ``spec_from`` re-normalised for ``spec_to`` (same shape; other mean and std)."""
    if spec_from.mean == spec_to.mean and spec_from.std == spec_to.std:
        return x
    shape = (1, -1, 1, 1)
    m0, s0 = (torch.tensor(v, dtype=x.dtype, device=x.device).view(shape) for v in (spec_from.mean, spec_from.std))
    m1, s1 = (torch.tensor(v, dtype=x.dtype, device=x.device).view(shape) for v in (spec_to.mean, spec_to.std))
    return (x * s0 + m0 - m1) / s1


def rebatched(batches: Iterable[tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]], batch_size: int
              ) -> Iterator[tuple[torch.Tensor | None, list[tuple[int, str]], int]]:
    """(rows or None, failures, files handled) with every rows batch of at least :data:`MIN_BATCH` images:
    rows are held back until a full batch can go and still leave :data:`MIN_BATCH` or none behind."""
    held: list[torch.Tensor] = []
    for rows, ok, failed in batches:
        if rows is not None:
            held += list(rows)
        handled = len(ok) + len(failed)
        if len(held) >= batch_size + MIN_BATCH:
            out, held = held[:batch_size], held[batch_size:]
            yield torch.stack(out), failed, handled
        else:
            yield None, failed, handled
    if held:
        if len(held) < MIN_BATCH:
            raise InputError(f"CKA needs at least {MIN_BATCH} readable images, not {len(held)}")
        yield torch.stack(held), [], 0


class _GramHooks:
    """Forward hooks that turn each chosen layer's output at once into its Gram matrix (n, n) float64."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.grams: dict[str, torch.Tensor] = {}
        self.handles = []
        self.thread = threading.get_ident()  # the window may run the same module in another thread
        for name in layers:
            self.handles.append(get_layer(model, name).register_forward_hook(
                lambda _m, _i, out, key=name: self._store(key, out)))

    def _store(self, key: str, out) -> None:
        if threading.get_ident() != self.thread:
            return
        t = first_tensor(out)
        if t is not None:
            self.grams[key] = gram(t)  # computed before an in-place ReLU can change the output

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _PairPass:
    """Gram hooks on A's and B's layers; :meth:`add` runs one minibatch through both and accumulates."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, layers_a: Sequence[str], layers_b: Sequence[str]):
        self.model_a, self.model_b = model_a, model_b
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        self.acc = CKAAccumulator(len(layers_a), len(layers_b))
        self.hooks_a, self.hooks_b = _GramHooks(model_a, layers_a), _GramHooks(model_b, layers_b)

    def add(self, x_a: torch.Tensor, x_b: torch.Tensor) -> None:
        self.hooks_a.grams.clear()
        self.hooks_b.grams.clear()
        with torch.no_grad():
            self.model_a(x_a)
            self.model_b(x_b)
        missing = ([f"A's {n}" for n in self.layers_a if n not in self.hooks_a.grams]
                   + [f"B's {n}" for n in self.layers_b if n not in self.hooks_b.grams])
        if missing:
            raise InputError(f"layer {missing[0]} does not run in the model's forward pass")
        self.acc.add(torch.stack([self.hooks_a.grams[n] for n in self.layers_a]),
                     torch.stack([self.hooks_b.grams[n] for n in self.layers_b]))

    def remove(self) -> None:
        self.hooks_a.remove()
        self.hooks_b.remove()


def cka_of_batches(model_a: nn.Module, model_b: nn.Module, batches: Iterable[torch.Tensor],
                   layers_a: Sequence[str], layers_b: Sequence[str]) -> np.ndarray:
    """CKA (len(layers_a), len(layers_b)) of the two models over ``batches`` (n >= 4 inputs each, fed to both)."""
    run = _PairPass(model_a, model_b, layers_a, layers_b)
    try:
        for x in batches:
            run.add(x, x)
    finally:
        run.remove()
    return run.acc.matrix()


def compare_steps(a: LoadedModel, b: LoadedModel, folder: str | Path, layers: Sequence[str] | None = None,
                  layers_b: Sequence[str] | None = None, *, fit: str = "crop", batch_size: int = 32,
                  workers: int = 2) -> Generator[CompareProgress, None, Comparison]:
    """Compare A and B on the images of ``folder`` (its sub-folders too, as the top-k scan reads it).

    ``layers``: A's layers (default: the matched layers with weights); ``layers_b``: B's (default: the
    same names). Images are preprocessed with A's spec (re-normalised for B's when its mean or std
    differ); an unreadable file is skipped and named. Minibatches have ``batch_size`` images (the last
    may hold up to ``batch_size + 3``).
    """
    if batch_size < MIN_BATCH:
        raise InputError(f"the batch size must be at least {MIN_BATCH} (the unbiased estimator needs n > 3)")
    files = folder_images(folder)
    match = match_layers(a, b)
    if layers is None:
        layers = default_layers(a.module, match.matched)
        if not layers:
            raise InputError("A and B have no layer in common (by name and shape) to compare")
    layers = list(layers)
    layers_b = list(layers_b) if layers_b is not None else list(layers)
    for name in layers:
        _check_layer(a.module, name, "A")
    for name in layers_b:
        _check_layer(b.module, name, "B")
    mods_b = set(dict(b.module.named_modules()))
    changes = {n: weight_change(a.module, b.module, n) for n in layers
               if n in mods_b and n in match.matched}
    paths = [p for p, _ in files]
    skipped: list[dict] = []
    start = time.perf_counter()
    done = 0
    device = a.device

    state = {"note": ""}

    def inputs() -> Iterator[torch.Tensor]:
        nonlocal done
        for rows, failed, handled in rebatched(iter_batches(paths, a.spec, fit, batch_size, workers), batch_size):
            for i, error in failed:
                skipped.append({"path": str(paths[i]), "error": error})
                state["note"] = f"skipped {paths[i].name}: {error}"
            done += handled
            if rows is not None:
                yield rows.to(device)
            elif failed:
                yield None

    run = _PairPass(a.module, b.module, layers, layers_b)
    try:
        for x in inputs():
            if x is not None:
                run.add(x, convert_input(x, a.spec, b.spec).to(b.device))
            yield CompareProgress(done, len(paths), len(skipped), time.perf_counter() - start, state["note"])
            state["note"] = ""
    finally:
        run.remove()
    acc = run.acc
    if acc.batches == 0:
        raise InputError(f"no image in {folder} could be read ({len(skipped)} skipped)")
    return Comparison(layers, layers_b, acc.matrix(), changes, acc.samples, acc.batches, skipped, match,
                      time.perf_counter() - start)


def _check_layer(model: nn.Module, name: str, which: str) -> None:
    try:
        get_layer(model, name)
    except KeyError as exc:
        raise InputError(f"{which}: {exc.args[0]}") from None


# --- one image, and the top-9 of a unit -------------------------------------------------------------

def compare_image(a: LoadedModel, b: LoadedModel, x: torch.Tensor, layer: str | None = None,
                  unit: int | None = None, k: int = 5) -> dict:
    """Both models on one preprocessed input ``x`` (1, C, H, W) for A: each one's top-``k`` classes, and
    with ``layer`` and ``unit`` the unit's activation map in A and in B (numpy (H, W) or (1, 1))."""
    layers = [layer] if layer is not None else []
    ra = run_forward(a.module, x.to(a.device), layers)
    rb = run_forward(b.module, convert_input(x, a.spec, b.spec).to(b.device), layers)
    out = {"top_a": top_k(ra.logits, a.spec.labels, k), "top_b": top_k(rb.logits, b.spec.labels, k)}
    if layer is not None and unit is not None:
        maps = []
        for r in (ra, rb):
            act = r.activations[layer][0]
            if not 0 <= unit < act.shape[0]:
                raise InputError(f"unit {unit} is out of range: layer {layer} has {act.shape[0]} units")
            m = act[unit].float().cpu().numpy()
            maps.append(m.reshape(m.shape if m.ndim == 2 else (1, -1)))
        out.update(layer=layer, unit=unit, unit_a=maps[0], unit_b=maps[1],
                   unit_max_a=float(maps[0].max()), unit_max_b=float(maps[1].max()))
    return out


def top_overlap(index_a: TopKIndex, index_b: TopKIndex, layer: str) -> np.ndarray:
    """For each unit of ``layer``: how many of its top-k images in A's index are among its top-k in B's
    (both indexes of the same folder; (C,) int)."""
    la, lb = index_a.layer(layer), index_b.layer(layer)
    if la.units != lb.units:
        raise InputError(f"layer {layer} has {la.units} units in A and {lb.units} in B")
    out = np.zeros(la.units, dtype=np.int64)
    for u in range(la.units):
        pa = {index_a.paths[i] for i in la.images[u] if i >= 0}
        pb = {index_b.paths[i] for i in lb.images[u] if i >= 0}
        out[u] = len(pa & pb)
    return out


def heatmap_picture(cka: np.ndarray, layers_a: Sequence[str], layers_b: Sequence[str], cell: int = 24,
                    colormap: str = "inferno"):
    """The CKA heatmap as a Pillow image: A's layers down (first at the top), B's across, levels 0 to 1,
    a colour bar on the right; NaN cells grey."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    from explorer.core.colormaps import colorbar, colorize  # noqa: PLC0415

    p, q = cka.shape
    rgb = colorize(np.clip(cka, 0.0, 1.0), (0.0, 1.0), colormap)
    rgb[~np.isfinite(cka)] = 128
    cells = np.repeat(np.repeat(rgb, cell, 0), cell, 1)
    label_w = 7 * max((len(n) for n in layers_a), default=4) + 12
    label_h = 7 * max((len(n) for n in layers_b), default=4) + 12
    bar_w = 60
    img = Image.new("RGB", (label_w + q * cell + bar_w, max(label_h + p * cell + 8, 200)), "white")
    img.paste(Image.fromarray(np.ascontiguousarray(cells)), (label_w, label_h))
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(layers_a):
        draw.text((4, label_h + i * cell + cell // 2 - 5), name, fill="black")
    for j, name in enumerate(layers_b):
        col = Image.new("RGB", (label_h - 6, cell), "white")
        ImageDraw.Draw(col).text((2, cell // 2 - 5), name, fill="black")
        img.paste(col.rotate(90, expand=True), (label_w + j * cell, 2))
    draw.text((4, 4), "rows: A, columns: B", fill="black")
    bar_h = max(64, p * cell)
    img.paste(Image.fromarray(colorbar(colormap, bar_h, 14)), (label_w + q * cell + 10, label_h))
    draw.text((label_w + q * cell + 28, label_h - 4), "1", fill="black")
    draw.text((label_w + q * cell + 28, label_h + bar_h - 8), "0", fill="black")
    return img
