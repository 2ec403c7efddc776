"""The package's structure: no import circle anywhere (module-level or inside functions), and
the demo is a guest that nothing in the library imports but the CLI's verb dispatch."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_unlearn

PACKAGE = Path(lightning_unlearn.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of the package it imports}}``, every import statement counted,
    including those inside functions (a lazy import is still a dependency)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_walker_sees_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    real = import_graph()
    assert "lightning_unlearn.methods.base" in real["lightning_unlearn.methods.gradient_ascent"]


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def _imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, level)`` of every import statement of a file (absolute or relative)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [alias.name for alias in node.names], node.level))
    return out


def test_only_the_cli_dispatch_imports_the_demo():
    importers = sorted(
        name
        for name, targets in import_graph().items()
        if any(t == "lightning_unlearn.demo" or t.startswith("lightning_unlearn.demo.")
               for t in targets)
        and not name.startswith("lightning_unlearn.demo")
    )  # fmt: skip
    assert importers == ["lightning_unlearn.cli"], importers
    cli = (PACKAGE / "cli.py").read_text(encoding="utf-8")
    assert cli.count("from .demo import") == 1 and 'if verb == "demo":' in cli


def test_benchmarks_import_no_private_name_of_the_library():
    root = PACKAGE.parent / "benchmarks"
    private = []
    for path in sorted(root.glob("*.py")):
        for module, names, _ in _imports_of(path):
            if module == "lightning_unlearn" or module.startswith("lightning_unlearn."):
                parts = module.split(".") + names
                private += [f"{path.name}: {module} {n}" for n in parts if n.startswith("_")]
    assert not private, private


#: the workflow and the collaborators it keeps its state in
WORKFLOW_MODULES = (
    "workflow.py",
    "measuring.py",
    "score_cache.py",
    "run_record.py",
    "training_checks.py",
)


def _workflow_private_names() -> set[str]:
    """Private attributes and methods the workflow module and its collaborators define
    (``self._x = ...``, ``def _x``, ``_x: ...`` in a class body)."""
    names = set()
    for module in WORKFLOW_MODULES:
        names |= _private_names(PACKAGE / module)
    return names


def _private_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_nothing_outside_the_workflow_touches_its_private_attributes():
    """The workflow's seam is its public surface (``stop_step``, ``load``, ``measure*``...): no
    module of the library or the benchmarks reads or writes a private name the workflow defines
    on anything but ``self``."""
    private = _workflow_private_names()
    # the walker sees them, in the workflow and in its collaborators
    assert {"_steps_done", "_stop_step", "_models", "_adaptive", "_fingerprints"} <= private
    outside = [
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).as_posix() not in WORKFLOW_MODULES
    ]
    files = outside + sorted((PACKAGE.parent / "benchmarks").glob("*.py"))
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in private:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not found, found


def test_one_method_list_feeds_the_planner_the_top_level_and_the_benchmarks():
    """``methods.METHODS`` is the one list: every UnlearningModule subclass a file of the methods
    package defines is in it, the planner's short names and the top-level exports are read from
    it, and every class the quality benchmark's grid names is one of them."""
    import importlib
    import inspect
    import sys

    from lightning_unlearn import methods, planner
    from lightning_unlearn.methods.base import UnlearningModule

    defined = set()
    for path in (PACKAGE / "methods").glob("*.py"):
        module = importlib.import_module(f"lightning_unlearn.methods.{path.stem}")
        defined |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, UnlearningModule) and c is not UnlearningModule
                    and c.__module__ == module.__name__}  # fmt: skip
    assert defined == set(methods.METHODS.values())
    assert {k: c.__name__ for k, c in methods.METHODS.items()} == planner.METHODS
    for cls in methods.METHODS.values():
        assert cls.__name__ in lightning_unlearn.__all__
        assert getattr(lightning_unlearn, cls.__name__) is cls
    sys.path.insert(0, str(PACKAGE.parent / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "benchmarks_quality_methods", PACKAGE.parent / "benchmarks" / "quality.py"
        )
        quality = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quality)
    finally:
        sys.path.pop(0)
    for _, cls_name, _, _ in quality.METHODS:
        assert planner.method_class(cls_name) in methods.METHODS.values(), cls_name


def test_the_workflow_uses_its_collaborators_public_surface():
    """The workflow and its collaborators (measuring, score cache, report, checks) reach each
    other through public names only: none touches a private name another one defines."""
    found = []
    for module in WORKFLOW_MODULES:
        others = set().union(
            *(_private_names(PACKAGE / m) for m in WORKFLOW_MODULES if m != module)
        )
        own = _private_names(PACKAGE / module)
        for node in ast.walk(ast.parse((PACKAGE / module).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in others - own:
                found.append(f"{module}:{node.lineno} .{node.attr}")
    assert not found, found
