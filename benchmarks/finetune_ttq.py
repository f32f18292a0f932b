"""Fine-tuning against training from scratch, by time to quality: the demo model (biggan-fmnist, trained here for
``--source-budget`` seconds, or ``--source RUN``) is fine-tuned (``init_from``) onto two new domains, and the same
preset is trained from scratch on each for the same budget; both are measured at checkpoints every ``--ckpt-every``
iterations with the project's Fashion-MNIST classifier (``benchmarks/time_to_quality.py``'s machinery and
classifier).

    python benchmarks/finetune_ttq.py --threads 1 --source benchmarks/results/ttq/amx-default_seed0/run
    python benchmarks/finetune_ttq.py --source-budget 300 --budget 150 --ckpt-every 75
    python benchmarks/finetune_ttq.py --plot benchmarks/results/finetune_ttq/curve.jsonl --out-png docs/finetune_ttq.png

Targets:

- ``inverted``: Fashion-MNIST with inverted intensities (255 - x), the same 10 classes. The classifier was trained
  on the original domain, so generated images are inverted back (-x in [-1, 1]) before it judges them and before FD
  against the original training set: what is measured is whether G learned the new domain's pictures.
- ``subset``: three classes (T-shirt/top 0, Trouser 1, Sneaker 7) relabelled 0, 1, 2; the fine-tune maps the class
  embeddings with ``class_map 0:0,1:1,2:7``. Class consistency: the share of samples of new class c that the
  10-way classifier assigns to the original class (another of the 10 classes counts as wrong); FD against the
  subset.

Each arm is one uninterrupted run; its checkpoints are measured afterwards, at the training seconds each records
(the loop's ``elapsed``: training steps only, not checkpoints or evaluation). On a CPU shared with other work,
``--threads 1`` avoids the thread thrashing that two threads on two busy cores suffer. The fine-tuning arm is also
measured at 0 s (the source's generator with the new domain's class map, before any step). Prints one JSON line per
evaluation (also written to OUT/curve.jsonl) and plots class consistency against training seconds (needs
matplotlib).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from common import emit, log, machine, pyplot, save_figure
from time_to_quality import ensure_classifier
from torch import nn

from scalegan import load
from scalegan.cli import parse_overrides
from scalegan.data import open_dataset
from scalegan.hardware import describe_cpu
from scalegan.metrics.classifier import ClassAccuracy
from scalegan.metrics.eval import as_reference, evaluate_generator, make_backbone
from scalegan.metrics.generated import generated_batches
from scalegan.training import TrainConfig, train

SUBSET = (0, 1, 7)  # T-shirt/top, Trouser, Sneaker -> new classes 0, 1, 2
TARGET_LINE = 0.85  # the demo's class-consistency target (README)


class Inverted(nn.Module):
    """G with its images inverted back to the classifier's domain."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G, self.config = G, G.config

    def forward(self, latents, y=None, truncation=None, **kw):
        return -self.G(latents, y, truncation=truncation, **kw)


class Relabelled(nn.Module):
    """A 10-class G seen as a G of the classes in ``classes`` (new class i draws the source's class classes[i])."""

    def __init__(self, G: nn.Module, classes):
        super().__init__()
        self.G, self.config = G, dataclasses.replace(G.config, n_classes=len(classes))
        self.register_buffer("index", torch.tensor(classes))

    def forward(self, latents, y=None, truncation=None, **kw):
        return self.G(latents, self.index[y], truncation=truncation, **kw)


class SubsetJudge(nn.Module):
    """The 10-way classifier's verdict in the subset's labels: logits of the subset's classes, then one column
    holding the best other class, which never equals a requested label."""

    def __init__(self, classifier: nn.Module, classes):
        super().__init__()
        self.classifier, self.classes = classifier, list(classes)
        self.others = [c for c in range(classifier.config.num_classes) if c not in self.classes]

    def forward(self, x):
        logits = self.classifier(x)
        return torch.cat([logits[:, self.classes], logits[:, self.others].amax(dim=1, keepdim=True)], dim=1)


