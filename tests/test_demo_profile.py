"""benchmarks/demo_profile.py's attribution: each op's self time goes to its nearest labelled ancestor, backward
ops to the backward categories, and nothing outside the profiled window counts."""

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from demo_profile import category  # noqa: E402


def _chain(*names):
    """Events root first; returns (the leaf, parents map)."""
    events = [SimpleNamespace(name=n) for n in names]
    parents = {id(e): (events[i - 1] if i else None) for i, e in enumerate(events)}
    return events[-1], parents


def test_ops_go_to_their_nearest_labelled_ancestor():
    cases = [
        (("prof:iteration", "aten::convolution", "aten::mkldnn_convolution"), "conv forward"),
        (("prof:iteration", "autograd::engine::evaluate_function: ConvolutionBackward0",
          "aten::convolution_backward"), "conv backward"),
        (("prof:iteration", "aten::convolution", "prof:sn", "aten::mv"), "spectral norm"),  # nearest label wins
        (("prof:iteration", "Optimizer.step#Adam.step", "aten::_foreach_add_"), "optimizer"),
        (("prof:iteration", "prof:guard", "aten::_foreach_norm"), "divergence guard"),
        (("prof:iteration", "prof:ema", "aten::lerp_"), "EMA"),
        (("prof:iteration", "aten::addmm"), "matmul"),
        (("prof:iteration", "aten::relu"), "forward, other"),
        (("prof:iteration", "autograd::engine::evaluate_function: ReluBackward0", "aten::threshold_backward"),
         "backward, other"),
        (("prof:outside", "aten::convolution"), None),  # warm-up and the run's end are not counted
        (("aten::convolution",), None),
    ]
    for names, want in cases:
        leaf, parents = _chain(*names)
        assert category(leaf, parents) == want, (names, category(leaf, parents))
