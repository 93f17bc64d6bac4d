"""The live pipeline, Qt-free: newest frame → preprocess → forward (hooked layer only) → tile.

A :class:`LiveRunner` runs :class:`LivePipeline` on a worker thread and feeds it from a
:class:`FrameSlot`, a mailbox with room for one frame: a frame that arrives while the model is busy
replaces the waiting one (counted as dropped), so the display is never more than one frame behind
the camera and nothing queues up (the Deep Visualization Toolbox did the same).
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
from explorer.core.models.spec import LoadedModel
from explorer.core.preprocess import fit_image
from explorer.core.probe import default_layer as probe_default_layer
from explorer.core.probe import leaves_of
from explorer.core.tiling import GridLayout, activation_grid

STAGES = ("preprocess", "forward", "tile", "display")


class FrameSlot:
    """A one-item mailbox shared by one producer and one consumer thread.

    ``put`` never blocks: it replaces what is waiting and says whether it did (a dropped item).
    ``take`` blocks until an item is there, the timeout passes (None) or the slot is closed (None).
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
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def take_nowait(self) -> Any:
        with self._cond:
            item, self._item, self._full = self._item, None, False
            return item

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


class LivePipeline:
    """Preprocess, forward with a hook on the shown layer only, and tile; timed per stage.

    Parameters
    ----------
    loaded : the model; it is shared with the rest of the app, so ``half``/``channels_last`` work on a copy.
    layer : name of the module whose output is shown (``named_modules`` name, e.g. ``layer1``).
    half : run the forward in float16 (CUDA only; ignored elsewhere).
    channels_last : use the channels-last memory format (CUDA only; ignored elsewhere).
    """

    def __init__(self, loaded: LoadedModel, layer: str | None = None, unit: int | None = None,
                 fit: str = "crop", half: bool = False, channels_last: bool = False) -> None:
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
        self.fit = fit
        spec = loaded.spec
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.layer = layer or default_layer(module)
        self.unit = unit
        self._pinned_in: torch.Tensor | None = None

    def set_layer(self, name: str) -> None:
        if name not in self.modules:
            raise InputError(f"no layer named {name!r} in {self.loaded.name}")
        self.layer = name

    def set_unit(self, unit: int | None) -> None:
        self.unit = unit

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(H, W, 3) uint8 → ((1, C, h, w) normalised input on the device, (h, w, 3) fitted uint8)."""
        spec = self.loaded.spec
        fitted = fit_image(image, spec.size, self.fit)
        x = torch.from_numpy(fitted)
        if self.device.type == "cuda":
            if self._pinned_in is None or self._pinned_in.shape != x.shape:
                self._pinned_in = torch.empty(x.shape, dtype=torch.uint8).pin_memory()
            self._pinned_in.copy_(x)
            x = self._pinned_in.to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        if spec.channels == 1:
            # ITU-R 601 luma, as Pillow's "L" conversion
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - self._mean) / self._std
        if self.half:
            x = x.half()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, fitted

    def forward(self, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model with one hook on ``layer``; returns (its output[0], the model's output)."""
        captured: list[torch.Tensor] = []
        me = threading.get_ident()

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            # Other panels may run the same module on the GUI thread meanwhile: keep only our call.
            if threading.get_ident() == me and not captured:
                out = output[0] if isinstance(output, (tuple, list)) else output
                captured.append(out.detach())

        handle = self.modules[layer].register_forward_hook(hook)
        try:
            with torch.inference_mode():
                out = self.module(x)
        finally:
            handle.remove()
        if not captured:
            raise InputError(f"layer {layer!r} did not run in the forward pass")
        if isinstance(out, (tuple, list)):
            out = out[0]
        return captured[0][0], out

    def follow_device(self) -> None:
        """Move along when the shared model was moved to another device (the app's device switch)."""
        if self.module is not self.loaded.module:
            return  # a half / channels-last copy of our own stays where it is
        param = next(self.module.parameters(), None)
        if param is not None and param.device != self.device:
            self.device = param.device
            self._mean = self._mean.to(self.device)
            self._std = self._std.to(self.device)
            self._pinned_in = None

    def process(self, frame: LiveFrame) -> LiveResult:
        layer, unit = self.layer, self.unit  # read once: changes take effect on the next frame
        self.follow_device()
        t0 = time.perf_counter()
        x, fitted = self.preprocess(frame.image)
        t1 = time.perf_counter()
        act, out = self.forward(x, layer)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        with torch.inference_mode():
            act = act.float()
            grid, layout = activation_grid(act, norm="layer")
            grid8 = grid.mul_(255.0).round_().to(torch.uint8)
            unit_t = None
            if unit is not None and 0 <= unit < layout.count:
                unit_t = act[unit] if act.dim() == 3 else act.reshape(layout.count, -1)[unit].view(1, -1)
            top = int(out.reshape(out.shape[0], -1)[0].argmax()) if out.dim() >= 2 and out.numel() else None
            grid_np = _to_host(grid8)
            unit_np, unit_levels = None, (0.0, 1.0)
            if unit_t is not None:
                lo, hi = (float(v) for v in torch.aminmax(unit_t))
                unit_np, unit_levels = _to_host(unit_t.float()), (lo, hi if hi > lo else lo + 1e-6)
        t3 = time.perf_counter()
        return LiveResult(frame=frame, model_input=fitted, layer=layer, unit=unit, grid=grid_np, layout=layout,
                          unit_map=unit_np, top_class=top, unit_levels=unit_levels,
                          timings={"preprocess": t1 - t0, "forward": t2 - t1, "tile": t3 - t2}, done=t3)


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
    """Runs a :class:`LivePipeline` on a worker thread, always on the newest submitted frame.

    ``on_result(result)`` and ``on_error(message)`` are called on the worker thread.
    """

    def __init__(self, pipeline: LivePipeline, on_result: Callable[[LiveResult], None],
                 on_error: Callable[[str], None] | None = None) -> None:
        self.pipeline = pipeline
        self.on_result = on_result
        self.on_error = on_error
        self.slot = FrameSlot()
        self.dropped = 0
        self.processed = 0
        self.submitted = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="deep-explorer-live", daemon=True)
        self._thread.start()

    def submit(self, frame: LiveFrame) -> bool:
        """Hand over the newest frame; True when it replaced a waiting one (that one is dropped)."""
        self.submitted += 1
        replaced = self.slot.put(frame)
        if replaced:
            self.dropped += 1
        return replaced

    def _run(self) -> None:
        while not self.slot.closed:
            frame = self.slot.take(timeout=0.1)
            if frame is None:
                continue
            try:
                result = self.pipeline.process(frame)
            except Exception as exc:  # noqa: BLE001 - reported to the user, the loop goes on
                self.failed += 1
                if self.on_error is not None:
                    self.on_error(f"live inference failed: {exc}")
                continue
            if not self.slot.closed:
                self.on_result(result)
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
        """Stop the worker and wait for it (a forward in progress finishes first)."""
        self.slot.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


# --- the bare forward, the live pipeline's baseline ------------------------------------------------


def bare_forward_on_worker(pipeline, images: list[np.ndarray], budget_s: float, min_count: int = 5,
                           wait=None) -> tuple[int, float]:
    """:func:`bare_forward` on a thread of its own, as the live worker runs (a thread's intra-op
    parallelism can differ from the main thread's, most of all on a busy machine).
    ``wait(seconds)``, when given, is called until the thread ends (the bench keeps Qt's event loop
    turning meanwhile, so the video does not pile up frames for the next live round)."""
    out: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
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
        pipeline.module(inputs[0])  # warm-up
        if cuda:
            torch.cuda.synchronize(pipeline.device)
        start = time.perf_counter()
        while count < max(5, min_count) or elapsed < budget_s:
            pipeline.module(inputs[count % len(inputs)])
            if cuda:
                torch.cuda.synchronize(pipeline.device)
            count += 1
            elapsed = time.perf_counter() - start
    return count, elapsed
