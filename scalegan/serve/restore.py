"""Real images through the server: ``POST /v1/invert`` (an uploaded image, restored or reconstructed by
``scalegan.invert.invert``) and ``POST /v1/edit`` (an inverted latent moved along SeFa directions and towards
another class, ``scalegan.edit``).

Uploads are base64 in a JSON body, decoded in memory (nothing is written to disk) and checked before the pixels
are decoded: the header's width x height against ``max_pixels`` (a decompression bomb is a 413), then the
decode itself (a non-image or a truncated file is a 422). An inversion runs in a worker thread, at most
``max_inversions`` at a time (beyond: 429), answered 504 after ``invert_timeout`` seconds (the search stops at its
next step and frees its slot). Edits render through the batcher like every other image; a tuned
restoration's generator is kept (the last ``TUNED_KEPT``, under an unguessable token the response carries) so its
edits start from the restored image, not from the untuned generator's rendering of the same latent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import secrets
import time
import warnings
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ..data.folder import to_mode
from ..edit import class_step, directions, latent_space
from ..family import latent_shape, w_shape
from ..invert import TASKS, Degradation, InversionStopped, invert
from ..latents import latents_bytes
from ..media import encode_image, fit_input, known_mask
from ..sampling import render
from ..utils import to_hwc, to_uint8
from .models import RequestError, ServedModel

Class = int | str
MAX_CLASSES = 64  # every class is tried up to this many (as `scalegan invert`); above, the request names one
EDIT_DIRECTIONS = 16  # SeFa directions an edit may use
TUNED_KEPT = 4  # tuned generators kept for edits (the most recent; each is a copy of G)


class InvertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str | None = Field(None, description="a name from GET /v1/models (default: the first model)")
    image: str = Field(..., description="the image file (PNG, JPEG, WebP, ...), base64 or a data: URL")
    task: Literal[TASKS] = Field("invert", description="invert (reconstruct), inpaint (needs mask), superres (the "
                                 "image is the low-resolution input), denoise, colorize (RGB models)")
    mask: str | None = Field(None, description="inpaint: a mask image, base64 or data: URL; white (>= 128) = known "
                             "pixel, black = missing; the image's size or the model's resolution")
    class_: Class | None = Field(None, alias="class", description="the image's class (index or name); none: every "
                                 "class is tried (models of up to 64 classes)")
    factor: int = Field(4, ge=2, le=64, description="superres: the input's down-sampling factor")
    noise_sigma: float | None = Field(None, ge=0, le=1, description="denoise: the noise's deviation on the [0, 1] "
                                      "scale; none: estimated")
    tune: int = Field(0, ge=0, description="generator tuning steps after the search (0: none; at most the server's "
                      "--max-tune); the response's tuned token lets /v1/edit use the tuned copy (the server keeps "
                      "the last few)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    format: Literal["json", "png", "npz"] = Field("json", description="json: the result and input as PNG data URLs, "
                                                  "the latents (list and NPZ), class and PSNR; png: the result image; "
                                                  "npz: a latents file with the image as x")


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    model: str | None = None
    latents: list = Field(..., description="one latent as /v1/invert returns it: z [dim], or W+ [layers][dim] "
                          "(StyleGAN2); a leading batch axis of 1 is accepted")
    class_: Class | None = Field(None, alias="class", description="the latent's class (conditional models)")
    directions: list[tuple[int, float]] = Field([], description="[[index, strength], ...]: SeFa directions "
                                                "(0 = the strongest) and how far to move along each")
    morph_class: Class | None = Field(None, description="a class to move towards")
    morph: float = Field(0.0, ge=0, le=1, description="how far towards morph_class (0 .. 1)")
    tuned: str | None = Field(None, description="the tuned token /v1/invert returned: edit with that tuned generator")
    format: Literal["png", "json"] = "png"


# --------------------------------------------------------------------------------------------- uploads
def decode_upload(text: str, field: str, max_pixels: int, channels: int) -> Image.Image:
    """The image of a base64 / data-URL upload as 8-bit grey (1) or RGB (3), upright; bad input is a 4xx."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field} is not base64: send the file's bytes base64-encoded (e.g. `base64 -w0 "
                           "photo.png`) or as a data: URL", field) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise RequestError(f"{field} is {width}x{height} = {width * height} pixels; at most {max_pixels}: "
                                   "downscale it first", field, 413)
            image.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(f"{field} claims a huge size (a decompression bomb?); at most {max_pixels} pixels",
                           field, 413) from None
    except UnidentifiedImageError:
        raise RequestError(f"{field} is not an image PIL can read: send a PNG, JPEG or WebP file", field) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise RequestError(f"{field} is a broken or truncated image ({e}): send the whole file", field) from None
    image = ImageOps.exif_transpose(image)
    return to_mode(image, "L" if channels == 1 else "RGB")


