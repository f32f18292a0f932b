"""Resizers: hand-checkable values, and each one against the library call it stands for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scalegan.metrics.resize import RESIZERS, resize, resize_pil_bicubic, resize_tf1_bilinear


def test_tf1_bilinear_by_hand():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = resize_tf1_bilinear(x, 4)
    # Source position of output i is i * 2 / 4 = i / 2, anchored at the top-left; past the last pixel it clamps.
    row0 = torch.tensor([0.0, 5.0, 10.0, 10.0])
    expected = torch.stack([row0, row0 + 10, row0 + 20, row0 + 20])
    torch.testing.assert_close(out[0, 0], expected)


def test_torch_bilinear_is_interpolate():
    x = torch.rand(2, 3, 32, 32) * 255
    torch.testing.assert_close(
        resize(x, 299, "torch-bilinear"), F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    )


def test_pil_bicubic_is_pil_per_channel():
    x = torch.rand(1, 3, 20, 20) * 255
    out = resize_pil_bicubic(x, 299)
    channel = Image.fromarray(x[0, 1].numpy(), mode="F").resize((299, 299), Image.Resampling.BICUBIC)
    np.testing.assert_allclose(out[0, 1].numpy(), np.clip(np.asarray(channel), 0, 255), rtol=0, atol=0)


@pytest.mark.parametrize("method", sorted(RESIZERS))
def test_identity_at_target_size_and_constant_images(method):
    x = torch.rand(1, 3, 11, 11) * 255
    assert torch.equal(resize(x, 11, method), x)
    constant = torch.full((1, 1, 9, 9), 77.0)
    torch.testing.assert_close(resize(constant, 23, method), torch.full((1, 1, 23, 23), 77.0), rtol=0, atol=1e-3)


def test_resizers_differ_and_unknown_name():
    x = torch.rand(1, 3, 32, 32) * 255
    outs = [resize(x, 299, m) for m in sorted(RESIZERS)]
    assert all((a - b).abs().max() > 1 for a, b in zip(outs, outs[1:]))  # the choice matters, hence the card
    with pytest.raises(ValueError, match="unknown resizer"):
        resize(x, 299, "nearest")
