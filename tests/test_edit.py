"""Editing (scalegan/edit.py, `scalegan edit`) and latents files accepted back (`scalegan sample --latents`):
SeFa directions against an eigen-decomposition of the Jacobian of the layers that take the latent, edits that
matter, exact identities (strength 0, morph ends), CLI outputs (sheet, GIF, MP4, edited latents), round trips
and one-line errors."""

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image

import scalegan
from scalegan import edit
from scalegan.cli import main
from scalegan.latents import load_latents, save_latents
from scalegan.layers import SNLinear
from scalegan.sampling import draw
from scalegan.weights import save_generator

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def tiny(name: str, seed: int = 0, **overrides):
    """A tiny eval-mode G; BigGAN with N(0, 0.02) init, whose singular values are distinct (orthogonal init makes
    them all equal, and its directions would not be unique)."""
    torch.manual_seed(seed)
    extra = {} if name.startswith("stylegan2") else {"init": "N02"}
    if name.startswith("biggan-deep"):
        extra["resolution"] = 32  # the same layers at a quarter of the pixels
    return scalegan.create_model(name, **{**tiny_overrides(name), **extra, **overrides})[0].eval()


def jacobian_directions(G) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (rows) and eigenvalues of J^T J as the official SeFa ranks them, where J is the Jacobian of the
    outputs of the layers that take the latent (BigGAN: every SN linear layer of G; StyleGAN2: the style affines of
    every convolution and of the last toRGB) with respect to z (W, the same on every layer, for StyleGAN2), found
    by hooks on a forward pass, not by reading weights: those outputs are affine in the latent, so column i of J is
    f(e_i) - f(0). Every row of J is normalised to unit length; rows that take disjoint parts of the latent
    (hierarchical z) are decomposed per part, and the directions ranked per part (each part's first, then second)."""
    style = hasattr(G, "synthesis")
    last = f"synthesis.b{G.config.resolution}.torgb.affine"
    layers = [m for name, m in G.named_modules() if name.endswith(".affine") and (".conv" in name or name == last)] \
        if style else [m for m in G.modules() if isinstance(m, SNLinear)]
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.reshape(len(o), -1))) for m in layers]
    cfg = G.config
    dim = cfg.w_dim if style else cfg.z_dim
    points = torch.cat([torch.zeros(1, dim), torch.eye(dim)])  # 0, e_1, ..., e_dim
    y = torch.ones(dim + 1, dtype=torch.long) if cfg.n_classes else None
    try:
        with torch.no_grad():
            G(points[:, None].expand(-1, cfg.num_ws, -1) if style else points, y)
    finally:
        for h in hooks:
            h.remove()
    f = torch.cat(outputs, 1).double()  # [dim + 1, all outputs]
    J = (f[1:] - f[:1]).t().numpy()
    J = J / np.linalg.norm(J, axis=1, keepdims=True)
    used = np.abs(J) > 1e-12
    spans = sorted({(int(np.argmax(r)), int(len(r) - np.argmax(r[::-1]))) for r in used})
    if len(spans) == 1 or any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        spans = [(0, dim)]
    parts = []
    for start, stop in spans:
        rows = J[used[:, start:stop].any(1)][:, start:stop]
        values, vectors = np.linalg.eigh(rows.T @ rows)
        full = np.zeros((stop - start, dim))
        full[:, start:stop] = vectors[:, ::-1].T
        parts.append((values[::-1], full))
    order = [(c, r) for r in range(dim) for c in range(len(parts)) if r < len(parts[c][0])]
    return np.stack([parts[c][1][r] for c, r in order]), np.array([parts[c][0][r] for c, r in order])


MODELS = [("biggan-fmnist", {}), ("biggan-fmnist", {"n_classes": 0}), ("biggan-fmnist", {"hier": False}),
          ("biggan-deep-128", {}), ("stylegan2-fmnist", {}), ("stylegan2-fmnist", {"n_classes": 0})]


@pytest.mark.parametrize("name, overrides", MODELS, ids=[f"{n}{'-' + str(o) if o else ''}" for n, o in MODELS])
def test_directions_are_orthonormal_ordered_and_match_the_jacobian(name, overrides):
    G = tiny(name, **overrides)
    vectors, values = edit.directions(G, 5)
    assert vectors.shape == (5, edit.latent_space(G)[1]) and values.shape == (5,)
    assert torch.allclose(vectors @ vectors.t(), torch.eye(5), atol=1e-5)
    chunks = edit.latent_chunks(G)
    hierarchical = len(chunks) > 1
    assert hierarchical == (name == "biggan-fmnist" and overrides.get("hier", True))
    if not hierarchical:
        assert (values[:-1] >= values[1:]).all()
    assert values[-1] > 0
    all_vectors, _ = edit.directions(G)
    assert torch.equal(all_vectors[:5], vectors)  # the same signs on every call
    ref_vectors, ref_values = jacobian_directions(G)
    assert np.allclose(values.numpy(), ref_values[:5], rtol=1e-4)
    if hierarchical:  # ranked per chunk: the first directions are each chunk's best, one chunk each
        owners = [next(c for c, (a, b) in enumerate(chunks) if v[a:b].abs().sum() > 0.999) for v in vectors.double()]
        assert owners == list(range(min(5, len(chunks)))) + owners[len(chunks):]
        return
    gaps = np.diff(-ref_values[:6]) / ref_values[0]
    for i in range(5):
        if min(gaps[max(i - 1, 0)], gaps[i]) > 1e-3:  # a direction is unique (up to sign) only at a gap
            assert abs(float(vectors[i].double() @ torch.from_numpy(ref_vectors[i].copy()))) > 0.999, i


