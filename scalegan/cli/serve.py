"""``scalegan serve``: an HTTP API and a page that generate images from one or more models (needs the ``serve``
extra: FastAPI, uvicorn, imageio with ffmpeg)."""

from __future__ import annotations

import argparse
import os
import sys

from .options import (
    HelpFormatter,
    add_device,
    add_max_batch,
    add_weights,
    natural_float,
    natural_int,
    port,
    positive_float,
    positive_int,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve models over HTTP: an API (/docs) and a page (/)", formatter_class=HelpFormatter,
        description="Serve generators over HTTP: GET /health, GET /v1/models, POST /v1/generate (PNG grid, NPZ or "
                    "JSON), POST /v1/render (a latents file back to images), POST /v1/interpolate (GIF or MP4), "
                    "POST /v1/invert and /v1/edit (real images restored, then edited), "
                    "OpenAPI at /docs and a page at /. Concurrent requests for one model share forward passes "
                    "(--max-batch, --max-wait-ms).")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="models to serve: run folder, checkpoint folder, weights folder, .safetensors file, "
                   "pretrained name or foreign checkpoint (--backend onnx: .onnx files from scalegan export); each is "
                   "served under its pretrained name, folder name or file stem")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch: PyTorch models; onnx: exported .onnx files run by onnxruntime on the CPU (needs the "
                   "export extra)")
    add_weights(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback needs --token")
    p.add_argument("--port", type=port, default=8000, help="TCP port")
    p.add_argument("--token", default=None, help="bearer token every /v1 call must send (default: "
                   "$SCALEGAN_TOKEN; required when --host is not loopback)")
    add_max_batch(p)
    p.add_argument("--max-wait-ms", type=natural_float, default=10.0,
                   help="how long the oldest waiting request waits for others to share its forward pass")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="requests waiting for a forward pass; more are answered 429 with Retry-After")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds a request may wait and run before it is answered 504")
    p.add_argument("--invert-steps", type=positive_int, default=100,
                   help="latent search steps of POST /v1/invert (the page's Restore)")
    p.add_argument("--max-tune", type=natural_int, default=200,
                   help="generator tuning steps a /v1/invert request may ask for (0: no tuning)")
    p.add_argument("--invert-timeout", type=positive_float, default=120.0,
                   help="seconds an inversion may run before it is answered 504")
    p.add_argument("--max-upload-mb", type=positive_float, default=8.0,
                   help="largest /v1/invert request body in MB (base64 makes a file 4/3 larger); more is 413")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import ServeSettings, create_app
        from ..serve.models import model_names
    except ImportError as e:
        raise ValueError(f"scalegan serve needs the serve extra ({e.name} is missing): pip install "
                         "'scalegan[serve]'") from None
    settings = ServeSettings(host=args.host, port=args.port, token=args.token or os.environ.get("SCALEGAN_TOKEN"),
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                             timeout=args.timeout, invert_steps=args.invert_steps, max_tune=args.max_tune,
                             invert_timeout=args.invert_timeout, max_upload=int(args.max_upload_mb * 1024 * 1024))
    settings.check()  # before loading anything: a missing token is a one-line error at once
    models = {}
    for name, source in zip(model_names(args.sources), args.sources):
        models[name] = _served(name, source, args)
        info = models[name].info
        print(f"scalegan serve: {name}: {info.family} {info.resolution} px, {info.n_classes} classes, "
              f"{args.backend} ({source})", file=sys.stderr)
    app = create_app(models, settings)
    print(f"scalegan serve: http://{args.host}:{args.port}/ (API docs: /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _served(name: str, source: str, args: argparse.Namespace):
    """One source as a served model of ``--backend``; a source of the other backend is a one-line error."""
    from ..serve.models import OnnxServedModel, ServedModel

    is_onnx = str(source).endswith(".onnx")
    if args.backend == "onnx":
        if not is_onnx:
            raise ValueError(f"--backend onnx serves .onnx files (scalegan export); got {source}")
        if str(args.device) != "cpu":
            raise ValueError(f"--backend onnx runs on the CPU (onnxruntime); leave out --device {args.device}")
        try:
            return OnnxServedModel.from_file(name, source, threads=args.threads)
        except ImportError as e:  # onnxruntime or onnx missing: the message names the extra
            raise ValueError(str(e)) from None
        except (ValueError, OSError):
            raise
        except Exception as e:  # onnx and onnxruntime raise their own types (DecodeError, InvalidProtobuf, ...)
            raise ValueError(f"{source} is not a readable ONNX file ({type(e).__name__}: {e}); write it with "
                             "`scalegan export`") from None
    if is_onnx:
        raise ValueError(f"{source} is an ONNX file: serve it with --backend onnx")
    from ..api import load

    G, info = load(source, device=args.device, weights=args.weights)
    return ServedModel(name, G, info)
