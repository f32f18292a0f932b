"""``scalegan prepare``: pack a labelled image source into a packed dataset (``scalegan/data/prepare.py``)."""

from __future__ import annotations

import argparse

from ..data.prepare import PLOT, REPORT, RESIZE_POLICIES, balance_table, prepare
from .options import HelpFormatter, natural_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "prepare", help="decode, resize and pack a labelled image source into a packed dataset (packed:OUT)",
        formatter_class=HelpFormatter,
        description="Decode every image of SOURCE once, fit it to --resolution and stream it into uint8 shards in OUT "
                    "(shard-NNNNN.npy, labels.npy, class_names.json, manifest.json with SHA-256s, report.json, "
                    f"{PLOT} when matplotlib is installed). SOURCE: a folder of class folders, a folder of images with "
                    "--labels-file, a .zip of class folders, or an array dataset spec (npz:FILE, idx:DIR, "
                    "fashion-mnist, cifar10:DIR, ...). Unreadable files and duplicate images are left out and listed "
                    f"in {REPORT}. An interrupted run continues when the same command is run again. Train on the "
                    "result with --data packed:OUT (or --data OUT).")
    p.add_argument("source", metavar="SOURCE", help="class folders, an image folder with --labels-file, a .zip, or an "
                   "array dataset spec")
    p.add_argument("out", metavar="OUT", help="folder to write the packed dataset into (created)")
    p.add_argument("--resolution", type=positive_int, required=True, help="size of the packed images (square)")
    p.add_argument("--resize", choices=RESIZE_POLICIES, default="crop",
                   help="crop: centre crop to a square, then resize (as folder: datasets); pad: resize the long side, "
                   "centre on black; stretch: resize, ignoring the aspect ratio")
    p.add_argument("--channels", type=int, choices=[1, 3], help="image channels (default: the dataset's)")
    p.add_argument("--labels-file", metavar="FILE", help="CSV with a header row file,class or JSON {file: class}: "
                   "class names of the images in SOURCE (file names relative to it)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=False,
                   help="also store every image flipped left-right, after it (twice the images)")
    p.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=True,
                   help="leave out images whose pixels at --resolution repeat an earlier image's (SHA-256)")
    p.add_argument("--shard-size", type=positive_int, help="images per shard file (default: as many as fit in "
                   "256 MiB; even with --mirror)")
    p.add_argument("--workers", type=natural_int, default=0, help="decoding processes (0: decode in this process)")
    p.add_argument("--overwrite", action="store_true", help="replace a packed dataset in OUT prepared with other "
                   "options")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = prepare(args.source, args.out, resolution=args.resolution, resize=args.resize, channels=args.channels,
                       mirror=args.mirror, dedup=args.dedup, shard_size=args.shard_size, labels_file=args.labels_file,
                       workers=args.workers, overwrite=args.overwrite, progress=args.progress)
    report = manifest["report"]
    print(balance_table(manifest))
    print(f"{args.out}: {manifest['count']} images ({manifest['channels']} x {manifest['resolution']} x "
          f"{manifest['resolution']}) in {len(manifest['shards'])} shard(s); {report['unreadable']} unreadable and "
          f"{report['duplicates']} duplicate file(s) left out (see {args.out}/{REPORT}); train with "
          f"--data packed:{args.out}")
    for note in report["notes"]:
        print(f"note: {note}")
    return 0
