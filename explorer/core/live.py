"""The live pipeline, Qt-free: newest frame → preprocess → forward (hooked layer only) → tile.

A :class:`LiveRunner` runs :class:`LivePipeline`'s three stages on three threads, overlapped: while the
model runs frame n, frame n+1 is decoded and preprocessed and frame n−1's grid is tiled and handed to
the display. Each stage holds at most one item and takes a new one only once the next stage has taken
its last, so nothing queues; frames that arrive meanwhile replace each other in a :class:`FrameSlot`
(counted as dropped) at the first stage: the newest frame wins and the display stays about one forward
pass behind the camera (the Deep Visualization Toolbox kept one waiting frame too).
The forward thread keeps torch's intra-op thread count; the two helper stages run with one thread each,
so that on a small CPU their short operations do not start thread teams that fight the forward's.
The GUI and ``deep-explorer bench live`` are two thin callers of this module.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from explorer.core.errors import InputError
from explorer.core.fold import FoldedForward
from explorer.core.models.spec import LoadedModel
from explorer.core.preprocess import FIT_MODES
from explorer.core.probe import default_layer as probe_default_layer
from explorer.core.probe import layer_and_output, leaves_of
from explorer.core.tiling import GridLayout, activation_grid
from explorer.core.traced import traced_forward

STAGES = ("preprocess", "forward", "tile", "display")
RUNNER_STAGES = ("prepare", "forward", "tile")  # the worker threads of :class:`LiveRunner`
JUST_IN_TIME_MARGIN_S = 0.003  # the prepare stage starts this much earlier than it needs to
AUTO_THREADS_FRAMES = 4  # forwards timed per thread count when the runner chooses it
AUTO_THREADS_EVERY = 300  # forwards between two such measurements


class FrameSlot:
    """A one-item mailbox shared by one producer and one consumer thread.

    ``put`` never blocks: it replaces what is waiting and says whether it did (a dropped item).
    ``take`` blocks until an item is there, the timeout passes (None) or the slot is closed (None).
    ``wait_empty`` lets a producer wait until its last item was taken (the pipeline's back-pressure).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Leave ``item`` for the consumer; True when it replaced one that was never taken."""
        with self._cond:
            replaced = self._full
            self._item, self._full = item, True
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float | None = None, on_take: Callable[[], None] | None = None) -> Any:
        """The waiting item, or None. ``on_take()`` runs when an item is taken, before a producer waiting
        in :meth:`wait_empty` can see the slot empty."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            if on_take is not None:
                on_take()
            self._cond.notify_all()
            return item

    def take_nowait(self) -> Any:
        with self._cond:
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until the slot is empty; False when it is still full after ``timeout`` or closed."""
        with self._cond:
            if self._full and not self._closed:
                self._cond.wait_for(lambda: not self._full or self._closed, timeout)
            return not self._full and not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def full(self) -> bool:
        return self._full


class LiveFrame:
    """One captured frame and when it arrived (``time.perf_counter()`` seconds).

    ``image`` is (H, W, 3) uint8 RGB. A source may hand over ``decode`` instead, a function that makes
    the image: it runs on first use, on the worker thread, so frames that are dropped are never
    converted and the GUI thread stays free.
    """

    __slots__ = ("_image", "_decode", "arrived", "index")

    def __init__(self, image: np.ndarray | None = None, arrived: float = 0.0, index: int = 0,
                 decode: Callable[[], np.ndarray | None] | None = None) -> None:
        if image is None and decode is None:
            raise ValueError("a frame needs an image or a way to decode one")
        self._image, self._decode = image, decode
        self.arrived, self.index = arrived, index

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            image = self._decode() if self._decode is not None else None
            if image is None:
                raise InputError("the frame could not be decoded")
            self._image, self._decode = image, None
        return self._image


