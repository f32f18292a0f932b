"""Adaptive augmentation (ADA, Karras et al. 2020): the 'bgc' transforms, the p update rule, and an exact resume."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import latest_weights, loss_lines
from test_training import tiny_config

from scalegan.augment import (
    ADA_OPS,
    COLORS,
    SYM6,
    Augmenter,
    _resample,
    _resample_2x,
    _resample_bilinear,
    ada_augment,
    color_matrices,
    diff_augment,
    geometric_matrices,
    parse_policy,
)
from scalegan.training import train
from scalegan.training.config import TrainConfig


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=16, channels=3, size=16, seed=0):
    return torch.rand(n, channels, size, size, generator=_gen(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------ transforms
@pytest.mark.parametrize("op", ADA_OPS)
def test_each_transform_is_differentiable_and_seeded(op):
    x = _images().requires_grad_(True)
    out = ada_augment(x, 1.0, _gen(), ops=(op,))
    assert out.shape == x.shape and out.dtype == x.dtype
    (out * torch.randn(out.shape, generator=_gen(5))).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0  # gradients reach the input
    assert torch.equal(out, ada_augment(x, 1.0, _gen(), ops=(op,)))  # the generator decides everything
    assert not torch.equal(out, ada_augment(x, 1.0, _gen(1), ops=(op,)))
    assert not torch.equal(out, x)


@pytest.mark.parametrize("channels", [1, 3])
def test_p_0_is_the_identity_and_p_1_changes_every_image(channels):
    x = _images(channels=channels)
    assert ada_augment(x, 0.0, _gen()) is x
    assert Augmenter("ada", _gen(), p=0.0)(x) is x
    out = ada_augment(x, 1.0, _gen())
    assert all(not torch.equal(out[i], x[i]) for i in range(len(x)))
    # In between, some images are left exactly as they were and others change.
    some = ada_augment(_images(n=64, channels=channels), 0.05, _gen())
    same = [torch.equal(a, b) for a, b in zip(some, _images(n=64, channels=channels))]
    assert any(same) and not all(same)


def test_blits_copy_pixels_exactly():
    x = _images(n=32)
    flipped = ada_augment(x, 1.0, _gen(), ops=("xflip",))
    kinds = [0 if torch.equal(o, i) else 1 if torch.equal(o, i.flip(-1)) else None for o, i in zip(flipped, x)]
    assert None not in kinds and 0 in kinds and 1 in kinds  # i ~ U{0, 1}: a chosen image flips half the time
    turned = ada_augment(x, 1.0, _gen(), ops=("rotate90",))
    quarters = [[k for k in range(4) if torch.equal(o, torch.rot90(i, k, (1, 2)))] for o, i in zip(turned, x)]
    assert all(len(q) == 1 for q in quarters) and len({q[0] for q in quarters}) == 4
    shifted = ada_augment(x, 1.0, _gen(), ops=("xint",))
    for o, i in zip(shifted, x):  # a whole-pixel shift of at most 16 / 8 = 2; reflected pixels fill the border
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(o[:, 2:-2, 2:-2], i[:, 2 - dy:14 - dy, 2 - dx:14 - dx])]
        assert len(shifts) == 1


def test_sym6_is_an_orthonormal_wavelet_filter():
    h = torch.tensor(SYM6, dtype=torch.float64)
    assert len(h) == 12 and h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(6):  # orthonormal to its own even shifts: up then down is the identity
        assert torch.dot(h[2 * shift:], h[:12 - 2 * shift]).item() == pytest.approx(float(shift == 0), abs=1e-11)
    k = torch.arange(12, dtype=torch.float64)
    high = (-1) ** k * h.flip(0)  # the high-pass filter has 6 vanishing moments
    moments = [(high * (k - 5.5) ** p).sum().item() for p in range(7)]
    assert max(abs(v) for v in moments[:6]) < 1e-7 and abs(moments[6]) > 1


def _cosine(m, size=32):
    """A smooth image and the same function sampled where ``m`` sends each output pixel centre."""
    def f(u, v):
        return torch.cos(2 * math.pi * (u + 0.5 * v) / size + 0.3)

    centres = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    points = torch.stack([centres.expand(size, size), centres[:, None].expand(size, size),
                          torch.ones(size, size, dtype=torch.float64)], -1)
    source = torch.einsum("nij,hwj->nhwi", m, points)
    image = f(centres.view(1, size), centres.view(size, 1)).float().expand(len(m), 1, size, size)
    return image, f(source[..., 0], source[..., 1]).float().unsqueeze(1)


def _matrix(angle, scale, tx, ty):
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[[c, -s, tx], [s, c, ty], [0, 0, 1]]], dtype=torch.float64)


def test_2x_resampling_follows_the_matrix():
    # Rotation, scale and a fractional shift of a smooth image land where the matrix says (the filter's 0.2 px
    # delay accounted for: with 5.5, a symmetric filter's, the error here is 0.03), in the same direction.
    m = torch.cat([_matrix(0.6, 0.8, 1.3, -0.6), _matrix(-2.0, 1.25, -0.4, 0.7)])
    image, expected = _cosine(m)
    for mode in ("bicubic", "bilinear"):
        error = (_resample_2x(image, m, mode) - expected)[..., 8:-8, 8:-8].abs().max().item()  # no reflection
        assert error < 0.005, mode
    # Up then down with no transform in between gives the input back (the filters' perfect reconstruction).
    x = _images()
    torch.testing.assert_close(_resample_2x(x, torch.eye(3, dtype=torch.float64).repeat(16, 1, 1)), x,
                               atol=5e-5, rtol=0)


def test_2x_resampling_reflects_at_the_borders():
    # Zooming out by up to 1.8 and rotating needs pixels far outside the image: the reflected margin covers them,
    # so a constant image stays constant to its edges (no zeros come in).
    m = torch.cat([_matrix(0.7, 1.8, 0, 0), _matrix(0.3, 1.5, 3.5, -2.5), _matrix(2.5, 0.6, 0.5, 0)])
    out = _resample_2x(torch.full((3, 3, 32, 32), 0.7), m)
    torch.testing.assert_close(out, torch.full_like(out, 0.7), atol=1e-4, rtol=0)
    # Mixed batches: blits copy pixels, the others resample, each image in its place.
    x = _images(n=4)
    quarter_turn = torch.tensor([[[0.0, -1, 2], [1, 0, 0], [0, 0, 1]]], dtype=torch.float64)  # and a 2 px shift
    m = torch.cat([quarter_turn, _matrix(0.3, 1, 0, 0), _matrix(0, 1, 0, 0), _matrix(0, 1, 0.5, 0)])
    out = _resample(x, m)
    assert torch.isin(out[0], x[0]).all() and torch.equal(out[0], _resample(x[:1], m[:1])[0])  # pixels copied
    assert torch.equal(out[2], x[2]) and torch.equal(out[[1, 3]], _resample_2x(x[[1, 3]], m[[1, 3]]))
    assert not torch.isin(out[1], x[1]).all()


def laplacian_kept(x, out, margin=4):
    """Mean over images of the Laplacian's energy in the output over that in the input, inside ``margin``."""
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)

    def energy(images):
        n, c, h, w = images.shape
        lap = F.conv2d(images.reshape(n * c, 1, h, w), kernel).view(n, c, h - 2, w - 2)
        return lap[..., margin - 1:h - 1 - margin, margin - 1:w - 1 - margin].square().sum((1, 2, 3))

    return (energy(out) / energy(x)).mean().item()


