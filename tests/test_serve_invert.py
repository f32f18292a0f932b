"""`POST /v1/invert` and `POST /v1/edit`: real images restored and edited through the server. Every task on tiny
random models (what comes back is what `scalegan.invert.invert` gives for the same input), each kind of bad upload
as a 4xx naming the fix (non-image, truncated file, decompression bomb, too many pixels, oversized body, bad base64,
wrong mask, unknown class, colorize on a grey model), the concurrency bound (429), the timeout (504), nothing written
to disk, and edits along SeFa directions and towards another class."""

import base64
import io
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import scalegan  # noqa: E402
from scalegan.invert import invert  # noqa: E402
from scalegan.latents import load_latents  # noqa: E402
from scalegan.media import fit_input  # noqa: E402
from scalegan.serve import restore  # noqa: E402
from scalegan.serve.app import ServeSettings, create_app  # noqa: E402
from scalegan.weights import save_generator  # noqa: E402

FMNIST = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FAST = dict(invert_steps=6, invert_restarts=1)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve_invert")
    # z 64 pinned (the preset's is 128): the latent shapes below are this small model's
    G = scalegan.create_model("biggan-fmnist", ch=8, d_ch=8, z_dim=64)[0]
    save_generator(G, root / "fmnist", class_names=FMNIST)
    S = scalegan.create_model("stylegan2-fmnist", **tiny_overrides("stylegan2-fmnist"))[0]
    save_generator(S, root / "style", class_names=[f"c{i}" for i in range(5)])
    C = scalegan.create_model("biggan-fmnist", ch=8, d_ch=8, z_dim=64, img_channels=3)[0]
    save_generator(C, root / "rgb", class_names=FMNIST)
    return {name: scalegan.load(root / name) for name in ("fmnist", "style", "rgb")}


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(create_app(loaded, ServeSettings(**FAST))) as c:
        yield c


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo(size=(40, 36), channels=1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if channels == 3 else ())
    return rng.integers(0, 256, shape, dtype=np.uint8)


def error(response, status: int, *words) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert all(w in message for w in words), message
    return message


# --------------------------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("model,task,extra", [
    ("fmnist", "invert", {}),
    ("fmnist", "superres", {"factor": 4}),
    ("fmnist", "denoise", {"noise_sigma": 0.1}),
    ("style", "invert", {"class": "c2"}),
    ("rgb", "colorize", {"class": "sandal"}),
])
def test_every_task_gives_what_invert_gives(client, loaded, model, task, extra):
    G = loaded[model][0]
    channels = 1 if task == "colorize" else G.config.img_channels
    image = photo(channels=channels, size=(8, 8) if task == "superres" else (40, 36))
    r = client.post("/v1/invert", json={"model": model, "image": b64(png(image)), "task": task, **extra})
    assert r.status_code == 200, r.text
    out = r.json()
    size = 8 if task == "superres" else 32
    x = fit_input(Image.fromarray(image), size)[None]
    classes = None if "class" not in extra else [loaded[model][1].class_names.index(extra["class"])]
    want = invert(G, x, classes=classes, task=task, factor=extra.get("factor", 4), restarts=1, steps=6, top_k=2,
                  features=False, noise_sigma=extra.get("noise_sigma"))
    assert out["task"] == task and out["class"] == int(want.y[0]) and abs(out["psnr"] - float(want.psnr[0])) < 0.01
    result = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["image"].split(",")[1]))))
    from scalegan.utils import to_hwc
    expected = to_hwc(want.images)[0]
    assert result.reshape(expected.shape).astype(int).__sub__(expected.astype(int)).__abs__().max() <= 1
    latents, y, _ = load_latents(io.BytesIO(base64.b64decode(out["latents_npz"])), G.config)
    assert torch.allclose(latents, want.latents, atol=1e-5) and int(y[0]) == out["class"]
    assert np.allclose(np.asarray(out["latents"], dtype=np.float32), want.latents[0].numpy(), atol=1e-5)


