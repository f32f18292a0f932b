"""Parity with the reference training code: forwards, losses and every parameter's gradient of each training phase,
scalegan against NVlabs' stylegan2-ada-pytorch (``Gmain``, ``Greg``, ``Dmain``, ``Dreg``) and ajbrock's
BigGAN-PyTorch (its ``train_fns.GAN_training_function``: the D step and the G step, hinge or cross-entropy, with
orthogonal regularisation), on identical weights and inputs, float32 on the CPU.

Optional: each half is skipped unless an environment variable names a checkout of the reference repository. Their
code is run from there and never copied here (their licences forbid it)::

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /work/refs/stylegan2-ada-pytorch
    git clone https://github.com/ajbrock/BigGAN-PyTorch /work/refs/BigGAN-PyTorch
    SCALEGAN_STYLEGAN2_ADA=/work/refs/stylegan2-ada-pytorch SCALEGAN_BIGGAN_PYTORCH=/work/refs/BigGAN-PyTorch \\
        python -m pytest tests/test_reference_parity.py -v -rA

(``-rA`` prints each test's largest relative difference.) Tested against stylegan2-ada-pytorch d72cc7d
(2023-09-22) and BigGAN-PyTorch 9845943 (2019-07-18) with torch 2.13 (no patching needed). How the two sides
are made to see the same thing:

- Weights: the reference networks are built first (small configs), every parameter perturbed so none is zero or
  one (noise strengths, biases, attention gains), and scalegan's are converted from them by scalegan's converters:
  a stylegan2-ada network pickle written by NVlabs' own ``persistence`` code and read back by
  ``scalegan.convert.stylegan2_pkl``; BigGAN-PyTorch state dicts by ``scalegan.convert.biggan_pytorch`` (D with its
  key mapping).
- Inputs: fixed z, classes and real images per phase; StyleGAN2's per-layer noise and the path-length noise come
  from the global torch generator, seeded identically before each phase on both sides (both draw them in the same
  order and shapes: the forward test checks it). No augmentation, no style mixing.
- Phases: scalegan's through ``scalegan.training.loop.phase_step`` (lazy intervals, penalties, ``requires_grad``
  toggling as in training) with an optimizer that does not move the weights; the references' through their own
  ``StyleGAN2Loss.accumulate_gradients`` (gain = the lazy interval, as their training loop) and
  ``GAN_training_function`` (optimizers replaced by ones that do not move the weights).
- Comparison: per tensor, ``|g_ours - g_ref| / |g_ref|`` (L2 norms) <= 1e-4, the same set of parameters with
  gradients, loss values, and the state each phase leaves (StyleGAN2: W average, path-length mean; BigGAN:
  spectral-norm vectors, BN running statistics).

Known difference: BigGAN-PyTorch adds ``2 beta (W W^T * (1 - I)) W`` to the gradient for orthogonal regularisation
strength beta, the gradient of ``beta / 2 * ||W W^T * (1 - I)||^2``; scalegan's ``g_ortho`` / ``d_ortho`` is the
paper's ``beta`` of ``beta * ||...||^2``, so BigGAN-PyTorch's ``G_ortho = b`` is scalegan's ``g_ortho = b / 2``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scalegan.objectives import Context, Nets
from scalegan.training.loop import phase_step

TOLERANCE = 1e-4  # relative L2 difference per tensor
STYLEGAN2_ENV, BIGGAN_ENV = "SCALEGAN_STYLEGAN2_ADA", "SCALEGAN_BIGGAN_PYTORCH"


# --------------------------------------------------------------------------------------------- helpers
def checkout(env: str, marker: str) -> Path:
    """The reference checkout named by ``env``, or skip."""
    path = os.environ.get(env)
    if not path:
        pytest.skip(f"set {env} to a checkout of the reference code to run the parity tests")
    root = Path(path)
    if not (root / marker).is_file():
        pytest.fail(f"{env}={path} has no {marker}: not the expected checkout")
    return root


@contextlib.contextmanager
def imported_from(root: Path, stubs: tuple[str, ...] = ()):
    """``root`` on sys.path (and empty modules for those of ``stubs`` not imported yet) while a test module uses the
    reference code; its modules and the stubs leave sys.modules afterwards, so other tests see none of them."""
    saved_path, before = list(sys.path), set(sys.modules)
    stubs = tuple(name for name in stubs if name not in before)
    for name in stubs:
        sys.modules[name] = _Stub(name)
    for name in stubs:
        parent, _, child = name.rpartition(".")
        if parent in stubs:
            setattr(sys.modules[parent], child, sys.modules[name])
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            files = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
            if name in stubs or any(f and Path(f).resolve().is_relative_to(root.resolve()) for f in files):
                del sys.modules[name]


class _Stub(types.ModuleType):
    """A module whose every attribute is an empty class (what module-level code needs to define its classes)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """``|ours - ref| / |ref|`` in float64 (0 when both are 0; inf when only the reference is 0)."""
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    den, num = ref.norm().item(), (ours - ref).norm().item()
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def compare(ours: dict[str, torch.Tensor | None], ref: dict[str, torch.Tensor | None], what: str,
            tolerance: float = TOLERANCE) -> tuple[float, str]:
    """Every tensor of ``ours`` within ``tolerance`` of ``ref`` (same names; None on both sides or neither);
    returns the largest relative difference and its name."""
    assert set(ours) == set(ref), f"{what}: names differ: {sorted(set(ours) ^ set(ref))}"
    missing = sorted(k for k in ours if (ours[k] is None) != (ref[k] is None))
    assert not missing, f"{what}: a gradient on one side only: {missing}"
    diffs = {k: relative(ours[k], ref[k]) for k in ours if ref[k] is not None}
    assert diffs, f"{what}: nothing to compare"
    assert sum(ref[k].double().norm().item() for k in diffs) > 0, f"{what}: all reference tensors are zero"
    worst = max(diffs, key=diffs.get)
    bad = {k: f"{v:.2e}" for k, v in diffs.items() if not v <= tolerance}
    assert not bad, f"{what}: relative differences above {tolerance:g}: {bad}"
    print(f"{what}: {len(diffs)} tensors, max relative difference {diffs[worst]:.2e} ({worst})")
    return diffs[worst], worst


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in module.named_parameters()}


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Every parameter plus ``scale`` N(0, 1) noise: none stays 0 or 1 (noise strengths, biases, attention gains)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


