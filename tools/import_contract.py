"""PruneLab's import contract, checked by `make lint`: layers that cannot tangle.

Every `import` of a prunelab module (at module level or inside a function) is an edge. The contract:
1. Layers: a module may import its own layer and the layers below it, never a layer above (LAYERS, top first).
2. No cycles, except a package's `__init__` importing its own submodules, which import the package back to
   register themselves (methods, models, report).
3. No private name (`_name`) imported from another module.

    python tools/import_contract.py [SRC]      # SRC: the folder holding prunelab/ (default: src)

Prints one line per violation and exits 1, or prints a one-line summary and exits 0.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Top first. A module belongs to the first layer that lists it or a package above it.
LAYERS = [
    ("workflow glue", ["prunelab.checks", "prunelab.report"]),
    ("jobs", ["prunelab.jobs"]),
    ("tracking and records", ["prunelab.tracking", "prunelab.records", "prunelab.provenance"]),
    ("pruning", ["prunelab.pruning"]),
    ("criteria and training", ["prunelab.methods", "prunelab.training"]),
    ("statistics", ["prunelab.stats"]),
    ("measurement", ["prunelab.measure"]),
    ("models, data, files, settings", ["prunelab.models", "prunelab.data", "prunelab.io", "prunelab.settings",
                                       "prunelab.numerics", "prunelab.overrides", "prunelab"]),
]


def modules(src: Path) -> dict[str, Path]:
    """{dotted name: file} of every module of the prunelab package under `src`."""
    out = {}
    for f in sorted((src / "prunelab").rglob("*.py")):
        name = ".".join(f.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, list[str], int]]:
    """[(imported prunelab module, names taken from it, line)] of one module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base not in known:
                continue
            names = [a.name for a in node.names]
            sub = [n for n in names if f"{base}.{n}" in known]
            out += [(f"{base}.{n}", [], node.lineno) for n in sub]
            rest = [n for n in names if n not in sub]
            if rest or not sub:
                out.append((base, rest, node.lineno))
    return out


def layer_of(name: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members if m != "prunelab") or name in members:
            return i
    return -1


def is_registration(a: str, b: str) -> bool:
    """a is a package importing its own submodule b (b registers itself with a)."""
    return b.startswith(a + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [m0, m1, ..., m0], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def violations(src: Path) -> list[str]:
    known = modules(src)
    out, graph = [], {}
    for name, path in known.items():
        if layer_of(name) < 0:
            out.append(f"{path}: module {name} is in no layer of tools/import_contract.py (add it to LAYERS)")
        for target, names, line in imports(name, path, known):
            where = f"{path}:{line}"
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                out.append(f"{where}: {name} imports private name(s) {private} from {target}")
            if target == name:
                continue
            if 0 <= layer_of(target) < layer_of(name):
                out.append(f"{where}: {name} ({LAYERS[layer_of(name)][0]}) imports {target} from the layer above "
                           f"it ({LAYERS[layer_of(target)][0]})")
            if not is_registration(name, target):
                graph.setdefault(name, set()).add(target)
    cycle = find_cycle(graph)
    if cycle:
        out.append("import cycle: " + " -> ".join(cycle))
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path("src")
    found = violations(src)
    for line in found:
        print(line)
    if found:
        return 1
    print(f"import contract: {len(modules(src))} modules in {len(LAYERS)} layers, no upward import, no cycle, "
          "no private import")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