@dataclass
class LiveResult:
    """What the display needs for one frame; every array is fresh (never written to again)."""

    frame: LiveFrame
    model_input: np.ndarray  # (h, w, 3) uint8: the frame fitted to the model's input size
    layer: str
    unit: int | None
    grid: np.ndarray  # (H, W) uint8, levels 0..255: the whole layer tiled, scaled over the layer
    layout: GridLayout  # where each channel's tile sits in ``grid``
    unit_map: np.ndarray | None  # (h, w) float32 activation of the selected unit
    top_class: int | None
    unit_levels: tuple[float, float] = (0.0, 1.0)  # display range of ``unit_map``
    timings: dict[str, float] = field(default_factory=dict)  # stage name → seconds
    done: float = 0.0  # perf_counter when the worker finished
    aspect: float | None = None  # width / height the grid's columns were chosen for (None: a square grid)
    grid_levels: tuple[float, float] = (0.0, 1.0)  # the layer's min and max: what grid levels 0 and 255 stand for


class LivePipeline:
    """Preprocess, forward with a hook on the shown layer only, and tile; timed per stage.

    Parameters
    ----------
    loaded : the model; it is shared with the rest of the app, so ``half``/``channels_last`` work on a copy.
    layer : name of the module whose output is shown (``named_modules`` name, e.g. ``layer1``).
    half : run the forward in float16 (CUDA only; ignored elsewhere).
    channels_last : use the channels-last memory format (CUDA only; ignored elsewhere).
    fold : on the CPU, run a copy with the batch norms folded into their convolutions, channels-last
        where that gives the same output (:class:`explorer.core.fold.FoldedForward`; resnet18 at 224 on
        2 threads: about 10 % faster). What is shown does not change: the shown layer's own output is
        never a folded one. The copy is made on the first forward pass.
    trace : on the CPU, run the forward pass as one TorchScript graph traced for the shown layer
        (:func:`explorer.core.traced.traced_forward`: frozen, optimised for inference, checked against the
        model; ResNet-18 at 224 on 2 threads 21–22 ms against 23–25 folded and 27–29 as it is, and no
        Python between its operations). Made on the first forward pass of each layer shown (about
        0.3 s for ResNet-18), for that layer only; where it cannot be made the folded copy runs.
    """

    def __init__(self, loaded: LoadedModel, layer: str | None = None, unit: int | None = None,
                 fit: str = "crop", half: bool = False, channels_last: bool = False, fold: bool = True,
                 trace: bool = True) -> None:
        self.loaded = loaded
        self.device = loaded.device
        cuda = self.device.type == "cuda"
        self.half = half and cuda
        self.channels_last = channels_last and cuda
        module = loaded.module
        if self.half or self.channels_last:
            module = copy.deepcopy(module)
            if self.half:
                module = module.half()
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
        self.module: nn.Module = module
        self.modules = dict(module.named_modules())
        self.fold = fold
        self.trace = trace
        self._traced: tuple[str, Any] | None = None  # (layer, its traced graph or None)
        self._folded: FoldedForward | None = None
        self._fold_lock = threading.Lock()
        self.fit = fit
        spec = loaded.spec
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * self._std), self._mean / self._std
        self.layer = layer or default_layer(module)
        self.unit = unit
        self.grid_aspect: float | None = None  # the display's grid pane, width / height (None: square grid)
        self._pinned_in: torch.Tensor | None = None
        self._pinned_copied: Any = None  # a CUDA event: the last copy out of ``_pinned_in`` is done

    def set_layer(self, name: str) -> None:
        if name not in self.modules:
            raise InputError(f"no layer named {name!r} in {self.loaded.name}")
        self.layer = name

    def set_unit(self, unit: int | None) -> None:
        self.unit = unit

    def set_grid_aspect(self, aspect: float | None) -> None:
        """Lay the grid's tiles out to fill a pane of this width / height from the next frame on
        (:func:`explorer.core.tiling.fitted_layout`); None: a square grid."""
        self.grid_aspect = float(aspect) if aspect and aspect > 0 else None

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(H, W, 3) uint8 → ((1, C, h, w) normalised input on the device, (h, w, 3) fitted uint8).

        The frame is resized while still uint8 (:func:`fit_frame`, torch's vectorised antialiased
        kernel), and only the model-sized result becomes float: no full-size float copy is made.
        On the CPU the input is made NCHW-contiguous (the layout the CPU convolutions run fastest on)."""
        spec = self.loaded.spec
        fitted = fit_frame(image, spec.size, self.fit)
        x = torch.from_numpy(fitted)
        if self.device.type == "cuda":
            if self._pinned_in is None or self._pinned_in.shape != x.shape:
                self._pinned_in = torch.empty(x.shape, dtype=torch.uint8).pin_memory()
            elif self._pinned_copied is not None:
                # the previous frame's copy out of this buffer may still be queued behind a forward pass
                self._pinned_copied.synchronize()
            self._pinned_in.copy_(x)
            x = self._pinned_in.to(self.device, non_blocking=True)
            self._pinned_copied = torch.cuda.Event()
            self._pinned_copied.record(torch.cuda.current_stream(self.device))
        x = x.permute(2, 0, 1).unsqueeze(0).to(torch.float32, memory_format=torch.contiguous_format)
        if spec.channels == 1:
            # ITU-R 601 luma, as Pillow's "L" conversion
            x = x.div_(255.0)
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = (x - self._mean) / self._std
        else:
            # (x / 255 - mean) / std in two in-place passes over the model-sized tensor
            x = x.mul_(self._scale).sub_(self._shift)
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, fitted

    def module_for(self, layer: str) -> tuple[nn.Module, bool]:
        """(the module the forward pass runs while ``layer`` is shown, whether it takes channels-last
        input): the folded copy on the CPU (see ``fold``), else the model itself."""
        if not self.fold or self.device.type != "cpu" or self.half:
            return self.module, self.channels_last
        with self._fold_lock:
            if self._folded is None or self._folded.model is not self.module:
                spec = self.loaded.spec
                with torch.inference_mode(False):  # the probe's autograd graph finds the pairs
                    probe = torch.zeros((1, spec.channels, *spec.size), device=self.device)
                    self._folded = FoldedForward(self.module, probe)
            return self._folded.for_layer(layer)

    def traced_for(self, layer: str) -> Any:
        """The traced graph x → (layer output, model output) for ``layer`` (see ``trace``), or None."""
        if not self.trace or self.device.type != "cpu" or self.half:
            return None
        module, channels_last = self.module_for(layer)
        with self._fold_lock:
            if self._traced is None or self._traced[0] != layer:
                spec = self.loaded.spec
                with torch.inference_mode(False):
                    probe = torch.zeros((1, spec.channels, *spec.size), device=self.device)
                    if channels_last:
                        probe = probe.contiguous(memory_format=torch.channels_last)
                    self._traced = (layer, traced_forward(module, layer, probe, reference=self.module))
            return self._traced[1]

    def bare(self, x: torch.Tensor) -> Any:
        """The module alone on a preprocessed input (no hook): what :func:`bare_forward` times; the traced
        graph where the live forward runs one (it returns the layer's output too, as the live pass needs)."""
        traced = self.traced_for(self.layer)
        if traced is not None:
            return traced(x)
        module, channels_last = self.module_for(self.layer)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return module(x)

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model with one hook on ``layer`` (:func:`~explorer.core.probe.layer_and_output`; for a module
        that runs several times, its last output, as the layer views show); returns (its output[0], the
        model's output)."""
        traced = self.traced_for(layer)
        if traced is not None:
            with torch.inference_mode():
                act, out = traced(x)
            return act[0], out
        module, channels_last = self.module_for(layer)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            act, out = layer_and_output(module, layer, x)
        return act[0], out

    def follow_device(self) -> None:
        """Move along when the shared model was moved to another device (the app's device switch)."""
        if self.module is not self.loaded.module:
            return  # a half / channels-last copy of our own stays where it is
        param = next(self.module.parameters(), None)
        if param is not None and param.device != self.device:
            self.device = param.device
            self._mean = self._mean.to(self.device)
            self._std = self._std.to(self.device)
            self._scale, self._shift = self._scale.to(self.device), self._shift.to(self.device)
            self._pinned_in = self._pinned_copied = None
            with self._fold_lock:
                self._folded = self._traced = None  # their weights stayed on the old device

    # ---- the three stages (LiveRunner runs each on its own thread; process() runs them in series) ----
    def prepare(self, frame: LiveFrame) -> "Prepared":
        """Stage 1: decode the frame (when the source handed it over undecoded) and preprocess it."""
        self.follow_device()
        t0 = time.perf_counter()
        x, fitted = self.preprocess(frame.image)
        return Prepared(frame, x, fitted, time.perf_counter() - t0)

    def infer(self, prepared: "Prepared") -> "Inferred":
        """Stage 2: the hooked forward pass. The layer and unit are read here, once: a change takes
        effect on the next frame to reach the model."""
        layer, unit, aspect = self.layer, self.unit, self.grid_aspect
        x = prepared.x
        if x.device != self.device:  # the model moved while this frame was being prepared
            x = x.to(self.device)
        t1 = time.perf_counter()
        act, out = self.forward(x, layer)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return Inferred(prepared, layer, unit, act, out, time.perf_counter() - t1, aspect)

    def finish(self, inferred: "Inferred") -> LiveResult:
        """Stage 3: tile the layer into the uint8 grid and bring what the display needs to the host."""
        act, out, unit = inferred.act, inferred.out, inferred.unit
        t2 = time.perf_counter()
        with torch.inference_mode():
            act = act.float()
            grid, layout = activation_grid(act, norm="layer", aspect=inferred.aspect)
            grid8 = grid.mul_(255.0).round_().to(torch.uint8)
            unit_t = None
            if unit is not None and 0 <= unit < layout.count:
                unit_t = act[unit] if act.dim() == 3 else act.reshape(layout.count, -1)[unit].view(1, -1)
            top = int(out.reshape(out.shape[0], -1)[0].argmax()) if out.dim() >= 2 and out.numel() else None
            grid_np = _to_host(grid8)
            grid_levels = tuple(float(v) for v in torch.aminmax(act))  # as activation_grid's "layer" scaling
            unit_np, unit_levels = None, (0.0, 1.0)
            if unit_t is not None:
                lo, hi = (float(v) for v in torch.aminmax(unit_t))
                unit_np, unit_levels = _to_host(unit_t.float()), (lo, hi if hi > lo else lo + 1e-6)
        t3 = time.perf_counter()
        prepared = inferred.prepared
        return LiveResult(frame=prepared.frame, model_input=prepared.fitted, layer=inferred.layer, unit=unit,
                          grid=grid_np, layout=layout, unit_map=unit_np, top_class=top, unit_levels=unit_levels,
                          timings={"preprocess": prepared.seconds, "forward": inferred.seconds, "tile": t3 - t2},
                          done=t3, aspect=inferred.aspect, grid_levels=grid_levels)

    def process(self, frame: LiveFrame) -> LiveResult:
        """The three stages in series on the calling thread."""
        return self.finish(self.infer(self.prepare(frame)))


@dataclass
class Prepared:
    """A frame after stage 1: the model's input tensor and the fitted uint8 image it was made from."""

    frame: LiveFrame
    x: torch.Tensor
    fitted: np.ndarray
    seconds: float


@dataclass
class Inferred:
    """A frame after stage 2: the hooked layer's output (first sample) and the model's output."""

    prepared: Prepared
    layer: str
    unit: int | None
    act: torch.Tensor
    out: torch.Tensor
    seconds: float
    aspect: float | None = None


def fit_frame(image: np.ndarray, size: tuple[int, int], mode: str = "crop") -> np.ndarray:
    """(H, W, 3) uint8 → (h, w, 3) uint8 fitted to ``size`` = (h, w), as
    :func:`explorer.core.preprocess.fit_image` (same geometry: ``crop`` scales the shorter side and cuts
    the centre, ``stretch`` scales each axis, ``letterbox`` pads with black), with torch's antialiased
    bilinear kernel on uint8 (vectorised; Pillow's filter, pixels within 1 level of Pillow's) instead of
    a round trip through a PIL image."""
    if mode not in FIT_MODES:
        raise InputError(f"fit mode must be one of {', '.join(FIT_MODES)}, not {mode!r}")
    th, tw = size
    h, w = image.shape[:2]
    if (h, w) == (th, tw):
        return np.array(image, dtype=np.uint8, copy=True)
    if mode == "stretch":
        nh, nw = th, tw
    elif mode == "crop":
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    else:
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if not image.flags.writeable or image.dtype != np.uint8:
        image = np.array(image, dtype=np.uint8)
    # (1, 3, H, W) with channels-last strides: the layout torch's uint8 antialiased kernel takes directly
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        resized = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True,
                                                  align_corners=False)[0].permute(1, 2, 0)
    if mode == "letterbox":
        out = np.zeros((th, tw, 3), np.uint8)
        top, left = (th - nh) // 2, (tw - nw) // 2
        out[top:top + nh, left:left + nw] = resized.numpy()
        return out
    top, left = (nh - th) // 2, (nw - tw) // 2
    return np.ascontiguousarray(resized[top:top + th, left:left + tw].numpy())


def _to_host(t: torch.Tensor) -> np.ndarray:
    """A fresh C-contiguous host array (on CUDA through pinned memory and a non-blocking copy)."""
    if t.device.type == "cuda":
        host = torch.empty(t.shape, dtype=t.dtype).pin_memory()
        host.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        return host.numpy()
    return np.ascontiguousarray(t.numpy()).copy()


def default_layer(module: nn.Module) -> str:
    """The layer shown when none is chosen: :func:`explorer.core.probe.default_layer`'s rule."""
    name = probe_default_layer(leaves_of(module))
    if name is None:
        raise InputError("the model has no layers to show")
    return name


class LiveStats:
    """Rolling figures for the status bar: frames shown per second, per-stage latency, dropped frames."""

    def __init__(self, window: int = 60) -> None:
        self.shown_times: deque[float] = deque(maxlen=window)
        self.stage_times: dict[str, deque[float]] = {s: deque(maxlen=window) for s in STAGES}
        self.latencies: deque[float] = deque(maxlen=window)
        self.dropped = 0
        self.shown = 0
        self.arrived = 0

    def record(self, timings: dict[str, float], arrived: float, shown_at: float) -> None:
        self.shown += 1
        self.shown_times.append(shown_at)
        self.latencies.append(shown_at - arrived)
        for stage, seconds in timings.items():
            if stage in self.stage_times:
                self.stage_times[stage].append(seconds)

    @property
    def fps(self) -> float:
        t = self.shown_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0

    def summary(self) -> dict[str, float]:
        """``fps``, ``<stage>_ms`` (medians), ``latency_ms`` (arrival → shown, median), ``dropped``, ``shown``."""
        out: dict[str, float] = {"fps": self.fps}
        for stage, values in self.stage_times.items():
            out[f"{stage}_ms"] = float(np.median(values)) * 1e3 if values else 0.0
        out["latency_ms"] = float(np.median(self.latencies)) * 1e3 if self.latencies else 0.0
        out["dropped"] = self.dropped
        out["shown"] = self.shown
        return out


def format_stats(s: dict[str, float]) -> str:
    """One status-bar line, e.g. ``24.8 fps · pre 1.2 · fwd 35.0 · tile 0.8 · show 2.1 ms · 12 dropped``."""
    return (f"{s['fps']:.1f} fps · pre {s['preprocess_ms']:.1f} · fwd {s['forward_ms']:.1f} · "
            f"tile {s['tile_ms']:.1f} · show {s['display_ms']:.1f} ms · latency {s['latency_ms']:.0f} ms · "
            f"{int(s['dropped'])} dropped")


class LiveRunner:
    """Runs a :class:`LivePipeline` on three overlapped worker threads, always on the newest frame.

    prepare (decode + preprocess) → forward → tile, joined by one-item slots. A stage takes a new item
    only once the next stage has taken its last one, so each stage holds at most one item (being worked
    on, or done and waiting to be handed on) and the only frames dropped are those replaced in the
    first slot, :attr:`slot`, before the prepare stage took them.

    ``forward_threads``: torch intra-op threads of the forward thread. None (the default) chooses by
    measuring: the creating thread's ``torch.get_num_threads()`` and 1 are each timed on a few frames, the
    faster is kept, and the choice is measured again every :data:`AUTO_THREADS_EVERY` frames (on a quiet
    2-core machine two threads run ResNet-18 faster; on a busy one, a two-thread team waits for its
    second thread at every operation and one thread is many times faster; see :attr:`thread_ms`).
    ``helper_threads``: those of the prepare and tile threads (default 1).
    ``just_in_time``: while the model is busy, the prepare stage waits until it is about to finish
    before it takes the newest frame (fresher frames, lower latency; see :meth:`_wait_until_needed`).
    ``serial``: the three stages one after the other on one thread (the forward's), as before the
    pipeline was overlapped; ``bench live --serial`` measures it against the overlapped runner.
    ``on_result(result)`` and ``on_error(message)`` are called on the tile thread (errors: on the thread
    of the stage that failed).
    """

    def __init__(self, pipeline: LivePipeline, on_result: Callable[[LiveResult], None],
                 on_error: Callable[[str], None] | None = None, forward_threads: int | None = None,
                 helper_threads: int = 1, just_in_time: bool = True, serial: bool = False) -> None:
        self.pipeline = pipeline
        self.on_result = on_result
        self.on_error = on_error
        default_threads = self.default_threads = torch.get_num_threads()
        self.forward_threads = forward_threads or default_threads  # the forward thread's count now
        # the counts to choose from by measuring (one: fixed), and their median forward ms when measured
        self.thread_choices = [self.forward_threads] if forward_threads or default_threads == 1 else [default_threads, 1]
        self.thread_ms: dict[int, float] = {}
        self._thread_samples: dict[int, list[float]] = {n: [] for n in self.thread_choices}
        self._probing = len(self.thread_choices) > 1
        self._since_probe = 0
        self.helper_threads = max(1, helper_threads)
        self.slot = FrameSlot()  # frames waiting for the prepare stage (newest wins)
        self._to_forward = FrameSlot()
        self._to_tile = FrameSlot()
        self.dropped = 0
        self.processed = 0
        self.submitted = 0
        self.failed = 0
        self._lock = threading.Lock()
        self.held = {stage: 0 for stage in RUNNER_STAGES}  # items each stage holds now
        self.peak_held = dict(self.held)  # the most each stage ever held at once
        self.just_in_time = just_in_time
        self._mean_s: dict[str, float | None] = {stage: None for stage in RUNNER_STAGES}  # running means
        self._forward_started = 0.0
        self.serial = serial
        stages = ([("forward", self.slot, None, pipeline.process)] if serial else
                  [("prepare", self.slot, self._to_forward, pipeline.prepare),
                   ("forward", self._to_forward, self._to_tile, pipeline.infer),
                   ("tile", self._to_tile, None, pipeline.finish)])
        self._threads_set = threading.Barrier(len(stages) + 1)  # the stages and this thread
        self._threads = [threading.Thread(target=self._stage_loop, args=args, name=f"deep-explorer-live-{args[0]}",
                                          daemon=True) for args in stages]
        for thread in self._threads:
            thread.start()
        try:
            self._threads_set.wait(timeout=5.0)
        except threading.BrokenBarrierError:
            pass
        torch.set_num_threads(default_threads)  # threads started later inherit the count they did before

    @property
    def _thread(self) -> threading.Thread:  # the forward thread (kept for callers of the one-thread runner)
        return self._threads[0 if self.serial else 1]

    def submit(self, frame: LiveFrame) -> bool:
        """Hand over the newest frame; True when it replaced a waiting one (that one is dropped)."""
        with self._lock:
            self.submitted += 1
        replaced = self.slot.put(frame)
        if replaced:
            with self._lock:
                self.dropped += 1
        return replaced

    def _move(self, source: str | None, target: str | None) -> None:
        """One item passes from stage ``source`` to stage ``target`` (None: from outside / out of the runner)."""
        with self._lock:
            if source is not None:
                self.held[source] -= 1
            if target is not None:
                self.held[target] += 1
                self.peak_held[target] = max(self.peak_held[target], self.held[target])
                if target == "forward":
                    self._forward_started = time.perf_counter()

    def _choose_threads(self, stage: str, seconds: float | None) -> None:
        """After each forward: time the thread counts in turn (the first frame after a switch warms up
        and is not counted), keep the faster, and measure again every AUTO_THREADS_EVERY frames."""
        if stage != "forward" or seconds is None or len(self.thread_choices) < 2:
            return
        if not self._probing:
            self._since_probe += 1
            if self._since_probe >= AUTO_THREADS_EVERY:
                self._probing, self._since_probe = True, 0
                self._thread_samples = {n: [] for n in self.thread_choices}
                self._thread_samples[self.forward_threads].append(float("nan"))  # this count is warm
            return
        samples = self._thread_samples[self.forward_threads]
        samples.append(seconds)
        if len(samples) <= AUTO_THREADS_FRAMES:
            return
        untimed = [n for n in self.thread_choices if len(self._thread_samples[n]) <= AUTO_THREADS_FRAMES]
        if untimed:
            self._use_threads(untimed[0])
            return
        self.thread_ms = {n: float(np.median(v[1:])) * 1e3 for n, v in self._thread_samples.items()}
        self._probing = False
        self._use_threads(min(self.thread_choices, key=lambda n: self.thread_ms[n]))

    @property
    def measuring_threads(self) -> bool:
        """True while the forward thread counts are being timed (``forward_threads`` is then on trial)."""
        return self._probing

    def _use_threads(self, count: int) -> None:
        if count != self.forward_threads:
            torch.set_num_threads(count)  # on the forward thread: its own count (and the default, see stop)
            self.forward_threads = count

    def _timed(self, stage: str, started: float) -> None:
        seconds = time.perf_counter() - started
        with self._lock:
            mean = self._mean_s[stage]
            self._mean_s[stage] = seconds if mean is None else mean + 0.2 * (seconds - mean)

    def _wait_until_needed(self) -> None:
        """Let the prepare stage start on the newest frame just in time for the forward stage: when the
        model is busy, wait until it is about to finish (its mean time less twice the mean prepare time
        and a margin), so that the frame it gets next is as fresh as it can be. Nothing is held meanwhile."""
        while not self.slot.closed:
            with self._lock:
                busy = self.held["forward"] > 0
                forward, prepare = self._mean_s["forward"], self._mean_s["prepare"]
                started = self._forward_started
            if not busy or forward is None or prepare is None:
                return
            wait = started + forward - 2.0 * prepare - JUST_IN_TIME_MARGIN_S - time.perf_counter()
            if wait <= 0:
                return
            time.sleep(min(wait, 0.05))

    def _set_threads(self, stage: str) -> None:
        # torch's intra-op count is per thread once set, but setting it also changes the default that
        # threads started later inherit: the creating thread restores that once all three have set theirs.
        # A thread takes the default at its first use of torch's thread pool, which would undo a count
        # set before it: use it first (get_num_threads does), then set.
        torch.get_num_threads()
        torch.set_num_threads(self.forward_threads if stage == "forward" else self.helper_threads)
        try:
            self._threads_set.wait(timeout=5.0)
        except threading.BrokenBarrierError:
            pass

    def _stage_loop(self, stage: str, inbox: FrameSlot, outbox: FrameSlot | None, work: Callable) -> None:
        self._set_threads(stage)
        previous = RUNNER_STAGES[RUNNER_STAGES.index(stage) - 1] if stage != "prepare" and not self.serial else None
        while not inbox.closed:
            # hold one item at most: wait until the next stage has taken the last one
            if outbox is not None and not outbox.wait_empty(timeout=0.1):
                continue
            if stage == "prepare" and self.just_in_time:
                self._wait_until_needed()
            item = inbox.take(timeout=0.1, on_take=lambda: self._move(previous, stage))
            if item is None:
                continue
            started = time.perf_counter()
            try:
                done = work(item)
                self._timed(stage, started)
                if stage == "forward":
                    self._choose_threads(stage, done.timings["forward"] if isinstance(done, LiveResult)
                                         else done.seconds)
            except Exception as exc:  # noqa: BLE001 - reported to the user, the loop goes on
                self._move(stage, None)
                with self._lock:
                    self.failed += 1
                if self.on_error is not None:
                    self.on_error(f"live inference failed: {exc}")
                continue
            if outbox is not None:
                outbox.put(done)  # empty: only this thread fills it, after waiting for it to empty
                continue
            if not inbox.closed:
                self.on_result(done)
            self._move(stage, None)
            with self._lock:
                self.processed += 1

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no frame is waiting or being processed; False on timeout."""
        deadline = time.perf_counter() + timeout
        while self.processed + self.failed + self.dropped < self.submitted:
            if time.perf_counter() > deadline:
                return False
            time.sleep(0.002)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers and wait for them (a forward in progress finishes first)."""
        for slot in (self.slot, self._to_forward, self._to_tile):
            slot.close()
        me = threading.current_thread()
        for thread in self._threads:
            if thread.is_alive() and thread is not me:
                thread.join(timeout)
        if len(self.thread_choices) > 1:
            torch.set_num_threads(self.default_threads)  # the default the forward thread's choice changed

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)


