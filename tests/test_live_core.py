"""The Qt-free live pipeline: one-slot mailbox, hooked forward, tiled grid, worker thread."""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
import pytest

from explorer.core.live import (RUNNER_STAGES, FrameSlot, LiveFrame, LivePipeline, LiveRunner, LiveStats, default_layer,
                                fit_frame)
from explorer.core.preprocess import FIT_MODES, fit_image, image_to_tensor

from live_fixtures import layer_output, naive_layer_grid, tiny_model


def frame(seed: int, shape=(48, 64)) -> LiveFrame:
    rng = np.random.default_rng(seed)
    return LiveFrame(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), time.perf_counter(), seed)


def test_frame_slot_keeps_only_the_newest_item():
    slot = FrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped
    assert slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None


def test_frame_slot_close_wakes_a_waiting_consumer():
    slot = FrameSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    t.start()
    time.sleep(0.05)
    slot.close()
    t.join(1)
    assert not t.is_alive() and got == [None]


def test_pipeline_grid_matches_naive_tiling_of_hooked_activations():
    loaded = tiny_model()
    pipe = LivePipeline(loaded, layer="conv2", unit=3)
    f = frame(1)
    result = pipe.process(f)
    act = layer_output(loaded, image_to_tensor(f.image, loaded.spec), "conv2")
    expected = naive_layer_grid(act)
    assert result.grid.dtype == np.uint8 and result.grid.shape == expected.shape
    assert np.abs(result.grid.astype(int) - expected).max() <= 1
    # The oracle resizes with Pillow, the pipeline with torch's uint8 kernel: a few pixels differ by one
    # level, which moves activations by well under 1 % of the unit's range (another frame: by ~100 %).
    span = float(np.ptp(act[3]))
    np.testing.assert_allclose(result.unit_map, act[3], rtol=0, atol=1e-2 * span)
    assert result.unit_levels == pytest.approx((act[3].min(), act[3].max()), abs=1e-2 * span)
    assert set(result.timings) == {"preprocess", "forward", "tile"}


def test_layer_change_takes_effect_on_the_next_frame():
    pipe = LivePipeline(tiny_model(), layer="conv1")
    assert pipe.process(frame(1)).layout.count == 6
    pipe.set_layer("conv2")
    second = pipe.process(frame(2))
    assert second.layer == "conv2" and second.layout.count == 10


def test_default_layer_is_the_first_convolutions_activation():
    assert default_layer(tiny_model().module) == "relu1"


def test_slow_model_drops_frames_instead_of_queueing():
    results = []
    runner = LiveRunner(LivePipeline(tiny_model(delay=0.2), layer="conv1"), results.append)
    try:
        runner.submit(frame(0))
        while runner.held["forward"] == 0:  # until frame 0 is in the model
            time.sleep(0.001)
        for i in range(1, 10):
            runner.submit(frame(i))
        assert runner.wait_idle(timeout=5)
    finally:
        runner.stop()
    assert not runner.alive
    # Nine frames arrive while the model is busy with the first: the prepare stage holds one of them
    # (the first it saw), the slot the newest; the rest were replaced there, never queued.
    indices = [r.frame.index for r in results]
    assert indices[0] == 0 and indices[-1] == 9 and len(indices) <= 3
    assert indices == sorted(set(indices))
    assert runner.dropped == 10 - len(indices) and runner.processed == len(indices)


