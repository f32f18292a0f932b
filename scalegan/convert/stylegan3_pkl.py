"""NVlabs stylegan3 network pickles (``network-snapshot-*.pkl``, the released ``stylegan3-t-*.pkl`` /
``stylegan3-r-*.pkl``) -> a StyleGAN3 ``Generator`` (and its StyleGAN2 ``Discriminator``), read without running code
from the file.

The file format is stylegan2-ada-pytorch's (persistence version 6; see ``stylegan2_pkl``, whose restricted reader
this uses): a dict of ``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``, each network a recorded
class name + state. What differs (REFERENCE.md section 9, facts of NVlabs' files; none of their code is used):

- ``G`` / ``G_ema`` are ``training.networks_stylegan3.Generator`` (class name ``Generator``), recorded with
  ``_init_kwargs`` ``z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs`` and the synthesis
  arguments at the top level (``channel_base``, ``channel_max``, ``magnitude_ema_beta``, ``conv_kernel``,
  ``use_radial_filters``, ``num_fp16_res``, ``conv_clamp``, ...); some recorded values are numpy scalars and arrays.
- Their state dicts are ``mapping.*`` (2 layers), ``synthesis.input.*`` and ``synthesis.L{i}_{size}_{C}.*``: the
  names and shapes of scalegan's ``models.stylegan3`` (checked strictly, so a layer schedule that differs from the
  recorded arguments' is an error that names the layers).
- ``D`` is ``training.networks_stylegan2.Discriminator``, read as ``stylegan2_pkl`` reads it; its ``channel_base`` /
  ``channel_max`` are the config's ``d_channel_base`` / ``d_channel_max``.

Precision arguments (``num_fp16_res``) are ignored: the converted model runs in float32, as NVlabs' with
``force_fp32=True``; ``conv_clamp`` is kept (NVlabs clamps in float32 too). Conditional models truncate towards the
one average W as NVlabs' (``class_centers="w_avg"``) or each class's mean W (``"mean"``), as in ``stylegan2_pkl``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..models.stylegan3 import Discriminator, Generator, StyleGAN3Config
from .common import Converter, ConvertError, register_converter
from .stylegan2_pkl import (
    CLASS_CENTERS,
    D_POSITIONAL,
    REQUIRED,
    RecordedObject,
    _network,
    _options,
    _supported,
    discriminator_fields,
    init_kwargs,
    is_stylegan3_pickle,
    is_stylegan_xl_pickle,
    load_strict,
    module_tensors,
    read_network_pickle,
    read_networks,
    set_class_centers,
)

G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
MAPPING = dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998)  # NVlabs' StyleGAN3 MappingNetwork defaults
SYNTHESIS = dict(  # NVlabs' SynthesisNetwork / SynthesisLayer defaults (section 9)
    channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1,
    last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25, num_fp16_res=4, conv_kernel=3, filter_size=6,
    lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256, magnitude_ema_beta=0.999)
INTS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "num_layers", "channel_base", "channel_max",
        "num_critical", "margin_size", "conv_kernel", "filter_size", "lrelu_upsampling")


def _number(what: str, value, integer: bool = False):
    """A recorded number as a Python one. NVlabs records some values as numpy scalars (read as Python numbers) or
    arrays (a size as ``[s, s]``): an array whose elements are all equal stands for that element."""
    if isinstance(value, np.ndarray):
        flat = np.asarray(value).reshape(-1)
        if flat.size == 0 or not (flat == flat[0]).all():
            raise ConvertError(f"Generator {what} = {value.tolist()!r} is not supported: a number is expected")
        value = flat[0].item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConvertError(f"Generator {what} = {value!r} is not supported: a number is expected")
    if integer:
        if value != int(value):
            raise ConvertError(f"Generator {what} = {value!r} is not supported: an integer is expected")
        return int(value)
    return float(value)


def generator_fields(kwargs: dict) -> dict:
    """``StyleGAN3Config`` fields from a recorded StyleGAN3 Generator's constructor arguments; an argument this
    model cannot reproduce is an error."""
    top = _options(kwargs, dict(z_dim=REQUIRED, c_dim=REQUIRED, w_dim=REQUIRED, img_resolution=REQUIRED,
                                img_channels=REQUIRED, mapping_kwargs={}, **SYNTHESIS), "StyleGAN3 Generator")
    mapping = _options(top.pop("mapping_kwargs"), MAPPING, "StyleGAN3 Generator mapping_kwargs")
    if "synthesis_kwargs" in kwargs:
        raise ConvertError("a Generator with synthesis_kwargs: a stylegan2-ada-pytorch pickle, not a StyleGAN3 one")
    radial = top["use_radial_filters"]
    if not isinstance(radial, bool):
        raise ConvertError(f"Generator use_radial_filters = {radial!r} is not supported: True or False is expected")
    if mapping["w_avg_beta"] is None:
        raise ConvertError("Generator mapping w_avg_beta = None is not supported: the average W is needed")
    clamp = top["conv_clamp"]
    n = {k: _number(k, v, k in INTS) for k, v in top.items()
         if k not in ("use_radial_filters", "conv_clamp", "num_fp16_res")}
    return dict(
        resolution=n["img_resolution"], n_classes=n["c_dim"], img_channels=n["img_channels"], z_dim=n["z_dim"],
        w_dim=n["w_dim"], mapping_layers=_number("mapping num_layers", mapping["num_layers"], True),
        mapping_lr=_number("mapping lr_multiplier", mapping["lr_multiplier"]),
        w_avg_beta=_number("mapping w_avg_beta", mapping["w_avg_beta"]),
        channel_base=n["channel_base"], channel_max=n["channel_max"], num_layers=n["num_layers"],
        num_critical=n["num_critical"], first_cutoff=n["first_cutoff"], first_stopband=n["first_stopband"],
        last_stopband_rel=n["last_stopband_rel"], margin_size=n["margin_size"], output_scale=n["output_scale"],
        conv_kernel=n["conv_kernel"], use_radial_filters=radial, filter_size=n["filter_size"],
        lrelu_upsampling=n["lrelu_upsampling"], magnitude_ema_beta=n["magnitude_ema_beta"],
        conv_clamp=_number("conv_clamp", clamp) if clamp is not None else None)


def _d_fields(data: dict, g: dict) -> dict:
    """The config's ``d_*`` fields from the pickle's D (StyleGAN2's discriminator; its channels are its own)."""
    kwargs = init_kwargs(_network(data, "D", "Discriminator"), D_POSITIONAL)
    shared = dict(n_classes=g["n_classes"], resolution=g["resolution"], img_channels=g["img_channels"],
                  channel_base=kwargs.get("channel_base", 32768), channel_max=kwargs.get("channel_max", 512),
                  conv_clamp=g["conv_clamp"], mapping_lr=g["mapping_lr"])
    d = discriminator_fields(kwargs, shared)
    return dict(d, d_channel_base=shared["channel_base"], d_channel_max=shared["channel_max"])


def _config(fields: dict, source: str) -> StyleGAN3Config:
    try:
        return StyleGAN3Config(**fields)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{source}: the recorded architecture is not a valid StyleGAN3 config: {e}") from e


def pickle_config(data: dict, weights: str = "G_ema", source: str = "pickle") -> tuple[StyleGAN3Config, str]:
    """The config of a read StyleGAN3 network pickle and the generator it converts (``"G_ema"``, falling back to
    ``"G"``, or ``"G"``). D's fields come from D when it is there and fits; otherwise they keep their defaults."""
    if weights not in ("G_ema", "G"):
        raise ConvertError(f"weights must be 'G_ema' or 'G' for a network pickle, got {weights!r}")
    name = weights if isinstance(data.get(weights), RecordedObject) or weights == "G" else "G"
    g = generator_fields(init_kwargs(_network(data, name, "Generator"), G_POSITIONAL))
    d = {}
    if isinstance(data.get("D"), RecordedObject):
        try:
            d = _d_fields(data, g)
        except ConvertError:
            d = {}  # G converts all the same; discriminator_from_pickle names the problem
    return _config({**g, **d}, source), name


def generator_from_pickle(data: dict, weights: str = "G_ema", class_centers: str = "w_avg",
                          source: str = "pickle") -> Generator:
    """The StyleGAN3 Generator (eval mode) of a read network pickle; ``class_centers`` as in ``stylegan2_pkl``."""
    _supported("class_centers", class_centers, CLASS_CENTERS)
    config, name = pickle_config(data, weights, source)
    G = Generator(config).eval()
    load_strict(G, module_tensors(data[name]), {"mapping.w_avg_class"}, f"{source} ({name})")
    set_class_centers(G, class_centers)
    return G


def discriminator_from_pickle(data: dict, source: str = "pickle") -> Discriminator:
    """The Discriminator (eval mode) of a read StyleGAN3 network pickle, or an error that names why not."""
    _, name = pickle_config(data, "G_ema", source)
    g = generator_fields(init_kwargs(data[name], G_POSITIONAL))
    D = Discriminator(_config({**g, **_d_fields(data, g)}, source)).eval()
    load_strict(D, module_tensors(data["D"]), set(), f"{source} (D)")
    return D


def convert_pickle(path: str | os.PathLike, weights: str = "G_ema", class_centers: str = "w_avg") -> Generator:
    """Convert a stylegan3 network pickle's ``G_ema`` (``weights="G"``: its ``G``) to a StyleGAN3 Generator."""
    return generator_from_pickle(read_network_pickle(path), weights, class_centers, source=str(path))


def pickle_networks(path: str | os.PathLike) -> dict[str, torch.nn.Module]:
    """``G``, ``G_ema`` and ``D`` (when the pickle has one) of a stylegan3 network pickle, read once."""
    return read_networks(path, generator_from_pickle, discriminator_from_pickle)


# The class-centre choice is the stylegan2-ada-pytorch converter's --class-centers flag (one flag per name); this
# format takes it as the keyword ``class_centers`` of ``convert``.
register_converter(Converter(
    "stylegan3", detect=lambda p: (p.is_file() and p.suffix == ".pkl" and is_stylegan3_pickle(p)
                                   and not is_stylegan_xl_pickle(p)),
    convert=convert_pickle, networks=pickle_networks, reads="a stylegan3 network .pkl"))