def _change(G, z, y, vector, strength=2.0) -> float:
    base = edit.render(G, edit.to_space(G, z, y), y)
    return (edit.render(G, edit.apply_direction(G, z, y, vector, strength), y) - base).square().mean().item()


@pytest.mark.parametrize("name", ["biggan-fmnist", "stylegan2-fmnist"])
def test_the_first_direction_changes_images_most(name):
    G = tiny(name)
    z, y = draw(G, 16, None, None, torch.Generator().manual_seed(0))
    vectors, _ = edit.directions(G)
    start, stop = edit.latent_chunks(G)[0]  # hierarchical z: compare within the first chunk (ranked per chunk)
    same_chunk = [v for v in vectors if v[start:stop].abs().sum() > 0.999]
    top, last = _change(G, z, y, same_chunk[0]), _change(G, z, y, same_chunk[-1])
    assert top > 1.1 * last, (top, last)  # row-normalised weights of a random tiny G: a modest spread
    if name.startswith("stylegan2"):  # every W layer's style moves: the top direction beats random ones too
        g = torch.Generator().manual_seed(1)
        random = [_change(G, z, y, torch.nn.functional.normalize(torch.randn(len(vectors), generator=g), dim=0))
                  for _ in range(6)]
        assert top > 1.1 * np.mean(random), (top, random)


@pytest.mark.parametrize("name", ["biggan-fmnist", "biggan-deep-128", "stylegan2-fmnist"])
def test_strength_zero_and_morph_ends_are_the_input_images(name):
    G = tiny(name)
    truncation = 0.7
    z, y = draw(G, 4, None, truncation, torch.Generator().manual_seed(3))
    plain = edit.render(G, z, y, truncation)
    assert torch.equal(plain, G(z, y, truncation=truncation))
    vector = edit.directions(G, 1)[0][0]
    zero = edit.apply_direction(G, z, y, vector, 0.0, truncation)
    w = zero.dim() == 3
    assert torch.equal(edit.render(G, zero, y, None if w else truncation), plain)
    moved = edit.render(G, edit.apply_direction(G, z, y, vector, 3.0, truncation), y, None if w else truncation)
    assert (moved - plain).abs().max() > 1e-3
    morph = edit.class_morph(G, z, y, target=2, steps=5, truncation=truncation)  # [4, 5, C, H, W]
    # The same batch layout with class indices: equal to the bit (another batch size may round differently).
    z5, y5 = z.repeat_interleave(5, 0), y.repeat_interleave(5, 0)
    assert torch.equal(morph[:, 0], G(z5, y5, truncation=truncation)[::5])
    assert torch.equal(morph[:, -1], G(z5, torch.full_like(y5, 2), truncation=truncation)[4::5])
    assert (morph[:, 0] - plain).abs().max() < 1e-5
    moving = y != 2
    assert (morph[moving, 2] - plain[moving]).abs().amax() > 1e-3


