"""scalegan: large-scale class-conditional GANs (BigGAN, BigGAN-deep)."""

__version__ = "0.1.0"