@pytest.mark.parametrize(("op", "reference"), [("rotate", 0.42), ("scale", 0.51), ("xfrac", 0.48)])
def test_2x_resampling_keeps_high_frequencies(op, reference):
    # White noise at p = 1: the share of high-frequency (Laplacian) energy kept reaches NVlabs' figure; the former
    # single bilinear pass kept well under it (benchmarks/ada_highfreq.py has the full table).
    x = torch.randn(32, 3, 32, 32, generator=_gen())
    m = geometric_matrices(32, 32, 32, 1.0, _gen(1), ops=(op,))
    assert laplacian_kept(x, ada_augment(x, 1.0, _gen(1), ops=(op,))) >= reference
    assert laplacian_kept(x, _resample_bilinear(x, m)) < reference - 0.1


def test_geometric_matrices_compose_in_order():
    # Only x-flip and integer translation: flip(x) then shift, inverted: x_in = F^-1 T^-1 x_out = F (x_out - t).
    m = geometric_matrices(64, 16, 16, 1.0, _gen(), ops=("xflip", "xint"))
    assert set(m[:, 0, 0].tolist()) == {-1.0, 1.0} and (m[:, 1, 1] == 1).all()
    assert (m[:, :2, 2].abs() <= 2).all() and torch.equal(m[:, :2, 2], m[:, :2, 2].round())
    assert torch.equal(m[:, 2], torch.tensor([0.0, 0, 1], dtype=torch.float64).expand(64, 3))
    # The two rotations each happen with probability 1 - sqrt(1 - p): one or both with probability p.
    rot = geometric_matrices(20000, 16, 16, 0.5, _gen(), ops=("rotate",))
    assert (rot[:, 0, 1] != 0).double().mean().item() == pytest.approx(0.5, abs=0.02)


