"""autonomousvision/stylegan_xl network pickles (``network-snapshot-*.pkl``, ``best_model.pkl``, the released
``imagenet128.pkl`` ...) -> a StyleGAN-XL ``Generator``, read without running code from the file.

The format (REFERENCE.md section 10; facts of its files, none of its code is used): the training loop writes
``dict(G, D, G_ema, augment_pipe, training_set_kwargs[, progress])`` with ``dill.dump``. G / G_ema are NVlabs
persistent objects (as ``stylegan3_pkl`` reads them), class ``Generator`` for a stem or ``SuperresGenerator`` for
a super-resolution stage, whose constructor arguments are only ``path_stem, head_layers, up_factor`` plus
``c_dim, img_resolution, img_channels``: the architecture is read from the recorded ``mapping`` and ``synthesis``
sub-objects (the stem's, whose constructor arguments describe the stem; the stages' layers were appended to it).
``mapping.embed`` is a plain ``torch.nn.Embedding`` (pickled by class reference, its ``__dict__`` as state), and
D is the projected discriminator: ``pg_modules`` / ``feature_networks`` / ``timm`` / ``torch.nn`` classes by
reference, not persistent.

The reader is ``stylegan2_pkl``'s restricted unpickler plus: torch.nn / torch / timm and the projected D's classes
(and ``functools.partial`` and dill's ``_load_type``) become inert records (class name + state; never imported, never
called), so D reads as data and is dropped. Everything else dill may write (``dill._dill._create_function``,
``_create_code``, ``_create_type``, ``_import_module``, ... : code or classes serialised by value) and any other
global are refused before they are looked up.

The embedding table keeps its 1000 ImageNet rows when the dataset has fewer classes (lookups use the first
``c_dim`` rows; those are kept); an unconditional model's unused embedding is dropped. Every stage must double the
resolution with the last stage's ``head_layers`` (the recorded stage); the layer names are checked strictly.
"""

from __future__ import annotations

import os

import torch

from ..models.stylegan_xl import Generator, StyleGANXLConfig
from .common import Converter, ConvertError, register_converter
from .stylegan2_pkl import (
    ALLOWED,
    RecordedObject,
    _options,
    _RestrictedUnpickler,
    is_stylegan_xl_pickle,
    load_strict,
    module_tensors,
    read_network_pickle,
)
from .stylegan3_pkl import SYNTHESIS, _number, generator_fields

# Classes and values D's modules name by reference (torch.nn layers, torch's Size / dtypes / builtin functions, timm
# and the projected D's own classes): recorded as inert objects. Anything else is refused.
INERT_MODULES = ("torch.nn.", "torch._C", "pg_modules.", "feature_networks.", "timm.")
INERT_GLOBALS = {("functools", "partial")}
MAPPING = dict(z_dim=None, c_dim=None, w_dim=None, num_ws=None, num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998,
               rand_embedding=False)


class OpaqueObject(RecordedObject):
    """An object of a class the reader knows by name only (a torch.nn module, the projected D's parts): created
    and filled without the class, its state recorded as a dict."""

    recorded_class = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "class_name", cls.recorded_class)
        object.__setattr__(obj, "state", {})
        return obj

    def __init__(self, *args, **kwargs):
        pass  # pickle's REDUCE may call the stand-in with the real constructor's arguments: they are ignored

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, (dict, type(None))) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}  # (__dict__, slots)
        object.__setattr__(self, "state", dict(state) if isinstance(state, dict) else {"state": state})


def _opaque_class(recorded: str) -> type:
    """A stand-in class whose instances record ``recorded`` and their state."""
    return type(f"Opaque_{recorded.rpartition('.')[2]}", (OpaqueObject,), {"recorded_class": recorded})


def _load_type(name) -> type:
    """Stands in for ``dill._dill._load_type`` (a builtin type by name, e.g. ``PartialType``): an inert class, never
    the real type."""
    if not isinstance(name, str):
        raise ConvertError("a dill _load_type call without a type name")
    return _opaque_class(f"dill type {name}")


