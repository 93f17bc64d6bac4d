"""Images of every common kind become the model's input; bad files give one clear message."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.core.errors import InputError
from explorer.core.models import InputSpec
from explorer.core.preprocess import (expand_inputs, fit_image, image_to_tensor, load_image, load_input,
                                      load_npy_input, tensor_to_image)

SPEC = InputSpec(size=(32, 48), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def test_grey_image_is_repeated_to_three_channels(tmp_path):
    grey = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert (img[..., 0] == grey).all() and (img[..., 2] == grey).all()


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert tuple(img[0, 0]) == (255, 0, 0)
    assert tuple(img[3, 3]) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = load_image(tmp_path / "d.png")
    assert img[0, 0, 0] == 0 and img[0, 1, 0] == 255 and img[1, 0, 0] == 128


def test_unreadable_files_raise_one_clear_input_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not an image at all")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(InputError):
        load_image(truncated)


@pytest.mark.parametrize("mode", ["crop", "stretch", "letterbox"])
def test_fit_modes_give_the_input_size(mode):
    img = np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8)
    assert fit_image(img, (32, 48), mode).shape == (32, 48, 3)


def test_crop_keeps_the_centre_and_letterbox_pads_with_black():
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 200  # a bright centre third
    cropped = fit_image(img, (10, 10), "crop")
    assert (cropped == 200).all()
    boxed = fit_image(img, (30, 30), "letterbox")
    assert (boxed[:5] == 0).all() and (boxed[-5:] == 0).all() and boxed[15, 15, 0] == 200


def test_normalisation_is_mean_std_and_inverts():
    img = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    x = image_to_tensor(img, SPEC)
    assert x.shape == (1, 3, 32, 48)
    expected = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(SPEC.mean).view(3, 1, 1)) \
        / torch.tensor(SPEC.std).view(3, 1, 1)
    torch.testing.assert_close(x[0], expected)
    assert np.abs(tensor_to_image(x, SPEC).astype(int) - img).max() <= 1


def test_one_channel_model_gets_luma():
    spec = InputSpec(size=(4, 4), channels=1, mean=(0.0,), std=(1.0,))
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 1] = 255
    x = image_to_tensor(img, spec)
    assert x.shape == (1, 1, 4, 4)
    assert abs(float(x[0, 0, 0, 0]) - 0.587) < 1e-6


def test_npy_input_must_match_the_model_shape(tmp_path):
    good = np.random.default_rng(2).normal(size=(3, 32, 48)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    x, picture = load_input(tmp_path / "good.npy", SPEC)
    assert torch.equal(x[0], torch.from_numpy(good)) and picture.shape == (32, 48, 3)
    np.save(tmp_path / "bad.npy", good[:, :, :16])
    with pytest.raises(InputError, match=r"\(3, 32, 16\)"):
        load_npy_input(tmp_path / "bad.npy", SPEC)


def test_folders_expand_to_their_images_sorted(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.jpg", "b.png"]
    with pytest.raises(InputError):
        expand_inputs([tmp_path / "nope"])
