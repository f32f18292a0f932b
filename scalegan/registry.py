"""Named presets: a model config plus the training hyper-parameters its source used.

``train`` entries are defaults for ``scalegan train --model NAME``; flags given by the user override them.
"""

from __future__ import annotations

import dataclasses

from .models import FAMILIES

_IMAGENET = dict(n_classes=1000, img_channels=3, ch=96, d_ch=96, shared_dim=128, hier=True,
                 bn_eps=1e-5, sn_eps=1e-6, init="ortho")
# BigGAN-PyTorch's ImageNet script (launch_BigGAN_bs256x8.sh).
_IMAGENET_TRAIN = dict(batch_size=256, num_accumulations=8, n_d_steps=1, lr_g=1e-4, lr_d=4e-4, adam_eps=1e-6,
                       ema_decay=0.9999, ema_start=20000, g_ortho=1e-4)
_DEEP = dict(n_classes=1000, img_channels=3, ch=128, d_ch=128, dim_z=128, shared_dim=128, rgb_channels=128,
             g_attn=(64,), d_attn=(64,), bn_eps=1e-4, sn_eps=1e-4, init="ortho")

PRESETS: dict[str, dict] = {
    # BigGAN-PyTorch's CIFAR script: ch 64, per-layer class embeddings, no hierarchy, no attention, N(0, 0.02).
    "biggan-32": dict(
        family="biggan",
        model=dict(resolution=32, n_classes=10, img_channels=3, ch=64, d_ch=64, dim_z=128, shared_dim=0,
                   hier=False, g_attn=(), d_attn=(), bn_eps=1e-5, sn_eps=1e-8, init="N02"),
        train=dict(batch_size=50, n_d_steps=4, lr_g=2e-4, lr_d=2e-4, adam_eps=1e-8, ema_decay=0.9999,
                   ema_start=1000, g_ortho=0.0),
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
    # Small CPU preset for the demo: Fashion-MNIST, 32x32 grey, 10 classes.
    "biggan-fmnist": dict(
        family="biggan",
        # A narrow D (16 x 4 channels) trains fastest to class-consistent samples per second of CPU: measured on a
        # 2-core AMD EPYC, class consistency of G_ema after 690 s was 0.89 with ch 24 / d_ch 16 (1,562 iterations),
        # 0.81 with 24 / 24 (1,121) and 0.65 with 32 / 32 and EMA 0.998 (734).
        model=dict(resolution=32, n_classes=10, img_channels=1, ch=24, d_ch=16, dim_z=64, shared_dim=64,
                   hier=True, g_attn=(), d_attn=(), bn_eps=1e-5, sn_eps=1e-6, init="ortho"),
        # Sized for the demo: ~0.45 s per iteration with bf16 + channels_last on 2 CPU cores, so the time budget
        # usually ends the run before the iteration count, keeping `scripts/demo.sh` under 15 minutes.
        train=dict(batch_size=64, n_d_steps=2, lr_g=2e-4, lr_d=2e-4, adam_eps=1e-6, ema_decay=0.995,
                   ema_start=200, g_ortho=0.0, iterations=2000, time_budget=690.0, sample_every=100,
                   ckpt_every=250),
        about="small CPU preset for Fashion-MNIST (the demo)",
    ),
}


def list_models() -> list[str]:
    """Names of the registered presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model preset {name!r}{hint} (known: {', '.join(list_models())})")
    return PRESETS[name]


def model_config(name: str, **overrides):
    """The config dataclass of preset ``name`` with fields replaced by ``overrides``."""
    preset = get_preset(name)
    cls = FAMILIES[preset["family"]][0]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {preset['family']} config fields {unknown}; known: {sorted(known)}")
    return cls(**{**preset["model"], **overrides})


def count_parameters(module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
