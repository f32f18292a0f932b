"""The HTTP API and its page: ``create_app(models, settings)`` -> a FastAPI app (OpenAPI at ``/docs``).

``GET /health``, ``GET /v1/models``, ``POST /v1/generate`` (PNG grid, NPZ or JSON), ``POST /v1/render`` (the
latents of a latents file or a JSON body, back as images), ``POST /v1/interpolate`` (GIF or MP4), ``POST
/v1/invert`` and ``POST /v1/edit`` (real images restored and edited: scalegan/serve/restore.py) and the page at
``/``. Every bad input is a 4xx JSON body ``{"error": message, "field": name}`` whose message
says what to send instead. Generation runs through one ``Batcher`` (scalegan/serve/batcher.py), never on the event
loop; encoding runs in a worker thread too.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..latents import latents_bytes
from ..media import encode_animation, encode_image, make_grid, ping_pong
from ..sampling import lerp, soft_labels
from .batcher import Batcher, Job, QueueFull
from .models import RequestError, ServedModel
from .restore import EDIT_DIRECTIONS, EditRequest, InvertRequest, edit_route, invert_route

PAGE = Path(__file__).with_name("page.html")
Class = int | str


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs (``scalegan serve``'s flags)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # bearer token checked on every /v1 call; required off loopback
    max_batch: int = 100  # most images per forward pass
    max_wait_ms: float = 10.0  # how long the oldest request waits for others to share its forward
    queue_size: int = 64  # requests waiting for a forward; beyond it: 429
    timeout: float = 60.0  # seconds a request may wait and run; beyond it: 504
    max_body: int = 64 * 1024  # request body bytes; beyond it: 413
    max_n: int = 64  # images per generate request
    max_steps: int = 64  # interpolation frames
    max_upload: int = 8 * 1024 * 1024  # /v1/invert body bytes (a base64 image is 4/3 of the file); beyond: 413
    max_pixels: int = 4096 * 4096  # pixels of an uploaded image, checked before it is decoded; beyond: 413
    invert_steps: int = 100  # latent search steps of /v1/invert
    invert_restarts: int = 2  # starting points per candidate class
    max_tune: int = 200  # generator tuning steps a /v1/invert request may ask for
    invert_timeout: float = 120.0  # seconds an inversion may run before it is answered 504
    max_inversions: int = 1  # inversions running at once; beyond: 429

    def check(self) -> None:
        """A server reachable from other machines needs a token."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"--host {self.host} is reachable from other machines: pass --token SECRET (or set "
                             "SCALEGAN_TOKEN); clients then send `Authorization: Bearer SECRET`")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------- request bodies
class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first model)")
    class_: Class | list[Class] | None = Field(None, alias="class", description="class index, name or WordNet id; "
                                               "a list: n images of each, one grid row per class; none: random")
    n: int = Field(1, description="images (per class when class is a list)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="the same seed gives the same images; "
                             "none: a random seed, reported back")
    truncation: float | None = Field(None, description="> 0; BigGAN: threshold of z, StyleGAN2: psi; none: off")
    truncation_mode: Literal["resample", "scale", "w"] | None = Field(None, description="default: the model's own")
    format: Literal["png", "npz", "json"] = Field("png", description="png: one grid; npz / json: images + latents")
    nrow: int | None = Field(None, ge=1, le=64, description="images per grid row")


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str | None = None
    kind: Literal["seed", "class"] = Field("seed", description="seed: latent of seed_a to seed_b at one class; "
                                           "class: class_a to class_b at the latent of seed_a")
    class_: Class | None = Field(None, alias="class", description="kind seed: the class (none: seed_a's)")
    class_a: Class | None = None
    class_b: Class | None = None
    seed_a: int = Field(0, ge=0, le=2**63 - 1)
    seed_b: int = Field(1, ge=0, le=2**63 - 1)
    steps: int = Field(16, description="frames from A to B (played forth and back)")
    truncation: float | None = None
    format: Literal["gif", "mp4"] = "gif"
    fps: int = Field(12, ge=1, le=60)


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first model)")
    latents: list = Field(..., description="z [n][...], or W+ [n][layers][dim] for a model with a W "
                          "space (StyleGAN2; rendered as is)")
    class_: Class | list[Class] | None = Field(None, alias="class", description="the class of every latent (a list "
                                               "of n), or one class for all; leave out for an unconditional model")
    truncation: float | None = Field(None, description="the truncation the z were drawn with (BigGAN-deep: selects "
                                     "BN statistics; StyleGAN2: psi); ignored for W")
    format: Literal["png", "npz", "json"] = Field("png", description="png: one grid; npz / json: images + latents")
    nrow: int | None = Field(None, ge=1, le=64, description="images per grid row")


