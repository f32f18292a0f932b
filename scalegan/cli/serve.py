"""``scalegan serve``: an HTTP API and a page that generate images from one or more models (needs the ``serve``
extra: FastAPI, uvicorn, imageio with ffmpeg)."""

from __future__ import annotations

import argparse
import os
import sys

from .options import HelpFormatter, add_device, add_max_batch, add_weights, natural_float, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve models over HTTP: an API (/docs) and a page (/)", formatter_class=HelpFormatter,
        description="Serve generators over HTTP: GET /health, GET /v1/models, POST /v1/generate (PNG grid, NPZ or "
                    "JSON), POST /v1/interpolate (GIF or MP4), OpenAPI at /docs and a page at /. Concurrent requests "
                    "for one model share forward passes (--max-batch, --max-wait-ms).")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="models to serve: run folder, checkpoint folder, weights folder, .safetensors file, "
                   "pretrained name or foreign checkpoint; each is served under its pretrained name or folder name")
    add_weights(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback needs --token")
    p.add_argument("--port", type=positive_int, default=8000, help="TCP port")
    p.add_argument("--token", default=None, help="bearer token every /v1 call must send (default: "
                   "$SCALEGAN_TOKEN; required when --host is not loopback)")
    add_max_batch(p)
    p.add_argument("--max-wait-ms", type=natural_float, default=10.0,
                   help="how long the oldest waiting request waits for others to share its forward pass")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="requests waiting for a forward pass; more are answered 429 with Retry-After")
    p.add_argument("--timeout", type=positive_float, default=60.0,
                   help="seconds a request may wait and run before it is answered 504")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve.app import ServeSettings, create_app
        from ..serve.models import ServedModel, model_names
    except ImportError as e:
        raise ValueError(f"scalegan serve needs the serve extra ({e.name} is missing): pip install "
                         "'scalegan[serve]'") from None
    from ..api import load

    settings = ServeSettings(host=args.host, port=args.port, token=args.token or os.environ.get("SCALEGAN_TOKEN"),
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                             timeout=args.timeout)
    settings.check()  # before loading anything: a missing token is a one-line error at once
    models = {}
    for name, source in zip(model_names(args.sources), args.sources):
        G, info = load(source, device=args.device, weights=args.weights)
        models[name] = ServedModel(name, G, info)
        print(f"scalegan serve: {name}: {info.family} {info.resolution} px, {info.n_classes} classes ({source})",
              file=sys.stderr)
    app = create_app(models, settings)
    print(f"scalegan serve: http://{args.host}:{args.port}/ (API docs: /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