def _png(image: torch.Tensor) -> str:
    """A [C, H, W] image in [-1, 1] as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(encode_image(to_hwc(image[None])[0])).decode()


# --------------------------------------------------------------------------------------------- invert
def _inputs(served: ServedModel, body: InvertRequest, max_pixels: int):
    """(input [1, C, S, S], mask [1, 1, R, R] or None, candidate classes or None) of a request; 4xx when bad."""
    cfg = served.G.config
    try:  # the task's own checks (an RGB model for colorize, the factor, noise_sigma), before anything is decoded
        Degradation("invert" if body.task == "inpaint" else body.task, cfg.resolution, None, body.factor,
                    cfg.img_channels, body.noise_sigma)
    except ValueError as e:
        raise RequestError(str(e), "task") from None
    if (body.mask is None) == (body.task == "inpaint"):
        raise RequestError("task inpaint needs a mask (white = known pixel)" if body.mask is None else
                           "mask applies to task inpaint only", "mask")
    image = decode_upload(body.image, "image", max_pixels, 1 if body.task == "colorize" else cfg.img_channels)
    size = cfg.resolution // body.factor if body.task == "superres" else cfg.resolution
    x = fit_input(image, size)[None]
    mask = None
    if body.mask is not None:
        try:
            mask = known_mask(decode_upload(body.mask, "mask", max_pixels, 1), image.size, cfg.resolution)[None]
        except ValueError as e:
            raise RequestError(str(e), "mask") from None
        if not mask.sum() > 0:
            raise RequestError("the mask marks no pixel as known (white = known, black = missing)", "mask")
    classes = None
    if body.class_ is not None:
        classes = [served.label(body.class_)]
    elif cfg.n_classes > MAX_CLASSES:
        raise RequestError(f"model {served.name!r} has {cfg.n_classes} classes, too many to try them all: give the "
                           "image's class", "class")
    return x, mask, classes


def _run_invert(served: ServedModel, body: InvertRequest, x, mask, classes, steps: int, restarts: int,
                timeout: float = math.inf) -> dict:
    """The inversion itself (a worker thread): the result as the response's fields. Past ``timeout`` seconds it
    stops at its next step (``InversionStopped``), so a request answered 504 frees its slot at once."""
    start = time.perf_counter()
    result = invert(served.G, x, classes=classes, task=body.task, mask=mask, factor=body.factor, restarts=restarts,
                    steps=steps, top_k=2, max_classes=MAX_CLASSES, seed=body.seed, features=False,
                    tune=body.tune or None, noise_sigma=body.noise_sigma,
                    stop=lambda: time.perf_counter() - start > timeout)
    y = None if result.y is None else int(result.y[0])
    names = served.info.class_names
    return {"model": served.name, "task": body.task, "class": y,
            "class_name": names[y] if y is not None and y < len(names) else None,
            "psnr": round(float(result.psnr[0]), 3), "tune": body.tune, "seconds": round(time.perf_counter() - start,
                                                                                           2),
            "image": result.images[0], "input": x[0], "latents": result.latents[:1], "y": result.y,
            "generator": result.generators[0] if result.generators else None}


async def invert_route(server, body: InvertRequest):
    """``POST /v1/invert``: checks, then the inversion off the event loop within the limits."""
    from fastapi.responses import Response

    settings = server.settings
    served = server.model(body.model)
    if served.backend != "torch":
        raise RequestError(f"model {served.name!r} is an ONNX file: inversion needs gradients, serve its weights "
                           "(torch backend)", "model")
    if body.tune > settings.max_tune:
        raise RequestError(f"tune must be 0..{settings.max_tune} on this server (--max-tune), got {body.tune}", "tune")
    x, mask, classes = await asyncio.to_thread(_inputs, served, body, settings.max_pixels)
    if server.inversions >= settings.max_inversions:
        raise RequestError(f"{server.inversions} inversion(s) running, the most this server runs at once: retry in "
                           "a few seconds", None, 429, {"Retry-After": "5"})
    server.inversions += 1
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, _run_invert, served, body, x, mask, classes, settings.invert_steps,
                                  settings.invert_restarts, settings.invert_timeout)
    future.add_done_callback(lambda f: _release(server, f))
    try:
        out = await asyncio.wait_for(asyncio.shield(future), settings.invert_timeout)
    except (asyncio.TimeoutError, InversionStopped):
        raise RequestError(f"the inversion did not finish within {settings.invert_timeout:g} s (--invert-timeout): "
                           "ask for fewer tuning steps or retry when the server is idle", None, 504) from None
    except ValueError as e:
        raise RequestError(str(e), None) from None
    tuned = out.pop("generator")
    if tuned is not None:  # kept for edits under an unguessable token; the oldest goes
        out["tuned"] = secrets.token_urlsafe(16)
        server.tuned[out["tuned"]] = (served.name, tuned)
        while len(server.tuned) > TUNED_KEPT:
            server.tuned.pop(next(iter(server.tuned)))
    content, media = await asyncio.to_thread(_encode_invert, body.format, out)
    return Response(content, media_type=media,
                    headers={"Content-Disposition": f'inline; filename="{served.name}-{body.task}.{body.format}"'})


def _release(server, future) -> None:
    """An inversion ended (done, failed or stopped): free its slot; its error, if any, is the request's or moot."""
    server.inversions -= 1
    if not future.cancelled():
        future.exception()  # retrieved: a stopped search after its 504 is no error to log