class FixedDraw:
    """The ``Draw`` of a phase: the given batches, in order."""

    def __init__(self, noise=(), real=()):
        self._noise, self._real = list(noise), list(real)

    def noise(self):
        return self._noise.pop(0)

    def real(self):
        return self._real.pop(0)


def run_phase(objective, name: str, draw: FixedDraw) -> tuple[dict, dict]:
    """One of scalegan's phases as the training loop runs it; the optimizer does not move the weights. Returns
    the logged values and the gradients of the phase's network."""
    phase = next(p for p in objective.phases if p.name == name)
    net = objective.nets.G if phase.network == "G" else objective.nets.D
    for module in (objective.nets.G, objective.nets.D):
        module.zero_grad(set_to_none=True)
    still = torch.optim.SGD(net.parameters(), lr=0.0)
    values = phase_step(objective, phase, still, torch.amp.GradScaler("cpu", enabled=False), 1, draw)
    return {k: v.item() for k, v in values.items()}, grads(net)


def context(batch_size: int) -> Context:
    return Context(device=torch.device("cpu"), autocast=contextlib.nullcontext, augment=None, accumulation=1,
                   batch_size=batch_size, seed=0)


# --------------------------------------------------------------------------------------------- StyleGAN2
SG_CLASSES, SG_BATCH, SG_Z = 3, 4, 32
SG_G_KWARGS = dict(z_dim=SG_Z, c_dim=SG_CLASSES, w_dim=32, img_resolution=32, img_channels=3,
                   mapping_kwargs=dict(num_layers=2),
                   synthesis_kwargs=dict(channel_base=1024, channel_max=32, num_fp16_res=0, conv_clamp=None))
