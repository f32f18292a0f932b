"""Generation: the one ``render`` and ``sample`` functions, class names, interpolation and soft labels, sheets.

Every path that generates images (``scalegan.sample``, the inference object, ``scalegan sample``, ``edit``,
``eval``, the server and the training loop's grids) draws its latents here, through the family's ``draw_latents``
hook with the family's default truncation mode, and renders them with ``render``, so one model, seed and truncation
give one set of images (inversion renders with gradients through the same function). Latents are drawn on the CPU
from a ``torch.Generator`` and then moved to the model's device. Grids and encodings are ``scalegan.media``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from tqdm import tqdm

from . import imagenet
from .family import get_family
from .latents import class_labels
from .utils import device_of, unknown_name


# --------------------------------------------------------------------------------------------- latents
def resolve_truncation_mode(G, mode: str | None = None) -> str:
    """``mode``, checked against G's family, or the family's default for G's config."""
    family = get_family(G)
    if mode is None:
        return family.truncation_mode(G.config)
    if mode not in family.truncation_modes:
        raise ValueError(f"truncation mode {mode!r} does not apply to {family.name} models: use one of "
                         f"{', '.join(family.truncation_modes)}")
    return mode


def draw(G, n: int, y=None, truncation: float | None = None, generator: torch.Generator | None = None,
         truncation_mode: str | None = None, class_weights=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents and class labels ``sample`` feeds to ``G``, on the CPU: latents first, then labels (random ones
    uniform, or from ``class_weights``: see ``latents.class_labels``)."""
    if n < 0:
        raise ValueError(f"the number of images must be >= 0, got {n}")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0 (or None for none), got {truncation}")
    mode = resolve_truncation_mode(G, truncation_mode)
    latents = get_family(G).draw_latents(G.config, n, truncation, mode, generator)
    return latents, class_labels(n, y, G.config.n_classes, generator, class_weights)


def render(G, latents: torch.Tensor, y: torch.Tensor | None = None, truncation: float | None = None,
           batch_size: int | None = None, progress: bool = False, device=None, grad: bool = False) -> torch.Tensor:
    """Images in [-1, 1] ([n, C, H, W], float32) of ``latents`` (z, or W+ for a family with a W space) and classes
    ``y`` (indices [n], soft labels [n, n_classes] or None), at most ``batch_size`` per forward pass, on ``device``
    (default: G's). ``truncation`` goes to G: the family decides what it does there (StyleGAN2: psi for z, nothing
    for W; BigGAN-deep: which BN statistics; BigGAN: nothing, it shaped z when drawn). ``grad``: keep the graph
    (inversion optimises the latents through it); by default no gradients are recorded."""
    with torch.set_grad_enabled(grad):
        return _render(G, latents, y, truncation, batch_size, progress, device)


def _render(G, latents, y, truncation, batch_size, progress, device) -> torch.Tensor:
    n = len(latents)
    G_device = device_of(G)
    step = batch_size or max(n, 1)
    out = []
    for i in tqdm(range(0, n, step), desc="rendering", unit="batch", disable=not progress or n <= step,
                  file=sys.stderr):
        yi = y[i:i + step].to(G_device) if y is not None else None
        images = G(latents[i:i + step].to(G_device), yi, truncation=truncation).float()
        out.append(images if device is None else images.to(device))
    if out:
        return torch.cat(out)
    cfg = G.config
    return torch.empty(0, cfg.img_channels, cfg.resolution, cfg.resolution, device=device or G_device)


@torch.no_grad()
def sample(G, n: int, y=None, truncation: float | None = None, seed: int | None = None, *,
           truncation_mode: str | None = None, generator: torch.Generator | None = None,
           batch_size: int | None = None, return_latents: bool = False, progress: bool = False):
    """``n`` images in [-1, 1] ([n, C, H, W], float32, on G's device) from generator ``G`` (in its current mode).

    ``y``: None (random classes), a class index, or n indices. ``truncation``: None (off) or the family's
    truncation (BigGAN: the threshold of z; it also selects truncation-indexed BN statistics). ``seed`` (or
    ``generator``) makes the draw reproducible. ``truncation_mode``: None for the family's default for this
    model (BigGAN: "resample", the paper's trick; converted BigGAN-deep: "scale", which its statistics assume).
    ``return_latents=True`` also returns the ``(latents, y)`` fed to G. ``batch_size``: most images per forward
    pass; ``progress``: a progress bar (on stderr) when there are several.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
    latents, labels = draw(G, n, y, truncation, generator, truncation_mode)
    images = render(G, latents, labels, truncation, batch_size, progress)
    return (images, latents, labels) if return_latents else images


# --------------------------------------------------------------------------------------------- interpolation
def interpolation_space(G, latents: torch.Tensor, y: torch.Tensor | None,
                        truncation: float | None = None) -> tuple[torch.Tensor, str]:
    """Latents in the space interpolation and edits work in, on the CPU, and its name: W+ (``"w"``, truncated by
    ``truncation``) for a family with a W space, z (``"z"``) otherwise; W+ passes through."""
    space = get_family(G).w_space
    if space is None:
        return latents.detach().float().cpu(), "z"
    if latents.dim() == 3:
        return latents.detach().float().cpu(), "w"
    return space.map(G, latents, y, truncation).float(), "w"


def lerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear interpolation [n * steps, ...] from each latent of ``a`` [n, ...] to the same row of ``b``, ``steps``
    points from t = 0 to 1 per row (row-major)."""
    t = torch.linspace(0, 1, steps).to(a.dtype)
    return torch.lerp(a[:, None], b[:, None], t.view(1, -1, *[1] * (a.dim() - 1))).flatten(0, 1)


def soft_labels(start, end, steps: int, n_classes: int) -> torch.Tensor:
    """Class conditioning [n * steps, n_classes] moving from class ``start[i]`` (t = 0) to ``end[i]`` (t = 1) in
    ``steps`` points per row: ``(1 - t) onehot(a) + t onehot(b)``, which every conditional family takes as ``y``."""
    start = torch.as_tensor(start).long().reshape(-1)
    end = torch.as_tensor(end).long().reshape(-1).expand(len(start))
    t = torch.linspace(0, 1, steps).view(1, -1, 1)
    a = torch.nn.functional.one_hot(start, n_classes).float()[:, None]
    b = torch.nn.functional.one_hot(end, n_classes).float()[:, None]
    return (a * (1 - t) + b * t).flatten(0, 1)


def resolve_class(name: str | int, class_names: Sequence[str] | None, n_classes: int) -> int:
    """A class index from an index or a class name (case-insensitive), with close-match suggestions; ImageNet
    models also take WordNet ids and every WordNet lemma."""
    if isinstance(name, int) or str(name).strip().lstrip("-").isdigit():
        index = int(name)
        if not 0 <= index < n_classes:
            raise ValueError(f"class index {index} out of range: this model has classes 0..{n_classes - 1}")
        return index
    names = list(class_names or [])
    lowered = [c.lower() for c in names]
    key = str(name).strip().lower()
    if key in lowered:
        return lowered.index(key)
    if not names:
        raise ValueError(f"class {name!r}: this model has no class names, use an index 0..{n_classes - 1}")
    if imagenet.is_imagenet(names):
        return imagenet.resolve(name)
    raise ValueError(unknown_name("class", name, names, cutoff=0.5).args[0])


# --------------------------------------------------------------------------------------------- sheets
@torch.no_grad()
def class_grid(G, classes: Sequence[int], per_class: int, seed: int = 0, truncation: float | None = None,
               truncation_mode: str | None = None) -> torch.Tensor:
    """``per_class`` samples of each class, class-major (one row per class when tiled with nrow=per_class)."""
    y = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    return sample(G, len(y), y=y, truncation=truncation, truncation_mode=truncation_mode, seed=seed, batch_size=256)


@torch.no_grad()
def interpolation_sheet(G, rows: int, steps: int, kind: str = "z", classes: Sequence[int] | None = None,
                        seed: int = 0, truncation: float | None = None,
                        truncation_mode: str | None = None) -> torch.Tensor:
    """Interpolation rows [rows * steps, C, H, W]: ``kind="z"`` lerps between two latents at a fixed class;
    ``kind="class"`` keeps the latent fixed and mixes the class conditioning from one class to another."""
    cfg = G.config
    generator = torch.Generator().manual_seed(seed)
    if kind == "z":  # in the family's interpolation space: z, or W for a family with a W space
        z0, _ = draw(G, rows, None if not cfg.n_classes else 0, truncation, generator, truncation_mode)
        z1, _ = draw(G, rows, None if not cfg.n_classes else 0, truncation, generator, truncation_mode)
        y = class_labels(rows, classes[:rows] if classes is not None else None, cfg.n_classes, generator)
        (w0, _), (w1, _) = interpolation_space(G, z0, y, truncation), interpolation_space(G, z1, y, truncation)
        latents = lerp(w0, w1, steps)
        y = y.repeat_interleave(steps) if y is not None else None
    elif kind == "class":
        if not cfg.n_classes:
            raise ValueError("class interpolation needs a class-conditional generator")
        z, _ = draw(G, rows, 0, truncation, generator, truncation_mode)
        latents = z.repeat_interleave(steps, 0)
        if classes is not None and len(classes) >= 2:
            pairs = [(classes[i % len(classes)], classes[(i + 1) % len(classes)]) for i in range(rows)]
        else:
            pairs = torch.randint(0, cfg.n_classes, (rows, 2), generator=generator).tolist()
        y = soft_labels([a for a, _ in pairs], [b for _, b in pairs], steps, cfg.n_classes)
    else:
        raise ValueError(f"interpolation kind must be 'z' or 'class', got {kind!r}")
    return render(G, latents, y, truncation, batch_size=256)


@torch.no_grad()
def style_mixing_sheet(G, n: int, layers: range | None = None, seed: int = 0, truncation: float | None = None,
                       y=None) -> torch.Tensor:
    """A style-mixing grid [(n + 1)^2, C, H, W] (tile with nrow = n + 1): the first row holds n column sources,
    the first column n row sources (top-left blank), and cell (i, j) is row source i with the W of ``layers``
    taken from column source j (default: the first half of the layers, the coarse styles). Needs a family that
    generates from a layered latent space (its ``w_space``: StyleGAN2's W)."""
    family = get_family(G)
    if family.w_space is None:
        raise ValueError(f"style mixing needs a model with per-layer styles; {family.name} models have none")
    cfg = G.config
    generator = torch.Generator().manual_seed(seed)
    z, labels = draw(G, 2 * n, y if y is not None or not cfg.n_classes else None, None, generator)
    ws = family.w_space.map(G, z, labels, truncation)  # [2n, layers, dim]
    rows, cols = ws[:n], ws[n:]
    layers = layers if layers is not None else range(ws.shape[1] // 2)
    mixed = rows[:, None].repeat(1, n, 1, 1)  # [n, n, layers, dim]
    mixed[:, :, list(layers)] = cols[None, :, list(layers)]
    y_cells = labels[:n].repeat_interleave(n) if labels is not None else None
    sources = render(G, torch.cat([cols, rows]), torch.cat([labels[n:], labels[:n]]) if labels is not None else None,
                     device="cpu")
    cells = render(G, mixed.flatten(0, 1), y_cells, device="cpu")
    blank = torch.full_like(sources[:1], 1.0)
    out = [blank, sources[:n]]
    for i in range(n):
        out += [sources[n + i:n + i + 1], cells[i * n:(i + 1) * n]]
    return torch.cat(out)
