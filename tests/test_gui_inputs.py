"""Inputs given on the command line to the window, before its model has loaded."""
from __future__ import annotations

import numpy as np
import torch

from explorer.gui.app import create_window
from test_gui import close_window, options, wait_idle


def test_npy_tensor_given_with_the_window_is_read_once_the_model_is_loaded(qtbot, no_thread_leak, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 128, 128)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    window = create_window(options(image=str(path)), interactive=False)
    qtbot.addWidget(window)
    window.show()
    wait_idle(qtbot, window)
    assert window.last_error is None
    assert window.input_name == "x.npy"
    torch.testing.assert_close(window.x[0], torch.from_numpy(x))  # the tensor as given: already preprocessed
    close_window(qtbot, window)