SG_D_KWARGS = dict(c_dim=SG_CLASSES, img_resolution=32, img_channels=3, channel_base=1024, channel_max=32,
                   num_fp16_res=0, conv_clamp=None, mapping_kwargs=dict(num_layers=2),
                   epilogue_kwargs=dict(mbstd_group_size=2))
SG_OBJECTIVE = dict(r1_gamma=0.5, pl_weight=2.0, pl_decay=0.01, pl_batch_shrink=2, style_mixing=0.0,
                    g_reg_interval=4, d_reg_interval=16)


@pytest.fixture(scope="module")
def stylegan2_ada():
    """stylegan2-ada-pytorch's ``training.networks`` and ``training.loss`` (their ops fall back to the reference
    implementations on the CPU)."""
    root = checkout(STYLEGAN2_ENV, "training/loss.py")
    with imported_from(root):
        from torch_utils import training_stats
        from training import loss, networks

        yield types.SimpleNamespace(networks=networks, loss=loss, training_stats=training_stats)


@pytest.fixture
def stylegan2_pair(stylegan2_ada, tmp_path):
    """NVlabs' G and D (training mode, gradients off as their loop leaves them) and scalegan's, converted from a
    network pickle NVlabs' code wrote."""
    from scalegan.convert.stylegan2_pkl import discriminator_from_pickle, generator_from_pickle, read_network_pickle

    torch.manual_seed(0)
    G = stylegan2_ada.networks.Generator(**SG_G_KWARGS)
    D = stylegan2_ada.networks.Discriminator(**SG_D_KWARGS)
    perturb(G, 1)
    perturb(D, 2)
    G.requires_grad_(False)
    D.requires_grad_(False)
    path = tmp_path / "network-snapshot-000000.pkl"
    with open(path, "wb") as f:  # what their training loop writes
        pickle.dump(dict(G=G, D=D, G_ema=copy.deepcopy(G), augment_pipe=None, training_set_kwargs=None), f)
    data = read_network_pickle(path)
    ours_G, ours_D = generator_from_pickle(data, weights="G").train(), discriminator_from_pickle(data).train()
    return G, D, ours_G, ours_D


def stylegan2_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(SG_BATCH, SG_Z, generator=g)
    y = torch.randint(0, SG_CLASSES, (SG_BATCH,), generator=g)
    x = torch.tanh(torch.randn(SG_BATCH, 3, 32, 32, generator=g))
    y_real = torch.randint(0, SG_CLASSES, (SG_BATCH,), generator=g)
    return z, y, x, y_real


def one_hot(y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, SG_CLASSES).float()


def test_stylegan2_forward(stylegan2_pair):
    G, D, ours_G, ours_D = stylegan2_pair
    z, y, x, _ = stylegan2_inputs(0)
    c = one_hot(y)
    diffs = {}
    with torch.no_grad():
        torch.manual_seed(7)
        ref_img = G(z, c)  # training mode: random per-layer noise
        torch.manual_seed(7)
        diffs["G (random noise)"] = relative(ours_G(z, y), ref_img)
        diffs["D"] = relative(ours_D(x, y), D(x, c)[:, 0])
        G.eval()
        ours_G.eval()
        # NVlabs truncates every class towards its one average W; scalegan's training-mode forward above moved
        # each class's own centre too (from the global average), so put NVlabs' centre in every row, as the
        # converter does for a pickle, to compare the truncation itself.
        ours_G.mapping.w_avg_class.copy_(ours_G.mapping.w_avg.expand_as(ours_G.mapping.w_avg_class))
        try:
            for psi in (1.0, 0.7):
                ref = G(z, c, truncation_psi=psi, noise_mode="const")
                diffs[f"G (const noise, psi {psi})"] = relative(ours_G(z, y, truncation=psi), ref)
        finally:
            G.train()
            ours_G.train()
    diffs["w_avg"] = relative(ours_G.mapping.w_avg, G.mapping.w_avg)  # tracked by the training-mode forwards
    assert ref_img.std() > 0.1
    assert all(v <= TOLERANCE for v in diffs.values()), diffs
    print("StyleGAN2 forwards:", {k: f"{v:.1e}" for k, v in diffs.items()})


