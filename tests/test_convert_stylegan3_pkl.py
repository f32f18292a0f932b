"""NVlabs stylegan3 network pickles -> scalegan's StyleGAN3, read without running anything from the file.

As in ``test_convert_stylegan2_pkl`` (whose persistence writer this reuses), the equality with NVlabs' generator is
shown through the file format: the fixture writes a tiny scalegan StyleGAN3 (whose module and tensor names and
shapes are NVlabs') the way NVlabs' stylegan3 training loop writes ``network-snapshot-*.pkl``: persistent objects
with ``module_src`` text (code that would leave a marker and raise), torch module ``__dict__`` states with
tensors, ``_init_kwargs`` as its ``train.py`` builds them (synthesis arguments at the top level, a python float
``magnitude_ema_beta``, ``EasyDict`` options) with numpy float64 scalars and numpy arrays among the recorded values
(sizes as ``[s, s]`` arrays, as NVlabs' layers store them).
"""

from __future__ import annotations

import collections
import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch
from test_convert_stylegan2_pkl import (
    EasyDict,
    Evil,
    Persistent,
    _augment_pipe,
    _module_state,
    module_src,
    nvlabs_modules,
    pickle_globals,
    record,
)

import scalegan
from scalegan.cli import main
from scalegan.convert import ConvertError, convert, detect_format
from scalegan.convert.stylegan2_pkl import _RestrictedUnpickler, read_network_pickle
from scalegan.convert.stylegan3_pkl import discriminator_from_pickle, generator_from_pickle
from scalegan.models.stylegan3 import Discriminator, Generator, StyleGAN3Config


# ------------------------------------------------------------------------------ models and the writer
def tiny_config(kind: str, conditional: bool) -> StyleGAN3Config:
    """A tiny -T or -R (1x1 convs, radial filters, G's channels doubled) at 32 px: sampling rates 16 and 32."""
    r = kind == "r"
    return StyleGAN3Config(
        resolution=32, n_classes=3 if conditional else 0, z_dim=8, w_dim=8, channel_base=256 * (2 if r else 1),
        channel_max=8 * (2 if r else 1), num_layers=5, margin_size=2, conv_kernel=1 if r else 3,
        use_radial_filters=r, conv_clamp=256.0, magnitude_ema_beta=0.5 ** (32 / 20000), d_channel_base=128,
        d_channel_max=8, d_mapping_layers=2, mbstd_group=2)


def trained_like(cfg: StyleGAN3Config, seed: int = 0):
    """(G, D, G_ema) in eval mode with every tensor non-trivial (biases, w_avg, magnitude EMAs, the input's affine
    drawn), G_ema != G; class centres are w_avg, as NVlabs' truncation has them."""
    G, D = Generator(cfg), Discriminator(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.endswith("bias"):
                    p.copy_(p + torch.randn(p.shape, generator=g) * 0.3)
        G.synthesis.input.affine.weight.copy_(torch.randn(4, cfg.w_dim, generator=g) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(cfg.w_dim, generator=g))
        for name in G.synthesis.layer_names:
            getattr(G.synthesis, name).magnitude_ema.fill_(0.5 + torch.rand([], generator=g).item())
        G_ema = copy.deepcopy(G)
        for p in G_ema.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
        for net in (G, G_ema):
            if cfg.n_classes:
                net.mapping.w_avg_class.copy_(net.mapping.w_avg.expand_as(net.mapping.w_avg_class))
    return G.eval(), D.eval(), G_ema.eval()


def g_kwargs(cfg: StyleGAN3Config) -> dict:
    """Generator arguments as stylegan3's train.py + training_loop.py build them; ``first_stopband`` a numpy float64
    scalar and ``last_stopband_rel`` a 0-d numpy array (recorded numbers NVlabs' reader must take)."""
    kwargs = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
                  channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                  magnitude_ema_beta=cfg.magnitude_ema_beta, num_fp16_res=4, conv_clamp=int(cfg.conv_clamp),
                  num_layers=cfg.num_layers, margin_size=cfg.margin_size, first_stopband=np.float64(2 ** 2.1),
                  last_stopband_rel=np.asarray(2 ** 0.3), c_dim=cfg.n_classes, img_resolution=cfg.resolution,
                  img_channels=cfg.img_channels)
    if cfg.use_radial_filters:
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    return kwargs


def d_kwargs(cfg: StyleGAN3Config) -> dict:
    return dict(block_kwargs=EasyDict(), mapping_kwargs=EasyDict(num_layers=cfg.d_mapping_layers),
                epilogue_kwargs=EasyDict(mbstd_group_size=cfg.mbstd_group), channel_base=cfg.d_channel_base,
                channel_max=cfg.d_channel_max, num_fp16_res=4, conv_clamp=int(cfg.conv_clamp),
                architecture="resnet", c_dim=cfg.n_classes, img_resolution=cfg.resolution,
                img_channels=cfg.img_channels)


