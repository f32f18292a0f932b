"""Editing: closed-form directions (SeFa), edits along them, class morphs at a fixed latent, and walks.

SeFa (Shen & Zhou 2021, "Closed-Form Factorization of Latent Semantics in GANs"), as the official code computes
it: the layers that first take the latent map it linearly, ``A z``; their weights are stacked (rows of ``A``), each
row (one output unit's weights over the latent) normalised to unit length, and the directions ``n`` that change
the outputs most (``max ||A n||``, ``||n|| = 1``) are the top eigenvectors of ``A^T A``. ``A`` holds the weights as
the eval-mode forward applies them (spectral norm divided out, the equalised learning rate's gain multiplied in)
before the row normalisation. Which weights take the latent is the family's ``latent_layers`` hook:

- BigGAN: the first linear layer and, with hierarchical z, the conditional-BN gain and bias layers of every block,
  each on its own chunk of z. The chunks are decomposed separately and their directions ranked per chunk: the
  order is every chunk's first direction (chunk 0 = the linear layer's, then each block's), then every chunk's
  second, and so on; an eigenvalue compares with those of its own chunk only;
- BigGAN-deep: the first linear layer and every block's conditional-BN gain and bias (all take the full z);
- StyleGAN2: the style affines of every convolution of the synthesis network and of the last toRGB (the official
  code's layers; the earlier toRGBs' are left out), so directions are in W and an edit moves every layer's W.

A class morph keeps the latent and mixes the class conditioning (soft labels ``(1 - t) onehot(a) + t onehot(b)``:
BigGAN's class embeddings and StyleGAN2's mapping network take them), so its ends are the pure-class images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .family import get_family, latent_shape, w_shape
from .sampling import interpolation_space, render, soft_labels


# --------------------------------------------------------------------------------------------- directions
@torch.no_grad()
def _effective_weight(layer: nn.Module) -> torch.Tensor:
    """The matrix ``layer`` multiplies its input by in an eval-mode forward: spectral norm applied (BigGAN's
    ``sn_weight``, read without writing its power-iteration state) or the equalised learning rate's gain."""
    if hasattr(layer, "sn_weight"):
        training = layer.training
        layer.training = False  # eval-mode weight; a training-mode call would also advance ``u``
        try:
            return layer.sn_weight()
        finally:
            layer.training = training
    return layer.weight * getattr(layer, "weight_gain", 1.0)


def latent_space(G) -> tuple[str, int]:
    """The space edits work in and its size: ``("z", size of z)``, or ``("w", size of W)`` for a family that
    generates from a layered latent space (its ``w_space``: StyleGAN2's W)."""
    w = w_shape(G)
    if w is not None:
        return "w", w[1]
    z = latent_shape(G)
    if len(z) != 1:
        raise ValueError(f"editing directions need vector latents; {get_family(G).name} models take z of shape {z}")
    return "z", z[0]


def _blocks(G) -> list[tuple[torch.Tensor, int]]:
    """(rows [r, width] float64, first latent coordinate) of each layer that takes the latent: its eval-mode
    weights over the latent coordinates it takes, every row normalised to unit length (the official SeFa)."""
    family = get_family(G)
    if family.latent_layers is None:
        raise ValueError(f"no editing directions for {family.name} models: the family does not name the layers "
                         "that take its latent (Family.latent_layers)")
    out = []
    for layer, columns, start in family.latent_layers(G):
        w = _effective_weight(layer).double().cpu()[:, columns]
        out.append((w / w.norm(dim=1, keepdim=True).clamp_min(1e-12), start))
    return out


def first_layer_matrix(G, blocks: list[tuple[torch.Tensor, int]] | None = None) -> torch.Tensor:
    """SeFa's ``A`` [rows, dim] (float64, CPU): the eval-mode weights of the layers that take the latent, each row
    normalised to unit length, stacked, each at the latent coordinates it takes."""
    _, dim = latent_space(G)
    rows = []
    for w, start in blocks if blocks is not None else _blocks(G):
        block = torch.zeros(w.shape[0], dim, dtype=torch.float64)
        block[:, start:start + w.shape[1]] = w
        rows.append(block)
    return torch.cat(rows)


