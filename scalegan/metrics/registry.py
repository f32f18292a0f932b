"""The metrics ``scalegan eval`` and the training loop's evaluation compute: one record each (the numbers it
reports, which way is better, what it needs), so that the evaluation, the CLI and the loop read one table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric. ``results``: the numbers it reports, main one first; ``{fd}`` stands for ``fid`` on the
    Inception backbone and ``fd`` on others. ``lower_is_better``: those results where lower is better.
    ``needs_logits``: the Inception network's logits; ``needs_classifier``: a domain classifier's class logits;
    ``per_class``: per-class feature statistics of a labelled reference set; ``conditional``: a class-conditional
    generator."""

    name: str
    about: str
    results: tuple[str, ...]
    lower_is_better: tuple[str, ...] = ()
    needs_logits: bool = False
    needs_classifier: bool = False
    per_class: bool = False
    conditional: bool = False

    def result_names(self, backbone_name: str) -> list[str]:
        fd = "fid" if backbone_name == "inception" else "fd"
        return [r.format(fd=fd) for r in self.results]


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", "Fréchet distance of the features (FID on Inception)", ("{fd}",), ("{fd}",)),
    Metric("is", "Inception score", ("is_mean", "is_std"), needs_logits=True),
    Metric("kid", "kernel inception distance", ("kid_mean", "kid_std"), ("kid_mean",)),  # std: a spread
    Metric("pr", "precision and recall (k-NN manifolds)", ("precision", "recall")),
    Metric("dc", "density and coverage", ("density", "coverage")),
    Metric("ifid", "intra-class Fréchet distance (mean over classes)", ("intra_{fd}",), ("intra_{fd}",),
           per_class=True, conditional=True),
    Metric("acc", "class accuracy of a domain classifier on the generated images", ("class_accuracy",),
           needs_classifier=True, conditional=True),
)}
DEFAULT_METRICS = ("fid", "is", "kid", "pr")


def parse_metrics(metrics: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """`"fid,kid"` or a list -> validated metric names (default: fid, is, kid, pr)."""
    if metrics is None:
        return list(DEFAULT_METRICS)
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def result_names(metrics: list[str], backbone_name: str) -> list[str]:
    """The numbers ``metrics`` report on ``backbone_name``, each metric's main one first."""
    return [r for m in metrics for r in METRICS[m].result_names(backbone_name)]


def lower_is_better(result: str) -> bool:
    """Whether a lower value of result ``result`` (e.g. ``fid``, ``kid_mean``, ``precision``) is better."""
    return result in {r.format(fd=fd) for m in METRICS.values() for r in m.lower_is_better for fd in ("fid", "fd")}


def needs(metrics: list[str], what: str) -> bool:
    """Whether any of ``metrics`` needs ``what`` (``logits``, ``classifier``, ``per_class``, ``conditional``)."""
    attr = what if what in ("per_class", "conditional") else f"needs_{what}"
    return any(getattr(METRICS[m], attr) for m in metrics)