def make_targets(root: Path) -> dict[str, Path]:
    """The two target datasets as NPZ files (32 px, as the preset trains)."""
    images, labels = open_dataset("fashion-mnist", split="train", resolution=32).tensors
    x = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, 1] uint8
    y = labels.numpy().astype(np.int64)
    paths = {"inverted": root / "fmnist_inverted.npz", "subset": root / "fmnist_subset.npz"}
    np.savez(paths["inverted"], x=255 - x, y=y)
    keep = np.isin(y, SUBSET)
    np.savez(paths["subset"], x=x[keep], y=np.searchsorted(np.array(SUBSET), y[keep]).astype(np.int64))
    return paths


class Judge:
    """Class consistency and FD of a generator for one target domain."""

    def __init__(self, target: str, npz: Path, backbone, eval_n: int):
        self.target, self.backbone, self.eval_n = target, backbone, eval_n
        if target == "inverted":
            self.reference = as_reference(open_dataset("fashion-mnist", split="train"), backbone, ["fid", "acc"],
                                          None, 100, cache=True)
        else:
            self.reference = as_reference(open_dataset(f"npz:{npz}"), backbone, ["fid"], None, 100, cache=True)

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> dict:
        if self.target == "inverted":
            m = evaluate_generator(Inverted(G), self.reference, ["fid", "acc"], self.eval_n, backbone=self.backbone,
                                   seed=123)["metrics"]
            return {"class_consistency": m["class_accuracy"], "fd": m["fd"]}
        accuracy = ClassAccuracy(SubsetJudge(self.backbone.model, SUBSET), len(SUBSET))
        for images, labels in generated_batches(G, self.eval_n, seed=123):
            accuracy.update(images, labels)
        fd = evaluate_generator(G, self.reference, ["fid"], self.eval_n, backbone=self.backbone, seed=123)
        return {"class_consistency": accuracy.accuracy, "fd": fd["metrics"]["fd"]}


def train_source(args, out: Path) -> Path:
    run = out / "source"
    log(f"training the source (biggan-fmnist on Fashion-MNIST) for {args.source_budget:.0f} s into {run}")
    train(TrainConfig.from_preset("biggan-fmnist", out_dir=str(run), seed=args.seed, device=args.device,
                                  iterations=10**9, time_budget=args.source_budget, sample_every=0, ckpt_every=0,
                                  progress=False, tensorboard=False))
    return run