def record_generator(module: torch.nn.Module, src: str, init_kwargs: dict | None = None) -> Persistent:
    """``record`` for a StyleGAN3 G, whose toRGB's filter buffers are None (kept as None in ``_buffers``, as torch
    pickles a module's ``__dict__``)."""
    children = {name: record_generator(child, src) for name, child in module._modules.items()}
    buffers = module._buffers
    module._buffers = collections.OrderedDict((n, b) for n, b in buffers.items() if b is not None)
    try:
        state = _module_state(module, children, init_kwargs or {})
    finally:
        module._buffers = buffers
    state["_buffers"] = collections.OrderedDict((n, state["_buffers"].get(n)) for n in buffers if n != "w_avg_class")
    return Persistent(type(module).__name__, state, src)


def _nvlabs_layer_state(G: Generator, recorded: Persistent) -> None:
    """NVlabs' synthesis layers keep sizes as numpy arrays [s, s] and record float64 constructor arguments."""
    modules = recorded.state["_modules"]["synthesis"].state["_modules"]
    modules["input"].state.update(size=np.broadcast_to(np.asarray(G.synthesis.input.size), [2]),
                                  sampling_rate=np.float64(G.synthesis.input.sampling_rate))
    for name in G.synthesis.layer_names:
        size = int(name.split("_")[1])
        modules[name].state.update(in_size=np.broadcast_to(np.asarray(size), [2]), out_size=np.array([size, size]))
        modules[name].state["_init_kwargs"] = dict(out_size=np.array([size, size]), in_cutoff=np.float64(2.5))


def write_network_pickle(path, G, D, G_ema, protocol: int = 3, marker=None, edit=None) -> bytes:
    """``G``, ``D``, ``G_ema`` as a stylegan3 ``network-snapshot-*.pkl``; ``edit(data)`` may change it first."""
    src = module_src(marker or path.with_suffix(".ran"))
    cfg = G.config
    data = dict(G=record_generator(G, src, g_kwargs(cfg)), D=record(D, src, d_kwargs(cfg)),
                G_ema=record_generator(G_ema, src, g_kwargs(cfg)),
                augment_pipe=Persistent("AugmentPipe", _module_state(_augment_pipe(), {}, dict(xflip=1)), src),
                training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="data.zip",
                                         use_labels=bool(cfg.n_classes), max_size=1000, xflip=True,
                                         resolution=cfg.resolution, random_seed=0))
    for name in ("G", "G_ema"):
        _nvlabs_layer_state(G, data[name])
    if edit is not None:
        edit(data)
    with nvlabs_modules():
        raw = pickle.dumps(data, protocol=protocol)
    if protocol < 4:  # as numpy 1.x names its scalars' and arrays' constructors
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(raw)
    return raw


def same_images(A, B, n: int = 3):
    cfg = A.config
    z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % cfg.n_classes if cfg.n_classes else None
    with torch.no_grad():
        for psi in (None, 0.7):
            a, b = A(z, y, truncation=psi), B(z, y, truncation=psi)
            assert torch.equal(a, b), (psi, (a - b).abs().max())
        assert not torch.equal(A(z, y, truncation=0.7), A(z, y))  # the checks above can tell psi apart


def converts_back(generator_from_pickle, data: dict, cfg, G, G_ema) -> None:
    """A read pickle's G_ema and G convert to the generators that wrote them: config, tensors and images."""
    for weights, writer in (("G_ema", G_ema), ("G", G)):
        converted = generator_from_pickle(data, weights)
        assert converted.config == cfg and not converted.training
        ours, theirs = converted.state_dict(), writer.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        same_images(converted, writer)


CASES = [("t", True, 3), ("t", False, 4), ("r", True, 4), ("r", False, 3)]


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("kind, conditional, protocol", CASES,
                         ids=[f"{k}-{'cond' if c else 'uncond'}-p{p}" for k, c, p in CASES])
def test_pickle_converts_to_the_generator_that_wrote_it(tmp_path, capsys, kind, conditional, protocol):
    cfg = tiny_config(kind, conditional)
    G, D, G_ema = trained_like(cfg)
    path, marker = tmp_path / "network-snapshot-000100.pkl", tmp_path / "module_src.ran"
    raw = write_network_pickle(path, G, D, G_ema, protocol=protocol, marker=marker)
    assert module_src(marker).encode() in raw
    if protocol == 3:  # numpy 1.x's names for arrays and scalars, as in the released files
        assert {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy.core.multiarray scalar",
                "numpy dtype"} <= pickle_globals(raw)

    data = read_network_pickle(path)
    recorded = data["G_ema"].state["_init_kwargs"]
    assert isinstance(recorded["last_stopband_rel"], np.ndarray) and recorded["first_stopband"] == 2 ** 2.1
    layer = data["G_ema"].state["_modules"]["synthesis"].state["_modules"][G.synthesis.layer_names[0]]
    assert layer.state["in_size"].tolist() == [int(G.synthesis.layer_names[0].split("_")[1])] * 2
    converts_back(generator_from_pickle, data, cfg, G, G_ema)
    assert not marker.exists() and capsys.readouterr() == ("", "")  # module_src never ran


