"""scalegan: large-scale class-conditional GANs (BigGAN, BigGAN-deep).

Public API::

    import scalegan
    G, D = scalegan.create_model("biggan-128")        # a preset, random weights
    G = scalegan.load("runs/demo")                    # the trained (EMA) generator, eval mode
    images = G.sample(16, y=3, truncation=0.5, seed=0)  # [16, C, H, W] in [-1, 1]
"""

__version__ = "0.1.0"

from .pretrained import BigGAN  # noqa: E402
from .registry import list_models  # noqa: E402
from .weights import load  # noqa: E402


def create_model(name: str, **overrides):
    """Build preset ``name`` (see ``list_models()``) with config fields replaced by ``overrides``.

    Returns ``(G, D)`` with fresh random weights; ``G`` has ``.config`` and ``.sample(...)``.
    """
    from .models import build_discriminator, build_generator
    from .registry import model_config

    config = model_config(name, **overrides)
    return build_generator(config), build_discriminator(config)


__all__ = ["__version__", "BigGAN", "create_model", "list_models", "load"]