# An NPZ body's schema for the OpenAPI page (the route reads the body itself: JSON or a latents file).
RENDER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RenderRequest.model_json_schema(by_alias=True)},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
                                            "a latents file (NPZ: latents, y, truncation), e.g. from `scalegan sample "
                                            "--npz F --save-latents`, `scalegan edit` or /v1/generate's npz"}}}}}


# --------------------------------------------------------------------------------------------- the app
class Server:
    """The models, the batcher and the request logic behind the routes."""

    def __init__(self, models: dict[str, ServedModel], settings: ServeSettings):
        if not models:
            raise ValueError("serve at least one model")
        self.models, self.settings = models, settings
        self.batcher = Batcher(self._forward, settings.max_batch, settings.max_wait_ms, settings.queue_size)
        self.inversions = 0  # /v1/invert requests running (scalegan/serve/restore.py)
        self.sefa: dict[str, torch.Tensor] = {}  # editing directions per model, computed on first use
        self.tuned: dict[str, tuple] = {}  # token -> (model name, tuned G) of the last few tuned restorations

    def _forward(self, key, latents, labels):
        name, truncation, _kind = key
        return self.models[name].forward(latents, labels, truncation)

    def model(self, name: str | None) -> ServedModel:
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise RequestError(f"unknown model {name!r}: use one of {', '.join(map(repr, self.models))} "
                               "(GET /v1/models)", "model", status=404)
        return self.models[name]

    async def run(self, served: ServedModel, truncation, kind: str, latents, labels) -> torch.Tensor:
        """Images (uint8 [n, C, H, W]) through the batcher; a full queue is 429, a timeout 504."""
        try:
            return await self.batcher.run(Job((served.name, truncation, kind), latents, labels),
                                          self.settings.timeout)
        except QueueFull as e:
            raise RequestError(f"{e}; or lower the request rate", None, 429,
                               {"Retry-After": str(e.retry_after)}) from None
        except asyncio.TimeoutError:
            raise RequestError(f"the request did not finish within {self.settings.timeout:g} s (the server is "
                               "busy): retry later or ask for fewer images", None, 504, {"Retry-After": "1"}) from None

    def check_count(self, value: int, field: str, low: int, high: int) -> int:
        if not low <= value <= high:
            raise RequestError(f"{field} must be {low}..{high}, got {value}" + (
                f" (at most {self.settings.max_n} images per request)" if field == "n" else ""), field)
        return value


