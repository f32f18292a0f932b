"""scalegan: large-scale class-conditional GANs (BigGAN, BigGAN-deep).

Public API::

    import scalegan
    G, D = scalegan.create_model("biggan-128")           # a preset, random weights
    G, info = scalegan.load("runs/demo")                 # the trained (EMA) generator, eval mode, and what it is
    images = scalegan.sample(G, 16, y=3, truncation=0.5, seed=0)  # [16, C, H, W] in [-1, 1]
"""

from .api import BigGAN, create_model, load
from .registry import list_models
from .sampling import sample
from .utils import __version__

__all__ = ["__version__", "BigGAN", "create_model", "list_models", "load", "sample"]