def test_inpaint_with_a_mask_and_the_png_and_npz_formats(client, loaded):
    image = photo(size=(32, 32))
    mask = np.full((32, 32), 255, np.uint8)
    mask[10:20, 10:20] = 0
    body = {"model": "fmnist", "image": b64(png(image)), "task": "inpaint", "mask": b64(png(mask)), "class": 3}
    r = client.post("/v1/invert", json={**body, "format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    restored = np.asarray(Image.open(io.BytesIO(r.content)))
    known = mask >= 128
    assert np.abs(restored.astype(int) - image.astype(int))[known].max() <= 1  # the known pixels are the input's
    r = client.post("/v1/invert", json={**body, "format": "npz"})
    data = np.load(io.BytesIO(r.content))
    assert data["latents"].shape == (1, 64) and int(data["y"][0]) == 3 and data["x"].shape == (1, 32, 32, 1)


def test_tuning_is_capped_and_raises_the_psnr(loaded):
    with TestClient(create_app(loaded, ServeSettings(**FAST, max_tune=20))) as c:
        body = {"model": "fmnist", "image": b64(png(photo())), "class": 0}
        error(c.post("/v1/invert", json={**body, "tune": 21}), 422, "0..20", "--max-tune")
        plain = c.post("/v1/invert", json=body).json()
        tuned = c.post("/v1/invert", json={**body, "tune": 20}).json()
        assert tuned["tune"] == 20 and tuned["psnr"] > plain["psnr"] + 0.2


# --------------------------------------------------------------------------------------------- bad uploads
def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's header; the data is one row)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("case,status,words", [
    ("text", 422, ["not an image", "PNG"]),
    ("truncated", 422, ["broken or truncated"]),
    ("bomb", 413, ["pixels", "downscale"]),
    ("huge", 413, ["decompression bomb"]),
    ("base64", 422, ["not base64"]),
    ("colorize-grey", 422, ["RGB model"]),
    ("no-mask", 422, ["needs a mask"]),
    ("mask-size", 422, ["mask is 7x7"]),
    ("empty-mask", 422, ["no pixel as known"]),
    ("class", 422, ["unknown class", "shirt"]),
    ("factor", 422, ["divide"]),
    ("task", 422, ["task"]),
    ("model", 404, ["unknown model"]),
])
def test_bad_uploads_are_one_4xx_line(client, case, status, words):
    good = b64(png(photo()))
    body = {"model": "fmnist", "image": good}
    if case == "text":
        body["image"] = b64(b"hello, this is not an image")
    elif case == "truncated":
        body["image"] = b64(png(photo(size=(64, 64)))[:200])
    elif case == "bomb":
        body["image"] = b64(_bomb_png(5000, 5000))
    elif case == "huge":
        body["image"] = b64(_bomb_png(60000, 60000))
    elif case == "base64":
        body["image"] = "@@@ not base64 @@@"
    elif case == "colorize-grey":
        body["task"] = "colorize"
    elif case == "no-mask":
        body["task"] = "inpaint"
    elif case == "mask-size":
        body.update(task="inpaint", mask=b64(png(np.zeros((7, 7), np.uint8))))
    elif case == "empty-mask":
        body.update(task="inpaint", mask=b64(png(np.zeros((32, 32), np.uint8))))
    elif case == "class":
        body["class"] = "shrit"
    elif case == "factor":
        body.update(task="superres", factor=5)
    elif case == "task":
        body["task"] = "sharpen"
    elif case == "model":
        body["model"] = "nope"
    r = client.post("/v1/invert", json=body)
    assert r.status_code == status, r.text
    assert all(w.lower() in r.json()["error"].lower() for w in words), r.json()["error"]


def test_the_upload_limit_is_its_own(loaded):
    with TestClient(create_app(loaded, ServeSettings(**FAST, max_upload=4000))) as c:
        error(c.post("/v1/invert", json={"image": b64(png(photo(size=(128, 128))))}), 413, "over 4000 bytes")
        # /v1/invert's limit is not the other routes': a generate body stays under the general limit.
        assert c.post("/v1/generate", json={"n": 1}).status_code == 200


def test_an_onnx_model_is_refused(client, loaded, monkeypatch):
    served = client.app.state.server.models["fmnist"]
    monkeypatch.setattr(served, "backend", "onnx")
    error(client.post("/v1/invert", json={"image": b64(png(photo()))}), 422, "ONNX", "torch backend")


# --------------------------------------------------------------------------------------------- limits
def test_busy_is_429_and_slow_is_504_and_nothing_is_written(loaded, monkeypatch, tmp_path):
    started, release = threading.Event(), threading.Event()
    real = restore._run_invert

    def slow(*args):
        started.set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(restore, "_run_invert", slow)
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path)) | {"-"}
    import tempfile
    temp_before = set(os.listdir(tempfile.gettempdir()))
    with TestClient(create_app(loaded, ServeSettings(**FAST, invert_timeout=1.0))) as c:
        body = {"image": b64(png(photo())), "class": 1}
        results = {}
        thread = threading.Thread(target=lambda: results.setdefault("r", c.post("/v1/invert", json=body)))
        thread.start()
        assert started.wait(10)
        error(c.post("/v1/invert", json=body), 429, "retry")
        thread.join(10)
        error(results["r"], 504, "1 s", "--invert-timeout")
        release.set()
        for _ in range(100):  # the thread finishes and frees its slot
            if c.app.state.server.inversions == 0:
                break
            time.sleep(0.05)
        assert c.app.state.server.inversions == 0
        assert c.post("/v1/invert", json=body).status_code == 200
    assert set(os.listdir(tmp_path)) | {"-"} == before  # uploads stay in memory
    assert {f for f in os.listdir(tempfile.gettempdir()) if f not in temp_before and "scalegan" in f} == set()


