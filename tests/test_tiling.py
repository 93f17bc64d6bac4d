"""Tiled grids put every channel where the layout says, and clicks map back to the right unit."""
from __future__ import annotations

import torch

from explorer.core.tiling import activation_grid, filter_grid, grid_layout, kernel_grid, normalize, tile


def test_every_tile_holds_its_channel_and_unit_at_inverts_tile_origin():
    x = torch.randn(37, 5, 7)
    grid, layout = tile(x)
    assert layout.rows * layout.cols >= 37
    assert grid.shape == layout.shape
    for unit in range(37):
        top, left = layout.tile_origin(unit)
        torch.testing.assert_close(grid[top:top + 5, left:left + 7], x[unit])
        assert layout.unit_at(top + 4, left + 6) == unit
        assert layout.unit_at(top, left) == unit
    assert layout.unit_at(0, 0) is None  # padding
    assert layout.unit_at(1e6, 1e6) is None


def test_2048_channel_grid_is_one_image_and_roughly_square():
    grid, layout = activation_grid(torch.rand(1, 2048, 7, 7))
    assert grid.dim() == 2
    h, w = grid.shape
    assert 0.8 < w / h < 1.25
    assert float(grid.min()) >= 0 and float(grid.max()) <= 1


def test_layer_normalisation_keeps_relative_scale_and_channel_normalisation_does_not():
    x = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 3.0)])
    x[0, 0, 0] = 0.0
    layer = normalize(x, "layer")
    assert float(layer.max()) == 1.0 and abs(float(layer[0].max()) - 1 / 3) < 1e-6
    channel = normalize(x, "channel")
    assert float(channel[0].max()) == 1.0


def test_vector_layer_becomes_one_pixel_tiles():
    grid, layout = activation_grid(torch.arange(10.0).view(1, 10))
    assert (layout.tile_h, layout.tile_w, layout.count) == (1, 1, 10)
    top, left = layout.tile_origin(9)
    assert float(grid[top, left]) == 1.0


def test_filter_grid_is_colour_and_zero_is_grey():
    w = torch.zeros(4, 3, 3, 3)
    w[1, 0, 1, 1] = 2.0
    grid, layout = filter_grid(w)
    assert grid.shape[-1] == 3
    top, left = layout.tile_origin(1)
    assert float(grid[top + 1, left + 1, 0]) == 1.0
    assert float(grid[top, left, 0]) == 0.5


def test_kernel_grid_shows_one_unit_per_input_channel():
    w = torch.randn(8, 6, 3, 3)
    grid, layout = kernel_grid(w, unit=5)
    assert layout.count == 6
    top, left = layout.tile_origin(2)
    expected = 0.5 + 0.5 * w[5, 2] / w[5].abs().max()
    torch.testing.assert_close(grid[top:top + 3, left:left + 3], expected)


def test_grid_layout_has_room_for_all_and_no_empty_row():
    for n in (1, 2, 3, 64, 65, 512, 1000):
        layout = grid_layout(n, 4, 4)
        assert layout.rows * layout.cols >= n
        assert (layout.rows - 1) * layout.cols < n
