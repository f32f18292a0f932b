#!/usr/bin/env python3
"""The import graph of the scalegan package, read from the source (nothing is imported).

    python scripts/import_graph.py            # modules in dependency order, each with what it imports
    python scripts/import_graph.py --check    # exit 1 (naming the cycle) if any import cycle exists

Every ``import`` counts, at module level or inside a function: an import inside a function body cannot hide a
cycle. Implicit parent-package imports (importing ``a.b`` runs ``a/__init__``) are not edges."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "scalegan"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the scalegan modules it imports (anywhere in its source)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        edges[name] = {t for t in targets if t in files and t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layers(edges: dict[str, set[str]]) -> list[list[str]]:
    """Modules in dependency order: each layer imports only modules of earlier layers."""
    done: set[str] = set()
    out = []
    while len(done) < len(edges):
        layer = sorted(m for m in edges if m not in done and edges[m] <= done)
        if not layer:
            break
        out.append(layer)
        done.update(layer)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check for cycles")
    args = parser.parse_args()
    edges = graph()
    cycle = find_cycle(edges)
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    if not args.check:
        for depth, layer in enumerate(layers(edges)):
            for module in layer:
                imports = ", ".join(sorted(m.removeprefix("scalegan.") for m in edges[module])) or "-"
                print(f"{depth:2d}  {module:34s} <- {imports}")
    print(f"no import cycle among {len(edges)} modules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
