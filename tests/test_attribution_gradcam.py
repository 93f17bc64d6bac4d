"""Grad-CAM against pytorch-grad-cam, and guided Grad-CAM as the product it is defined to be."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.attribution.backprop import guided_backprop
from explorer.core.attribution.gradcam import grad_cam, guided_grad_cam, last_conv_layer, upsample_map
from explorer.core.attribution.target import Target
from explorer.core.models import build_zoo_model


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_zoo_model("resnet18").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_grad_cam_equals_pytorch_grad_cam(resnet):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.randn(2, 3, 64, 64)
    ours = grad_cam(resnet, x, Target.for_class(4), "layer4.1.conv2")
    with pgc.GradCAM(model=resnet, target_layers=[resnet.layer4[1].conv2]) as cam:
        ref = cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(4)] * 2)
    # pytorch-grad-cam shows the map scaled to [0, 1] at the layer's resolution, then resized by OpenCV
    low = ours.cam - ours.cam.flatten(1).min(1).values[:, None, None]
    low = low / (1e-7 + low.flatten(1).max(1).values[:, None, None])
    np.testing.assert_allclose(upsample_map(low, (64, 64)).numpy(), ref, atol=1e-4)
    assert ours.upsampled.shape == (2, 64, 64) and float(ours.cam.min()) >= 0


def test_guided_grad_cam_is_guided_backprop_times_the_map(resnet):
    x = torch.randn(1, 3, 32, 32)
    target = Target.for_class(1)
    product, cam, report = guided_grad_cam(resnet, x, target)
    assert cam.layer == last_conv_layer(resnet) == "layer4.1.conv2"
    guided, _ = guided_backprop(resnet, x, target)
    torch.testing.assert_close(product, guided * cam.upsampled[:, None])
    assert report.handled["ReLU"] == 17