def test_color_transforms_act_about_the_luma_axis():
    grey = torch.rand(8, 1, 8, 8, generator=_gen()).expand(8, 3, 8, 8) * 2 - 1
    for op in ("hue", "saturation"):  # grey stays grey and unchanged
        torch.testing.assert_close(ada_augment(grey, 1.0, _gen(), ops=(op,)), grey)
    flipped = ada_augment(grey, 1.0, _gen(), ops=("lumaflip",))
    assert all(torch.allclose(o, g) or torch.allclose(o, -g, atol=1e-6) for o, g in zip(flipped, grey))
    m = color_matrices(8, 1.0, _gen(), ops=("hue",))[:, :3, :3]  # a rotation
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(8, 3, 3))
    # 1 channel: brightness and contrast only (x -> c (x + b) per image), the other colour transforms are identity.
    x = _images(channels=1)
    assert ada_augment(x, 1.0, _gen(), ops=("lumaflip", "hue", "saturation")) is x
    out = ada_augment(x, 1.0, _gen(), ops=COLORS)
    c = ((out[:, :, 0, 1] - out[:, :, 0, 0]) / (x[:, :, 0, 1] - x[:, :, 0, 0])).view(-1, 1, 1, 1)
    b = out - c * x
    assert (c > 0).all() and not torch.allclose(c, torch.ones_like(c))
    torch.testing.assert_close(b, b[:, :, :1, :1].expand_as(b))  # the same shift for every pixel of an image


def test_channels_last_and_bf16_autocast():
    x = _images()
    reference = ada_augment(x, 1.0, _gen())
    cl = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ada_augment(cl, 1.0, _gen())
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference)  # computed in float32 whatever the autocast
    half = ada_augment(x.bfloat16(), 1.0, _gen())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), reference, atol=0.05, rtol=0.05)


def test_policies_combine():
    assert parse_policy("ada,cutout") == ("ada", "cutout")
    x = _images()
    # DiffAugment alone draws exactly as before ADA existed.
    assert torch.equal(Augmenter("translation,cutout", _gen())(x), diff_augment(x, "translation,cutout", _gen()))
    g = _gen()
    expected = diff_augment(ada_augment(x, 0.3, g), ("cutout",), g)
    assert torch.equal(Augmenter("ada,cutout", _gen(), p=0.3)(x), expected)  # ADA first, then DiffAugment
    with pytest.raises(ValueError, match="needs a probability"):
        diff_augment(x, "ada")


# ------------------------------------------------------------------------------------------------ p
def test_p_update_rule_by_hand():
    aug = Augmenter("ada", _gen(), p=0.5, target=0.6, kimg=0.1, interval=2)
    step = 10 * 2 / 100  # batch_images * interval / (kimg * 1000)
    aug.observe(torch.tensor([1.0, 2.0, 3.0, -1.0], requires_grad=True))  # mean sign 0.5 ...
    aug.observe(torch.tensor([[4.0], [5.0]]))  # ... then 1: over both calls (2 + 2) / 6 = 0.667 > 0.6
    aug.update(10)
    assert aug.p == 0.5  # not yet: every 2 iterations
    aug.update(10)
    assert aug.p == pytest.approx(0.5 + step) and aug.signs is None  # up, accumulators reset
    aug.observe(torch.tensor([1.0, -1.0]))  # 0 < 0.6: down
    aug.update(10)
    aug.update(10)
    assert aug.p == pytest.approx(0.5)
    aug.observe(torch.tensor([1.0, 1.0, 1.0, 2.0, -2.0]))  # exactly 3 / 5 = 0.6: stays
    aug.update(10)
    aug.update(10)
    assert aug.p == pytest.approx(0.5)
    summed = []

    def reduce(t):  # another rank with strongly negative logits: the sum over ranks decides
        summed.append(t.clone())
        return t + torch.tensor([-8.0, 8.0])

    aug.observe(torch.ones(4))
    aug.update(1000, reduce)
    aug.update(1000, reduce)
    assert aug.p == 0.0 and torch.equal(summed[0], torch.tensor([4.0, 4.0]))  # down by 20, clamped at 0
    aug.observe(torch.ones(4))
    aug.update(1000)
    aug.update(1000)
    assert aug.p == 1.0  # up by 20, clamped at 1


