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


# A fresh interpreter imports the third-party libraries once, then forks one child per module, which imports it
# and exits: each scalegan module is still imported alone (no other scalegan module loaded before it), at a small
# part of the cost of a new interpreter per module (~3 s each, mostly torch's own import).
ZYGOTE = r"""
import importlib, os, sys, traceback
for heavy in ("torch", "numpy", "PIL.Image", "tqdm", "safetensors.torch"):
    try:
        importlib.import_module(heavy)
    except ImportError:
        pass
assert not [m for m in sys.modules if m == "scalegan" or m.startswith("scalegan.")]
failed = 0
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
            code = 0
        except BaseException:
            sys.stderr.write(module + ":\n" + traceback.format_exc()[-2000:] + "\n")
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed += 1
        print(module, flush=True)
sys.exit(1 if failed else 0)
"""


def _import_alone(modules: list[str]) -> tuple[int, str, str]:
    modules = [m.removesuffix(".__main__") for m in modules]  # __main__ runs `scalegan`: import its package
    proc = subprocess.run([sys.executable, "-c", ZYGOTE, *modules], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr[-4000:]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = sorted(import_graph.graph())
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_import_alone, [modules[0::2], modules[1::2]]))
    assert all(code == 0 for code, _, _ in results), [r for r in results if r[0] != 0]
    assert len(modules) > 50


def test_the_import_check_can_fail(tmp_path, monkeypatch):
    """A module that fails to import alone is reported (the check is not vacuous)."""
    (tmp_path / "broken_mod.py").write_text("import scalegan.no_such_module\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + ":" + str(ROOT.parent))
    code, out, err = _import_alone(["broken_mod", "scalegan.utils"])
    assert code == 1 and out.split() == ["broken_mod"] and "no_such_module" in err


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long
