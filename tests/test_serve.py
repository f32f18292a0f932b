"""`scalegan serve`: every endpoint, validation errors that name the fix, the token rule, batching (fewer forwards
than requests, a request's images independent of its batch), the bounded queue (429), timeouts (504), the body
limit (413) and a self-contained page. Small random models, in-process clients (FastAPI's TestClient, httpx)."""

import asyncio
import base64
import io
import json
import re
import threading

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import scalegan  # noqa: E402
from scalegan.cli import main  # noqa: E402
from scalegan.serve.app import ServeSettings, create_app  # noqa: E402
from scalegan.serve.models import OnnxServedModel, ServedModel, model_names  # noqa: E402
from scalegan.weights import save_generator  # noqa: E402

FMNIST = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("serve")
    G = scalegan.create_model("biggan-fmnist", ch=8, d_ch=8)[0]
    save_generator(G, root / "fmnist", class_names=FMNIST)
    S = scalegan.create_model("stylegan2-fmnist", **tiny_overrides("stylegan2-fmnist"))[0]
    save_generator(S, root / "style", class_names=[f"c{i}" for i in range(5)])
    D = scalegan.create_model("biggan-deep-128", **tiny_overrides("biggan-deep-128"))[0]
    save_generator(D, root / "deep")
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    return {name: scalegan.load(folders / name) for name in ("fmnist", "style", "deep")}


@pytest.fixture(scope="module")
def client(loaded):
    with TestClient(create_app(loaded)) as c:
        yield c


def npz(response) -> dict:
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def reference(G, n, y, truncation, seed) -> np.ndarray:
    """What ``scalegan.sample`` gives for the same request, as uint8 NHWC."""
    from scalegan.utils import to_hwc

    return to_hwc(scalegan.sample(G, n, y=y, truncation=truncation, seed=seed))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal 8-bit images: GEMM blocking may differ with the batch size, so one level of rounding is allowed."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


