"""NVlabs stylegan2-ada-pytorch network pickles (``network-snapshot-*.pkl``, the released ``ffhq.pkl``,
``cifar10.pkl``, ...) -> a StyleGAN2 ``Generator`` (and ``Discriminator``), read without running code from the file.

The file format (facts of stylegan2-ada-pytorch's published files, from its ``training/training_loop.py``,
``torch_utils/persistence.py``, ``legacy.py`` and ``training/networks.py``; none of its code is used here):

- The top level is a dict written by Python's ``pickle``: ``G``, ``D``, ``G_ema`` (torch modules on the CPU, eval
  mode, gradients off), ``augment_pipe`` (a module or None) and ``training_set_kwargs`` (a dict or None).
- Every network class is wrapped by ``torch_utils.persistence``, so an instance pickles as the call
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {"type": "class", "version": 6,
  "module_src": <source of the module defining the class>, "class_name": ..., "state": <the instance __dict__>}``.
  NVlabs' loader ``exec``s ``module_src`` to rebuild the class; this reader keeps ``class_name`` and ``state`` and
  never looks at the source.
- ``state`` is the torch module's ``__dict__``: ``_parameters`` and ``_buffers`` (name -> tensor), ``_modules``
  (name -> sub-object, itself persistent), ``_non_persistent_buffers_set``, empty hook dicts, ``training``, the
  attributes the constructor set (some are numpy float64 scalars) and ``_init_args`` / ``_init_kwargs`` (the
  constructor's arguments; nested option dicts are ``dnnlib.util.EasyDict``).
- Tensors pickle as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
  (parameters wrapped in ``torch._utils._rebuild_parameter``) and storages as ``torch.storage._load_from_bytes(b)``,
  ``b`` being a (legacy-format) ``torch.save`` file of the storage.

A restricted unpickler rebuilds exactly that: tensors (storages through ``torch.load(weights_only=True)``), dicts,
ordered dicts, sets, numpy scalars (as Python numbers) and plain numeric numpy arrays (no object arrays), ``EasyDict``
as ``dict`` and each persistent object as a ``RecordedObject`` (class name + state). Every other global is refused
before it is looked up, so nothing in the file runs. The modules' state dicts map one to one onto scalegan's
StyleGAN2 (same names and shapes; checked strictly), and the recorded constructor arguments give its
``StyleGAN2Config``. StyleGAN3 pickles (same format) are ``stylegan3_pkl``'s; ``is_stylegan3_pickle`` tells them apart.

Outputs equal NVlabs' generator run in float32 (``force_fp32=True``; its default runs the ``num_fp16_res`` highest
resolutions in float16 on a GPU) for the same z, class, psi and ``noise_mode="const"``. NVlabs truncates every class
towards the one average W; the converted model's per-class centres (``mapping.w_avg_class``) are therefore that
``w_avg`` in every row by default (``class_centers="w_avg"``: the same images), or with ``class_centers="mean"`` each
class's own mean W over 4,096 seeded z (the centre scalegan-trained conditional models track: images stay closer to
their class at low psi, but differ from NVlabs' for psi != 1).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.stylegan2 import Discriminator, Generator, StyleGAN2Config
from .common import Converter, ConvertError, check_keys, register_converter

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version of stylegan2-ada-pytorch (and stylegan3)
NETWORKS = ("G", "D", "G_ema")
CLASS_CENTERS = ("w_avg", "mean")
CLASS_MEAN_SAMPLES = 4096  # z per class for class_centers="mean" (seed 0, the same z for every class)
REQUIRED = object()  # marks a constructor argument without a default
FIR = [1, 3, 3, 1]


# --------------------------------------------------------------------------------------------- the unpickler
@dataclass(frozen=True)
class RecordedObject:
    """A persistent object of the pickle as recorded: its class name and its state (a torch module's
    ``__dict__``). The class's source code is dropped unread."""

    class_name: str
    state: dict


def _recorded_object(meta) -> RecordedObject:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: the recorded state, no code run."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ConvertError("a persistent object whose meta is not a {'type': 'class', ...} dict")
    if meta.get("version") != PERSISTENCE_VERSION:
        raise ConvertError(f"persistence version {meta.get('version')!r}; this reader knows {PERSISTENCE_VERSION}")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, (dict, type(None))):
        raise ConvertError("a persistent object without a class name or a state dict")
    return RecordedObject(name, dict(state or {}))