def record(row: dict, curve: Path) -> dict:
    """Print a JSON line and append it to the curve file."""
    emit(row)
    with open(curve, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def run_arm(args, target: str, arm: str, npz: Path, source: Path, judge: Judge, out: Path) -> list[dict]:
    """Train one arm for ``budget`` seconds, then measure every checkpoint; the fine-tune arm also at 0 s."""
    name = arm + (f"-{args.label}" if args.label else "")
    run, records = out / f"{target}_{name}", []
    shutil.rmtree(run, ignore_errors=True)
    extra = {"init_from": str(source), **({"class_map": "0:0,1:1,2:7"} if target == "subset" else {})}
    common = {"bench": "finetune_ttq", "target": target, "arm": name, "seed": args.seed, "eval_n": args.eval_n,
              "train": parse_overrides(args.train),
              "cpu_kind": describe_cpu(), "machine": machine(args.device),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if arm == "finetune":
        G, _ = load(source, device=args.device)
        records.append(record({**common, "train_seconds": 0.0, "step": 0,
                               **judge(Relabelled(G, SUBSET) if target == "subset" else G)}, out / "curve.jsonl"))
    train(TrainConfig.from_preset(
        "biggan-fmnist", **(extra if arm == "finetune" else {}), **parse_overrides(args.train), data=f"npz:{npz}",
        out_dir=str(run), seed=args.seed,
        device=args.device, iterations=10**9, time_budget=args.budget, sample_every=0, ckpt_every=args.ckpt_every,
        keep_checkpoints=10**6, progress=False, tensorboard=False))
    precision = json.loads((run / "train_config.json").read_text())["hardware"]["precision"]
    for ckpt in sorted((run / "checkpoints").glob("step_*")):
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        t0 = time.perf_counter()
        G, _ = load(ckpt, device=args.device)
        result = judge(G)
        records.append(record({**common, "train_seconds": round(state["elapsed"], 1), "step": state["step"],
                               **result, "eval_seconds": round(time.perf_counter() - t0, 1), "precision": precision},
                              out / "curve.jsonl"))
    return records


def time_to(rows: list[dict], level: float) -> float | None:
    """Training seconds of the first evaluation at or above ``level`` (None: not within the budget)."""
    return next((r["train_seconds"] for r in rows if r["class_consistency"] >= level), None)


def summarise(records: list[dict]) -> list[dict]:
    """Per target: each arm's class consistency at the end and its seconds to the demo's target."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in records):
        names = dict.fromkeys(r["arm"] for r in records if r["target"] == target)
        arms = {a: [r for r in records if r["target"] == target and r["arm"] == a] for a in names}
        lines.append({"bench": "finetune_ttq_summary", "target": target, "level": TARGET_LINE,
                      **{f"{a}_final": rows[-1]["class_consistency"] for a, rows in arms.items() if rows},
                      **{f"{a}_seconds_to_level": time_to(rows, TARGET_LINE) for a, rows in arms.items()}})
    return lines


def plot(curves: list[Path], png: Path) -> None:
    """Class consistency against training seconds: one panel per target, fine-tune and scratch."""
    plt = pyplot()
    if plt is None:
        return
    rows = [r for c in curves for r in (json.loads(x) for x in c.read_text().splitlines() if x.strip()) if "arm" in r]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for arm in dict.fromkeys(r["arm"] for r in rows if r["target"] == target):
            mine = [r for r in rows if r["target"] == target and r["arm"] == arm]
            ax.plot([r["train_seconds"] for r in mine], [r["class_consistency"] for r in mine], marker=".",
                    label=arm.replace("finetune", "fine-tuned from the demo model").replace("scratch", "from scratch"))
        ax.axhline(TARGET_LINE, color="grey", lw=0.5)
        title = {"inverted": "Fashion-MNIST, inverted intensities", "subset": "3-class subset, new labels"}[target]
        ax.set(xlabel="training seconds", ylabel="class consistency", ylim=(0, 1), title=title)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{rows[0]['cpu_kind']}: {rows[0]['machine']} (shared CPU), {rows[0]['date']}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, png, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="the run to fine-tune from (default: train the demo model here)")
    parser.add_argument("--source-budget", type=float, default=300, help="training seconds of the source")
    parser.add_argument("--budget", type=float, default=150, help="training seconds of each arm")
    parser.add_argument("--ckpt-every", type=int, default=75, help="iterations between the checkpoints measured")
    parser.add_argument("--targets", default="inverted,subset", help="comma-separated: inverted, subset")
    parser.add_argument("--arms", default="finetune,scratch", help="comma-separated: finetune, scratch")
    parser.add_argument("--train", action="append", metavar="KEY=VALUE", help="training config value of every arm "
                        "(repeatable), e.g. lr_g=1e-4")
    parser.add_argument("--label", default="", help="suffix of the arm names (results folders, legend)")
    parser.add_argument("--eval-n", type=int, default=2000, help="generated images per evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-dir", default="benchmarks/results/fmnist_classifier")
    parser.add_argument("--out", default="benchmarks/results/finetune_ttq", help="results folder")
    parser.add_argument("--out-png", default="docs/finetune_ttq.png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--plot", nargs="+", metavar="CURVE", help="only plot these curve.jsonl files together")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        plot([Path(p) for p in args.plot], Path(args.out_png))
        return 0
    if args.budget <= 0 or args.ckpt_every < 1:
        parser.error("need --budget > 0 and --ckpt-every >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = out / "curve.jsonl"
    curve.unlink(missing_ok=True)
    if not set(args.arms.split(",")) <= {"finetune", "scratch"}:
        parser.error("--arms: finetune and/or scratch")
    classifier_dir = Path(args.classifier_dir)
    ensure_classifier(classifier_dir, args.device)
    backbone = make_backbone(f"classifier:{classifier_dir}", device=args.device)
    source = Path(args.source) if args.source else train_source(args, out)
    paths = make_targets(out)
    records = []
    for target in args.targets.split(","):
        judge = Judge(target, paths[target], backbone, args.eval_n)
        for arm in args.arms.split(","):
            records += run_arm(args, target, arm, paths[target], source, judge, out)
    for line in summarise(records):
        record(line, curve)
    plot([curve], Path(args.out_png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
