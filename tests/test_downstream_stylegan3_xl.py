"""Everything downstream works unchanged for the StyleGAN3 and StyleGAN-XL families (issue 24, item 3), on tiny
trained instances: class control and truncation towards per-class W centres, the CLI's grids, style mixing and
interpolation, SeFa editing, inversion, the server's API and page data. ONNX export parity and the loader are in
the families' own test files."""

import pytest
import torch
from conftest import train_tiny

import scalegan
from scalegan.cli import main
from scalegan.latents import load_latents

PRESETS = ["stylegan3-t-fmnist", "stylegan-xl-fmnist"]


@pytest.fixture(scope="module", params=PRESETS)
def trained(request, tmp_path_factory):
    """(run folder, G, info, scratch folder) of a 3-iteration run on the 3-class bar data."""
    root = tmp_path_factory.mktemp(request.param)
    _, G, info = train_tiny(request.param, _bars(root), root / "run")
    return root / "run", G, info, root


def _bars(root):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(96) % 3
    x = rng.integers(0, 40, size=(96, 32, 32, 1), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 4 + 8 * k:10 + 8 * k, 4:28] = 220
    path = root / "bars.npz"
    np.savez(path, x=x, y=y.astype(np.int64), class_names=np.array(["top", "middle", "bottom"]))
    return path


def test_class_control_and_truncation_towards_the_class_centre(trained):
    _, G, info, _ = trained
    assert info.class_names == ("top", "middle", "bottom")
    images = scalegan.sample(G, 4, y=1, truncation=0.7, seed=3)
    assert images.shape == (4, 1, 32, 32) and torch.equal(images, scalegan.sample(G, 4, y=1, truncation=0.7, seed=3))
    # psi near 0: every latent of a class lands on that class's centre (one image per class); classes differ.
    centre = scalegan.sample(G, 3, y=2, truncation=1e-6, seed=5)
    assert torch.allclose(centre[0], centre[1], atol=1e-4) and torch.allclose(centre[0], centre[2], atol=1e-4)
    assert not torch.allclose(centre[0], scalegan.sample(G, 1, y=0, truncation=1e-6, seed=5)[0], atol=1e-3)
    assert not torch.allclose(images[0], images[1])


def test_cli_grids_mixing_interpolation_and_sefa(trained):
    run, G, _, root = trained
    lat = root / "lat.npz"
    assert main(["sample", str(run), "--per-class", "2", "--npz", str(lat), "--save-latents",
                 "--grid", str(root / "grid.png"), "--truncation", "0.7"]) == 0
    latents, y, _ = load_latents(lat, G.config)
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and (root / "grid.png").stat().st_size > 0
    assert main(["sample", str(run), "--mix", "2", "--grid", str(root / "mix.png")]) == 0
    for mode in ("z", "class"):
        assert main(["sample", str(run), "--interp", mode, "--rows", "2", "--steps", "3",
                     "--grid", str(root / f"interp_{mode}.png")]) == 0
    edited = root / "edited.npz"
    assert main(["edit", str(run), "--latents", str(lat), "--direction", "0", "--strength", "2", "--npz",
                 str(edited), "--save-latents"]) == 0
    w, w_y, _ = load_latents(edited, G.config)
    assert w.shape == (6, G.config.num_ws, G.config.w_dim) and torch.equal(w_y, y)


def test_inversion_and_pivotal_tuning(trained):
    from scalegan.invert import invert

    _, G, _, _ = trained
    target = scalegan.sample(G, 1, y=2, seed=11)
    result = invert(G, target, classes=[2], steps=40, restarts=1, seed=0)
    assert result.latents.shape == (1, G.config.num_ws, G.config.w_dim) and float(result.psnr[0]) > 15
    tuned = invert(G, target, classes=[2], steps=5, restarts=1, seed=0, tune=5)
    assert torch.allclose(tuned.generators[0](tuned.latents, tuned.y), tuned.images, atol=1e-5)


def test_server_generates_and_renders(trained):
    from fastapi.testclient import TestClient

    from scalegan.serve.app import ServeSettings, create_app

    run, G, info, root = trained
    z_lat, lat = root / "z_serve.npz", root / "w_serve.npz"
    assert main(["sample", str(run), "--per-class", "1", "--npz", str(z_lat), "--save-latents"]) == 0
    assert main(["edit", str(run), "--latents", str(z_lat), "--direction", "1", "--strength", "1", "--npz",
                 str(lat), "--save-latents"]) == 0  # W latents, as the page's editor sends them
    with TestClient(create_app({"m": (G, info)}, ServeSettings())) as client:
        models = client.get("/v1/models").json()["models"]
        assert models[0]["truncation"]["meaning"].startswith("psi")
        response = client.post("/v1/generate", json={"n": 2, "class": "middle", "seed": 1, "format": "png",
                                                     "truncation": 0.7})
        assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
        response = client.post("/v1/render", content=lat.read_bytes(),
                               headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200, response.text
        assert client.get("/").status_code == 200  # the page
