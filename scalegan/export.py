"""ONNX export: one generator as one ``.onnx`` file that onnxruntime runs without PyTorch or scalegan's code.

The graph is the family's ``export`` module (``family.py``): eval mode, float32, spectral norm folded into plain
weights, constant noise, and the truncation the file is made for baked in where the graph depends on it (StyleGAN2's
psi; BigGAN-deep's truncation-indexed BN statistics). Inputs ``z`` float32 [N, dim] and, for class-conditional
models, ``y`` int64 [N] (class indices); output ``images`` float32 [N, C, H, W] in about [-1, 1]; N is a dynamic
axis. The file's ``metadata_props`` say what it is (``read_metadata``): scalegan version, family, model config,
truncation, whether the graph holds it, the truncation mode latents are drawn with, class names, opset, source.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it needs only the ``onnx``
package, while the dynamo-based one also needs ``onnxscript``; both trace the same plain-PyTorch modules.
``load_onnx`` gives back a callable ``(z, y) -> images`` (numpy) with the metadata, for ``scalegan serve``.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .family import config_from_dict, get_family
from .utils import __version__, atomic_path

FORMATS = ("onnx",)
DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention (BigGAN's self-attention) exports from opset 14


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"ONNX export needs the {module!r} package: pip install 'scalegan[export]'") from None


def export_module(G: nn.Module, truncation: float | None = None) -> nn.Module:
    """The family's traceable inference module for ``G`` at ``truncation`` (a copy: ``G`` is not modified)."""
    family = get_family(G)
    if family.export is None:
        raise NotImplementedError(f"{family.name} models have no ONNX export")
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0 (or None for none), got {truncation}")
    return family.export(G, truncation).cpu().float().eval()


def export_onnx(G: nn.Module, path: str | os.PathLike, truncation: float | None = None, opset: int = DEFAULT_OPSET,
                source: str = "", class_names=(), truncation_mode: str | None = None) -> dict[str, str]:
    """Write generator ``G`` as an ONNX file at ``path`` (atomically) and return the metadata stored in it.

    ``truncation``: baked into the graph where the family's graph depends on it, recorded either way (the latents
    of a BigGAN file are drawn by the caller with it); ``opset``: the ONNX opset (>= 14); ``source``: where ``G``
    came from (recorded); ``class_names``: recorded as JSON; ``truncation_mode``: how latents are drawn (default:
    the family's for this model)."""
    _require("onnx")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    family = get_family(G)
    mode = truncation_mode or family.truncation_mode(G.config)
    module = export_module(G, truncation)
    cfg = G.config
    n = 2  # traced at batch 2: no size-1 broadcast gets specialised into the graph
    z = family.draw_latents(cfg, n, None, mode, torch.Generator().manual_seed(0))
    args, names = (z,), ["z"]
    if cfg.n_classes:
        args, names = (z, torch.arange(n) % cfg.n_classes), ["z", "y"]
    metadata = {
        "scalegan_version": __version__,
        "family": family.name,
        "config": json.dumps(cfg.to_dict()),
        "truncation": json.dumps(truncation),
        "truncation_baked": json.dumps(bool(getattr(module, "truncation_baked", False))),
        "truncation_mode": mode,
        "class_names": json.dumps(list(class_names)),
        "opset": str(opset),
        "source": str(source),
        "inputs": ",".join(names),
    }
    _trace(module, args, names, path, opset, metadata)
    return metadata


def _trace(module: nn.Module, args: tuple, names: list[str], path, opset: int, metadata: dict[str, str]) -> None:
    """``torch.onnx.export`` (TorchScript exporter), then the metadata added, written atomically."""
    onnx = _require("onnx")
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript exporter says it is deprecated in favour of dynamo=True, which needs onnxscript.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay ops
        with torch.no_grad():
            torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=names, output_names=["images"],
                              dynamic_axes={name: {0: "N"} for name in [*names, "images"]}, opset_version=opset,
                              do_constant_folding=True)
        model = onnx.load(str(tmp))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))


def read_metadata(path: str | os.PathLike) -> dict:
    """The scalegan metadata of an exported file, decoded: ``config`` (dict), ``truncation`` (float or None),
    ``truncation_baked`` (bool), ``class_names`` (list) and the strings as written."""
    onnx = _require("onnx")
    model = onnx.load(os.fspath(path), load_external_data=False)
    raw = {p.key: p.value for p in model.metadata_props}
    if "family" not in raw or "config" not in raw:
        raise ValueError(f"{path} is not an ONNX file written by scalegan export (no scalegan metadata)")
    out = dict(raw)
    for key in ("config", "truncation", "truncation_baked", "class_names"):
        out[key] = json.loads(raw[key])
    out["opset"] = int(raw["opset"])
    out["onnx_opset"] = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return out


class OnnxGenerator:
    """An exported generator run by onnxruntime: ``images = gen(z, y)`` with numpy arrays (z float32 [N, dim], y
    int [N] class indices or None for unconditional files) -> float32 [N, C, H, W] in about [-1, 1].

    ``metadata``: ``read_metadata``'s dict; ``config``: the model config (``family.draw_latents(config, ...)``
    draws z as ``scalegan.sample`` does); ``truncation`` / ``truncation_baked``: the truncation the file was made
    for and whether its graph holds it (then another truncation cannot be served from this file)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers=None):
        ort = _require("onnxruntime")
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.config = config_from_dict(self.metadata["config"])
        self.family = self.metadata["family"]
        self.truncation = self.metadata["truncation"]
        self.truncation_baked = self.metadata["truncation_baked"]
        self.class_names = list(self.metadata["class_names"])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def __call__(self, z, y=None) -> np.ndarray:
        z = np.ascontiguousarray(np.asarray(z, dtype=np.float32))
        feed = {"z": z}
        if "y" in self.inputs:
            if y is None:
                raise ValueError("this generator is class-conditional: pass y (class indices)")
            y = np.asarray(y, dtype=np.int64).reshape(-1)
            if y.size == 1 and len(z) > 1:
                y = np.repeat(y, len(z))
            if y.shape[0] != z.shape[0] or (y < 0).any() or (y >= self.n_classes).any():
                raise ValueError(f"y must be {len(z)} class indices in 0..{self.n_classes - 1}")
            feed["y"] = y
        elif y is not None:
            raise ValueError("this generator is unconditional: do not pass classes")
        return self.session.run(["images"], feed)[0]


def load_onnx(path: str | os.PathLike, threads: int | None = None, providers=None) -> OnnxGenerator:
    """An exported ``.onnx`` file as a callable ``(z, y) -> images`` with its metadata (see ``OnnxGenerator``)."""
    return OnnxGenerator(path, threads, providers)
