"""The metric registry: the one table of what each metric reports, which way is better and what it needs."""

import pytest

from scalegan.metrics.registry import METRICS, lower_is_better, needs, parse_metrics, result_names


def test_results_direction_and_needs():
    assert result_names(["fid", "is", "ifid"], "inception") == ["fid", "is_mean", "is_std", "intra_fid"]
    assert result_names(["fid", "ifid", "acc"], "classifier") == ["fd", "intra_fd", "class_accuracy"]
    assert all(lower_is_better(r) for r in ("fid", "fd", "kid_mean", "intra_fid", "intra_fd"))
    assert not any(lower_is_better(r) for r in ("is_mean", "precision", "recall", "coverage", "class_accuracy",
                                                "kid_std"))  # as the loop's table before the registry
    assert needs(["fid", "is"], "logits") and not needs(["fid", "kid"], "logits")
    assert needs(["acc"], "classifier") and needs(["ifid"], "per_class") and needs(["acc"], "conditional")
    assert set(METRICS) == {"fid", "is", "kid", "pr", "dc", "ifid", "acc"}


def test_parse_metrics():
    assert parse_metrics(None) == ["fid", "is", "kid", "pr"]
    assert parse_metrics(" KID, fid,kid ") == ["kid", "fid"]
    with pytest.raises(ValueError, match="unknown metric\\(s\\) fdi; choose from fid, is"):
        parse_metrics("fdi")
