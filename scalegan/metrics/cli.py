"""The `scalegan eval` and `scalegan train-classifier` subcommands (wired into `scalegan.cli`).

    scalegan eval runs/demo --ref fashion-mnist --metrics fid,kid,pr,acc --n 10000 --backbone classifier:clf/
    scalegan eval runs/cifar --ref cifar10:~/data/cifar-10-batches-py --metrics fid,is,kid
    scalegan eval samples.npz real_pngs/ --metrics fid,kid
    scalegan train-classifier --data fashion-mnist --out-dir clf/ --epochs 3

Each handler returns an exit code; bad input raises ValueError / KeyError / FileNotFoundError, which the main
command turns into a one-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

__all__ = ["add_eval_parser", "add_train_classifier_parser", "cmd_eval", "cmd_train_classifier"]


def add_eval_parser(sub) -> None:
    """Add `eval` to an argparse subparsers object."""
    from .eval import ALL_METRICS, DEFAULT_METRICS
    from .resize import DEFAULT_RESIZER, RESIZERS

    p = sub.add_parser(
        "eval", help="measure FID, IS, KID, precision/recall of a generator or between two image sets",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="With one SOURCE (a run, checkpoint or weights folder): sample --n images and compare them "
        "with --ref DATASET. With two (folders of images or .npz files with x), compare SOURCE with SOURCE_B. "
        "Prints JSON: the metrics and a metric card saying how they were measured. The Inception weights "
        "(pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's file) come from "
        "--inception-weights, $SCALEGAN_INCEPTION_WEIGHTS, or $SCALEGAN_CACHE (default ~/.cache/scalegan).",
    )
    p.add_argument("source", help="run / checkpoint / weights folder, or an image set (folder or .npz)")
    p.add_argument("source_b", nargs="?", help="a second image set: compare SOURCE with it (no generator)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from {', '.join(ALL_METRICS)} (pr = precision/recall, dc = "
                   "density/coverage, ifid = intra-class FID, acc = class accuracy with --classifier)")
    p.add_argument("--n", type=int, default=10_000, help="number of generated images")
    p.add_argument("--ref", metavar="DATASET", help="reference dataset spec (as for train --data)")
    p.add_argument("--ref-split", default="train", choices=["train", "test"], help="reference split")
    p.add_argument("--ref-n", type=int, help="reference images (default: the whole split; a seeded subset otherwise)")
    p.add_argument("--data-root", help="directory for a dataset spec without a location")
    p.add_argument("--backbone", default="inception", help="'inception' or 'classifier:DIR' (a train-classifier "
                   "output; its penultimate features replace Inception's for FD, KID and precision/recall)")
    p.add_argument("--inception-weights", metavar="FILE", help="Inception weights file")
    p.add_argument("--resizer", default=DEFAULT_RESIZER, choices=sorted(RESIZERS), help="resize to 299 as "
                   "torch-fidelity/TF (tf1-bilinear), pytorch-fid (torch-bilinear) or clean-fid (pil-bicubic)")
    p.add_argument("--classifier", metavar="DIR", help="domain classifier for --metrics acc (default: the "
                   "classifier backbone when --backbone classifier:DIR)")
    p.add_argument("--truncation", type=float, help="truncation threshold for sampling")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch")
    p.add_argument("--weights", default="model", choices=["model", "G", "G_ema"], help="which generator")
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--fid-method", default="sqrtm", choices=["sqrtm", "eig"],
                   help="matrix square root: scipy sqrtm (reference) or symmetric eigendecomposition (faster)")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference statistics")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result here")
    p.add_argument("--channels-last", action="store_true", help="channels_last Inception (faster on CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS, help="torch CPU threads")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    """Run `scalegan eval`."""
    from .eval import evaluate_generator, evaluate_sets, make_backbone, parse_metrics

    metrics = parse_metrics(args.metrics)
    backbone = make_backbone(
        args.backbone, inception_weights=args.inception_weights, resizer=args.resizer, device=args.device,
        channels_last=args.channels_last,
    )
    common = dict(
        backbone=backbone, batch_size=args.batch_size, is_splits=args.is_splits, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, fid_method=args.fid_method,
    )
    if args.source_b is not None:
        result = evaluate_sets(args.source, args.source_b, metrics, **common)
    else:
        if not args.ref:
            raise ValueError("evaluating a generator needs --ref DATASET (or give two image sets)")
        import scalegan
        from scalegan.data import open_dataset

        G = scalegan.load(args.source, device=args.device, weights=args.weights)
        dataset = open_dataset(
            args.ref, resolution=G.config.resolution, channels=G.config.img_channels, split=args.ref_split,
            root=args.data_root,
        )
        classifier = None
        if args.classifier:
            from .classifier import load_classifier

            classifier = load_classifier(args.classifier, device=args.device)
        result = evaluate_generator(
            G, dataset, metrics, args.n, classifier=classifier, ref_n=args.ref_n, seed=args.seed,
            truncation=args.truncation, cache=not args.no_cache, progress=True, **common,
        )
        result["card"]["generator_path"] = str(args.source)
        result["card"]["generator_weights"] = args.weights
        result["card"]["reference_spec"] = args.ref
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def add_train_classifier_parser(sub) -> None:
    """Add `train-classifier` to an argparse subparsers object."""
    p = sub.add_parser(
        "train-classifier", help="train the small domain classifier (for FD features and class accuracy)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train scalegan's small CNN classifier on a labelled dataset and save it (model.safetensors + "
        "config.json) to --out-dir. Use it with `scalegan eval --backbone classifier:DIR` or `--classifier DIR`. "
        "Prints JSON with the test-split accuracy when the dataset has a test split.",
    )
    p.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist or folder:DIR")
    p.add_argument("--data-root", help="directory for a dataset spec without a location")
    p.add_argument("--out-dir", required=True, help="where to save the classifier")
    p.add_argument("--resolution", type=int, help="image size (default: the dataset's; match the generator's)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="image channels (default: the dataset's)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=32, help="channels of the first stage")
    p.add_argument("--feature-dim", type=int, default=128, help="penultimate feature size")
    p.add_argument("--hflip", action="store_true", help="augment with horizontal flips (not for digits)")
    p.add_argument("--no-augment", action="store_true", help="no random translations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS, help="torch CPU threads")
    p.set_defaults(func=cmd_train_classifier)


def cmd_train_classifier(args) -> int:
    """Run `scalegan train-classifier`."""
    from scalegan.data import open_dataset

    from .classifier import evaluate_accuracy, save_classifier, train_classifier

    train = open_dataset(args.data, resolution=args.resolution, channels=args.channels, split="train",
                         root=args.data_root)
    if not train.num_classes:
        raise ValueError(f"{args.data} has no class labels; the classifier needs a labelled dataset")
    model = train_classifier(
        train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        augment=not args.no_augment, hflip=args.hflip, width=args.width, feature_dim=args.feature_dim,
    )
    save_classifier(model, args.out_dir)
    result = {
        "out_dir": str(args.out_dir),
        "dataset": train.describe(),
        "config": dataclasses.asdict(model.config),
        "train_accuracy": evaluate_accuracy(model, train),
        "test_accuracy": None,
    }
    test = open_dataset(args.data, resolution=train.resolution, channels=train.channels, split="test",
                        root=args.data_root)
    # Folder and npz datasets have one split and return it for "test" too: that would only repeat the above.
    if test.describe().get("split") == "test" and test.kind not in ("folder", "npz"):
        result["test_accuracy"] = evaluate_accuracy(model, test)
    print(json.dumps(result, indent=2, default=str))
    return 0