def _load_storage(data) -> torch.storage.TypedStorage:
    """Stands in for ``torch.storage._load_from_bytes`` (whose ``torch.load`` may unpickle anything)."""
    if not isinstance(data, (bytes, bytearray)):
        raise ConvertError(f"a storage recorded as {type(data).__name__}, not bytes")
    storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ConvertError(f"a storage that loads as {type(storage).__name__}")
    return storage


def _ints(values) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(v, int) for v in values)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None) -> torch.Tensor:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: a view of a storage; hooks and metadata are dropped."""
    if not isinstance(storage, torch.storage.TypedStorage) or not isinstance(storage_offset, int) \
            or not _ints(size) or not _ints(stride):
        raise ConvertError("a tensor recorded with an unexpected storage, offset, size or stride")
    return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
    """Stands in for ``torch._utils._rebuild_parameter(_with_state)``: the parameter's tensor."""
    if not isinstance(data, torch.Tensor):
        raise ConvertError(f"a parameter recorded as {type(data).__name__}, not a tensor")
    return data


class _NumpyDtype:
    """Stands in for ``numpy.dtype`` while unpickling: keeps a plain numeric type code and the byte order."""

    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, str) or not re.fullmatch(r"[fiub][1248]", code):
            raise ConvertError(f"a numpy value of dtype {code!r} (only plain numbers are read)")
        self.code, self.order = code, "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.order = state[1]


def _numpy_scalar(dtype, data=None):
    """Stands in for ``numpy.core.multiarray.scalar``: the Python number (NVlabs stores gains as float64)."""
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise ConvertError("a numpy scalar without a plain dtype and bytes")
    values = np.frombuffer(data, dtype=np.dtype(dtype.code).newbyteorder(dtype.order))
    if values.size != 1:
        raise ConvertError(f"a numpy scalar of {len(data)} bytes")
    return values[0].item()


