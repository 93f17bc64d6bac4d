"""Yosinski et al. 2015, Table 1: the four regularisation settings found by random search.

Learning rates and pixel values are in the 0..255 mean-subtracted space of their Caffe code.
"""
from __future__ import annotations

# n -> (description, settings)
YOSINSKI_PRESETS: dict[int, tuple[str, dict]] = {
    1: ("decay 1e-4, blur 1.0 every 4, 1000 steps, lr 100",
        {"decay": 1e-4, "blur_sigma": 1.0, "blur_every": 4, "norm_percentile": 0.0,
         "contribution_percentile": 0.0, "steps": 1000, "lr": 100.0}),
    2: ("decay 0.3, norm percentile 20, 750 steps, lr 100",
        {"decay": 0.3, "blur_sigma": 0.0, "blur_every": 0, "norm_percentile": 20.0,
         "contribution_percentile": 0.0, "steps": 750, "lr": 100.0}),
    3: ("blur 0.5 every 4, norm percentile 50, 500 steps, lr 100",
        {"decay": 0.0, "blur_sigma": 0.5, "blur_every": 4, "norm_percentile": 50.0,
         "contribution_percentile": 0.0, "steps": 500, "lr": 100.0}),
    4: ("contribution percentile 90, 1000 steps, lr 100",
        {"decay": 0.0, "blur_sigma": 0.0, "blur_every": 0, "norm_percentile": 0.0,
         "contribution_percentile": 90.0, "steps": 1000, "lr": 100.0}),
}