def latent_chunks(G, blocks: list[tuple[torch.Tensor, int]] | None = None) -> list[tuple[int, int]]:
    """The ``(start, stop)`` ranges of the latent that separate layers take (BigGAN's hierarchical z: one per
    chunk), or one range over the whole latent where the layers share coordinates."""
    _, dim = latent_space(G)
    ranges = sorted({(start, start + w.shape[1]) for w, start in (blocks if blocks is not None else _blocks(G))})
    disjoint = all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    return ranges if disjoint and len(ranges) > 1 else [(0, dim)]


def directions(G, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` SeFa directions of ``G`` (default: all): ``(vectors [k, dim], eigenvalues [k])``, float32 on the
    CPU, orthonormal. ``dim`` is the latent size (z; W for StyleGAN2). One chunk (the usual case): in decreasing
    order of eigenvalue. Several chunks (hierarchical z): each chunk is decomposed alone and the directions are
    ranked per chunk (every chunk's first, then every chunk's second, ...; see the module docstring). Each vector's
    sign is fixed (its largest entry is positive) so that a direction means the same on every call."""
    _, dim = latent_space(G)
    k = dim if k is None else k
    if not 1 <= k <= dim:
        raise ValueError(f"this model has {dim} editing directions (0..{dim - 1}); asked for {k}")
    blocks = _blocks(G)  # the weights are read once
    A = first_layer_matrix(G, blocks)
    per_chunk = []
    for start, stop in latent_chunks(G, blocks):
        part = A[:, start:stop]
        part = part[part.abs().sum(1) > 0]  # the rows of the layers that take this chunk
        values, vectors = torch.linalg.eigh(part.t() @ part)  # ascending
        full = torch.zeros(stop - start, dim, dtype=torch.float64)
        full[:, start:stop] = vectors.flip(1).t()
        per_chunk.append((values.flip(0), full))
    order = [(c, r) for r in range(dim) for c in range(len(per_chunk)) if r < len(per_chunk[c][0])][:k]
    vectors = torch.stack([per_chunk[c][1][r] for c, r in order])
    eigenvalues = torch.stack([per_chunk[c][0][r] for c, r in order])
    signs = torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))
    return (vectors * signs).float(), eigenvalues.float()


def check_direction(G, index: int, what: str = "direction") -> None:
    """A direction index in range, or a ValueError naming the model's range."""
    _, dim = latent_space(G)
    if not 0 <= index < dim:
        raise ValueError(f"{what} {index}: this model has directions 0..{dim - 1}")


# --------------------------------------------------------------------------------------------- edits
@torch.no_grad()
def to_space(G, latents: torch.Tensor, y: torch.Tensor | None, truncation: float | None = None) -> torch.Tensor:
    """``latents`` in the space edits work in, on the CPU: z as it is, or (a family with a W space) z mapped to W+
    with truncation psi; W+ passes through (``sampling.interpolation_space``)."""
    return interpolation_space(G, latents, y, truncation)[0]


def apply_direction(G, latents: torch.Tensor, y: torch.Tensor | None, vector: torch.Tensor, strength: float,
                    truncation: float | None = None) -> torch.Tensor:
    """Latents moved by ``strength`` along ``vector`` (a unit direction from ``directions``): z + s n, or for
    StyleGAN2 W + s n on every layer (z latents are mapped to W first, with truncation psi). Returns the edited
    latents (CPU), which ``render`` and ``G`` take back."""
    base = to_space(G, latents, y, truncation)
    vector = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)
    if vector.numel() != base.shape[-1]:
        raise ValueError(f"direction of size {vector.numel()} for latents of size {base.shape[-1]}")
    return base + float(strength) * vector


def sweep(G, latents: torch.Tensor, y: torch.Tensor | None, vectors: torch.Tensor, strengths: Sequence[float],
          truncation: float | None = None, batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Images [n, k, s, C, H, W] of every latent moved along every one of ``vectors`` [k, dim] by every strength:
    a sheet per latent with one row per direction and one column per strength."""
    base = to_space(G, latents, y, truncation)  # [n, dim] or [n, layers, dim]
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    s = torch.as_tensor(list(strengths), dtype=torch.float32)
    n, k, m = len(base), len(vectors), len(s)
    steps = s.view(1, 1, m, 1) * vectors.view(1, k, 1, -1)  # [1, k, m, dim]
    if base.dim() == 3:
        steps = steps[:, :, :, None]  # the same move on every W layer
    edited = (base[:, None, None] + steps).flatten(0, 2)
    labels = y.repeat_interleave(k * m, 0) if y is not None else None
    images = render(G, edited, labels, truncation if base.dim() == 2 else None, batch_size, progress, "cpu")
    return images.reshape(n, k, m, *images.shape[1:])


# --------------------------------------------------------------------------------------------- class morphs
def class_morph(G, latents: torch.Tensor, y: torch.Tensor, target: int, steps: int = 8,
                truncation: float | None = None, batch_size: int | None = None,
                progress: bool = False) -> torch.Tensor:
    """Images [n, steps, C, H, W]: each latent kept fixed while its class moves from ``y`` to ``target`` (soft
    labels, t = 0 .. 1), so the first and last columns are the pure-class images. StyleGAN2 takes z here (its W
    already holds the class)."""
    n_classes = G.config.n_classes
    if not n_classes:
        raise ValueError("a class morph needs a class-conditional generator")
    if y is None or len(y) != len(latents):
        raise ValueError("a class morph needs the class of every latent")
    if not 0 <= target < n_classes:
        raise ValueError(f"class index {target} out of range: this model has classes 0..{n_classes - 1}")
    if latents.dim() == 3:
        raise ValueError("a class morph needs z latents: W latents (StyleGAN2) already hold their class; morph the z "
                         "they came from")
    if steps < 2:
        raise ValueError(f"a class morph needs at least 2 steps, got {steps}")
    labels = soft_labels(y, target, steps, n_classes)
    images = render(G, latents.repeat_interleave(steps, 0), labels, truncation, batch_size, progress, "cpu")
    return images.reshape(len(latents), steps, *images.shape[1:])


def class_step(G, latents: torch.Tensor, y: torch.Tensor, target: int, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents, labels)`` moved ``t`` (0 .. 1) of the way from class ``y`` to ``target``, for ``render``: z keeps
    its latent and gets soft labels ``(1 - t) onehot(y) + t onehot(target)`` (as ``class_morph``); W+ (StyleGAN2,
    whose W holds the class: an inverted image's latent) moves by ``t`` times the difference of the two classes'
    average W (the family's truncation centres) and keeps its labels."""
    n_classes = G.config.n_classes
    if not n_classes:
        raise ValueError("a class morph needs a class-conditional generator")
    if not 0 <= target < n_classes:
        raise ValueError(f"class index {target} out of range: this model has classes 0..{n_classes - 1}")
    t = float(t)
    if not 0 <= t <= 1:
        raise ValueError(f"the morph amount must be in 0..1, got {t}")
    y = torch.as_tensor(y).long().reshape(-1)
    if latents.dim() == 2:
        a = torch.nn.functional.one_hot(y, n_classes).float()
        b = torch.nn.functional.one_hot(torch.full_like(y, target), n_classes).float()
        return latents, (1 - t) * a + t * b
    w_space = get_family(G).w_space
    if w_space is None:
        raise ValueError("W latents need a family with a W space")
    with torch.no_grad():
        shift = w_space.centre(G, torch.full_like(y, target)).cpu() - w_space.centre(G, y).cpu()
    return latents + t * shift[:, None].to(latents.dtype), y


# --------------------------------------------------------------------------------------------- walks
def strengths(strength: float, steps: int) -> list[float]:
    """``steps`` strengths from -|strength| to |strength|."""
    s = abs(float(strength))
    if not math.isfinite(s):
        raise ValueError(f"strength must be finite, got {strength}")
    return torch.linspace(-s, s, steps).tolist()


__all__ = ["apply_direction", "class_morph", "class_step", "directions", "first_layer_matrix", "latent_chunks",
           "latent_space", "render", "sweep", "to_space"]
