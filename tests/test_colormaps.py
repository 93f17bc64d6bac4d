"""One colour-map module: the command line's PNGs hold the colours the window shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explorer.core import colormaps
from explorer.core.attribution.methods import map_levels, overlay_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", [n for n in colormaps.COLORMAPS if n != "auto"])
def test_tables_are_256_colours_from_the_low_to_the_high_end(name):
    table = colormaps.lookup_table(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert len({tuple(c) for c in table}) > 100  # a ramp, not a few flat bands
    with_alpha = colormaps.lookup_table(name, alpha=True)
    assert with_alpha.shape == (256, 4) and (with_alpha[:, 3] == 255).all()
    np.testing.assert_array_equal(with_alpha[:, :3], table)


def test_diverging_map_is_white_at_zero_blue_below_red_above():
    table = colormaps.lookup_table("diverging")
    assert table[0, 2] > table[0, 0] and table[-1, 0] > table[-1, 2]
    assert table[128].min() > 230


def test_signed_maps_are_centred_on_zero():
    lo, hi, signed = colormaps.map_levels(np.array([[-1.0, 3.0]]))
    assert (lo, hi, signed) == (-3.0, 3.0, True)
    assert colormaps.map_levels(np.array([[0.0, 2.0]])) == (0.0, 2.0, False)
    assert colormaps.map_levels(np.array([[np.nan, 1.0, -1.0]]))[:2] == (-1.0, 1.0)


def test_cli_overlay_uses_the_windows_table():
    display = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    picture = np.zeros((8, 8, 3), np.uint8)
    out = overlay_image(picture, display, opacity=1.0)
    lo, hi, name = map_levels(display)
    assert name == "diverging"
    idx = np.clip((display - lo) * 255 / (hi - lo), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, colormaps.lookup_table(name)[idx])


def test_gui_lookup_tables_come_from_the_core(qapp):
    from explorer.gui.widgets.image_pane import lookup_table

    for name in ("inferno", "diverging", "grey"):
        np.testing.assert_array_equal(lookup_table(name)[:, :3], colormaps.lookup_table(name))


def test_no_other_module_defines_a_colour_map():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "explorer").rglob("*.py")
                 if p.name != "colormaps.py" and any(w in p.read_text() for w in ("getLookupTable", "pg.colormap",
                                                                                  "def diverging_lut", "def _lut("))]
    assert offenders == []