def _encode_invert(fmt: str, out: dict) -> tuple[bytes, str]:
    latents, y, image = out.pop("latents"), out.pop("y"), out.pop("image")
    npz = latents_bytes(latents, y, x=to_hwc(image[None]))
    if fmt == "png":
        return encode_image(to_hwc(image[None])[0]), "image/png"
    if fmt == "npz":
        return npz, "application/x-npz"
    body = {**out, "image": _png(image), "input": _png(out.pop("input")), "latents": latents[0].tolist(),
            "latents_npz": base64.b64encode(npz).decode()}
    return json.dumps(body).encode(), "application/json"


# --------------------------------------------------------------------------------------------- edit
def _edit_input(served: ServedModel, body: EditRequest) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The request's latent as [1, ...] in the space edits work in (z, or W+ for a family with one) and its label."""
    space, _ = latent_space(served.G)
    want = w_shape(served.G) if space == "w" else latent_shape(served.G)
    try:
        latents = torch.as_tensor(np.asarray(body.latents, dtype=np.float32))
    except (ValueError, TypeError):
        latents = None
    if latents is None or tuple(latents.shape) not in (tuple(want), (1, *want)) or not torch.isfinite(latents).all():
        shape = "W+ [layers][dim] = " if space == "w" else "z "
        raise RequestError(f"latents must be one finite latent of shape {shape}{list(want)} (as /v1/invert returns "
                           "it)", "latents")
    y = None
    if served.conditional:
        if body.class_ is None:
            raise RequestError(f"model {served.name!r} is class-conditional: give the latent's class", "class")
        y = torch.tensor([served.label(body.class_)])
    return latents.reshape(1, *want), y


def edit_latents(served: ServedModel, body: EditRequest, vectors: torch.Tensor) -> tuple[torch.Tensor,
                                                                                         torch.Tensor | None, str]:
    """(latents [1, ...], labels, batcher kind) of an edit: ``vectors`` (SeFa, [k, dim]) added, then the morph."""
    latents, y = _edit_input(served, body)
    for index, strength in body.directions:
        if not 0 <= index < len(vectors):
            raise RequestError(f"direction {index}: this server edits along directions 0..{len(vectors) - 1}",
                               "directions")
        if not np.isfinite(strength):
            raise RequestError(f"direction {index}: the strength must be finite", "directions")
        latents = latents + float(strength) * vectors[index]  # W+: the same move on every layer
    if body.morph_class is not None and body.morph > 0:
        target = served.label(body.morph_class, "morph_class")
        try:
            latents, labels = class_step(served.G, latents, y, target, body.morph)
        except ValueError as e:
            raise RequestError(str(e), "morph_class") from None
        return latents, labels, "w" if latents.dim() == 3 else "z-soft"
    return latents, y, "w" if latents.dim() == 3 else "z"


def sefa(server, served: ServedModel) -> torch.Tensor:
    """The model's first ``EDIT_DIRECTIONS`` SeFa directions, computed once per model (a tuned copy edits along its
    source's directions, so that a slider means the same before and after tuning)."""
    if served.name not in server.sefa:
        _, dim = latent_space(served.G)
        server.sefa[served.name] = directions(served.G, min(EDIT_DIRECTIONS, dim))[0]
    return server.sefa[served.name]


async def edit_route(server, body: EditRequest):
    """``POST /v1/edit``: the edited latent's image through the batcher."""
    from fastapi.responses import Response

    served = server.model(body.model)
    if served.backend != "torch":
        raise RequestError(f"model {served.name!r} is an ONNX file: edits need the torch backend", "model")
    tuned = None
    if body.tuned is not None:
        name, tuned = server.tuned.get(body.tuned, (None, None))
        if tuned is None or name != served.name:
            raise RequestError(f"no tuned generator {body.tuned!r} for model {served.name!r} here (the server keeps "
                               f"the last {TUNED_KEPT}): restore the image again, or leave out tuned", "tuned", 404)
    vectors = await asyncio.to_thread(sefa, server, served)
    latents, labels, kind = edit_latents(served, body, vectors)
    if tuned is None:
        images = await server.run(served, None, kind, latents, labels)
    else:  # the tuned copy renders alone, off the event loop (the batcher serves the served models)
        images = await asyncio.to_thread(lambda: to_uint8(render(tuned, latents, labels)).cpu())
    png = await asyncio.to_thread(encode_image, images[0].permute(1, 2, 0).numpy())
    if body.format == "png":
        return Response(png, media_type="image/png")
    return Response(json.dumps({"model": served.name, "image": "data:image/png;base64," +
                                base64.b64encode(png).decode(), "latents": latents[0].tolist(),
                                "directions": len(vectors)}).encode(), media_type="application/json")