def test_morph_and_direction_errors():
    S = tiny("stylegan2-fmnist")
    z, y = draw(S, 2, None, None, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs z latents"):
        edit.class_morph(S, edit.to_space(S, z, y), y, 1)
    with pytest.raises(ValueError, match="class-conditional"):
        edit.class_morph(tiny("biggan-fmnist", n_classes=0), z, None, 1)
    with pytest.raises(ValueError, match="directions"):
        edit.directions(S, S.config.w_dim + 1)


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    save_generator(tiny("biggan-fmnist"), root / "big", class_names=CLASSES)
    save_generator(tiny("stylegan2-fmnist"), root / "style", class_names=CLASSES)
    return root


def _x(path) -> np.ndarray:
    with np.load(path) as data:
        return data["x"]


@pytest.mark.parametrize("model", ["big", "style"])
def test_sample_latents_round_trip(folders, tmp_path, model):
    src, first, again = str(folders / model), tmp_path / "first.npz", tmp_path / "again.npz"
    assert main(["sample", src, "--n", "5", "--seed", "4", "--truncation", "0.8", "--npz", str(first),
                 "--save-latents", "--max-batch", "3"]) == 0
    G, _ = scalegan.load(src)
    latents, y, truncation = load_latents(first, G.config)
    assert latents.shape == (5, G.config.z_dim if model == "big" else G.config.z_dim) and truncation == 0.8
    with np.load(first) as data:
        assert np.array_equal(data["z"], data["latents"])  # `z` kept for older readers
    # Rendered in the same batches as the first time: bit equality holds only for the same computation (oneDNN
    # picks other kernels for other batch sizes on some CPUs).
    assert main(["sample", src, "--latents", str(first), "--npz", str(again), "--grid", str(tmp_path / "g.png"),
                 "--max-batch", "3"]) == 0
    assert np.array_equal(_x(first), _x(again))
    with np.load(again) as data:
        assert np.array_equal(data["y"], y.numpy())
    # Edited latents (W for StyleGAN2) render back to the edit's images.
    edited, back = tmp_path / "edited.npz", tmp_path / "back.npz"
    assert main(["edit", src, "--latents", str(first), "--direction", "1", "--strength", "2", "--npz", str(edited),
                 "--save-latents"]) == 0
    edited_latents, edited_y, _ = load_latents(edited, G.config)
    assert edited_latents.dim() == (3 if model == "style" else 2) and torch.equal(edited_y, y)
    assert main(["sample", src, "--latents", str(edited), "--npz", str(back)]) == 0
    assert np.array_equal(_x(edited), _x(back)) and not np.array_equal(_x(edited), _x(first))


def test_edit_writes_sheet_morph_gif_and_mp4(folders, tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    src = str(folders / "big")
    sheet, gif = tmp_path / "sheet.png", tmp_path / "walk.gif"
    assert main(["edit", src, "--n", "2", "--sheet", "3", "--steps", "5", "--strength", "4", "--grid", str(sheet),
                 "--walk", str(gif)]) == 0
    assert Image.open(sheet).size == (2 + 5 * 34, 2 + 2 * 3 * 34)  # 2 latents x 3 directions rows, 5 strengths
    with Image.open(gif) as g:
        assert g.n_frames == 2 * 5 - 2 and g.size == (2 + 2 * 34, 2 + 34)
    morph, mp4 = tmp_path / "morph.png", tmp_path / "morph.mp4"
    assert main(["edit", src, "--n", "3", "--class", "ant", "--morph", "Eel", "--steps", "4", "--grid", str(morph),
                 "--walk", str(mp4)]) == 0
    assert Image.open(morph).size == (2 + 4 * 34, 2 + 3 * 34)
    reader = imageio.get_reader(str(mp4))
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 2 * 4 - 2 and frames[0].shape[2] == 3
    # The morph sheet's first and last columns are the pure-class images of the same latents.
    G, _ = scalegan.load(src)
    z, y = draw(G, 3, torch.zeros(3, dtype=torch.long), None, torch.Generator().manual_seed(0))
    grid = np.array(Image.open(morph))
    pure = scalegan.utils.to_hwc(G(z, torch.full((3,), 4)))[..., 0].astype(int)
    for i in range(3):  # to one 8-bit level: the morph ran as one batch of 12
        assert np.abs(grid[2 + 34 * i:34 + 34 * i, 2 + 3 * 34:34 + 3 * 34] - pure[i]).max() <= 1


@pytest.mark.parametrize("args, hint", [
    (["--latents", ("wrong", None)], "do not fit this model"),
    (["--morph", "shoe"], "unknown class"),
    (["--direction", "16"], "directions 0..15"),
    (["--sheet", "17"], "directions 0..15"),
    (["--walk", "x.avi"], ".gif or .mp4"),
    (["--latents", ("good", None), "--n", "3"], "leave out --n"),
    (["--npz", "x.npz", "--sheet", "2"], "leave out --sheet"),
    (["--save-latents"], "give --npz"),
    (["--strength", "nan"], "finite number"),
])
def test_edit_bad_input_is_one_error_line(folders, tmp_path, capsys, monkeypatch, args, hint):
    monkeypatch.chdir(tmp_path)
    save_latents(tmp_path / "wrong.npz", torch.zeros(2, 7), torch.tensor([0, 1]))
    save_latents(tmp_path / "good.npz", torch.zeros(2, 16), torch.tensor([0, 1]))
    argv = [str(tmp_path / f"{a[0]}.npz") if isinstance(a, tuple) else a for a in args]
    assert main(["edit", str(folders / "big"), *argv]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalegan edit: error: ") and hint in lines[0], err
    assert "Traceback" not in out + err and not list(tmp_path.glob("*.png"))


def test_sample_latents_bad_input(folders, tmp_path, capsys):
    save_latents(tmp_path / "style_w.npz", torch.zeros(2, 3, 16), torch.tensor([0, 1]))  # num_ws is not 3
    save_latents(tmp_path / "ok.npz", torch.zeros(2, 16), torch.tensor([0, 1]), truncation=0.5)
    for argv, hint in [([str(folders / "style"), "--latents", str(tmp_path / "style_w.npz")], "do not fit"),
                       ([str(folders / "big"), "--latents", str(tmp_path / "ok.npz"), "--n", "2"], "leave out --n"),
                       ([str(folders / "big"), "--latents", str(tmp_path / "ok.npz"), "--truncation", "0.7"],
                        "holds truncation 0.5")]:
        assert main(["sample", *argv, "--grid", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and hint in err[0], err
