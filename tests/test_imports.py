"""One-way imports: no cycle in the package's import graph (imports inside functions included), every module
imports alone in a fresh interpreter, and no function in the package is longer than 80 lines."""

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import import_graph  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "scalegan"


def test_no_import_cycle():
    edges = import_graph.graph()
    assert import_graph.find_cycle(edges) is None
    assert len(import_graph.layers(edges)) > 3 and sum(map(len, import_graph.layers(edges))) == len(edges)
    # The layering the package promises: utils <- weights <- convert <- pretrained <- the public API.
    order = {m: depth for depth, layer in enumerate(import_graph.layers(edges)) for m in layer}
    chain = ["scalegan.utils", "scalegan.weights", "scalegan.convert", "scalegan.pretrained", "scalegan.api",
             "scalegan"]
    assert [order[m] for m in chain] == sorted(order[m] for m in chain) and len({order[m] for m in chain}) == 6


def test_the_cycle_finder_finds_cycles(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")  # hidden in a function: still an edge
    (package / "b.py").write_text("from .a import f\n")
    assert import_graph.find_cycle(import_graph.graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]
    (package / "a.py").write_text("import json\n")
    assert import_graph.find_cycle(import_graph.graph(package)) is None


def _import_alone(module: str) -> tuple[str, int, str]:
    if module.endswith("__main__"):  # running it is `scalegan` without a command: import its source only
        module = module.removesuffix(".__main__")
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    return module, proc.returncode, proc.stderr[-2000:]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = sorted(import_graph.graph())
    with ThreadPoolExecutor(2) as pool:
        failures = [r for r in pool.map(_import_alone, modules) if r[1] != 0]
    assert not failures, failures


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long