def stylegan2_phase(stylegan2_ada, pair, name: str, monkeypatch):
    """One phase on both sides; returns (values, grads, state) for scalegan and the reference."""
    from scalegan.objectives.stylegan2 import StyleGAN2Objective, StyleGAN2ObjectiveConfig

    G, D, ours_G, ours_D = pair
    config = StyleGAN2ObjectiveConfig(**SG_OBJECTIVE)
    objective = StyleGAN2Objective(config, Nets(ours_G, ours_D, ours_G, ours_D, ours_D), context(SG_BATCH))
    z, y, x, y_real = stylegan2_inputs(10)
    reported: dict[str, list[torch.Tensor]] = {}
    monkeypatch.setattr(stylegan2_ada.training_stats, "report",
                        lambda name, value: reported.setdefault(name, []).append(value.detach().clone()))
    ref_loss = stylegan2_ada.loss.StyleGAN2Loss("cpu", G.mapping, G.synthesis, D, augment_pipe=None,
                                                style_mixing_prob=0.0, r1_gamma=config.r1_gamma,
                                                pl_batch_shrink=config.pl_batch_shrink, pl_decay=config.pl_decay,
                                                pl_weight=config.pl_weight)
    gain = {"Greg": config.g_reg_interval, "Dreg": config.d_reg_interval}.get(name, 1)

    # Reference: as their training loop runs a phase (only the phase's module requires gradients).
    module = G if name.startswith("G") else D
    module.requires_grad_(True)
    torch.manual_seed(1234)
    ref_loss.accumulate_gradients(name, x, one_hot(y_real), z, one_hot(y), sync=True, gain=gain)
    module.requires_grad_(False)
    ref_grads = grads(module)

    draw = FixedDraw(noise=[(z, y)], real=[(x, y_real)])
    torch.manual_seed(1234)
    values, ours_grads = run_phase(objective, name, draw)

    mean = {k: torch.cat([v.reshape(-1) for v in vs]).mean().item() for k, vs in reported.items()}
    ref_values = {"Gmain": {"loss_g": mean.get("Loss/G/loss")},
                  "Greg": {"pl_penalty": mean.get("Loss/pl_penalty"), "pl_mean": ref_loss.pl_mean.item()},
                  "Dmain": {"loss_d": mean.get("Loss/D/loss")},
                  "Dreg": {"r1_penalty": mean.get("Loss/r1_penalty")}}[name]
    if "loss_d_fake" in values:
        values["loss_d"] = values["loss_d_fake"] + values["loss_d_real"]
    for key, ref_value in ref_values.items():
        assert ref_value is not None and math.isfinite(ref_value)
        assert abs(values[key] - ref_value) <= TOLERANCE * max(abs(ref_value), 1e-6), (key, values[key], ref_value)
    # The W average both G forwards tracked, and the path-length mean.
    assert relative(ours_G.mapping.w_avg, G.mapping.w_avg) <= TOLERANCE
    assert relative(objective.pl_mean, ref_loss.pl_mean) <= TOLERANCE
    return ours_grads, ref_grads


@pytest.mark.parametrize("name", ["Gmain", "Greg", "Dmain", "Dreg"])
def test_stylegan2_phase_gradients(stylegan2_ada, stylegan2_pair, name, monkeypatch):
    ours, ref = stylegan2_phase(stylegan2_ada, stylegan2_pair, name, monkeypatch)
    compare(ours, ref, f"StyleGAN2 {name} gradients")


# --------------------------------------------------------------------------------------------- BigGAN
BG_CLASSES, BG_BATCH, BG_Z, BG_RES = 5, 4, 20, 64
BG_G_KWARGS = dict(G_ch=8, dim_z=BG_Z, resolution=BG_RES, G_attn="32", n_classes=BG_CLASSES, G_shared=True,
                   shared_dim=8, hier=True, BN_eps=1e-5, SN_eps=1e-6, G_init="ortho")
