"""scalegan: large-scale class-conditional GANs (BigGAN, BigGAN-deep, StyleGAN2) as one package: train, sample,
evaluate, serve, export, invert and edit, with one weights format (``model.safetensors`` + ``config.json``).

Public API::

    import scalegan
    G, D = scalegan.create_model("biggan-128")           # a preset, random weights
    G, info = scalegan.load("runs/demo")                 # the trained (EMA) generator, eval mode, and what it is
    images = scalegan.sample(G, 16, y=3, truncation=0.5, seed=0)  # [16, C, H, W] in [-1, 1]
    model = scalegan.Pipeline.from_source("runs/demo", fast=True)  # class names, folded modules, generate()
    images = model.generate(y="sneaker", truncation=0.7, n=4, seed=0)
"""

from .api import BigGAN, Pipeline, create_model, load
from .registry import list_models
from .sampling import sample
from .utils import __version__

__all__ = ["__version__", "BigGAN", "Pipeline", "create_model", "list_models", "load", "sample"]