class _NumpyArray(np.ndarray):
    """A plain numeric ndarray rebuilt from a pickle (NVlabs' StyleGAN3 records some sizes as arrays); made by
    ``_numpy_array`` and filled by pickle's BUILD, which calls ``__setstate__`` with ``(version, shape, dtype,
    is_fortran, raw bytes)``. Object arrays (whose state is a list of objects) are refused."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise ConvertError("a numpy array whose state is not (version, shape, dtype, is_fortran, data)")
        version, shape, dtype, is_fortran, data = state
        if not isinstance(dtype, _NumpyDtype) or not _ints(shape) or any(n < 0 for n in shape) \
                or not isinstance(is_fortran, bool) or not isinstance(data, bytes):
            raise ConvertError("a numpy array without a plain dtype, a shape and raw bytes (object arrays are "
                               "not read)")
        dtype = np.dtype(dtype.code).newbyteorder(dtype.order)
        if len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ConvertError(f"a numpy array of shape {tuple(shape)} with {len(data)} bytes")
        super().__setstate__((1, tuple(shape), dtype, is_fortran, data))


def _numpy_ndarray(*args, **kwargs):
    """Stands in for ``numpy.ndarray``, which pickles name only as the first argument of ``_reconstruct``."""
    raise ConvertError("a call of numpy.ndarray, which network pickles do not hold")


def _numpy_array(subtype, shape, code) -> _NumpyArray:
    """Stands in for ``numpy.core.multiarray._reconstruct``: an empty array that BUILD fills."""
    if subtype is not _numpy_ndarray or shape != (0,) or code not in (b"b", "b"):
        raise ConvertError("a numpy _reconstruct call that is not the pickled-ndarray form")
    return _NumpyArray((0,), np.int8)


def _latin1(text, encoding="latin1") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles use to write bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ConvertError("a _codecs.encode call that is not the protocol-2 bytes form")
    return text.encode("latin1")


ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _recorded_object,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset, ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # written by numpy 1.x (the released files)
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # written by numpy 2.x
    ("numpy", "ndarray"): _numpy_ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
    ("dnnlib.util", "EasyDict"): dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers only; any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        target = ALLOWED.get((module, name))
        if target is not None:
            return target
        if module.startswith("dnnlib.tflib"):
            raise ConvertError("a TensorFlow StyleGAN2 pickle: convert it to the PyTorch format first (NVlabs' "
                               "stylegan2-ada-pytorch: python legacy.py --source OLD.pkl --dest NEW.pkl)")
        raise ConvertError(f"refusing the global {module}.{name}: a network pickle is read as tensors and plain "
                           "containers only, so no code in the file runs")

    def persistent_load(self, pid):
        raise ConvertError("a persistent id, which network pickles do not use")


def read_network_pickle(path: str | os.PathLike, unpickler: type = _RestrictedUnpickler) -> dict:
    """The top-level dict of a network pickle, networks as ``RecordedObject``s; nothing in the file runs
    (``unpickler``: this reader or a format's stricter-or-equal extension of it)."""
    try:
        with open(path, "rb") as f:
            data = unpickler(f).load()
    except ConvertError as e:
        raise ConvertError(f"{path}: {e}") from e
    except Exception as e:  # truncated files raise EOFError or UnpicklingError, damaged ones many types
        raise ConvertError(f"cannot read {path} as a stylegan2-ada-pytorch network pickle (truncated or damaged?): "
                           f"{type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or not any(isinstance(data.get(k), RecordedObject) for k in NETWORKS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ConvertError(f"{path} is not a stylegan2-ada-pytorch network pickle (expected a dict with G, D and "
                           f"G_ema; found {found})")
    return data


STYLEGAN3_LAYER = re.compile(r"L\d+_\d+_\d+")  # NVlabs' StyleGAN3 synthesis layers, L{i}_{size}_{channels}


def is_stylegan3_pickle(path: str | os.PathLike) -> bool:
    """Whether a network pickle holds NVlabs' StyleGAN3 networks: a synthesis layer name ``L{i}_{size}_{C}`` comes
    before StyleGAN2's first block name ``b4``. The opcodes are scanned, not run, and only up to the first of the
    two (G's submodule names come before its larger tensors)."""
    try:
        with open(path, "rb") as f:
            for _, arg, _ in pickletools.genops(f):
                if isinstance(arg, str) and (arg == "b4" or STYLEGAN3_LAYER.fullmatch(arg)):
                    return arg != "b4"
    except Exception:  # not a pickle, or a damaged one: the reader names the problem
        return False
    return False


XL_MARKERS = ("SuperresGenerator", "embed_proj", "rand_embedding")  # StyleGAN-XL's class and mapping names


def is_stylegan_xl_pickle(path: str | os.PathLike) -> bool:
    """Whether a StyleGAN3-layout network pickle is StyleGAN-XL's: its G is a ``SuperresGenerator`` or its mapping
    has XL's class-embedding names. The opcodes are scanned, not run."""
    try:
        with open(path, "rb") as f:
            return any(isinstance(arg, str) and arg in XL_MARKERS for _, arg, _ in pickletools.genops(f))
    except Exception:  # not a pickle, or a damaged one: the reader names the problem
        return False


# --------------------------------------------------------------------------------------------- recorded modules
def module_tensors(obj: RecordedObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """A recorded torch module's state dict: its parameters, persistent buffers and submodules' tensors by dotted
    name, in torch's ``state_dict`` order."""
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ConvertError(f"{prefix}{name} of a recorded {obj.class_name} is {type(tensor).__name__}")
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, RecordedObject):
            raise ConvertError(f"submodule {prefix}{name} is {type(child).__name__}, not a recorded module")
        out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def init_kwargs(obj: RecordedObject, positional: tuple[str, ...]) -> dict:
    """The constructor arguments a recorded network was built with (positional ones named by ``positional``)."""
    args, kwargs = obj.state.get("_init_args") or (), obj.state.get("_init_kwargs")
    if kwargs is None and not args:
        raise ConvertError(f"the recorded {obj.class_name} holds no constructor arguments (_init_kwargs)")
    if not isinstance(kwargs, (dict, type(None))) or len(args) > len(positional):
        raise ConvertError(f"the recorded {obj.class_name}'s constructor arguments are not the known signature")
    return {**dict(zip(positional, args)), **dict(kwargs or {})}


def _options(given, known: dict, what: str) -> dict:
    """``known`` (name -> default, or REQUIRED) filled from ``given``; an argument not in ``known`` is an error."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(known))
    missing = sorted(k for k, v in known.items() if v is REQUIRED and k not in given)
    if unknown or missing:
        raise ConvertError(f"{what}: " + "; ".join(
            f"{label} {', '.join(keys)}" for label, keys in (("unknown arguments", unknown),
                                                           ("missing arguments", missing)) if keys))
    return {k: given.get(k, default) for k, default in known.items()}


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _supported(what: str, value, allowed, why: str = "") -> None:
    if value not in allowed:
        raise ConvertError(f"{what} = {value!r} is not supported{': ' + why if why else ''}")


# --------------------------------------------------------------------------------------------- configs
G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
D_POSITIONAL = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")


def generator_fields(kwargs: dict) -> dict:
    """``StyleGAN2Config`` fields from a recorded Generator's constructor arguments (those of
    stylegan2-ada-pytorch's ``training.networks.Generator``). Precision and memory-format options are ignored; any
    other argument scalegan's generator cannot reproduce is an error."""
    flat = sorted(set(kwargs) & {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "conv_kernel"})
    if flat:  # NVlabs' stylegan3 repository passes synthesis arguments at the top level (its networks differ)
        raise ConvertError(f"a Generator with synthesis arguments at the top level ({', '.join(flat)}): a stylegan3 "
                           "repository pickle, which this reader does not read (its StyleGAN3 networks convert with "
                           "format 'stylegan3'; its StyleGAN2 ones are not read)")
    top = _options(kwargs, dict(z_dim=REQUIRED, c_dim=REQUIRED, w_dim=REQUIRED, img_resolution=REQUIRED,
                                img_channels=REQUIRED, mapping_kwargs={}, synthesis_kwargs={}), "Generator")
    mapping = _options(top["mapping_kwargs"], dict(num_layers=8, embed_features=None, layer_features=None,
                                                   activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995),
                       "Generator mapping_kwargs")
    synthesis = _options(top["synthesis_kwargs"], dict(
        channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None, architecture="skip",
        resample_filter=FIR, use_noise=True, activation="lrelu", kernel_size=3, fp16_channels_last=False),
        "Generator synthesis_kwargs")
    w_dim = top["w_dim"]
    _supported("Generator architecture", synthesis["architecture"], ("skip",),
               "scalegan's StyleGAN2 generator is the `skip` one (the default of every released network); `orig` "
               "and `resnet` generators are not implemented")
    _supported("Generator use_noise", synthesis["use_noise"], (True,))
    _supported("Generator kernel_size", synthesis["kernel_size"], (3,))
    _supported("Generator resample_filter", _listed(synthesis["resample_filter"]), (FIR,))
    for what, value in (("mapping", mapping["activation"]), ("synthesis", synthesis["activation"])):
        _supported(f"Generator {what} activation", value, ("lrelu",))
    _supported("Generator mapping embed_features", mapping["embed_features"], (None, w_dim))
    _supported("Generator mapping layer_features", mapping["layer_features"], (None, w_dim))
    beta = mapping["w_avg_beta"]
    if beta is None or not 0 <= beta < 1:
        raise ConvertError(f"Generator mapping w_avg_beta = {beta!r} is not supported: it must be in [0, 1)")
    clamp = synthesis["conv_clamp"]
    return dict(resolution=top["img_resolution"], n_classes=top["c_dim"], img_channels=top["img_channels"],
                z_dim=top["z_dim"], w_dim=w_dim, mapping_layers=mapping["num_layers"],
                mapping_lr=float(mapping["lr_multiplier"]), w_avg_beta=float(beta),
                channel_base=synthesis["channel_base"], channel_max=synthesis["channel_max"],
                conv_clamp=float(clamp) if clamp is not None else None)


def discriminator_fields(kwargs: dict, g: dict) -> dict:
    """The discriminator's ``StyleGAN2Config`` fields from a recorded Discriminator's constructor arguments;
    ``g`` (``generator_fields``) holds the fields G and D share, which must agree."""
    top = _options(kwargs, dict(c_dim=REQUIRED, img_resolution=REQUIRED, img_channels=REQUIRED, architecture="resnet",
                                channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None,
                                block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={}), "Discriminator")
    _options(top["block_kwargs"], dict(activation="lrelu", resample_filter=FIR, freeze_layers=0,
                                       fp16_channels_last=False), "Discriminator block_kwargs")
    mapping = _options(top["mapping_kwargs"], dict(num_layers=8, embed_features=None, layer_features=None,
                                                   activation="lrelu", lr_multiplier=0.01),
                       "Discriminator mapping_kwargs")
    epilogue = _options(top["epilogue_kwargs"], dict(mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu"),
                        "Discriminator epilogue_kwargs")
    _supported("Discriminator architecture", top["architecture"], ("resnet", "orig"),
               "scalegan's StyleGAN2 discriminator is `resnet` or `orig`; `skip` is not implemented")
    for what, value in (("block", top["block_kwargs"]), ("mapping", mapping), ("epilogue", epilogue)):
        _supported(f"Discriminator {what} activation", (value or {}).get("activation", "lrelu"), ("lrelu",))
    _supported("Discriminator resample_filter", _listed((top["block_kwargs"] or {}).get("resample_filter", FIR)),
               (FIR,))
    clamp = float(top["conv_clamp"]) if top["conv_clamp"] is not None else None
    shared = dict(n_classes=top["c_dim"], resolution=top["img_resolution"], img_channels=top["img_channels"],
                  channel_base=top["channel_base"], channel_max=top["channel_max"], conv_clamp=clamp)
    if top["c_dim"]:
        cmap = min(top["channel_base"] // 4, top["channel_max"])
        _supported("Discriminator cmap_dim", top["cmap_dim"], (None, cmap))
        _supported("Discriminator mapping embed_features", mapping["embed_features"], (None, cmap))
        _supported("Discriminator mapping layer_features", mapping["layer_features"], (None, cmap))
        _supported("Discriminator mapping num_layers", mapping["num_layers"], range(1, 1 << 16))
        shared["mapping_lr"] = float(mapping["lr_multiplier"])
    differ = sorted(k for k, v in shared.items() if g.get(k) != v)
    if differ:
        raise ConvertError("the discriminator's " + ", ".join(f"{k} = {shared[k]!r}" for k in differ)
                           + " differ from the generator's (scalegan's StyleGAN2 config shares them)")
    group = epilogue["mbstd_group_size"]
    return dict(d_architecture=top["architecture"], mbstd_group=group or 0,
                mbstd_channels=epilogue["mbstd_num_channels"],
                d_mapping_layers=mapping["num_layers"] if mapping["num_layers"] else 8)  # 0: unconditional (legacy)


def _config(fields: dict, source: str) -> StyleGAN2Config:
    try:
        return StyleGAN2Config(**fields)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{source}: the recorded architecture is not a valid StyleGAN2 config: {e}") from e


def _network(data: dict, name: str, class_name: str) -> RecordedObject:
    obj = data.get(name)
    if not isinstance(obj, RecordedObject):
        raise ConvertError(f"the pickle holds no {name} network (it holds {', '.join(sorted(map(str, data)))})")
    if obj.class_name != class_name:
        raise ConvertError(f"{name} is a {obj.class_name}, not a {class_name}")
    return obj


def pickle_config(data: dict, weights: str = "G_ema", source: str = "pickle") -> tuple[StyleGAN2Config, str]:
    """The config of a read network pickle and the generator it converts (``weights``: ``"G_ema"``, falling back
    to ``"G"``, or ``"G"``). D's fields come from D when it is there and fits; otherwise they keep their defaults
    (G does not use them)."""
    if weights not in ("G_ema", "G"):
        raise ConvertError(f"weights must be 'G_ema' or 'G' for a network pickle, got {weights!r}")
    name = weights if isinstance(data.get(weights), RecordedObject) or weights == "G" else "G"
    g = generator_fields(init_kwargs(_network(data, name, "Generator"), G_POSITIONAL))
    d = {}
    if isinstance(data.get("D"), RecordedObject):
        try:
            d = discriminator_fields(init_kwargs(_network(data, "D", "Discriminator"), D_POSITIONAL), g)
        except ConvertError:
            d = {}  # G converts all the same; discriminator_from_pickle names the problem
    return _config({**g, **d}, source), name


# --------------------------------------------------------------------------------------------- networks
def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], derived: set[str], source: str) -> None:
    """Load ``state`` into ``module`` strictly: every tensor but the ``derived`` ones must be there, and nothing
    else."""
    ours = module.state_dict()
    check_keys(state, {k: tuple(v.shape) for k, v in ours.items() if k not in derived}, source)
    module.load_state_dict({k: state[k].to(v.dtype) if k in state else v for k, v in ours.items()}, strict=True)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], derived: set[str], source: str) -> None:
    """``load_strict``, first naming a StyleGAN3 generator's tensors (the other format)."""
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in state):
        raise ConvertError(f"{source} is a StyleGAN3 (alias-free) generator: convert it with format 'stylegan3'")
    load_strict(module, state, derived, source)


