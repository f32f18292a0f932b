"""Named presets: a model config plus the training hyper-parameters its source used.

``train`` entries are defaults for ``scalegan train --model NAME``; flags given by the user override them.
"""

from __future__ import annotations

from .models import get_family
from .utils import unknown_name

_IMAGENET = dict(n_classes=1000, img_channels=3, ch=96, d_ch=96, shared_dim=128, hier=True,
                 bn_eps=1e-5, sn_eps=1e-6, init="ortho")
# BigGAN-PyTorch's ImageNet script (launch_BigGAN_bs256x8.sh).
_IMAGENET_TRAIN = dict(batch_size=256, num_accumulations=8, lr_g=1e-4, lr_d=4e-4, adam_eps=1e-6, ema_decay=0.9999,
                       ema_start=20000, objective=dict(n_d_steps=1, g_ortho=1e-4))
_DEEP = dict(n_classes=1000, img_channels=3, ch=128, d_ch=128, dim_z=128, shared_dim=128, rgb_channels=128,
             g_attn=(64,), d_attn=(64,), bn_eps=1e-4, sn_eps=1e-4, init="ortho")

PRESETS: dict[str, dict] = {
    # BigGAN-PyTorch's CIFAR script: ch 64, per-layer class embeddings, no hierarchy, no attention, N(0, 0.02).
    "biggan-32": dict(
        family="biggan",
        model=dict(resolution=32, n_classes=10, img_channels=3, ch=64, d_ch=64, dim_z=128, shared_dim=0,
                   hier=False, g_attn=(), d_attn=(), bn_eps=1e-5, sn_eps=1e-8, init="N02"),
        train=dict(batch_size=50, lr_g=2e-4, lr_d=2e-4, adam_eps=1e-8, ema_decay=0.9999, ema_start=1000,
                   objective=dict(n_d_steps=4, g_ortho=0.0)),
        about="BigGAN-PyTorch CIFAR-10 script layout (G 4.30M, D 4.21M parameters)",
    ),
    "biggan-64": dict(family="biggan", model=dict(_IMAGENET, resolution=64, dim_z=120, g_attn=(32,), d_attn=(32,)),
                      train=_IMAGENET_TRAIN, about="ImageNet 64x64, ch 96"),
    "biggan-128": dict(family="biggan", model=dict(_IMAGENET, resolution=128, dim_z=120, g_attn=(64,), d_attn=(64,)),
                       train=_IMAGENET_TRAIN, about="ImageNet 128x128, ch 96 (BigGAN-PyTorch / TF-Hub biggan-128)"),
    "biggan-256": dict(family="biggan", model=dict(_IMAGENET, resolution=256, dim_z=140, g_attn=(128,), d_attn=(64,)),
                       train=_IMAGENET_TRAIN, about="ImageNet 256x256, ch 96 (TF-Hub biggan-256 layout)"),
    "biggan-512": dict(family="biggan", model=dict(_IMAGENET, resolution=512, dim_z=128, g_attn=(64,), d_attn=(64,)),
                       train=_IMAGENET_TRAIN, about="ImageNet 512x512, ch 96 (TF-Hub biggan-512 layout)"),
    "biggan-deep-128": dict(family="biggan-deep", model=dict(_DEEP, resolution=128), train=_IMAGENET_TRAIN,
                            about="BigGAN-deep 128 (TF-Hub / pytorch-pretrained-biggan layout)"),
    "biggan-deep-256": dict(family="biggan-deep", model=dict(_DEEP, resolution=256), train=_IMAGENET_TRAIN,
                            about="BigGAN-deep 256 (TF-Hub / pytorch-pretrained-biggan layout)"),
    "biggan-deep-512": dict(family="biggan-deep", model=dict(_DEEP, resolution=512), train=_IMAGENET_TRAIN,
                            about="BigGAN-deep 512 (TF-Hub / pytorch-pretrained-biggan layout)"),
    # Small CPU preset for the demo: Fashion-MNIST, 32x32 grey, 10 classes. Chosen by time to quality
    # (benchmarks/time_to_quality.py, float32 on an AVX2-only CPU; the A/B table is docs/cpu_recipe.md): channel
    # pyramids in G (128/64/32 channels at 8/16/32 px) and D (32/64/128/128), batch 16, one D step per G step,
    # learning rates 4e-4 (G) and 8e-4 (D), and a half-life EMA with ramp-up.
    "biggan-fmnist": dict(
        family="biggan",
        model=dict(resolution=32, n_classes=10, img_channels=1, ch=32, d_ch=32, g_mult=(4, 2, 1),
                   d_mult=(1, 2, 4, 4), dim_z=64, shared_dim=64, hier=True, g_attn=(), d_attn=(), bn_eps=1e-5,
                   sn_eps=1e-6, init="ortho"),
        # The time budget ends the run, not the iteration count: the demo's command stays under 15 minutes on a
        # 2-core AVX2-only CPU and trains longer where the hardware is faster (precision auto: bf16 there).
        train=dict(batch_size=16, lr_g=4e-4, lr_d=8e-4, adam_eps=1e-6, ema_halflife_kimg=5.0, ema_rampup=0.1,
                   iterations=30000, time_budget=690.0, sample_every=1000, ckpt_every=1000,
                   objective=dict(n_d_steps=1, g_ortho=0.0)),
        about="small CPU preset for Fashion-MNIST (the demo)",
    ),
    # stylegan2-ada's `cifar` configuration: channel base 32768 (fmaps 1), max 512, 2 mapping layers, an `orig` D,
    # minibatch-std groups of 32, conv clamp 256; batch 64, lr 0.0025, gamma 0.01, EMA 500 kimg with ramp-up 0.05,
    # no path length, no style mixing. (stylegan2-ada keeps a lazy G interval even without path length, which
    # scales G's Adam by 4/5: lr 0.002 here; its beta2 0.99 ** 0.8 = 0.992 is not reproduced.)
    "stylegan2-cifar": dict(
        family="stylegan2",
        model=dict(resolution=32, n_classes=10, img_channels=3, z_dim=512, w_dim=512, mapping_layers=2,
                   channel_base=32768, channel_max=512, d_architecture="orig", mbstd_group=32, conv_clamp=256.0),
        train=dict(batch_size=64, lr_g=0.002, lr_d=0.0025, beta1=0.0, beta2=0.99, adam_eps=1e-8,
                   ema_halflife_kimg=500.0, ema_rampup=0.05,
                   objective=dict(r1_gamma=0.01, pl_weight=0.0, style_mixing=0.0)),
        about="StyleGAN2-ADA cifar configuration (G 20.2M, D 23.1M parameters)",
    ),
    # stylegan2-ada's `paper256`: unconditional 256x256, fmaps 0.5, 8 mapping layers, resnet D, mbstd groups of 8.
    "stylegan2-256": dict(
        family="stylegan2",
        model=dict(resolution=256, n_classes=0, img_channels=3, z_dim=512, w_dim=512, mapping_layers=8,
                   channel_base=16384, channel_max=512, d_architecture="resnet", mbstd_group=8, conv_clamp=256.0),
        train=dict(batch_size=64, lr_g=0.0025, lr_d=0.0025, beta1=0.0, beta2=0.99, adam_eps=1e-8,
                   ema_halflife_kimg=20.0, ema_rampup=0.0,
                   objective=dict(r1_gamma=1.0, pl_weight=2.0, style_mixing=0.9)),
        about="StyleGAN2 paper256 configuration (G 24.8M, D 24.0M parameters)",
    ),
    # Small CPU preset for Fashion-MNIST (32x32 grey, 10 classes), sized with benchmarks/time_to_quality.py (300 s,
    # AMX, bf16): channels 64/64/64/32 at 4-32 px reached class consistency 0.750 / FD 29.6, against 0.728 / 35.4
    # with twice the channels (128/128/64/64), which takes twice as long per iteration; learning rates 0.005
    # instead of 0.0025: 0.862 / 20.9.
    "stylegan2-fmnist": dict(
        family="stylegan2",
        model=dict(resolution=32, n_classes=10, img_channels=1, z_dim=64, w_dim=128, mapping_layers=2,
                   d_mapping_layers=2, channel_base=1024, channel_max=64, d_architecture="resnet", mbstd_group=4),
        train=dict(batch_size=16, lr_g=0.005, lr_d=0.005, beta1=0.0, beta2=0.99, adam_eps=1e-8,
                   ema_halflife_kimg=5.0, ema_rampup=0.1, iterations=30000, time_budget=690.0, sample_every=1000,
                   ckpt_every=1000, objective=dict(r1_gamma=0.1, pl_weight=0.0, style_mixing=0.0)),
        about="small StyleGAN2 CPU preset for Fashion-MNIST",
    ),
}


def list_models() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> dict:
    """The registry entry of ``name``; an unknown name is a KeyError with close matches."""
    if name not in PRESETS:
        raise unknown_name("model preset", name, list_models())
    return PRESETS[name]


def model_config(name: str, **overrides):
    """The config dataclass of preset ``name`` with fields replaced by ``overrides``."""
    preset = get_preset(name)
    return get_family(preset["family"]).make_config({**preset["model"], **overrides})


def count_parameters(module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
