"""Feature networks for the losses of inversion and generator tuning: images -> a list of feature maps.

The feature loss of a generated image against its input is the mean over the network's layers of the squared
feature distance divided by the input's mean square feature (every layer counts the same whatever its scale). The
networks, chosen with ``scalegan invert --feature-loss`` and all local (nothing is downloaded):

- ``d``: the discriminator's block outputs (Deep Generative Prior's choice, Pan et al. 2020), through the family's
  ``discriminator_blocks`` hook; a run or checkpoint folder has a D;
- ``inception``: the project's TF-2015 Inception (``metrics.inception``) at Mixed_5d, Mixed_6e and Mixed_7c, where its
  weights file is present locally (``$SCALEGAN_INCEPTION_WEIGHTS`` or the cache folder);
- ``classifier:DIR``: the penultimate features of a ``scalegan train-classifier`` folder (``SmallClassifier``).

A learned perceptual metric (LPIPS) is not offered: its published linear-layer files need an ImageNet backbone
(AlexNet / VGG) whose weights torchvision downloads, which this project does not do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .family import get_family

FEATURE_LOSSES = ("d", "inception", "classifier:DIR", "none")


class _Stop(Exception):
    """Raised by the last hook: the layers after the last feature are not run."""


class FeatureNet:
    """Images [N, C, R, R] in [-1, 1] -> feature maps of ``net`` at ``layers`` (forward hooks), the images first
    resized (bilinear) to ``resolution`` and given ``channels`` (grey repeated to RGB). ``name`` is what
    ``summary.json`` records. The caller puts ``net`` in eval mode and turns off its parameter gradients
    (``scalegan.invert`` does so for the duration and puts them back)."""

    def __init__(self, name: str, net: nn.Module, layers: list[nn.Module], resolution: int, channels: int,
                 call=None):
        self.name, self.net, self.layers, self.resolution, self.channels = name, net, layers, resolution, channels
        self.call = call or (lambda net, x: net(x))

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps of images ``x``, one per layer (gradients flow to ``x``)."""
        out: list[torch.Tensor] = []

        def keep(module, inputs, output):
            out.append(output[0] if isinstance(output, tuple) else output)
            if len(out) == len(self.layers):
                raise _Stop

        handles = [layer.register_forward_hook(keep) for layer in self.layers]
        try:
            self.call(self.net, self._fit(x.to(next(self.net.parameters()).device)))
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        if len(out) != len(self.layers):
            raise RuntimeError(f"{self.name}: {len(out)} of {len(self.layers)} feature layers ran")
        return out


def feature_distance(features: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """Per image [N]: the mean over layers of the squared distance relative to the reference's mean square."""
    terms = [(f - r).square().flatten(1).mean(1) / r.square().flatten(1).mean(1).clamp_min(1e-8)
             for f, r in zip(features, reference)]
    return torch.stack(terms).mean(0)


def _last(module: nn.Module) -> nn.Module:
    """The module whose output ends a group (a ModuleList is not called itself: its last member is)."""
    return module[-1] if isinstance(module, nn.ModuleList) else module


def discriminator_features(D: nn.Module) -> FeatureNet:
    """D's block outputs (the family's ``discriminator_blocks``, image side first); the class logit is not used."""
    blocks = get_family(D).discriminator_blocks
    if blocks is None:
        raise ValueError(f"the {D.config.family} family names no discriminator blocks: pick another --feature-loss")
    cfg = D.config

    def call(net, x):
        y = torch.zeros(len(x), dtype=torch.long, device=x.device) if cfg.n_classes else None
        return net(x, y)

    return FeatureNet("d", D, [_last(b) for b in blocks(D)], cfg.resolution, cfg.img_channels, call)


def inception_features(path: str | None = None, device: str | torch.device = "cpu") -> FeatureNet:
    """The project's Inception at three depths; a missing weights file is one ValueError line (never downloaded)."""
    from .metrics.inception import ENV_WEIGHTS, load_inception

    try:
        net, info = load_inception(path, device=device)
    except FileNotFoundError:
        raise ValueError(f"--feature-loss inception: no Inception weights file here (set {ENV_WEIGHTS}=FILE or put "
                         "the published file in the cache folder; nothing is downloaded), or pick another "
                         "--feature-loss") from None
    features = FeatureNet("inception", net, [net.Mixed_5d, net.Mixed_6e, net.Mixed_7c], 299, 3,
                          lambda n, x: n.pool3(x))
    features.weights = info
    return features


def classifier_features(classifier: nn.Module, name: str = "classifier") -> FeatureNet:
    """A ``SmallClassifier``'s penultimate features."""

    class _Features(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.features(x)

    wrapper = _Features(classifier)
    cfg = classifier.config
    return FeatureNet(name, wrapper, [wrapper], cfg.resolution, cfg.in_channels)