def test_pipeline_holds_one_item_per_stage_and_the_newest_frame_wins():
    # A slow model and a source much faster than it: count what each stage holds and what is in flight.
    results, in_flight = [], []
    runner = LiveRunner(LivePipeline(tiny_model(delay=0.05), layer="conv1"), results.append)
    try:
        for i in range(60):
            runner.submit(frame(i))
            in_flight.append(runner.submitted - runner.dropped - runner.processed - runner.failed)
            time.sleep(0.004)
        assert runner.wait_idle(timeout=10)
    finally:
        runner.stop()
    assert set(runner.peak_held) == set(RUNNER_STAGES)
    assert max(runner.peak_held.values()) == 1  # each stage held one item at most (and did work)
    assert max(in_flight) <= 1 + len(RUNNER_STAGES)  # the waiting frame and one per stage, no queue
    indices = [r.frame.index for r in results]
    assert indices == sorted(set(indices))  # shown in order of arrival, none twice
    assert indices[-1] == 59  # the newest frame wins
    assert runner.dropped == 60 - len(indices) and runner.dropped > 30  # most were dropped, none queued


class _GatedPipeline(LivePipeline):
    """Records when each stage starts on which frame; frame 0's forward waits until the prepare stage
    has started on frame 1, and frame 0's tiling until the forward has started on frame 1: both waits
    end only if the stages overlap (a serial worker would leave them waiting out their timeout)."""

    gate_s = 3.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prepared_1, self.inferring_1 = threading.Event(), threading.Event()
        self.overlapped: dict[str, bool] = {}
        self.threads: dict[str, int] = {}

    def prepare(self, f):
        self.threads["prepare"] = torch.get_num_threads()
        if f.index == 1:
            self.prepared_1.set()
        return super().prepare(f)

    def infer(self, prepared):
        self.threads["forward"] = torch.get_num_threads()
        if prepared.frame.index == 0:
            self.overlapped["prepare during forward"] = self.prepared_1.wait(self.gate_s)
        else:
            self.inferring_1.set()
        return super().infer(prepared)

    def finish(self, inferred):
        self.threads["tile"] = torch.get_num_threads()
        if inferred.prepared.frame.index == 0:
            self.overlapped["tile during forward"] = self.inferring_1.wait(self.gate_s)
        return super().finish(inferred)


def test_stages_overlap_and_keep_their_thread_counts():
    default = torch.get_num_threads()
    results = []
    pipe = _GatedPipeline(tiny_model(), layer="conv1")
    runner = LiveRunner(pipe, results.append, forward_threads=default + 1)
    try:
        runner.submit(frame(0))
        while runner.held["forward"] == 0:
            time.sleep(0.001)
        runner.submit(frame(1))
        assert runner.wait_idle(timeout=10)
    finally:
        runner.stop()
    assert pipe.overlapped == {"prepare during forward": True, "tile during forward": True}
    assert [r.frame.index for r in results] == [0, 1]
    assert pipe.threads == {"prepare": 1, "forward": default + 1, "tile": 1}
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == default and seen == [default]  # the process's default is left as it was