BG_D_KWARGS = dict(D_ch=8, resolution=BG_RES, D_attn="32", n_classes=BG_CLASSES, SN_eps=1e-6, D_init="ortho")
# BigGAN-PyTorch's utils imports torchvision (for data sets and image files) and its datasets h5py; neither is
# needed for training steps, and torchvision does not import in every environment.
BG_STUBS = ("torchvision", "torchvision.transforms", "torchvision.datasets", "torchvision.datasets.utils",
            "torchvision.utils", "h5py")


@pytest.fixture(scope="module")
def biggan_pytorch():
    root = checkout(BIGGAN_ENV, "train_fns.py")
    with imported_from(root, BG_STUBS):
        import BigGAN
        import losses
        import train_fns

        yield types.SimpleNamespace(BigGAN=BigGAN, losses=losses, train_fns=train_fns)


def biggan_key(ours: str) -> str:
    """scalegan's BigGAN state-dict key -> BigGAN-PyTorch's (the converter's mapping; D's keys follow it too)."""
    from scalegan.convert.biggan_pytorch import _rename

    return _rename(ours)


@pytest.fixture
def biggan_pair(biggan_pytorch):
    """BigGAN-PyTorch's G and D (64 px, attention at 32 in both) and scalegan's, converted from their state dicts."""
    from scalegan.convert.biggan_pytorch import convert_state_dict
    from scalegan.models.biggan import Discriminator

    torch.manual_seed(0)
    with contextlib.redirect_stdout(None):  # their constructors print parameter counts
        G = biggan_pytorch.BigGAN.Generator(**BG_G_KWARGS)
        D = biggan_pytorch.BigGAN.Discriminator(**BG_D_KWARGS)
    perturb(G, 1)
    perturb(D, 2)
    ours_G = convert_state_dict(G.state_dict()).train()
    ours_D = Discriminator(dataclasses.replace(ours_G.config, d_attn=(32,)))
    theirs = D.state_dict()
    ours_D.load_state_dict({k: (theirs[biggan_key(k)] if not k.endswith("num_batches_tracked") else v)
                            for k, v in ours_D.state_dict().items()}, strict=True)
    return G, D, ours_G, ours_D.train()


def biggan_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(BG_BATCH, BG_Z, generator=g)
    y = torch.randint(0, BG_CLASSES, (BG_BATCH,), generator=g)
    x = torch.tanh(torch.randn(BG_BATCH, 3, BG_RES, BG_RES, generator=g))
    y_real = torch.randint(0, BG_CLASSES, (BG_BATCH,), generator=g)
    return z, y, x, y_real


def biggan_state(module: torch.nn.Module, ours: bool) -> dict[str, torch.Tensor]:
    """Buffers (spectral-norm vectors and values, BN running statistics) by BigGAN-PyTorch's names."""
    params = {n for n, _ in module.named_parameters()}
    state = {k: v for k, v in module.state_dict().items() if k not in params and not k.endswith("num_batches_tracked")}
    return {biggan_key(k): v for k, v in state.items()} if ours else state


def test_biggan_forward(biggan_pair):
    G, D, ours_G, ours_D = (copy.deepcopy(m) for m in biggan_pair)
    z, y, x, _ = biggan_inputs(0)
    diffs = {}
    with torch.no_grad():
        for mode in ("train", "eval"):  # batch statistics and one power iteration; stored statistics and u
            for m in (G, D, ours_G, ours_D):
                m.train(mode == "train")
            ref_img = G(z, G.shared(y))
            diffs[f"G ({mode})"] = relative(ours_G(z, y), ref_img)
            diffs[f"D ({mode})"] = relative(ours_D(x, y), D(x, y)[:, 0])
            assert ref_img.std() > 0.1
    assert all(v <= TOLERANCE for v in diffs.values()), diffs
    print("BigGAN forwards:", {k: f"{v:.1e}" for k, v in diffs.items()})
    compare(biggan_state(ours_G, True), biggan_state(G, False), "BigGAN G buffers after the forwards")
    compare(biggan_state(ours_D, True), biggan_state(D, False), "BigGAN D buffers after the forwards")


