"""No import cycle among the project's own modules.

Every module of airbench_common, airbench_jax, airbench_torch and parity is read with `ast` (not
imported: fast, and no framework needed), and every import in it, at the top or inside a function,
becomes an edge to the project module it names: `import a.b` -> a.b; `from a import b` -> a.b
when that is a module, else a (its __init__); relative imports resolved against the importing
module's package. Imports under `if TYPE_CHECKING:` never run and are left out. A cycle, even one
closed only by an import inside a function, is a failure naming its modules in order.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("airbench_common", "airbench_jax", "airbench_torch", "parity")

def project_modules() -> dict[str, Path]:
    """module name -> its file, for every .py file of the packages (a package is its
    __init__)."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = project_modules()
    graph = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(node, name, is_package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for target in targets:
                while target and target not in mods:   # `import a.b.c` of a non-module: a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): the modules that
    import each other, directly or not."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def describe(graph, comp: set[str]) -> str:
    """One cycle of the component in import order, and the component's other modules."""
    path = one_cycle(graph, comp)
    rest = sorted(comp - set(path))
    return " -> ".join(path) + (f" (with {', '.join(rest)})" if rest else "")


def one_cycle(graph, comp: set[str]) -> list[str]:
    """A path start -> ... -> start inside the component (breadth-first, shortest)."""
    start = min(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(comp)} is no cycle")


def test_the_walker_sees_every_kind_of_import():
    graph = import_graph()
    assert "parity.study.store" in graph["parity.study.local"]      # from . import store
    assert "airbench_common.files" in graph["parity.study.store"]    # from airbench_common.files
    assert "parity.study.compare" in graph["parity.compare"]         # absolute, from a package
    # an import inside a function counts: the engine only where --engine/--shard asks for it
    assert "parity.study.engine" in graph["parity.study.compare"]


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c", "e"}, "c": {"a", "d"}, "d": set(), "e": {"b"}}
    assert components(graph) == [{"a", "b", "c", "e"}]
    assert describe(graph, {"a", "b", "c", "e"}) == "a -> b -> c -> a (with e)"
    assert components({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    found = [describe(graph, c) for c in components(graph)]
    assert not found, "import cycles: " + "; ".join(found)


# ----------------------------------------------------------------- what may import what
FRAMEWORK_PACKAGES = ("airbench_jax", "airbench_torch")
WORKLOADS = {"airbench_jax.workload", "airbench_torch.workload"}


def _private_imports():
    """(importing module, imported module, name) for every `from M import _name` of a project
    module M other than the importer's own package's __init__."""
    mods = project_modules()
    out = []
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _resolve(node, name, is_package)
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append((name, base, alias.name))
    return out


def test_no_module_imports_a_private_name_of_another():
    found = [f"{m} imports {src}.{n}" for m, src, n in _private_imports()]
    assert not found, "private names imported: " + "; ".join(found)


def test_parity_reaches_the_frameworks_only_through_their_workloads():
    """parity/ imports airbench_jax / airbench_torch only as airbench_{jax,torch}.workload
    (airbench_common.workload.get_workload imports those by name)."""
    graph = import_graph()
    found = {m: [t for t in sorted(edges)
                 if t.split(".")[0] in FRAMEWORK_PACKAGES and t not in WORKLOADS]
             for m, edges in sorted(graph.items()) if m.split(".")[0] == "parity"}
    found = [f"{m} -> {', '.join(ts)}" for m, ts in found.items() if ts]
    assert not found, "parity imports framework modules directly: " + "; ".join(found)
