"""Import circles among syncflow's modules: ``.venv/bin/python scripts/import_cycles.py [--runtime]``.

Builds the import graph with grimp (import-linter's engine) over the five top-level packages
and prints every strongly connected component (a set of modules that import each other,
directly or through others), with the imports that close it. ``--runtime`` leaves out the
imports under ``if TYPE_CHECKING:``. ``make lint`` enforces the same with the "No import
circle" contract (``acyclic_siblings`` in pyproject.toml); this script also sees a package
``__init__`` in a circle with its own modules, which that contract does not.
"""

from __future__ import annotations

import sys

import grimp

PACKAGES = ("syncflow", "flows", "tasks", "blocks", "deployments")


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports="--runtime" in sys.argv)
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    ours = set(modules)
    edges = {m: sorted(x for x in graph.find_modules_directly_imported_by(m) if x in ours) for m in modules}
    found = cycles(edges)
    print(f"{len(modules)} modules, {sum(map(len, edges.values()))} imports between them, {len(found)} circle(s)")
    for comp in found:
        print("circle:", ", ".join(comp))
        members = set(comp)
        for a in comp:
            for b in edges[a]:
                if b in members:
                    lines = sorted(d["line_number"] for d in graph.get_import_details(importer=a, imported=b))
                    print(f"  {a} -> {b} (line {', '.join(map(str, lines))})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