def set_class_centers(G: torch.nn.Module, class_centers: str) -> None:
    """A converted conditional G's per-class truncation centres: NVlabs' one average W in every row (``"w_avg"``)
    or each class's mean W (``"mean"``)."""
    if G.config.n_classes:
        centers = G.mapping.w_avg[None].expand(G.config.n_classes, -1) if class_centers == "w_avg" else class_mean_w(G)
        G.mapping.w_avg_class.copy_(centers)


@torch.no_grad()
def class_mean_w(G: Generator, n: int = CLASS_MEAN_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Each class's mean W [n_classes, w_dim] over the same ``n`` seeded z."""
    cfg = G.config
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(seed))
    rows = [G.mapping(z, F.one_hot(torch.full((n,), k), cfg.n_classes).float(), track=False).mean(0)
            for k in range(cfg.n_classes)]
    return torch.stack(rows)


def generator_from_pickle(data: dict, weights: str = "G_ema", class_centers: str = "w_avg",
                          source: str = "pickle") -> Generator:
    """The Generator (eval mode) of a read network pickle. ``class_centers``: the truncation centre per class of
    a conditional model, ``"w_avg"`` (NVlabs' one average W: the same images) or ``"mean"`` (each class's mean W)."""
    _supported("class_centers", class_centers, CLASS_CENTERS)
    config, name = pickle_config(data, weights, source)
    G = Generator(config).eval()
    _load(G, module_tensors(data[name]), {"mapping.w_avg_class"}, f"{source} ({name})")
    set_class_centers(G, class_centers)
    return G


