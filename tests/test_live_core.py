"""The Qt-free live pipeline: one-slot mailbox, hooked forward, tiled grid, worker thread."""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
import pytest

from explorer.core.live import FrameSlot, LiveFrame, LivePipeline, LiveRunner, LiveStats, default_layer
from explorer.core.preprocess import image_to_tensor

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
    np.testing.assert_allclose(result.unit_map, act[3], rtol=1e-4, atol=1e-5)
    assert result.unit_levels == pytest.approx((act[3].min(), act[3].max()), rel=1e-4, abs=1e-5)
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
        while runner.slot.full:  # until the worker has taken frame 0 and is busy with it
            time.sleep(0.001)
        for i in range(1, 10):
            runner.submit(frame(i))
        assert runner.wait_idle(timeout=5)
    finally:
        runner.stop()
    assert not runner.alive
    # Nine frames arrive while the model is busy with the first: the last one waits, the rest are replaced.
    assert [r.frame.index for r in results] == [0, 9]
    assert runner.dropped == 8


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