class _XLUnpickler(_RestrictedUnpickler):
    """``stylegan2_pkl``'s reader with inert records for the classes a StyleGAN-XL pickle names by reference."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        if (module, name) in INERT_GLOBALS or module == "torch" or module.startswith(INERT_MODULES):
            return _opaque_class(f"{module}.{name}")
        if (module, name) == ("dill._dill", "_load_type"):
            return _load_type
        if module.startswith("dill."):
            raise ConvertError(f"refusing dill's {module}.{name}: the pickle holds code or a class serialised by "
                               "value, which this reader never builds")
        return super().find_class(module, name)


def read_xl_pickle(path: str | os.PathLike) -> dict:
    """The top-level dict of a StyleGAN-XL network pickle (networks as records); nothing in the file runs."""
    return read_network_pickle(path, _XLUnpickler)


def _child(obj: RecordedObject, name: str) -> RecordedObject:
    child = (obj.state.get("_modules") or {}).get(name)
    if not isinstance(child, RecordedObject):
        raise ConvertError(f"the recorded {obj.class_name} has no {name} module")
    return child


def _kwargs(obj: RecordedObject) -> dict:
    kwargs = obj.state.get("_init_kwargs")
    if not isinstance(kwargs, dict) or obj.state.get("_init_args"):
        raise ConvertError(f"the recorded {obj.class_name} holds no keyword constructor arguments")
    return dict(kwargs)


def generator_config(g: RecordedObject) -> StyleGANXLConfig:
    """The config of a recorded StyleGAN-XL ``Generator`` or ``SuperresGenerator``."""
    if g.class_name not in ("Generator", "SuperresGenerator"):
        raise ConvertError(f"G is a {g.class_name}, not a StyleGAN-XL Generator or SuperresGenerator")
    mapping = _options(_kwargs(_child(g, "mapping")), MAPPING, "StyleGAN-XL MappingNetwork")
    synthesis = _kwargs(_child(g, "synthesis"))
    stem = {k: synthesis.pop(k) for k in ("w_dim", "img_resolution", "img_channels") if k in synthesis}
    unknown = sorted(set(synthesis) - set(SYNTHESIS))
    if unknown:
        raise ConvertError(f"StyleGAN-XL SynthesisNetwork: unknown arguments {', '.join(unknown)}")
    fields = generator_fields(dict(
        synthesis, z_dim=mapping["z_dim"], c_dim=mapping["c_dim"], w_dim=stem.get("w_dim", mapping["w_dim"]),
        img_resolution=stem.get("img_resolution"), img_channels=stem.get("img_channels"),
        mapping_kwargs={k: mapping[k] for k in ("num_layers", "lr_multiplier", "w_avg_beta")}))
    extra = dict(stem_resolution=fields["resolution"])
    if g.class_name == "SuperresGenerator":
        top = _kwargs(g)
        if _number("up_factor", top.get("up_factor"), True) != 2:
            raise ConvertError(f"up_factor = {top.get('up_factor')!r} is not supported: scalegan's StyleGAN-XL "
                               "doubles the resolution per stage")
        extra.update(resolution=_number("img_resolution", top.get("img_resolution"), True),
                     head_layers=_number("head_layers", top.get("head_layers"), True))
    embed = _child(_child(g, "mapping"), "embed").state.get("_parameters", {}).get("weight")
    if isinstance(embed, torch.Tensor) and embed.dim() == 2:
        extra["embed_dim"] = int(embed.shape[1])
    try:
        return StyleGANXLConfig(**{**fields, **extra})
    except (TypeError, ValueError) as e:
        raise ConvertError(f"the recorded architecture is not a valid StyleGAN-XL config: {e}") from e


def generator_from_pickle(data: dict, weights: str = "G_ema", source: str = "pickle") -> Generator:
    """The StyleGAN-XL Generator (eval mode) of a read network pickle's ``G_ema`` (or ``G``)."""
    if weights not in ("G_ema", "G"):
        raise ConvertError(f"weights must be 'G_ema' or 'G' for a network pickle, got {weights!r}")
    name = weights if isinstance(data.get(weights), RecordedObject) else "G"
    g = data.get(name)
    if not isinstance(g, RecordedObject):
        raise ConvertError(f"the pickle holds no {name} network (it holds {', '.join(sorted(map(str, data)))})")
    config = generator_config(g)
    state = module_tensors(g)
    embed = state.pop("mapping.embed.weight", None)
    if config.n_classes:
        if embed is None or embed.shape[0] < config.n_classes:
            raise ConvertError(f"{source} ({name}): mapping.embed has fewer rows than the {config.n_classes} classes")
        state["mapping.embed.weight"] = embed[:config.n_classes]
    G = Generator(config).eval()
    load_strict(G, state, set(), f"{source} ({name})")
    return G


def convert_pickle(path: str | os.PathLike, weights: str = "G_ema") -> Generator:
    """Convert a StyleGAN-XL network pickle's ``G_ema`` (``weights="G"``: its ``G``)."""
    return generator_from_pickle(read_xl_pickle(path), weights, source=str(path))


def pickle_networks(path: str | os.PathLike) -> dict[str, torch.nn.Module]:
    """``G`` and ``G_ema`` of a StyleGAN-XL network pickle, read once (its projected D has no scalegan form)."""
    data, source = read_xl_pickle(path), str(path)
    return {name: generator_from_pickle(data, name, source=source) for name in ("G", "G_ema")
            if isinstance(data.get(name), RecordedObject)}


register_converter(Converter(
    "stylegan-xl", detect=lambda p: p.is_file() and p.suffix == ".pkl" and is_stylegan_xl_pickle(p),
    convert=convert_pickle, networks=pickle_networks, reads="a StyleGAN-XL network .pkl"))