def test_a_timed_out_search_stops_and_frees_its_slot(loaded):
    """The 504 does not leave the search running: it stops at its next step (invert's stop hook)."""
    with TestClient(create_app(loaded, ServeSettings(invert_steps=10**6, invert_restarts=1,
                                                     invert_timeout=0.5))) as c:
        start = time.perf_counter()
        error(c.post("/v1/invert", json={"image": b64(png(photo())), "class": 1}), 504, "--invert-timeout")
        for _ in range(100):
            if c.app.state.server.inversions == 0:
                break
            time.sleep(0.02)
        assert c.app.state.server.inversions == 0 and time.perf_counter() - start < 3


# --------------------------------------------------------------------------------------------- edit
def test_edit_moves_along_directions_and_towards_a_class(client, loaded, monkeypatch):
    """BigGAN morphs by soft labels; StyleGAN2's W moves by the difference of the class centres, which an untrained
    model tracks as zeros: the test gives them values."""
    mapping = loaded["style"][0].mapping
    monkeypatch.setattr(mapping, "w_avg_class", torch.randn(mapping.w_avg_class.shape,
                                                            generator=torch.Generator().manual_seed(3)))
    for model, cls, target in (("fmnist", 2, "bag"), ("style", "c1", "c3")):
        out = client.post("/v1/invert", json={"model": model, "image": b64(png(photo())), "class": cls}).json()
        base = {"model": model, "latents": out["latents"], "class": cls, "format": "json"}
        same = client.post("/v1/edit", json=base).json()
        moved = client.post("/v1/edit", json={**base, "directions": [[0, 3.0], [2, -2.0]]}).json()
        morphed = client.post("/v1/edit", json={**base, "morph_class": target, "morph": 1.0}).json()

        def pixels(r):
            return np.asarray(Image.open(io.BytesIO(base64.b64decode(r["image"].split(",")[1]))), dtype=int)

        recon = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["image"].split(",")[1]))), dtype=int)
        assert np.abs(pixels(same) - recon).max() <= 1  # no edit: the inverted image again
        assert np.abs(pixels(moved) - recon).mean() > 2 and np.abs(pixels(morphed) - recon).mean() > 2
        assert same["directions"] == min(restore.EDIT_DIRECTIONS, 64 if model == "fmnist" else
                                         loaded[model][0].config.w_dim)


def test_a_tuned_restoration_is_edited_with_its_tuned_generator(loaded):
    """With tuning, the response carries a token; /v1/edit with it renders through the tuned copy, so no edit gives
    the restored image back (without it, the untuned G's rendering of the latent). The server keeps the last
    TUNED_KEPT copies only."""
    with TestClient(create_app(loaded, ServeSettings(**FAST, max_tune=30))) as c:
        out = c.post("/v1/invert", json={"model": "fmnist", "image": b64(png(photo())), "class": 4, "tune": 30}).json()
        assert len(out["tuned"]) >= 20
        base = {"model": "fmnist", "latents": out["latents"], "class": 4, "format": "json"}

        def pixels(r):
            assert r.status_code == 200, r.text
            return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["image"].split(",")[1]))), dtype=int)

        recon = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["image"].split(",")[1]))), dtype=int)
        assert np.abs(pixels(c.post("/v1/edit", json={**base, "tuned": out["tuned"]})) - recon).max() <= 1
        assert np.abs(pixels(c.post("/v1/edit", json=base)) - recon).mean() > 2  # the untuned G draws it otherwise
        error(c.post("/v1/edit", json={**base, "tuned": "nope"}), 404, "no tuned generator", "restore the image again")
        for i in range(restore.TUNED_KEPT):
            c.post("/v1/invert", json={"model": "fmnist", "image": b64(png(photo(seed=i + 1))), "class": 4, "tune": 1})
        error(c.post("/v1/edit", json={**base, "tuned": out["tuned"]}), 404, f"the last {restore.TUNED_KEPT}")


@pytest.mark.parametrize("body,words", [
    ({"latents": [[1.0, 2.0]], "class": 0}, ["latents must be one finite latent", "[64]"]),
    ({"latents": [0.0] * 64}, ["class-conditional"]),
    ({"latents": [0.0] * 64, "class": 0, "directions": [[99, 1.0]]}, ["direction 99", "0..15"]),
    ({"latents": [0.0] * 64, "class": 0, "morph_class": "nope", "morph": 0.5}, ["unknown class"]),
    ({"latents": [0.0] * 64, "class": 0, "morph": 2}, ["morph"]),
])
def test_bad_edits_are_one_4xx_line(client, body, words):
    r = client.post("/v1/edit", json={"model": "fmnist", **body})
    assert r.status_code == 422, r.text
    assert all(w in r.json()["error"] for w in words), r.json()["error"]
