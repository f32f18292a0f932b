"""``scalegan eval`` and ``scalegan train-classifier``.

    scalegan eval runs/demo --ref fashion-mnist --metrics fid,kid,pr,acc --n 10000 --backbone classifier:clf/
    scalegan eval runs/cifar --ref cifar10:~/data/cifar-10-batches-py --metrics fid,is,kid
    scalegan eval samples.npz real_pngs/ --metrics fid,kid
    scalegan train-classifier --data fashion-mnist --out-dir clf/ --epochs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..api import load
from ..data import open_dataset
from ..metrics.classifier import evaluate_accuracy, load_classifier, save_classifier, train_classifier
from ..metrics.eval import data_class_weights, evaluate_generator, evaluate_sets, load_image_set, make_backbone
from ..metrics.registry import DEFAULT_METRICS, METRICS, parse_metrics
from ..metrics.resize import DEFAULT_RESIZER, RESIZERS
from ..utils import write_json
from .options import (
    HelpFormatter,
    add_data,
    add_device,
    add_out_dir,
    add_reference,
    add_sampling,
    add_weights,
    any_int,
    positive_float,
    positive_int,
)


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="measure FID, IS, KID, precision/recall of a generator or between two image sets",
        formatter_class=HelpFormatter,
        description="With one SOURCE (any generator source): sample --n images and compare them with --ref DATASET. "
        "With two (folders of images or .npz files with x), compare SOURCE with SOURCE_B; images are decoded as "
        "training decodes them. Prints JSON: the metrics and a metric card saying how they were measured. The "
        "Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's file) come from "
        "--inception-weights, $SCALEGAN_INCEPTION_WEIGHTS, or $SCALEGAN_CACHE (default ~/.cache/scalegan).",
    )
    p.add_argument("source", help="a generator source (run / checkpoint / weights folder, pretrained name), or an "
                   "image set (folder or .npz)")
    p.add_argument("source_b", nargs="?", help="a second image set: compare SOURCE with it (no generator)")
    add_weights(p)
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from {', '.join(METRICS)} (pr = precision/recall, dc = "
                   "density/coverage, ifid = intra-class FID, acc = class accuracy with --classifier)")
    add_sampling(p, n_default=10_000)
    add_reference(p)
    p.add_argument("--backbone", default="inception", help="'inception' or 'classifier:DIR' (a train-classifier "
                   "output; its penultimate features replace Inception's for FD, KID and precision/recall)")
    p.add_argument("--inception-weights", metavar="FILE", help="Inception weights file")
    p.add_argument("--resizer", default=DEFAULT_RESIZER, choices=sorted(RESIZERS), help="resize to 299 as "
                   "torch-fidelity/TF (tf1-bilinear), pytorch-fid (torch-bilinear) or clean-fid (pil-bicubic)")
    p.add_argument("--classifier", metavar="DIR", help="domain classifier for --metrics acc (default: the "
                   "classifier backbone when --backbone classifier:DIR)")
    p.add_argument("--is-splits", type=positive_int, default=10, help="Inception Score: splits of the images")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000, help="KID: images per subset")
    p.add_argument("--fid-method", default="sqrtm", choices=["sqrtm", "eig"],
                   help="matrix square root: scipy sqrtm (reference) or symmetric eigendecomposition (faster)")
    p.add_argument("--no-cache", action="store_true", help="recompute the reference statistics")
    p.add_argument("--labels", choices=["data", "uniform"], default="data",
                   help="classes of the generated images: data (in proportion to --ref's labels, when it has the "
                   "generator's classes) or uniform (balanced)")
    p.add_argument("--report", metavar="FILE", help="also write the JSON result to FILE")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="channels_last memory format for the feature network (faster on CPU; off by default)")
    add_device(p)
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    metrics = parse_metrics(args.metrics)
    if args.source_b is not None:
        # The inputs are read before the feature network loads: a bad file is an error at once, and names itself.
        a, b = load_image_set(args.source), load_image_set(args.source_b)
        result = evaluate_sets(a, b, metrics, **_common(args))
        result["card"]["set_a"]["source"] = str(args.source)
        result["card"]["reference"]["dataset"]["source"] = str(args.source_b)
    else:
        result = _evaluate_generator(args, metrics)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.report:
        write_json(Path(args.report), result)
    return 0


def _common(args) -> dict:
    """The feature network and the metric settings shared by both kinds of evaluation."""
    backbone = make_backbone(args.backbone, inception_weights=args.inception_weights, resizer=args.resizer,
                             device=args.device, channels_last=args.channels_last)
    return dict(backbone=backbone, batch_size=args.max_batch, is_splits=args.is_splits,
                kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, fid_method=args.fid_method)


def _evaluate_generator(args, metrics: list[str]) -> dict:
    if not args.ref:
        raise ValueError("evaluating a generator needs --ref DATASET (or give two image sets)")
    G, info = load(args.source, device=args.device, weights=args.weights)
    dataset = open_dataset(args.ref, resolution=G.config.resolution, channels=G.config.img_channels,
                           split=args.ref_split, root=args.data_root)
    classifier = load_classifier(args.classifier, device=args.device) if args.classifier else None
    weights = data_class_weights(dataset, G.config.n_classes) if args.labels == "data" else None
    result = evaluate_generator(G, dataset, metrics, args.n, classifier=classifier, ref_n=args.ref_n,
                                seed=args.seed, truncation=args.truncation, truncation_mode=args.truncation_mode,
                                cache=not args.no_cache, progress=True, class_weights=weights, **_common(args))
    result["card"].update(generator_path=str(args.source), generator_weights=args.weights,
                          generator_sha256=info.sha256, reference_spec=args.ref)
    return result


def add_train_classifier_parser(sub) -> None:
    p = sub.add_parser(
        "train-classifier", help="train the small domain classifier (for FD features and class accuracy)",
        formatter_class=HelpFormatter,
        description="Train scalegan's small CNN classifier on a labelled dataset and save it (model.safetensors + "
        "config.json) to --out-dir. Use it with `scalegan eval --backbone classifier:DIR` or `--classifier DIR`. "
        "Prints JSON with the test-split accuracy when the dataset has a test split.",
    )
    add_data(p)
    add_out_dir(p, "folder to save the classifier in (model.safetensors + config.json)", required=True)
    p.add_argument("--resolution", type=positive_int, help="image size (default: the dataset's; match the "
                   "generator's)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="image channels (default: the dataset's)")
    p.add_argument("--epochs", type=positive_int, default=3, help="passes over the training split")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per training step")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument("--seed", type=any_int, default=0, help="seed for initialisation, data order and augmentation")
    p.add_argument("--width", type=positive_int, default=32, help="channels of the first stage")
    p.add_argument("--feature-dim", type=positive_int, default=128, help="penultimate feature size")
    p.add_argument("--hflip", action="store_true", help="augment with horizontal flips (not for digits)")
    p.add_argument("--no-augment", action="store_true", help="no random translations")
    add_device(p)
    p.set_defaults(func=run_train_classifier)


def run_train_classifier(args) -> int:
    train = open_dataset(args.data, resolution=args.resolution, channels=args.channels, split="train",
                         root=args.data_root)
    if not train.num_classes:
        raise ValueError(f"{args.data} has no class labels; the classifier needs a labelled dataset")
    model = train_classifier(
        train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        augment=not args.no_augment, hflip=args.hflip, width=args.width, feature_dim=args.feature_dim,
    )
    save_classifier(model, args.out_dir)
    result = {"out_dir": str(args.out_dir), "dataset": train.describe(), "config": dataclasses.asdict(model.config),
              "train_accuracy": evaluate_accuracy(model, train), "test_accuracy": None}
    # Folder, npz and packed datasets have one split and return it for "test" too: that would only repeat the above (and
    # its warnings about unreadable files).
    if train.kind not in ("folder", "npz", "packed"):
        test = open_dataset(args.data, resolution=train.resolution, channels=train.channels, split="test",
                            root=args.data_root)
        result["test_accuracy"] = evaluate_accuracy(model, test)
    print(json.dumps(result, indent=2, default=str))
    return 0
