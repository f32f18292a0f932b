"""A small domain classifier and the class-consistency measurement built on it.

Inception features say little about 32x32 grayscale datasets such as Fashion-MNIST, so for those we train a
small CNN on the dataset itself. It serves two purposes:

- class consistency: the share of class-conditional samples of class `c` that the classifier assigns to class
  `c` (a cheap check that conditioning works, in the spirit of the "classification accuracy score" family of
  metrics); `class_consistency` and the `acc` metric of `scalegan.metrics.eval.evaluate_generator` are the same
  measurement (`ClassAccuracy` on the images of `scalegan.metrics.generated.generated_batches`);
- a feature backbone: `SmallClassifier.features` gives the penultimate activations, usable for FD/KID on
  datasets where Inception is the wrong network.

Weights are stored like every other scalegan model: `model.safetensors` + `config.json`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from ..utils import key_mismatch, read_json, to_uint8, write_bytes, write_json
from .generated import generated_batches

__all__ = [
    "ClassAccuracy",
    "ClassifierConfig",
    "SmallClassifier",
    "check_classifier",
    "class_consistency",
    "evaluate_accuracy",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# ----------------------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of a `SmallClassifier`: input images `[N, in_channels, resolution, resolution]` in [-1, 1]."""

    in_channels: int
    num_classes: int
    resolution: int
    width: int = 32
    feature_dim: int = 128

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 2 or self.width < 1 or self.feature_dim < 1:
            raise ValueError(f"invalid ClassifierConfig: {self}")
        # Three 2x poolings: below 8 pixels the last stage would pool a 1x1 map away.
        if self.resolution < 8:
            raise ValueError(f"ClassifierConfig.resolution must be >= 8, got {self.resolution}")


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two conv3x3-BN-ReLU layers and a 2x max pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallClassifier(nn.Module):
    """A VGG-style CNN: three stages of (conv3x3-BN-ReLU x2, max pool) with widths w, 2w, 4w, global average
    pool, a linear layer to `feature_dim` penultimate features (ReLU), and a linear layer to class logits.

    `generator` seeds the initial weights so that training is reproducible without touching the global RNG.
    """

    def __init__(self, config: ClassifierConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(_stage(config.in_channels, w), _stage(w, 2 * w), _stage(2 * w, 4 * w))
        self.fc = nn.Linear(4 * w, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal convolutions, PyTorch-style uniform linears, identity BN; draws from `generator`."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.resolution, cfg.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"SmallClassifier expects images [N, {', '.join(map(str, expected))}], got {list(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features `[N, feature_dim]` (after ReLU) for images `x` `[N, C, H, W]` in [-1, 1]."""
        self._check_input(x)
        h = self.body(x)  # [N, 4w, H/8, W/8]
        h = h.mean(dim=(2, 3))  # [N, 4w]
        return F.relu(self.fc(h))  # [N, feature_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits `[N, num_classes]` for images `x` `[N, C, H, W]` in [-1, 1]."""
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------------------------
# Data access


def _images_and_labels(dataset: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """All of `dataset` as `(images, labels, is_uint8)`; uses `dataset.tensors` when it matches the items.

    In-memory datasets expose `tensors` (uint8 images, int64 labels); batching those directly is much faster
    than calling `__getitem__` 60,000 times. We only trust `tensors` when it reproduces the first item, so a
    dataset whose items are resized or transformed from its raw arrays still gets what its items say.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    x0, y0 = dataset[0]
    x0 = torch.as_tensor(x0)
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        images, labels = tensors[0], torch.as_tensor(tensors[1])
        if len(images) == n and len(labels) == n and tuple(images.shape[1:]) == tuple(x0.shape):
            is_uint8 = images.dtype == torch.uint8
            first = _to_float(images[:1], is_uint8)[0]
            if torch.allclose(first, x0.float(), atol=1e-5) and int(labels[0]) == int(y0):
                return images, labels.long(), is_uint8
    # Generic path: read every item once.
    xs, ys = zip(*(dataset[i] for i in range(n)))
    images = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs])
    labels = torch.as_tensor([int(y) for y in ys], dtype=torch.long)
    return images, labels, False


def _to_float(images: torch.Tensor, is_uint8: bool) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float images pass through as float32."""
    if is_uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


def _batches(n: int, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Index tensors of consecutive batches over `order` (or 0..n-1)."""
    idx = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield idx[start : start + batch_size]


def _augment(x: torch.Tensor, generator: torch.Generator, shift: int, hflip: bool) -> torch.Tensor:
    """Random per-image translation by up to `shift` pixels (pad with -1, i.e. black, then crop) and optional
    horizontal flip. Draws come from `generator` on the CPU so that results do not depend on the device."""
    n, _, h, w = x.shape
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)  # [N, C, H+2s, W+2s]
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # [N, H]
        cols = dx[:, None] + torch.arange(w, device=x.device)  # [N, W]
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indices separated by a slice put their dims first: [N, H, W, C].
        x = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation


def train_classifier(
    dataset: Any,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    augment: bool = True,
    hflip: bool = False,
    width: int = 32,
    feature_dim: int = 128,
    weight_decay: float = 5e-4,
) -> SmallClassifier:
    """Train a `SmallClassifier` on `dataset` (items `(x [C, H, W] in [-1, 1], y)`); returned in eval mode.

    AdamW with a linear warmup (first 3% of steps) and cosine decay to zero, float32 throughout. `augment`
    enables random translations of up to 2 pixels; `hflip` adds horizontal flips (right for Fashion-MNIST or
    CIFAR, wrong for digits, hence off by default). Initial weights, shuffling and augmentation all come from
    `torch.Generator`s seeded with `seed`, so two calls with the same arguments give identical weights on the
    same device and thread count.

    The number of classes comes from `dataset.num_classes` when present, else from the labels.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device)
    images, labels, is_uint8 = _images_and_labels(dataset)
    n, channels, height, width_px = images.shape
    if height != width_px:
        raise ValueError(f"SmallClassifier needs square images, got {height}x{width_px}")
    num_classes = int(getattr(dataset, "num_classes", 0) or int(labels.max()) + 1)
    config = ClassifierConfig(channels, num_classes, height, width=width, feature_dim=feature_dim)

    generator = torch.Generator().manual_seed(seed)
    model = SmallClassifier(config, generator=generator).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = epochs * math.ceil(n / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps))

    model.train()
    bar = tqdm(total=total_steps, desc="train classifier", disable=not progress, unit="step")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for idx in _batches(n, batch_size, order):
            # A batch of one breaks BatchNorm's batch statistics; drop such a remainder.
            if len(idx) < 2:
                continue
            x = _to_float(images[idx], is_uint8).to(device)
            y = labels[idx].to(device)
            if augment or hflip:
                x = _augment(x, generator, shift=2 if augment else 0, hflip=hflip)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


def _warmup_cosine(total_steps: int):
    """Learning-rate factor per step: linear warmup over the first 3% of steps, then cosine decay to zero."""
    warmup = max(1, int(0.03 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return factor


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_accuracy(model: SmallClassifier, dataset: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on `dataset`, evaluated in eval mode on the model's device."""
    images, labels, is_uint8 = _images_and_labels(dataset)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    for idx in _batches(len(images), batch_size):
        logits = model(_to_float(images[idx], is_uint8).to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels[idx]).sum())
    model.train(was_training)
    return correct / len(images)


# ----------------------------------------------------------------------------------------------------------
# Weights on disk


def save_classifier(model: SmallClassifier, directory: str | os.PathLike) -> None:
    """Write `model.safetensors` and `config.json` for `model` into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"kind": "small_classifier", **asdict(model.config)}

    # Serialized in memory and written with open(): safetensors' own save_file creates owner-only files.
    write_bytes(directory / WEIGHTS_NAME, safetensors_bytes(state, metadata={"format": "pt"}))
    write_json(directory / CONFIG_NAME, config)


def load_classifier(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SmallClassifier:
    """Load a classifier written by `save_classifier`, in eval mode on `device`.

    Raises FileNotFoundError if either file is missing and ValueError if the weights do not match the
    configured architecture (missing, unexpected or mis-shaped tensors).
    """
    directory = Path(directory)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"classifier directory {directory} lacks {', '.join(missing)}")
    raw = read_json(directory / CONFIG_NAME)
    kind = raw.pop("kind", "small_classifier")
    if kind != "small_classifier":
        raise ValueError(f"{directory / CONFIG_NAME} describes a {kind!r}, not a small_classifier")
    try:
        config = ClassifierConfig(**raw)
    except TypeError as e:
        raise ValueError(f"{directory / CONFIG_NAME} is not a ClassifierConfig: {e}") from e

    model = SmallClassifier(config)
    state = load_file(directory / WEIGHTS_NAME)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = key_mismatch({k: tuple(v.shape) for k, v in state.items()}, expected)
    if problems:
        raise ValueError(f"{directory / WEIGHTS_NAME} does not match its config: {problems}")
    model.load_state_dict(state)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------
# Class consistency


def check_classifier(G: Any, classifier: SmallClassifier) -> int:
    """G's number of classes, after checking that `classifier` can judge G's images: G must be class-conditional
    with the classifier's classes, channels and resolution (ValueError otherwise)."""
    g_cfg = G.config
    n_classes = getattr(g_cfg, "n_classes", None)
    if not n_classes:
        raise ValueError(f"class accuracy needs a class-conditional generator; G.config.n_classes is {n_classes!r}")
    c_cfg = getattr(classifier, "config", None)
    if c_cfg is None:
        return n_classes  # not a SmallClassifier: its forward pass checks what it can
    mismatches = [
        f"{name}: G has {g}, classifier has {c}"
        for name, g, c in (
            ("classes", n_classes, c_cfg.num_classes),
            ("channels", getattr(g_cfg, "img_channels", None), c_cfg.in_channels),
            ("resolution", getattr(g_cfg, "resolution", None), c_cfg.resolution),
        )
        if g != c
    ]
    if mismatches:
        raise ValueError("generator and classifier do not match: " + "; ".join(mismatches))
    return n_classes


class ClassAccuracy:
    """The share of images that a classifier assigns to their requested class, accumulated batch by batch: the
    one implementation of class accuracy (`class_consistency`, and `acc` in `evaluate_generator`).

    Images (float in [-1, 1] or uint8) are judged as the 8-bit pictures a user would save (rounded to uint8, as
    the feature backbones see them), by the classifier in eval mode on its own device."""

    def __init__(self, classifier: nn.Module, n_classes: int) -> None:
        self.classifier = classifier
        self.correct = torch.zeros(n_classes, dtype=torch.long)
        self.total = torch.zeros(n_classes, dtype=torch.long)

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Classify a batch of images `[N, C, H, W]` whose requested classes are `labels` `[N]`."""
        x = to_uint8(images).float() / 127.5 - 1.0
        was_training = self.classifier.training
        self.classifier.eval()
        predicted = self.classifier(x.to(_model_device(self.classifier))).argmax(dim=1).cpu()
        self.classifier.train(was_training)
        labels = torch.as_tensor(labels).cpu().long()
        n_classes = len(self.total)
        self.total += torch.bincount(labels, minlength=n_classes)
        self.correct += torch.bincount(labels[predicted == labels], minlength=n_classes)

    def observe(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, Any]]:
        """Pass `(images, labels)` batches through unchanged, classifying each on the way."""
        for images, labels in batches:
            self.update(images, labels)
            yield images, labels

    @property
    def accuracy(self) -> float:
        """Correct / all images seen."""
        return int(self.correct.sum()) / max(1, int(self.total.sum()))

    @property
    def per_class(self) -> list[float]:
        """Accuracy per requested class (0.0 for a class with no images)."""
        return [int(c) / max(1, int(t)) for c, t in zip(self.correct, self.total)]


@torch.no_grad()
def class_consistency(
    G: Any,
    classifier: SmallClassifier,
    n_per_class: int = 1000,
    batch_size: int = 250,
    seed: int = 0,
    truncation: float | None = None,
    *,
    truncation_mode: str | None = None,
) -> dict[str, Any]:
    """Share of class-conditional samples that `classifier` assigns to the requested class.

    Judges the `n = n_per_class * n_classes` images of `scalegan.metrics.generated.generated_batches(G, n, seed=seed,
    truncation=truncation, truncation_mode=truncation_mode)` (image i of class `i % n_classes`, drawn in seeded
    chunks of 100) with `ClassAccuracy`, so `accuracy` equals the `acc` metric (`class_accuracy`) of
    `evaluate_generator` for the same G, classifier, n, seed and truncation. `batch_size` (images classified at
    once) does not change the result. Returns `{"accuracy", "per_class", "n_per_class", "truncation", "seed"}`;
    `accuracy` is the mean over all samples (equal to the mean of `per_class`).

    Raises ValueError if `G` is unconditional or its classes, channels or resolution differ from the
    classifier's.
    """
    if n_per_class < 1 or batch_size < 1:
        raise ValueError(f"n_per_class and batch_size must be >= 1, got {n_per_class} and {batch_size}")
    n_classes = check_classifier(G, classifier)
    accuracy = ClassAccuracy(classifier, n_classes)
    n = n_per_class * n_classes
    batches = generated_batches(
        G, n, seed=seed, truncation=truncation, truncation_mode=truncation_mode, batch_size=batch_size
    )
    for images, labels in batches:
        accuracy.update(images, labels)
    return {
        "accuracy": accuracy.accuracy,
        "per_class": accuracy.per_class,
        "n_per_class": n_per_class,
        "truncation": truncation,
        "seed": seed,
    }