def test_fixed_p():
    aug = Augmenter("ada", _gen(), p=0.3, target=0.0)
    for _ in range(8):
        aug.observe(torch.ones(4))
        aug.update(10**6)
    assert aug.p == 0.3 and aug.signs is None
    aug.load_state_dict({**aug.state_dict(), "p": 0.9})
    assert aug.p == 0.3  # a fixed p is the configured one, also on resume


def test_augmenter_state_round_trip(tmp_path):
    aug = Augmenter("ada,translation", _gen(), p=0.5, target=0.6, kimg=1, interval=3)
    aug(_images())
    aug.observe(torch.tensor([1.0, -1.0, 2.0]))
    aug.update(16)
    torch.save(aug.state_dict(), tmp_path / "state.pt")
    other = Augmenter("ada,translation", _gen(7), p=0.5, target=0.6, kimg=1, interval=3)
    other.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(aug(_images()), other(_images()))
    for a in (aug, other):
        a.observe(torch.tensor([3.0]))
        a.update(16)
        a.update(16)
    assert aug.p == other.p != 0.5


def test_config_fields():
    cfg = TrainConfig(augment="ada,cutout", ada_p=0.2, ada_target=0.0)
    cfg.validate()
    for bad in (dict(augment="ada,flip"), dict(ada_target=1.0), dict(ada_p=1.5), dict(ada_kimg=0.0),
                dict(ada_interval=0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad).validate()


def test_leak_warning_once_above_0_8(tiny_npz, tmp_path):
    aug = Augmenter("ada", _gen(), p=0.79, target=0.6, kimg=0.1, interval=1)
    assert aug.leak_warning() is None
    aug.observe(torch.ones(4))
    aug.update(10)  # up by 10 / 100
    message = aug.leak_warning()
    assert "p = 0.890 passed 0.8" in message and "--mirror" in message and "--ada-target" in message
    assert aug.leak_warning() is None  # once
    assert Augmenter("translation", _gen(), p=0.9).leak_warning() is None  # DiffAugment has no p
    # In training: the first log line above 0.8 warns, the later ones do not.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_config(tiny_npz, tmp_path / "run", iterations=3, log_every=1, augment="ada", ada_p=0.85,
                          ada_target=0.0))
    assert sum("passed 0.8" in str(w.message) for w in caught) == 1


# ------------------------------------------------------------------------------------------------ training
def test_ada_training_resumes_exactly_and_logs_p(tiny_npz, tmp_path):
    kw = dict(augment="ada", ada_interval=1, ada_kimg=0.1, ada_target=0.05, ada_p=0.5, n_d_steps=1, log_every=1)
    train(tiny_config(tiny_npz, tmp_path / "full", iterations=4, **kw))
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=2, **kw))
    train(tiny_config(tiny_npz, tmp_path / "split", iterations=4, resume=True, **kw))
    for name in ("G", "D", "G_ema"):
        a, b = latest_weights(tmp_path / "full", name), latest_weights(tmp_path / "split", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    states = [torch.load(tmp_path / run / "checkpoints" / "step_0000004" / "state.pt", weights_only=True)["augment"]
              for run in ("full", "split")]
    assert states[0]["p"] == states[1]["p"] and torch.equal(states[0]["generator"], states[1]["generator"])
    p = {run: [(x["step"], x["augment_p"]) for x in loss_lines(tmp_path / run)] for run in ("full", "split")}
    assert p["full"] == p["split"] and [s for s, _ in p["full"]] == [1, 2, 3, 4]
    assert p["full"][-1][1] == states[0]["p"]
    # p moved every iteration by 16 images / (0.1 * 1000), up or down with sign(D(real)).
    moves = [b - a for a, b in zip([0.5] + [v for _, v in p["full"]], [v for _, v in p["full"]])]
    assert all(abs(m) == pytest.approx(0.16) for m in moves)
