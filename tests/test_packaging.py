"""The package declares what it imports: a third-party module imported anywhere in `scalegan/` must be a runtime
dependency in pyproject.toml (a demo install has no test extras; scipy was once missing from it)."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = {"PIL": "pillow"}  # import name -> distribution name, where they differ


def test_every_third_party_import_is_a_runtime_dependency():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the package supports 3.10)
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    declared = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in re.findall(r'"([^"]+)"', block)}
    assert {"torch", "numpy"} <= declared, declared
    imported: dict[str, str] = {}
    for path in (ROOT / "scalegan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "scalegan" and top not in sys.stdlib_module_names:
                    imported.setdefault(DIST_NAME.get(top, top).lower(), str(path.relative_to(ROOT)))
    assert imported, "no imports found: the scan is broken"
    missing = {dist: where for dist, where in imported.items() if dist not in declared}
    assert not missing, f"imported but not declared in [project] dependencies: {missing}"