def create_app(models: dict, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``models``: name -> ``(G, ModelInfo)`` (as ``scalegan.load`` returns) or ``ServedModel``."""
    settings = settings or ServeSettings()
    settings.check()
    served = {name: m if isinstance(m, ServedModel) else ServedModel(name, *m) for name, m in models.items()}
    server = Server(served, settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        server.batcher.close()

    app = FastAPI(title="scalegan", description="Generate images from BigGAN, BigGAN-deep and StyleGAN2 models.",
                  lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=settings.max_body, limits={"/v1/invert": settings.max_upload})
    _add_error_handlers(app)
    _add_routes(app, server)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        return JSONResponse({"error": str(e), "field": e.field}, e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        problems = []
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"] if x != "body") or "body"
            problems.append(f"{where}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err and
                                                        not isinstance(err["input"], dict) else ""))
        first = next((str(x) for x in e.errors()[0]["loc"] if x != "body"), None) if e.errors() else None
        return JSONResponse({"error": "; ".join(problems) + " (request schema: /docs)", "field": first,
                             "detail": jsonable_errors(e.errors())}, 422)


def jsonable_errors(errors) -> list[dict]:
    return [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in errors]


def _add_routes(app: FastAPI, server: Server) -> None:
    auth = [Depends(_token_check(server.settings.token))]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        b, token = server.batcher, bool(server.settings.token)
        names = {} if token else {"models": list(server.models)}  # behind a token, names come from /v1/models
        return {"status": "ok", **names, "queued": b.queued, "forwards": b.forwards, "images": b.images,
                "token_required": token}

    @app.get("/v1/models", dependencies=auth)
    async def list_models():
        return {"models": [m.describe() for m in server.models.values()],
                "limits": {"max_n": server.settings.max_n, "max_steps": server.settings.max_steps,
                           "max_batch": server.settings.max_batch, "max_tune": server.settings.max_tune,
                           "max_upload": server.settings.max_upload, "max_pixels": server.settings.max_pixels,
                           "edit_directions": EDIT_DIRECTIONS}}

    @app.post("/v1/generate", dependencies=auth, response_class=Response,
              responses={200: {"content": {"image/png": {}, "application/json": {}, "application/x-npz": {}},
                               "description": "a PNG grid, or the images and latents (npz / json)"}})
    async def generate(body: GenerateRequest):
        return await _generate(server, body)

    @app.post("/v1/render", dependencies=auth, response_class=Response, openapi_extra=RENDER_BODY,
              responses={200: {"content": {"image/png": {}, "application/json": {}, "application/x-npz": {}},
                               "description": "the images of the latents: a PNG grid, or images and latents"}})
    async def render(request: Request, model: str | None = Query(None, description="NPZ bodies: the model"),
                     format: Literal["png", "npz", "json"] = Query("png", description="NPZ bodies: the output"),
                     nrow: int | None = Query(None, ge=1, le=64, description="NPZ bodies: images per grid row")):
        return await _render(server, request, model, format, nrow)

    @app.post("/v1/invert", dependencies=auth, response_class=Response,
              responses={200: {"content": {"application/json": {}, "image/png": {}, "application/x-npz": {}},
                               "description": "the restored image and its latents (json), the image (png) or a "
                               "latents file (npz)"}})
    async def invert_image(body: InvertRequest):
        return await invert_route(server, body)

    @app.post("/v1/edit", dependencies=auth, response_class=Response,
              responses={200: {"content": {"image/png": {}, "application/json": {}},
                               "description": "the edited latent's image"}})
    async def edit(body: EditRequest):
        return await edit_route(server, body)

    @app.post("/v1/interpolate", dependencies=auth, response_class=Response,
              responses={200: {"content": {"image/gif": {}, "video/mp4": {}}, "description": "the animation"}})
    async def interpolate(body: InterpolateRequest):
        return await _interpolate(server, body)


def _token_check(token: str | None):
    async def check(request: Request) -> None:
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RequestError("missing or wrong token: send the header `Authorization: Bearer TOKEN` with the "
                               "server's --token (SCALEGAN_TOKEN)", "authorization", 401,
                               {"WWW-Authenticate": "Bearer"})

    return check


# --------------------------------------------------------------------------------------------- generate
async def _generate(server: Server, body: GenerateRequest) -> Response:
    served = server.model(body.model)
    truncation = served.check_truncation(body.truncation)
    classes = body.class_ if isinstance(body.class_, list) else None if body.class_ is None else [body.class_]
    if classes is not None and not classes:
        raise RequestError("class is an empty list: give at least one class, or leave it out", "class")
    per_class = len(classes) if classes else 1
    if per_class > server.settings.max_n:
        raise RequestError(f"at most {server.settings.max_n} classes per request, got {per_class}", "class")
    server.check_count(body.n, "n", 1, server.settings.max_n // per_class)
    labels = None
    if classes is not None:
        labels = torch.tensor([served.label(c) for c in classes]).repeat_interleave(body.n)
    seed = body.seed if body.seed is not None else int.from_bytes(os.urandom(4), "little")
    latents, labels = served.draw(body.n * per_class, labels, truncation, seed, body.truncation_mode)
    images = await server.run(served, truncation, "z", latents, labels)
    nrow = body.nrow or (body.n if classes and len(classes) > 1 else min(body.n, 8))
    meta = {"model": served.name, "seed": seed, "truncation": truncation,
            "classes": labels.tolist() if labels is not None else None}
    content, media = await asyncio.to_thread(_encode_images, body.format, images, latents, meta, nrow)
    headers = {"X-Seed": str(seed), "Content-Disposition": f'inline; filename="{served.name}-{seed}.{body.format}"'}
    return Response(content, media_type=media, headers=headers)


def _encode_images(fmt: str, images: torch.Tensor, latents: torch.Tensor, meta: dict, nrow: int):
    hwc = images.permute(0, 2, 3, 1).numpy()
    if fmt == "png":
        return encode_image(make_grid(images, nrow=nrow)), "image/png"
    if fmt == "npz":  # a latents file too (scalegan.latents), with the images as x
        seed = {"seed": np.int64(meta["seed"])} if meta.get("seed") is not None else {}
        return latents_bytes(latents, meta["classes"], truncation=meta["truncation"], x=hwc, **seed), \
            "application/x-npz"
    pngs = ["data:image/png;base64," + base64.b64encode(encode_image(a)).decode() for a in hwc]
    return json.dumps({**meta, "images": pngs, "latents": latents.tolist()}).encode(), "application/json"


# --------------------------------------------------------------------------------------------- render
async def _render(server: Server, request: Request, model: str | None, fmt: str, nrow: int | None) -> Response:
    """Latents back to images: a latents file (NPZ body) or a JSON body (``RenderRequest``)."""
    body = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        try:
            req = RenderRequest.model_validate_json(body)
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        served, fmt, nrow = server.model(req.model), req.format, req.nrow or nrow
        data = _latents_npz(served, req)
    elif media in ("application/octet-stream", "application/x-npz", "application/zip", ""):
        served, data = server.model(model), body
    else:
        raise RequestError(f"content type {media!r}: send a latents file (application/octet-stream) or a JSON body "
                           "(application/json)", "content-type", 415)
    latents, labels, truncation = served.read_latents(data)
    if len(latents) > server.settings.max_n:
        raise RequestError(f"at most {server.settings.max_n} latents per request, got {len(latents)}", "latents")
    kind = "w" if latents.dim() == 3 else "z"
    truncation = served.check_truncation(truncation) if kind == "z" else None  # W already holds psi
    images = await server.run(served, truncation, kind, latents, labels)
    meta = {"model": served.name, "truncation": truncation,
            "classes": labels.tolist() if labels is not None else None}
    content, media_type = await asyncio.to_thread(_encode_images, fmt, images, latents, meta,
                                                  nrow or min(len(latents), 8))
    headers = {"Content-Disposition": f'inline; filename="{served.name}-render.{fmt}"'}
    return Response(content, media_type=media_type, headers=headers)


def _latents_npz(served: ServedModel, req: RenderRequest) -> bytes:
    """A JSON body as a latents file's bytes, so both bodies are checked by one reader (``load_latents``)."""
    try:
        latents = np.asarray(req.latents, dtype=np.float32)
    except (ValueError, TypeError):
        raise RequestError("latents must be a rectangular array of numbers: z [n][...], or W+ [n][layers][dim] "
                           "for a model with a W space (StyleGAN2)", "latents") from None
    n = len(latents) if latents.ndim else 0
    if req.class_ is None:
        if served.conditional:
            raise RequestError(f"model {served.name!r} is class-conditional: give the class of every latent (a list of "
                               f"{n}) or one class for all", "class")
        y = np.full(n, -1, dtype=np.int64)
    else:
        classes = req.class_ if isinstance(req.class_, list) else [req.class_] * n
        if len(classes) != n:
            raise RequestError(f"class: got {len(classes)} classes for {n} latents (give one per latent, or one for "
                               "all)", "class")
        y = np.array([served.label(c) for c in classes], dtype=np.int64)
    return latents_bytes(torch.from_numpy(latents), torch.from_numpy(y), truncation=req.truncation)


# --------------------------------------------------------------------------------------------- interpolate
async def _interpolate(server: Server, body: InterpolateRequest) -> Response:
    served = server.model(body.model)
    truncation = served.check_truncation(body.truncation)
    steps = server.check_count(body.steps, "steps", 2, server.settings.max_steps)
    if body.kind == "seed":
        y = None if body.class_ is None else torch.tensor([served.label(body.class_)])
        z0, y = served.draw(1, y, truncation, body.seed_a)
        z1, _ = served.draw(1, y, truncation, body.seed_b)
        w0, kind = served.to_w(z0, y, truncation)
        w1, _ = served.to_w(z1, y, truncation)
        latents = lerp(w0, w1, steps)
        labels = y.expand(steps).clone() if y is not None else None
    else:
        if not served.conditional:
            raise RequestError(f"model {served.name!r} is unconditional: use kind \"seed\"", "kind")
        if not served.soft_labels:
            raise RequestError(f"model {served.name!r} ({served.backend} backend) takes class indices only: use kind "
                               "\"seed\" (class interpolation mixes class embeddings)", "kind")
        missing = [f for f in ("class_a", "class_b") if getattr(body, f) is None]
        if missing:
            raise RequestError(f"kind \"class\" needs class_a and class_b (missing: {', '.join(missing)})",
                               missing[0])
        a, b = served.label(body.class_a, "class_a"), served.label(body.class_b, "class_b")
        z, _ = served.draw(1, torch.tensor([a]), truncation, body.seed_a)
        latents, kind = z.expand(steps, -1).clone(), "z-soft"
        labels = soft_labels([a], [b], steps, served.info.n_classes)
    images = await server.run(served, truncation, kind, latents, labels)
    content, media = await asyncio.to_thread(_encode_animation, body.format, images, body.fps)
    name = f"{served.name}-{body.kind}.{body.format}"
    return Response(content, media_type=media, headers={"Content-Disposition": f'inline; filename="{name}"'})


def _encode_animation(fmt: str, images: torch.Tensor, fps: int) -> tuple[bytes, str]:
    """Frames A -> B -> A as a looping GIF or an H.264 MP4 (``scalegan.media``)."""
    frames = ping_pong(list(images.permute(0, 2, 3, 1).numpy()))
    return encode_animation(frames, fmt, fps), {"gif": "image/gif", "mp4": "video/mp4"}[fmt]


# --------------------------------------------------------------------------------------------- body limit
class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes (``limits``: per path, e.g. uploads) is answered 413
    before the app reads it (by its Content-Length, or while counting a chunked body)."""

    def __init__(self, app, limit: int, limits: dict[str, int] | None = None):
        self.app, self.limit, self.limits = app, limit, limits or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope.get("path", ""), self.limit)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._reject(send, limit)
        messages, size = [], 0
        while True:  # bodies are bounded: read it whole, counting, then replay it to the app
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await self._reject(send, limit)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _reject(self, send, limit: int):
        response = JSONResponse({"error": f"request body over {limit} bytes: send a smaller body (fewer latents, "
                                          "a smaller image)", "field": None}, 413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