class _Samples(torch.Tensor):
    """Stands in for BigGAN-PyTorch's ``utils.Distribution`` (z_, y_): ``sample_()`` loads the next given batch."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def sample_(self):
        self.copy_(self.batches.pop(0))


def samples(batches: list[torch.Tensor]) -> _Samples:
    out = batches[0].clone().as_subclass(_Samples)
    out.batches = list(batches)
    return out


@pytest.mark.parametrize("loss", ["hinge", "ce"])
@pytest.mark.parametrize("ortho", [0.0, 1e-3])
def test_biggan_training_step(biggan_pytorch, biggan_pair, loss, ortho, monkeypatch):
    """One iteration of BigGAN-PyTorch's ``GAN_training_function`` (a D step, then a G step) against scalegan's
    ``D`` and ``G`` phases: losses, D's gradients after the D step, G's after the G step, and the spectral-norm
    vectors and BN statistics the four forwards leave."""
    from scalegan.objectives.biggan import BigGANObjective, BigGANObjectiveConfig

    G, D, ours_G, ours_D = biggan_pair
    ref_losses = biggan_pytorch.losses
    if loss == "ce":  # their train_fns reads the module-level defaults
        monkeypatch.setattr(ref_losses, "discriminator_loss", ref_losses.loss_dcgan_dis)
        monkeypatch.setattr(ref_losses, "generator_loss", ref_losses.loss_dcgan_gen)
    z_d, y_d, x, y_real = biggan_inputs(10)
    z_g, y_g, _, _ = biggan_inputs(11)

    G.optim = torch.optim.SGD(G.parameters(), lr=0.0)  # steps that do not move the weights
    D.optim = torch.optim.SGD(D.parameters(), lr=0.0)
    config = dict(batch_size=BG_BATCH, toggle_grads=True, num_D_steps=1, num_D_accumulations=1, split_D=False,
                  D_ortho=ortho, num_G_accumulations=1, G_ortho=ortho, ema=False)
    train = biggan_pytorch.train_fns.GAN_training_function(
        G, D, biggan_pytorch.BigGAN.G_D(G, D), samples([z_d, z_g]), samples([y_d, y_g]), None, {"itr": 0}, config)
    with contextlib.redirect_stdout(None):  # "using modified ortho reg in D"
        out = train(x, y_real)
    ref_d_grads, ref_g_grads = grads(D), grads(G)  # D's are left from the D step (D is frozen in the G step)

    objective = BigGANObjective(
        BigGANObjectiveConfig(loss=loss, n_d_steps=1, g_ortho=ortho / 2, d_ortho=ortho / 2),  # see the docstring
        Nets(ours_G, ours_D, ours_G, ours_D, ours_D), context(BG_BATCH))
    d_values, d_grads = run_phase(objective, "D", FixedDraw(noise=[(z_d, y_d)], real=[(x, y_real)]))
    g_values, g_grads = run_phase(objective, "G", FixedDraw(noise=[(z_g, y_g)]))

    for ours, ref in ((d_values["loss_d_real"], out["D_loss_real"]), (d_values["loss_d_fake"], out["D_loss_fake"]),
                      (g_values["loss_g"], out["G_loss"])):
        assert abs(ours - ref) <= TOLERANCE * max(abs(ref), 1e-3), (ours, ref)
    compare({biggan_key(k): v for k, v in d_grads.items()}, ref_d_grads,
            f"BigGAN D step ({loss}, ortho {ortho:g}) gradients")
    compare({biggan_key(k): v for k, v in g_grads.items()}, ref_g_grads,
            f"BigGAN G step ({loss}, ortho {ortho:g}) gradients")
    compare(biggan_state(ours_G, True), biggan_state(G, False), "BigGAN G buffers after the step")
    compare(biggan_state(ours_D, True), biggan_state(D, False), "BigGAN D buffers after the step")
