"""``scalegan export``: a generator as an ONNX file (see ``scalegan/export.py``)."""

from __future__ import annotations

import argparse
import sys

from ..api import Pipeline
from ..export import DEFAULT_OPSET, FORMATS
from .options import HelpFormatter, add_device, add_generator_source, add_truncation, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a generator as an ONNX file",
        formatter_class=HelpFormatter,
        description="Write a generator as one ONNX file that onnxruntime runs: eval mode, float32, spectral norm "
                    "folded, inputs z (float32 [N, dim]) and y (int64 [N] class indices; none for unconditional "
                    "models), output images (float32 [N, C, H, W]), N dynamic. The truncation is baked in where the "
                    "graph depends on it (StyleGAN2's psi, BigGAN-deep's per-truncation BN statistics) and recorded "
                    "in the file's metadata with the model config, class names, opset and source.")
    add_generator_source(p)
    p.add_argument("out", metavar="OUT", help="the file to write, e.g. model.onnx")
    p.add_argument("--format", choices=FORMATS, default=FORMATS[0], help="export format")
    add_truncation(p, "the truncation the file is made for, a number > 0 (default: none): baked into StyleGAN2 "
                   "(psi) and BigGAN-deep with per-truncation statistics; BigGAN's latents are drawn with it")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help="ONNX opset (>= 14)")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pipeline = Pipeline.from_source(args.source, device=args.device, weights=args.weights)
    try:
        metadata = pipeline.export_onnx(args.out, truncation=args.truncation, opset=args.opset, source=str(args.source))
    except ImportError as e:  # the optional onnx package: one error line, as for bad input
        raise ValueError(str(e)) from None
    truncation = "none" if args.truncation is None else str(args.truncation)
    if args.truncation is not None:
        truncation += " (in the graph)" if metadata["truncation_baked"] == "true" else " (for the latents)"
    print(f"wrote {args.out}: {metadata['family']}, opset {metadata['opset']}, truncation {truncation}",
          file=sys.stderr)
    return 0
