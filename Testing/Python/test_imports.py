"""The library's import graph: no cycles (counting imports inside functions too) and no module
that imports another module's private name."""

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "INRReconLib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, [names]) for every import statement in the file, resolved to absolute
    INRReconLib module names."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("INRReconLib"):
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("INRReconLib"):
                yield target, [a.name for a in node.names]


def _graph():
    modules = {_module_name(p): p for p in LIB.rglob("*.py")}
    edges, private = {}, []
    for name, path in modules.items():
        deps = set()
        for target, names in _imports(path):
            for n in names:
                # "from .pkg import module" imports a module, not a name
                if f"{target}.{n}" in modules:
                    deps.add(f"{target}.{n}")
                elif n.startswith("_") and not n.startswith("__") and target != name:
                    private.append(f"{name} imports {target}.{n}")
            if target in modules:
                deps.add(target)
        edges[name] = deps - {name}
    return edges, private


def _cycles(edges) -> list:
    """Import cycles of the graph {module: {modules it imports}}, as module lists. A package and
    its own submodules do not count (a package's __init__ importing them is how packages work)."""
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if node.startswith(dep + ".") or dep.startswith(node + "."):
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set(), "p": {"p.x"}, "p.x": {"p"}}) == []


def test_no_import_cycles():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_no_private_names_across_modules():
    _, private = _graph()
    assert private == [], private