def discriminator_from_pickle(data: dict, source: str = "pickle") -> Discriminator:
    """The Discriminator (eval mode) of a read network pickle: an error that names the reason when there is none
    or scalegan's discriminator cannot reproduce it."""
    _, name = pickle_config(data, "G_ema", source)
    g = generator_fields(init_kwargs(data[name], G_POSITIONAL))
    d = discriminator_fields(init_kwargs(_network(data, "D", "Discriminator"), D_POSITIONAL), g)
    D = Discriminator(_config({**g, **d}, source)).eval()
    _load(D, module_tensors(data["D"]), set(), f"{source} (D)")
    return D


def convert_pickle(path: str | os.PathLike, weights: str = "G_ema", class_centers: str = "w_avg") -> Generator:
    """Convert a stylegan2-ada-pytorch network pickle's ``G_ema`` (``weights="G"``: its ``G``) to a Generator."""
    return generator_from_pickle(read_network_pickle(path), weights, class_centers, source=str(path))


def read_networks(path: str | os.PathLike, generator=None, discriminator=None) -> dict[str, torch.nn.Module]:
    """``G``, ``G_ema`` and ``D`` of a network pickle (``D`` left out when it has none), read once, each built by
    ``generator(data, name, source=...)`` / ``discriminator(data, source=...)`` (this format's by default)."""
    generator, discriminator = generator or generator_from_pickle, discriminator or discriminator_from_pickle
    data, source = read_network_pickle(path), str(path)
    networks = {name: generator(data, name, source=source) for name in ("G", "G_ema") if data.get(name) is not None}
    if data.get("D") is not None:
        networks["D"] = discriminator(data, source=source)
    return networks


def pickle_networks(path: str | os.PathLike) -> dict[str, torch.nn.Module]:
    """Every network of a network pickle: what ``--init-from PICKLE`` fine-tunes from. ``G_ema``'s class centres
    are NVlabs' average W."""
    return read_networks(path)


register_converter(Converter(
    "stylegan2-ada-pytorch", detect=lambda p: p.is_file() and p.suffix == ".pkl" and not is_stylegan3_pickle(p),
    convert=convert_pickle,
    networks=pickle_networks,
    reads="a stylegan2-ada-pytorch network .pkl",
    options=(("--class-centers", dict(choices=["w_avg", "mean"], default="w_avg", help="StyleGAN2-ADA conditional "
              "pickles: the truncation centre of each class, w_avg (NVlabs' one average W: the same images as "
              "NVlabs' generator) or mean (each class's mean W over 4,096 seeded z, as scalegan-trained models "
              "track)")),),
))
