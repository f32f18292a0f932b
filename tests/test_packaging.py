"""The package declares what it imports: a third-party module imported anywhere in `scalegan/` must be a runtime
dependency in pyproject.toml (a demo install has no test extras; scipy was once missing from it), and every file
it reads at run time must be package data."""

import ast
import fnmatch
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = {"PIL": "pillow", "imageio_ffmpeg": "imageio-ffmpeg"}  # import name -> distribution, where they differ
# Modules that only run with an extra installed (path prefix -> extra): their imports may come from that extra.
EXTRA_MODULES = {"scalegan/serve/": "serve", "scalegan/cli/serve.py": "serve",
                 "scalegan/media.py": "serve",  # media: MP4 only (a lazy import, one error line without it)
                 "scalegan/data/prepare.py": "bench"}  # prepare: the class-balance plot only (a note without it)


def _declared(text: str, pattern: str) -> set[str]:
    block = re.search(pattern, text, re.S | re.M).group(1)
    return {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower() for d in re.findall(r'"([^"]+)"', block)}


def test_every_third_party_import_is_a_runtime_dependency():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the package supports 3.10)
    declared = _declared(text, r"^dependencies = \[(.*?)\]")
    assert {"torch", "numpy"} <= declared, declared
    extras = {extra: declared | _declared(text, rf"^{extra} = \[(.*?)\]") for extra in set(EXTRA_MODULES.values())}
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
                    imported.setdefault((DIST_NAME.get(top, top).lower(), path.relative_to(ROOT).as_posix()), None)
    assert imported, "no imports found: the scan is broken"
    missing = {}
    for dist, where in imported:
        extra = next((e for prefix, e in EXTRA_MODULES.items() if where.startswith(prefix)), None)
        if dist not in (extras[extra] if extra else declared):
            missing[dist] = f"{where} (declare it in {'the ' + extra + ' extra' if extra else 'dependencies'})"
    assert not missing, f"imported but not declared: {missing}"


def test_every_package_data_file_is_declared():
    """A non-Python file under scalegan/ (the page, the ImageNet table) is read at run time: a wheel without it
    breaks `scalegan serve` or class names, so pyproject.toml's package-data must list it (the packages, not the
    data, are found automatically; scripts/check_wheel.sh checks a real build)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^\[tool\.setuptools\.package-data\]\s*scalegan = \[(.*?)\]", text, re.S | re.M).group(1)
    declared = re.findall(r'"([^"]+)"', block)
    files = {p.relative_to(ROOT / "scalegan").as_posix() for p in (ROOT / "scalegan").rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert {"serve/page.html", "data/imagenet_classes.tsv"} <= files, files
    undeclared = {f for f in files if not any(fnmatch.fnmatchcase(f, pattern) for pattern in declared)}
    assert not undeclared, f"add to [tool.setuptools.package-data] in pyproject.toml: {sorted(undeclared)}"
