"""`POST /v1/render`: latents files (and JSON latents) back to images, the same as `scalegan sample --latents`; W
latents for StyleGAN2; bad bodies as 4xx JSON naming the fix. Small random models, FastAPI's in-process client."""

import io

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import scalegan  # noqa: E402
from scalegan import edit  # noqa: E402
from scalegan.cli import main  # noqa: E402
from scalegan.latents import save_latents  # noqa: E402
from scalegan.serve.app import ServeSettings, create_app  # noqa: E402
from scalegan.utils import to_hwc  # noqa: E402
from scalegan.weights import save_generator  # noqa: E402

NAMES = ["ant", "bee", "cat", "dog", "eel"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("render")
    save_generator(scalegan.create_model("biggan-fmnist", **tiny_overrides("biggan-fmnist"))[0], root / "big",
                   class_names=NAMES)
    save_generator(scalegan.create_model("stylegan2-fmnist", **tiny_overrides("stylegan2-fmnist"))[0], root / "style")
    save_generator(scalegan.create_model("biggan-fmnist", **{**tiny_overrides("biggan-fmnist"), "n_classes": 0})[0],
                   root / "uncond")
    return root


@pytest.fixture(scope="module")
def client(folders):
    models = {name: scalegan.load(folders / name) for name in ("big", "style", "uncond")}
    with TestClient(create_app(models, ServeSettings(max_n=8))) as c:
        yield c


def npz(response) -> dict:
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content)) as data:
        return {k: data[k] for k in data.files}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal 8-bit images to one level (a batch of another size may round a GEMM differently)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


@pytest.mark.parametrize("model", ["big", "style", "uncond"])
def test_a_sample_latents_file_renders_to_its_images(client, folders, tmp_path, model):
    path = tmp_path / "s.npz"
    assert main(["sample", str(folders / model), "--n", "4", "--seed", "2", "--truncation", "0.6", "--npz", str(path),
                 "--save-latents"]) == 0
    body = path.read_bytes()
    with np.load(path) as data:
        x, y = data["x"], data["y"]
    got = npz(client.post(f"/v1/render?model={model}&format=npz", content=body,
                          headers={"content-type": "application/octet-stream"}))
    assert close(got["x"], x) and np.array_equal(got["y"], y) and float(got["truncation"]) == pytest.approx(0.6)
    # The answer is a latents file too: sent back, it gives the same images.
    again = npz(client.post(f"/v1/render?model={model}&format=npz", content=_npz_bytes(got)))
    assert np.array_equal(again["x"], got["x"])
    png = client.post(f"/v1/render?model={model}&nrow=2", content=body)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (2 + 2 * 34, 2 + 2 * 34)


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_json_latents_and_stylegan2_w(client, folders, tmp_path):
    G, _ = scalegan.load(folders / "big")
    z, y = scalegan.sampling.draw(G, 3, [0, 4, 2], None, torch.Generator().manual_seed(5))
    js = client.post("/v1/render", json={"model": "big", "latents": z.tolist(), "class": ["ant", "eel", 2],
                                         "format": "json"}).json()
    assert js["classes"] == [0, 4, 2] and np.allclose(js["latents"], z.numpy()) and len(js["images"]) == 3
    data = npz(client.post("/v1/render", json={"model": "big", "latents": z.tolist(), "class": [0, 4, 2],
                                               "format": "npz"}))
    assert close(data["x"], to_hwc(G(z, y)))
    one_class = npz(client.post("/v1/render", json={"model": "big", "latents": z.tolist(), "class": "bee",
                                                    "format": "npz"}))
    assert one_class["y"].tolist() == [1, 1, 1]
    # StyleGAN2: edited W latents (as `scalegan edit --save-latents` writes them) render as they are.
    S, _ = scalegan.load(folders / "style")
    zs, ys = scalegan.sampling.draw(S, 2, [1, 3], None, torch.Generator().manual_seed(0))
    ws = edit.apply_direction(S, zs, ys, edit.directions(S, 1)[0][0], 2.0, truncation=0.7)
    save_latents(tmp_path / "w.npz", ws, ys)
    got = npz(client.post("/v1/render?model=style&format=npz", content=(tmp_path / "w.npz").read_bytes()))
    assert got["latents"].shape == (2, S.config.num_ws, S.config.w_dim)
    assert close(got["x"], to_hwc(S(ws, ys))) and np.isnan(got["truncation"])


@pytest.mark.parametrize("request_kwargs, status, field, hint", [
    (dict(json={"model": "big", "latents": [[0.0] * 7], "class": 1}), 422, "latents", "do not fit this model"),
    (dict(json={"model": "big", "latents": [[0.0] * 16], "class": "shoe"}), 422, "class", "unknown class"),
    (dict(json={"model": "big", "latents": [[0.0] * 16]}), 422, "class", "class-conditional"),
    (dict(json={"model": "big", "latents": [[0.0] * 16, [1.0]], "class": 1}), 422, "latents", "rectangular"),
    (dict(json={"model": "big", "latents": [[0.0] * 16] * 2, "class": [1]}), 422, "class", "1 classes for 2"),
    (dict(json={"model": "big", "latents": [[0.0] * 16] * 9, "class": 1}), 422, "latents", "at most 8"),
    (dict(json={"model": "uncond", "latents": [[0.0] * 16], "class": 1}), 422, "class", "unconditional"),
    (dict(json={"model": "big", "latents": [[0.0] * 16], "class": 1, "seed": 3}), 422, "seed", "Extra inputs"),
    (dict(json={"model": "nope", "latents": [[0.0] * 16]}), 404, "model", "unknown model"),
    (dict(content=b"not an npz"), 422, "latents", "latents NPZ"),
    (dict(content=b"x", headers={"content-type": "text/plain"}), 415, "content-type", "application/octet-stream"),
])
def test_bad_render_requests(client, request_kwargs, status, field, hint):
    r = client.post("/v1/render", **request_kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == field and hint in body["error"], body


def test_bad_latents_files(client):
    def send(model, latents, y, **extra):
        buffer = io.BytesIO()
        np.savez(buffer, latents=latents, y=y, **extra)
        return client.post(f"/v1/render?model={model}", content=buffer.getvalue())

    cases = [(send("big", np.zeros((2, 16), np.float32), np.array([0, 9])), "out of range"),
             (send("big", np.full((1, 16), np.nan, np.float32), np.array([0])), "NaN"),
             (send("style", np.zeros((1, 3, 16), np.float32), np.array([0])), "do not fit"),
             (send("uncond", np.zeros((1, 16), np.float32), np.array([2])), "unconditional")]
    for r, hint in cases:
        assert r.status_code == 422 and r.json()["field"] == "latents" and hint in r.json()["error"], r.text
    assert "/v1/render" in client.get("/openapi.json").json()["paths"]