class _ThreadSensitivePipeline(LivePipeline):
    """A forward whose time depends on the forward thread's torch thread count (``slow_with`` is slow)."""

    def __init__(self, *args, slow_with: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slow_with = slow_with

    def forward(self, x, layer):  # inside the forward stage's timing
        time.sleep(0.08 if torch.get_num_threads() == self.slow_with else 0.002)
        return super().forward(x, layer)


@pytest.mark.parametrize("slow_with, chosen", [(2, 1), (1, 2)])
def test_the_runner_measures_and_keeps_the_faster_forward_thread_count(slow_with, chosen):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = _ThreadSensitivePipeline(tiny_model(), layer="conv1", slow_with=slow_with)
        runner = LiveRunner(pipe, lambda r: None)
        assert runner.thread_choices == [2, 1]
        try:
            for i in range(14):
                runner.submit(frame(i))
                assert runner.wait_idle(timeout=5)
        finally:
            runner.stop()
        assert runner.forward_threads == chosen
        assert set(runner.thread_ms) == {1, 2} and runner.thread_ms[slow_with] >= 80  # the sleep is timed
        assert torch.get_num_threads() == 2  # the default is left as it was
    finally:
        torch.set_num_threads(before)


def test_the_serial_runner_does_not_overlap():
    # the same check on the stages run one after the other (bench live --serial): both waits time out
    pipe = _GatedPipeline(tiny_model(), layer="conv1")
    pipe.gate_s = 0.3
    results = []
    runner = LiveRunner(pipe, results.append, serial=True)
    try:
        runner.submit(frame(0))
        while runner.held["forward"] == 0:
            time.sleep(0.001)
        runner.submit(frame(1))
        assert runner.wait_idle(timeout=10)
    finally:
        runner.stop()
    assert pipe.overlapped == {"prepare during forward": False, "tile during forward": False}
    assert [r.frame.index for r in results] == [0, 1] and not runner.alive


def test_every_grid_belongs_to_the_frame_it_is_labelled_with_under_a_slow_model():
    loaded = tiny_model(delay=0.03)
    pipe = LivePipeline(loaded, layer="conv1")
    results = []
    runner = LiveRunner(pipe, results.append)
    try:
        for i in range(40):
            if i == 20:
                pipe.set_layer("conv2")  # a layer change midway: each result says which layer it shows
            runner.submit(frame(100 + i))
            time.sleep(0.005)
        assert runner.wait_idle(timeout=10)
    finally:
        runner.stop()
    assert len(results) >= 4 and {r.layer for r in results} == {"conv1", "conv2"}
    for r in results:
        act = layer_output(loaded, image_to_tensor(r.frame.image, loaded.spec), r.layer)
        expected = naive_layer_grid(act)
        assert r.grid.shape == expected.shape
        assert np.abs(r.grid.astype(int) - expected).max() <= 1, f"frame {r.frame.index}"
        np.testing.assert_array_equal(r.model_input, fit_frame(r.frame.image, loaded.spec.size))


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("shape", [(480, 640), (64, 96), (20, 30), (224, 224)])
def test_fit_frame_matches_pillow_within_one_level(mode, shape):
    image = np.random.default_rng(shape[1]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got, ref = fit_frame(image, (32, 48), mode), fit_image(image, (32, 48), mode)
    assert got.shape == ref.shape == (32, 48, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    diff = np.abs(got.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_preprocess_matches_the_still_image_path_and_is_nchw_on_the_cpu():
    loaded = tiny_model()
    image = frame(5, shape=(120, 160)).image
    x, fitted = LivePipeline(loaded).preprocess(image)
    ref = image_to_tensor(image, loaded.spec)
    assert x.shape == ref.shape and x.dtype == torch.float32 and x.is_contiguous()
    step = 1.0 / (255.0 * min(loaded.spec.std))  # one uint8 level after normalisation
    assert float((x - ref).abs().max()) <= step * 1.001
    np.testing.assert_array_equal(fitted, fit_frame(image, loaded.spec.size))


def test_stats_report_fps_stage_latency_and_drops():
    stats = LiveStats()
    for i in range(11):
        stats.record({"preprocess": 0.001, "forward": 0.010, "tile": 0.002, "display": 0.003}, i * 0.1, i * 0.1 + 0.05)
    stats.dropped = 4
    s = stats.summary()
    assert s["fps"] == pytest.approx(10.0)
    assert s["forward_ms"] == pytest.approx(10.0)
    assert s["latency_ms"] == pytest.approx(50.0)
    assert s["dropped"] == 4 and s["shown"] == 11


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("half, channels_last", [(False, False), (True, True)])
def test_cuda_pipeline_matches_the_cpu_grid(half, channels_last):
    cpu = tiny_model()
    gpu = tiny_model().to("cuda")
    f = frame(3)
    expected = LivePipeline(cpu, layer="conv2", unit=1).process(f)
    got = LivePipeline(gpu, layer="conv2", unit=1, half=half, channels_last=channels_last).process(f)
    assert got.grid.shape == expected.grid.shape
    tolerance = 3 if half else 1  # float16 rounds activations to ~3 decimal digits
    assert np.abs(got.grid.astype(int) - expected.grid).max() <= tolerance
    assert next(gpu.module.parameters()).dtype == torch.float32  # the shared model is left as it was