# --------------------------------------------------------------------------------------------- endpoints
def test_health_models_docs_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["fmnist", "style", "deep"]
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["fmnist"]["family"] == "biggan" and models["fmnist"]["resolution"] == 32
    assert models["fmnist"]["classes"] == FMNIST and models["fmnist"]["n_classes"] == 10
    assert models["style"]["family"] == "stylegan2" and "psi" in models["style"]["truncation"]["meaning"]
    assert models["fmnist"]["truncation"]["min_exclusive"] == 0
    assert client.get("/docs").status_code == 200
    assert {"/health", "/v1/models", "/v1/generate", "/v1/interpolate"} <= set(client.get("/openapi.json")
                                                                              .json()["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for needle in ('id="model"', 'id="classSearch"', 'id="truncation"', 'id="dice"', 'id="generate"',
                   'id="interpolate"', 'id="error"', "/v1/generate", "/v1/interpolate"):
        assert needle in page.text, needle
    # No CDN, font or script from another host: no absolute URL and no protocol-relative src/href.
    assert not re.search(r"https?://", page.text), re.findall(r"https?://\S+", page.text)
    assert not re.search(r"""(src|href)\s*=\s*["']//""", page.text)


def test_generate_png_npz_json_match_sample(client, loaded):
    G = loaded["fmnist"][0]
    body = {"model": "fmnist", "class": "trouser", "n": 6, "seed": 7, "truncation": 0.7}
    png = client.post("/v1/generate", json=body)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.headers["x-seed"] == "7"
    assert Image.open(io.BytesIO(png.content)).size == (2 + 6 * 34, 2 + 34)  # one row of six 32 px images
    data = npz(client.post("/v1/generate", json={**body, "format": "npz"}))
    assert data["x"].shape == (6, 32, 32, 1) and data["x"].dtype == np.uint8 and data["y"].tolist() == [1] * 6
    assert close(data["x"], reference(G, 6, 1, 0.7, 7))
    latents, _ = scalegan.sampling.draw(G, 6, 1, 0.7, torch.Generator().manual_seed(7))
    assert torch.equal(torch.from_numpy(data["latents"]), latents)
    js = client.post("/v1/generate", json={**body, "format": "json"}).json()
    assert js["seed"] == 7 and js["classes"] == [1] * 6 and np.allclose(js["latents"], data["latents"])
    first = np.array(Image.open(io.BytesIO(base64.b64decode(js["images"][0].split(",", 1)[1]))))
    assert np.array_equal(first, data["x"][0, ..., 0])


def test_classes_by_index_name_list_and_random(client):
    data = npz(client.post("/v1/generate", json={"model": "fmnist", "class": ["Bag", 3], "n": 2, "seed": 1,
                                                  "format": "npz"}))
    assert data["y"].tolist() == [8, 8, 3, 3]
    random_classes = client.post("/v1/generate", json={"model": "fmnist", "n": 4, "format": "json"}).json()
    assert len(random_classes["classes"]) == 4 and isinstance(random_classes["seed"], int)
    style = npz(client.post("/v1/generate", json={"model": "style", "class": "c2", "n": 3, "seed": 0,
                                                   "truncation": 0.5, "format": "npz"}))
    assert style["x"].shape == (3, 32, 32, 1) and style["y"].tolist() == [2, 2, 2]


def test_folded_module_serves_biggan_deep(client, loaded):
    server = client.app.state.server
    G = loaded["deep"][0]
    assert type(server.models["deep"].module(0.5)).__name__ == "FastGeneratorDeep"
    data = npz(client.post("/v1/generate", json={"model": "deep", "class": 2, "n": 2, "seed": 3, "truncation": 0.5,
                                                  "format": "npz"}))
    assert close(data["x"], reference(G, 2, 2, 0.5, 3))


BAD = [
    ({"model": "fmnist", "class": "trousr"}, 422, "class", "trouser"),  # suggests the close name
    ({"model": "fmnist", "class": 10}, 422, "class", "0..9"),
    ({"model": "fmnist", "class": []}, 422, "class", "at least one class"),
    ({"model": "fmnist", "n": 0}, 422, "n", "1..64"),
    ({"model": "fmnist", "n": 65}, 422, "n", "1..64"),
    ({"model": "fmnist", "n": "many"}, 422, "n", "valid integer"),
    ({"model": "fmnist", "truncation": 0}, 422, "truncation", "> 0"),
    ({"model": "fmnist", "truncation": -0.5}, 422, "truncation", "> 0"),
    ({"model": "fmnist", "seed": -1}, 422, "seed", "greater than or equal to 0"),
    ({"model": "fmnist", "format": "jpeg"}, 422, "format", "'png', 'npz' or 'json'"),
    ({"model": "fmnist", "clas": 3}, 422, "clas", "Extra inputs are not permitted"),
    ({"model": "fmnist", "truncation_mode": "w"}, 422, "truncation_mode", "resample, scale"),
    ({"model": "biggan-fmist"}, 404, "model", "use one of 'fmnist', 'style', 'deep'"),
]


@pytest.mark.parametrize("body, status, field, hint", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_generate_requests_are_json_errors_naming_the_fix(client, body, status, field, hint):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field and hint in error["error"], error


def test_bad_interpolate_requests(client):
    def post(**body):
        return client.post("/v1/interpolate", json={"model": "fmnist", **body})

    assert post(kind="class", class_a=1).json()["field"] == "class_b"
    assert post(kind="class", class_a="sandal", class_b="snekaer").json()["field"] == "class_b"
    assert "sneaker" in post(kind="class", class_a="sandal", class_b="snekaer").json()["error"]
    assert post(steps=1).status_code == 422 and "2..64" in post(steps=1).json()["error"]
    assert post(format="avi").status_code == 422


# --------------------------------------------------------------------------------------------- interpolate
def _gif_frames(content: bytes) -> list[np.ndarray]:
    gif = Image.open(io.BytesIO(content))
    frames = []
    for k in range(gif.n_frames):
        gif.seek(k)
        frames.append(np.array(gif.convert("L")))
    return frames


def test_interpolate_seed_and_class_as_gif_and_mp4(client):
    body = {"model": "fmnist", "kind": "seed", "class": "coat", "seed_a": 3, "seed_b": 4, "steps": 5,
            "truncation": 0.8}
    gif = client.post("/v1/interpolate", json=body)
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    frames = _gif_frames(gif.content)
    assert len(frames) == 2 * 5 - 2  # A -> B -> A
    for seed, frame in ((3, frames[0]), (4, frames[4])):  # the ends are the images of seed A and seed B
        alone = npz(client.post("/v1/generate", json={"model": "fmnist", "class": "coat", "n": 1, "seed": seed,
                                                       "truncation": 0.8, "format": "npz"}))
        assert close(frame, alone["x"][0, ..., 0])
    mp4 = client.post("/v1/interpolate", json={**body, "format": "mp4"})
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"
    by_class = client.post("/v1/interpolate", json={"model": "fmnist", "kind": "class", "class_a": "sandal",
                                                    "class_b": 7, "steps": 3})
    assert by_class.status_code == 200 and len(_gif_frames(by_class.content)) == 4
    style = client.post("/v1/interpolate", json={"model": "style", "kind": "seed", "steps": 3, "truncation": 0.7})
    assert style.status_code == 200  # StyleGAN2 interpolates in W


# --------------------------------------------------------------------------------------------- security
def test_token_required_off_loopback_and_checked(loaded, folders, capsys, monkeypatch):
    with pytest.raises(ValueError, match="--token"):
        create_app(loaded, ServeSettings(host="0.0.0.0"))
    monkeypatch.delenv("SCALEGAN_TOKEN", raising=False)
    assert main(["serve", str(folders / "fmnist"), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    client = TestClient(create_app(loaded, ServeSettings(host="0.0.0.0", token="s3cret")))
    health = client.get("/health")  # liveness stays open; behind a token it names no model
    assert health.status_code == 200 and health.json()["token_required"] and "models" not in health.json()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["error"]
        assert client.post("/v1/generate", json={"model": "fmnist"}, headers=headers).status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/models", headers=ok).status_code == 200
    assert client.post("/v1/generate", json={"model": "fmnist"}, headers=ok).status_code == 200


def test_body_size_limit_is_413(loaded):
    client = TestClient(create_app(loaded, ServeSettings(max_body=1024)))
    response = client.post("/v1/generate", json={"model": "fmnist", "class": ["bag"] * 500})
    assert response.status_code == 413 and "smaller" in response.json()["error"]

    def chunks():  # no Content-Length: counted while read
        yield b'{"model": "fmnist", "class": ['
        for _ in range(300):
            yield b'"bag", '
        yield b'"bag"]}'

    response = client.post("/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


# --------------------------------------------------------------------------------------------- batching
class Counting(torch.nn.Module):
    """G with a count of forward calls and, optionally, a gate that holds every forward until opened."""

    def __init__(self, G, gate: threading.Event | None = None):
        super().__init__()
        self.G, self.config, self.gate = G, G.config, gate
        self.calls, self.started = [], threading.Event()

    def forward(self, z, y=None, truncation=None):
        self.calls.append(len(z))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return self.G(z, y, truncation=truncation)


def _app(G, info, **settings):
    return create_app({"m": ServedModel("m", G, info)}, ServeSettings(**settings))


async def _post_all(app, bodies):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as c:
        return await asyncio.gather(*[c.post("/v1/generate", json=b) for b in bodies])


def test_concurrent_requests_share_forwards_and_keep_their_images(loaded):
    G, info = loaded["fmnist"]
    bodies = [{"class": k % 10, "n": 1 + k % 3, "seed": 100 + k, "truncation": 0.5 if k < 6 else 1.0,
               "format": "npz"} for k in range(10)]
    counting = Counting(G)
    batched = asyncio.run(_post_all(_app(counting, info, max_wait_ms=1000), bodies))
    # Two truncations: two forwards (the batcher groups by model and truncation), not ten.
    assert sorted(counting.calls) == sorted([sum(1 + k % 3 for k in range(6)), sum(1 + k % 3 for k in range(6, 10))])
    alone = Counting(G)
    client = TestClient(_app(alone, info, max_wait_ms=0))
    for body, response in zip(bodies, batched):
        one = npz(client.post("/v1/generate", json={**body, "model": "m"}))
        together = npz(response)
        assert np.array_equal(one["latents"], together["latents"]) and np.array_equal(one["y"], together["y"])
        assert close(one["x"], together["x"])
    assert len(alone.calls) == len(bodies)


def test_max_batch_splits_batches(loaded):
    G, info = loaded["fmnist"]
    counting = Counting(G)
    bodies = [{"n": 2, "seed": k, "class": 0, "format": "npz"} for k in range(6)]
    responses = asyncio.run(_post_all(_app(counting, info, max_wait_ms=300, max_batch=4), bodies))
    assert all(r.status_code == 200 for r in responses) and max(counting.calls) <= 4 and len(counting.calls) == 3


async def _queue_full(app, counting, gate):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as c:
        first = asyncio.create_task(c.post("/v1/generate", json={"seed": 0}))
        while not counting.started.is_set():  # the worker holds the first request in its forward
            await asyncio.sleep(0.01)
        queued = [asyncio.create_task(c.post("/v1/generate", json={"seed": k})) for k in (1, 2)]
        while app.state.server.batcher.queued < 2:
            await asyncio.sleep(0.01)
        rejected = await c.post("/v1/generate", json={"seed": 3})
        gate.set()
        return rejected, await asyncio.gather(first, *queued)


def test_full_queue_is_429_with_retry_after(loaded):
    G, info = loaded["fmnist"]
    gate = threading.Event()
    counting = Counting(G, gate)
    app = _app(counting, info, max_batch=1, max_wait_ms=0, queue_size=2)
    rejected, served = asyncio.run(_queue_full(app, counting, gate))
    assert rejected.status_code == 429 and int(rejected.headers["retry-after"]) >= 1
    assert "busy" in rejected.json()["error"]
    assert [r.status_code for r in served] == [200, 200, 200]


def test_request_timeout_is_504(loaded):
    G, info = loaded["fmnist"]
    gate = threading.Event()
    client = TestClient(_app(Counting(G, gate), info, timeout=0.3))
    try:
        response = client.post("/v1/generate", json={"seed": 0})
    finally:
        gate.set()
    assert response.status_code == 504 and "0.3 s" in response.json()["error"]
    assert client.post("/v1/generate", json={"seed": 0}).status_code == 200  # the worker lives on


# --------------------------------------------------------------------------------------------- onnx backend
@pytest.fixture(scope="module")
def onnx_client(loaded, tmp_path_factory):
    """The torch models and their exported files (BigGAN: truncation only shapes z; StyleGAN2: psi 0.5 baked)."""
    from scalegan.export import export_onnx  # onnx and onnxruntime: the export extra, part of dev

    root = tmp_path_factory.mktemp("onnx")
    export_onnx(loaded["fmnist"][0], root / "fmnist.onnx", class_names=FMNIST)
    export_onnx(loaded["style"][0], root / "style.onnx", truncation=0.5)
    models = {"fmnist": loaded["fmnist"], "style": loaded["style"],
              "fmnist-onnx": OnnxServedModel.from_file("fmnist-onnx", root / "fmnist.onnx"),
              "style-onnx": OnnxServedModel.from_file("style-onnx", root / "style.onnx")}
    with TestClient(create_app(models)) as c:
        yield c, models


@pytest.mark.parametrize("name,truncation", [("fmnist", 0.7), ("fmnist", None), ("style", 0.5)])
def test_onnx_backend_gives_the_torch_backends_images(onnx_client, name, truncation):
    client, models = onnx_client
    body = {"class": 3, "n": 5, "seed": 11, "truncation": truncation, "format": "npz"}
    torch_npz = npz(client.post("/v1/generate", json={**body, "model": name}))
    onnx_npz = npz(client.post("/v1/generate", json={**body, "model": name + "-onnx"}))
    assert np.array_equal(onnx_npz["latents"], torch_npz["latents"]) and onnx_npz["y"].tolist() == [3] * 5
    # The float images within 1e-4 for the served latents; the 8-bit ones within one level of rounding.
    G, gen = models[name][0], models[name + "-onnx"].G
    with torch.no_grad():
        expected = G(torch.from_numpy(torch_npz["latents"]), torch.tensor(torch_npz["y"]), truncation=truncation)
    assert np.abs(gen(onnx_npz["latents"], onnx_npz["y"]) - expected.numpy()).max() < 1e-4
    assert close(onnx_npz["x"], torch_npz["x"])
    png = {m: client.post("/v1/generate", json={**body, "model": m, "format": "png"}) for m in (name, name + "-onnx")}
    grids = [np.asarray(Image.open(io.BytesIO(r.content)), dtype=int) for r in png.values()]
    assert grids[0].shape == grids[1].shape and np.abs(grids[0] - grids[1]).max() <= 1


def test_onnx_backend_describes_and_checks_its_truncation(onnx_client):
    client, _ = onnx_client
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["fmnist-onnx"]["backend"] == "onnx" and models["fmnist"]["backend"] == "torch"
    assert models["fmnist-onnx"]["classes"] == FMNIST and models["fmnist-onnx"]["resolution"] == 32
    assert models["style-onnx"]["truncation"]["fixed"] == 0.5
    for truncation in (0.7, None):
        r = client.post("/v1/generate", json={"model": "style-onnx", "truncation": truncation, "n": 1})
        assert r.status_code == 422 and r.json()["field"] == "truncation", r.text
        assert "truncation 0.5" in r.json()["error"]
    r = client.post("/v1/interpolate", json={"model": "fmnist-onnx", "kind": "class", "class_a": 0, "class_b": 1})
    assert r.status_code == 422 and r.json()["field"] == "kind" and "seed" in r.json()["error"]
    gif = client.post("/v1/interpolate", json={"model": "style-onnx", "truncation": 0.5, "steps": 3})
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"


def test_serve_cli_backend_onnx(folders, tmp_path, capsys):
    from scalegan.cli import build_parser

    path = tmp_path / "m.onnx"
    assert build_parser().parse_args(["serve", "--backend", "onnx", str(path)]).backend == "onnx"
    assert main(["serve", "--backend", "onnx", str(folders / "fmnist")]) == 2
    assert "--backend onnx serves .onnx files" in capsys.readouterr().err
    path.write_bytes(b"")
    assert main(["serve", str(path)]) == 2
    assert "serve it with --backend onnx" in capsys.readouterr().err
    from scalegan.cli.serve import _served
    from scalegan.export import export_onnx

    export_onnx(scalegan.load(folders / "fmnist")[0], path, class_names=FMNIST)
    served = _served("m", str(path), build_parser().parse_args(["serve", "--backend", "onnx", str(path)]))
    assert isinstance(served, OnnxServedModel) and served.info.class_names == tuple(FMNIST)


# --------------------------------------------------------------------------------------------- names, CLI
def test_model_names(tmp_path, folders):
    (tmp_path / "a" / "fmnist").mkdir(parents=True)
    names = model_names([str(folders / "fmnist"), str(tmp_path / "a" / "fmnist"), "biggan-deep-256.tfhub",
                         str(folders / "style" / "model.safetensors")])
    assert names == ["fmnist", "fmnist-2", "biggan-deep-256.tfhub", "style"]
    (tmp_path / "b.onnx").write_bytes(b"")
    assert model_names([str(tmp_path / "b.onnx")]) == ["b"]


def test_serve_cli_parses_and_checks(folders, capsys):
    from scalegan.cli import build_parser

    args = build_parser().parse_args(["serve", str(folders / "fmnist"), str(folders / "style"), "--port", "8123",
                                      "--max-batch", "16", "--max-wait-ms", "5", "--queue-size", "8"])
    assert args.sources == [str(folders / "fmnist"), str(folders / "style")] and args.max_batch == 16
    assert main(["serve", str(folders / "fmnist"), "--max-wait-ms", "-1"]) == 2
    assert "--max-wait-ms" in capsys.readouterr().err
    json.dumps(vars(args), default=str)  # plain values only


def test_scalegan_serve_runs_uvicorn_end_to_end(folders):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "scalegan", "serve", str(folders / "fmnist"), "--port", str(port),
                               "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["models"] == ["fmnist"]
        response = httpx.post(f"http://127.0.0.1:{port}/v1/generate", json={"class": "bag", "n": 2, "seed": 1},
                              timeout=30)
        assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.terminate()
        server.wait(timeout=30)