def test_load_convert_cli_and_discriminator(tmp_path):
    cfg = tiny_config("r", True)
    G, D, G_ema = trained_like(cfg)
    path = tmp_path / "stylegan3-r-tiny.pkl"
    write_network_pickle(path, G, D, G_ema)
    assert detect_format(path) == "stylegan3"
    loaded, info = scalegan.load(path)
    assert info.family == "stylegan3" and info.n_classes == 3 and info.source.startswith("stylegan3:")
    same_images(loaded, G_ema)
    same_images(convert(path, weights="G")[0], G)

    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out), "--device", "cpu"]) == 0
    assert json.loads((out / "config.json").read_text())["converted_from"]["format"] == "stylegan3"
    same_images(scalegan.load(out)[0], G_ema)

    converted = discriminator_from_pickle(read_network_pickle(path))
    assert converted.config.d_channel_base == 128 and converted.config.channel_base == 512
    ours, theirs = converted.state_dict(), D.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    y = torch.arange(4) % 3
    with torch.no_grad():
        images = G_ema(torch.randn(4, cfg.z_dim), y)
        assert torch.equal(converted(images, y), D(images, y))


# ------------------------------------------------------------------------------ refusals: no code runs
def _plant(value):
    def edit(data):  # deep inside G_ema's synthesis network, beside the recorded arrays
        data["G_ema"].state["_modules"]["synthesis"].state["payload"] = value
    return edit


@pytest.mark.parametrize("kind, message", [
    ("os.system", "refusing the global posix.system"),
    ("object array", "numpy value of dtype 'O8'"),
    ("numpy.matrix", "refusing the global numpy.matrix"),
    ("numpy.load", "refusing the global numpy.load"),
    ("ndarray call", "a call of numpy.ndarray"),
])
def test_planted_objects_are_refused_and_nothing_runs(tmp_path, kind, message):
    marker = tmp_path / "ran"
    system = Evil(__import__("os").system, f"touch {marker}")
    evil = {"os.system": lambda: system, "object array": lambda: np.array([system, 1], dtype=object),
            "numpy.matrix": lambda: np.asarray([[1.0, 2.0]]).view(np.matrix),
            "numpy.load": lambda: Evil(np.load, str(marker)), "ndarray call": lambda: Evil(np.ndarray, (4,))}[kind]()
    if kind in ("os.system", "object array"):  # control: an ordinary unpickler runs it
        pickle.loads(pickle.dumps(evil))
        assert marker.exists()
        marker.unlink()
    G, D, G_ema = trained_like(tiny_config("t", False))
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=_plant(evil))
    assert detect_format(tmp_path / "net.pkl") == "stylegan3"
    with pytest.raises(ConvertError, match=message):
        convert(tmp_path / "net.pkl")
    assert not marker.exists()


def test_arrays_of_other_dtypes_and_forms_are_refused():
    for value in (np.array(["ab"]), np.array([1 + 2j])):
        with pytest.raises(ConvertError, match="only plain numbers"):
            _RestrictedUnpickler(io.BytesIO(pickle.dumps(value, protocol=3))).load()
    good = pickle.dumps(np.arange(3.0), protocol=3)
    assert _RestrictedUnpickler(io.BytesIO(good)).load().tolist() == [0.0, 1.0, 2.0]
    reconstruct = np.arange(3.0).__reduce__()[0]  # numpy's _reconstruct, called with another shape
    odd = pickle.dumps(Evil(reconstruct, np.ndarray, (5,), b"b"), protocol=3)
    assert b"_reconstruct" in odd
    with pytest.raises(ConvertError, match="not the pickled-ndarray form"):
        _RestrictedUnpickler(io.BytesIO(odd)).load()
    short = good.replace(b"C\x18" + np.arange(3.0).tobytes(), b"C\x10" + np.arange(2.0).tobytes())
    assert short != good
    with pytest.raises(ConvertError, match="shape"):  # raw bytes that do not fill the shape
        _RestrictedUnpickler(io.BytesIO(short)).load()


def _set(key: str, value, net: str = "G_ema"):
    def edit(data):
        target = data[net].state["_init_kwargs"]
        *path, last = key.split(".")
        for k in path:
            target = target[k]
        target[last] = value
    return edit


@pytest.mark.parametrize("key, value, message", [
    ("mapping_kwargs.w_avg_beta", None, "w_avg_beta = None is not supported"),
    ("mapping_kwargs.embed_features", 4, "unknown arguments embed_features"),
    ("channels_last", True, "unknown arguments channels_last"),
    ("output_scale", np.array([0.25, 0.5]), "output_scale = \\[0.25, 0.5\\] is not supported"),
    ("num_layers", 2.5, "num_layers = 2.5 is not supported"),
    ("img_resolution", 24, "not a valid StyleGAN3 config: StyleGAN3 resolution must be a power of two"),
    ("channel_max", 16, r"does not match the expected layout: .*L0_20_16"),  # the file's layers are 8 wide
])
def test_settings_the_model_cannot_express_are_refused(tmp_path, key, value, message):
    G, D, G_ema = trained_like(tiny_config("t", False))
    write_network_pickle(tmp_path / "net.pkl", G, D, G_ema, edit=_set(key, value))
    with pytest.raises(ConvertError, match=message) as error:
        convert(tmp_path / "net.pkl")
    assert "\n" not in str(error.value)
