"""Time to quality: the CPU training benchmark. Trains a preset on Fashion-MNIST for a wall-clock budget and, every
``--every`` seconds of training, measures the sampling generator (G_ema) with the project's Fashion-MNIST classifier:
class consistency (the share of class-balanced samples it assigns to the requested class), FD, and precision and
recall (k = 3: recall falls when samples of a class all look alike) on its features.

    python benchmarks/time_to_quality.py --budget 600 --every 60 --seed 0 --label demo
    python benchmarks/time_to_quality.py --label ttur --train n_d_steps=1 --train lr_d=4e-4 --set ch=16
    python benchmarks/time_to_quality.py --plot benchmarks/results/ttq/*/curve.jsonl --out-png docs/ttq.png
    python benchmarks/time_to_quality.py --table benchmarks/results/ttq/*/curve.jsonl --at 400   # markdown A/B
    python benchmarks/time_to_quality.py --every-iterations 250 --iterations 1000 --train precision=float32 \
        --label f32     # equal iterations instead of equal time (A/Bs of numerics: precision policies)
    python benchmarks/time_to_quality.py --table benchmarks/results/ttq/*/curve.jsonl --at-step 1000
    python benchmarks/time_to_quality.py --table ... --costs docs/ab_costs.jsonl --at 310   # arms trained by
        # iterations side by side, compared at equal wall clock from their costs measured alone (demo_profile.py)

Training runs in chunks of ``--every`` seconds (``time_budget`` k * every, resumed from the previous chunk's
checkpoint; resuming is exact, so the chunks train what one run would). Only the training steps count as training
time (the loop's ``elapsed``); evaluation, checkpoints and restarts do not. Prints one JSON line per evaluation
(and writes them to OUT/curve.jsonl), naming the machine and the precision chosen, and a PNG of quality against
seconds (OUT/curve.png; needs matplotlib: ``pip install -e .[bench]``).

The classifier comes from --classifier-dir, trained there on first use (``benchmarks/demo_quality.py`` shares it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from common import emit, log, machine, pyplot, save_figure

from scalegan import load
from scalegan.cli import parse_overrides
from scalegan.data import open_dataset
from scalegan.family import get_family
from scalegan.hardware import describe_cpu
from scalegan.metrics.eval import as_reference, evaluate_generator, make_backbone
from scalegan.training import TrainConfig, train

METRICS = ["fid", "acc", "pr"]  # FD, class consistency, precision/recall, all on the classifier's features


def ensure_classifier(directory: Path, device: str) -> None:
    if (directory / "model.safetensors").is_file():
        return
    from scalegan.metrics.classifier import save_classifier, train_classifier

    log(f"training the Fashion-MNIST classifier into {directory} (once)")
    model = train_classifier(open_dataset("fashion-mnist", split="train"), epochs=3, batch_size=64, augment=False,
                             hflip=False, seed=0, device=device, width=16)
    save_classifier(model, directory)


def run(args: argparse.Namespace) -> list[dict]:
    if args.standing_stats and TrainConfig(model=args.model).family.recalibrate is None:
        raise SystemExit(f"--standing-stats: {args.model}'s model family has no standing statistics")
    out = Path(args.out or f"benchmarks/results/ttq/{args.label}_seed{args.seed}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    classifier_dir = Path(args.classifier_dir)
    ensure_classifier(classifier_dir, args.device)
    backbone = make_backbone(f"classifier:{classifier_dir}", device=args.device)
    reference = as_reference(open_dataset("fashion-mnist", split="train"), backbone, METRICS, None, 100, cache=True)
    train_keys = parse_overrides(args.train)
    records, started = [], time.perf_counter()
    by_steps = bool(args.every_iterations)
    chunks = args.iterations // args.every_iterations if by_steps else int(args.budget // args.every)
    for k in range(1, chunks + 1):
        length = {"iterations": k * args.every_iterations, "time_budget": 0} if by_steps else {"iterations": 10**9,
                                                                             "time_budget": k * args.every}
        cfg = TrainConfig.from_preset(
            args.model, **{**train_keys, "out_dir": str(out / "run"), "seed": args.seed, "device": args.device,
                           **length, "resume": k > 1, "sample_every": 0, "ckpt_every": 0, "keep_checkpoints": 1,
                           "progress": False, "tensorboard": False},
            model_overrides=parse_overrides(args.set))
        summary = train(cfg)
        hardware = json.loads((out / "run" / "train_config.json").read_text())["hardware"]
        t0 = time.perf_counter()
        G, _ = load(out / "run", device=args.device)
        result = evaluate_generator(G, reference, METRICS, args.eval_n, backbone=backbone, seed=123)
        record = {"bench": "time_to_quality", "label": args.label, "seed": args.seed, "model": args.model,
                  "train": train_keys, "set": parse_overrides(args.set),
                  "train_seconds": round(summary["wall_seconds"], 1), "step": summary["step"],
                  "class_consistency": result["metrics"]["class_accuracy"], "fd": result["metrics"]["fd"],
                  "manifold_precision": result["metrics"]["precision"], "recall": result["metrics"]["recall"],
                  "eval_n": args.eval_n, "eval_seconds": round(time.perf_counter() - t0, 1),
                  "wall_seconds": round(time.perf_counter() - started, 1), "precision": hardware["precision"],
                  "precision_scope": cfg.precision_scope,
                  "channels_last": hardware["channels_last"], "cpu_kind": describe_cpu(),
                  "machine": machine(args.device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
        if args.standing_stats:  # the same G with BN statistics recomputed over generated batches
            get_family(G).recalibrate(G, args.standing_stats, 64, seed=args.seed)
            result = evaluate_generator(G, reference, METRICS, args.eval_n, backbone=backbone, seed=123)
            record.update(class_consistency_standing=result["metrics"]["class_accuracy"],
                          fd_standing=result["metrics"]["fd"])
        emit(record)
        records.append(record)
        with open(out / "curve.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    plot([out / "curve.jsonl"], out / "curve.png")
    return records


def read_curve(path: Path, costs: dict[str, float] | None = None) -> list[dict]:
    """A curve's rows; with ``costs`` (arm label -> seconds per iteration) each row gains ``cost_seconds``: its
    iterations at that speed (equal wall clock for arms trained by iterations, side by side on a shared machine)."""
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    if costs is not None and rows:
        label = rows[0]["label"]
        if label not in costs:
            raise SystemExit(f"--costs has no line labelled {label!r} (benchmarks/demo_profile.py --cost-only "
                             f"--label {label} ...)")
        for r in rows:
            r["cost_seconds"] = r["step"] * costs[label]
    return rows


def read_costs(path: str | None) -> dict[str, float] | None:
    """Seconds per iteration by label from ``demo_profile.py --cost-only`` JSON lines (the last line per label)."""
    if not path:
        return None
    lines = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return {r["label"]: r["ms_per_iteration"] / 1e3 for r in lines}


def plot(curves: list[Path], png: Path, costs: dict[str, float] | None = None) -> None:
    """Class consistency and FD against training seconds (or, with ``costs``, seconds at the measured speed of
    each arm), one line per curve file."""
    plt = pyplot()
    if plt is None:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    title = ""
    key = "cost_seconds" if costs is not None else "train_seconds"
    for path in curves:
        rows = read_curve(path, costs)
        if not rows:
            continue
        t = [r[key] for r in rows]
        name = f"{rows[0]['label']} s{rows[0]['seed']} ({rows[0]['precision']})"
        a.plot(t, [r["class_consistency"] for r in rows], marker=".", label=name)
        b.plot(t, [r["fd"] for r in rows], marker=".", label=name)
        title = f"{rows[0]['cpu_kind']}: {rows[0]['machine']}"
    xlabel = "seconds at each arm's measured speed" if costs is not None else "training seconds"
    a.set(xlabel=xlabel, ylabel="class consistency", ylim=(0, 1))
    b.set(xlabel=xlabel, ylabel="FD (classifier features)", yscale="log")
    a.axhline(0.85, color="grey", lw=0.5)
    b.axhline(15, color="grey", lw=0.5)
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


def table(curves: list[Path], at: float, key: str = "train_seconds", costs: dict[str, float] | None = None) -> str:
    """A markdown table: per label, the seeds' class consistency and FD at the evaluation nearest ``at`` (training
    seconds, iterations with ``key="step"``, or seconds at each arm's measured speed with ``key="cost_seconds"``)."""
    arms: dict[str, list[dict]] = {}
    for path in curves:
        rows = read_curve(path, costs)
        rows = [r for r in rows if abs(r[key] - at) <= 0.05 * at]  # runs that reached `at`
        if rows:
            arms.setdefault(rows[0]["label"], []).append(min(rows, key=lambda r: abs(r[key] - at)))
    lines = ["| arm | changes from the base | seeds | iterations | training s | class consistency | FD | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for label, rows in sorted(arms.items(), key=lambda kv: -sum(r["class_consistency"] for r in kv[1]) / len(kv[1])):
        rows.sort(key=lambda r: r["seed"])
        changes = " ".join(f"{k}={v}" for k, v in {**rows[0]["train"], **rows[0]["set"]}.items())
        cc = [r["class_consistency"] for r in rows]
        fd = [r["fd"] for r in rows]
        seconds = [f"{r['train_seconds']:.0f}" for r in rows]
        recall = [r["recall"] for r in rows if "recall" in r]
        recall_text = f"{sum(recall) / len(recall):.3f}" if recall else "-"
        lines.append(f"| {label} | {changes} | {len(rows)} | {' / '.join(str(r['step']) for r in rows)} | "
                     f"{' / '.join(seconds)} | "
                     f"{sum(cc) / len(cc):.3f} ({' / '.join(f'{v:.3f}' for v in cc)}) | "
                     f"{sum(fd) / len(fd):.1f} ({' / '.join(f'{v:.1f}' for v in fd)}) | {recall_text} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="biggan-fmnist")
    parser.add_argument("--label", default="default", help="name of this arm (results folder and plot legend)")
    # Defaults sized so that the whole benchmark (classifier training on first use included) stays under 10
    # minutes on a 2-core AVX2-only CPU.
    parser.add_argument("--budget", type=float, default=300, help="training seconds in all")
    parser.add_argument("--every", type=float, default=100, help="training seconds between evaluations")
    parser.add_argument("--every-iterations", type=int, default=0, metavar="N",
                        help="evaluate every N iterations up to --iterations instead of by time (equal iterations)")
    parser.add_argument("--iterations", type=int, default=1000, help="with --every-iterations: iterations in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="append", metavar="KEY=VALUE", help="training config value (repeatable)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config value (repeatable)")
    parser.add_argument("--eval-n", type=int, default=5000, help="generated images per evaluation")
    parser.add_argument("--standing-stats", type=int, default=0, metavar="N",
                        help="also evaluate G with standing BN statistics over N generated batches of 64")
    parser.add_argument("--classifier-dir", default="benchmarks/results/fmnist_classifier")
    parser.add_argument("--out", help="results folder (default: benchmarks/results/ttq/LABEL_seedSEED)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--plot", nargs="+", metavar="CURVE", help="only plot these curve.jsonl files together")
    parser.add_argument("--out-png", default="benchmarks/results/ttq/compare.png", help="with --plot: the PNG")
    parser.add_argument("--table", nargs="+", metavar="CURVE", help="only print a markdown table of these curves")
    parser.add_argument("--at", type=float, default=400, help="with --table: training seconds to compare at")
    parser.add_argument("--at-step", type=float, help="with --table: compare at this iteration instead")
    parser.add_argument("--costs", metavar="JSONL", help="with --table/--plot: seconds per iteration of each arm "
                        "(benchmarks/demo_profile.py --cost-only lines); --at and the plot then go by iterations "
                        "times that (equal wall clock for arms trained by iterations)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    costs = read_costs(args.costs)
    if args.table:
        key = "step" if args.at_step else "cost_seconds" if costs is not None else "train_seconds"
        print(table([Path(p) for p in args.table], args.at_step or args.at, key, costs))
        return 0
    if args.plot:
        plot([Path(p) for p in args.plot], Path(args.out_png), costs)
        return 0
    if args.every_iterations:
        if args.iterations < args.every_iterations:
            parser.error("need --every-iterations <= --iterations")
    elif args.every <= 0 or args.budget < args.every:
        parser.error("need 0 < --every <= --budget")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