# --- the bare forward, the live pipeline's baseline ------------------------------------------------


def bare_forward_on_worker(pipeline, images: list[np.ndarray], budget_s: float, min_count: int = 5,
                           wait=None, threads: int | None = None) -> tuple[int, float]:
    """:func:`bare_forward` on a thread of its own, as the live forward stage runs (a thread's intra-op
    parallelism can differ from the main thread's, most of all on a busy machine), with ``threads``
    intra-op threads (the live runner's ``forward_threads``; default: torch's current count).
    ``wait(seconds)``, when given, is called until the thread ends (the bench keeps Qt's event loop
    turning meanwhile, so the video does not pile up frames for the next live round)."""
    out: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if threads:
                torch.set_num_threads(threads)
            out.append(bare_forward(pipeline, images, budget_s, min_count))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="deep-explorer-bare-forward")
    worker.start()
    while wait is not None and worker.is_alive():
        wait(0.02)
    worker.join()
    if errors:
        raise errors[0]
    return out[0]


def bare_forward(pipeline, images: list[np.ndarray], budget_s: float, min_count: int = 5) -> tuple[int, float]:
    """Time the pipeline's module alone (no hooks, no tiling, no display) on ``images``, preprocessed
    beforehand, cycling through them: at least ``min_count`` (and 5) passes, then until ``budget_s``.
    Returns (passes, seconds)."""
    inputs = [pipeline.preprocess(im)[0] for im in images[:64]]
    cuda = pipeline.device.type == "cuda"
    count, elapsed = 0, 0.0
    with torch.inference_mode():
        pipeline.bare(inputs[0])  # warm-up (and the folded copy made)
        if cuda:
            torch.cuda.synchronize(pipeline.device)
        start = time.perf_counter()
        while count < max(5, min_count) or elapsed < budget_s:
            pipeline.bare(inputs[count % len(inputs)])
            if cuda:
                torch.cuda.synchronize(pipeline.device)
            count += 1
            elapsed = time.perf_counter() - start
    return count, elapsed
