"""The layout of docs/architecture.md: each package imports only the stages before it, no cycles.

Read from the source (every import statement, also those inside functions), so a new module
or a lazy import that breaks the flow fails here, not in a reader's head. The one exemption is
the package root (`omama/__init__.py`): it names the public API of every stage, imported on
first use, and no module inside the package imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "omama"
BASE = "base"  # the top-level modules: constants, errors, files, config, rle, dist, ...
ROOT = "omama"  # the package root: the public API (README.md, "Python API")

# What each stage may import besides itself (docs/architecture.md).
ALLOWED = {
    BASE: set(),
    "prepare": {BASE},  # the Ego-Exo4D download -> a dataset root
    "dataset": {BASE},
    "synth": {BASE, "dataset", "prepare"},  # writes a root, and a download by prepare's layout
    "proposals": {BASE, "dataset"},
    "cache": {BASE},
    "precompute": {BASE, "dataset", "cache"},
    "loader": {BASE, "cache"},
    "matcher": {BASE},
    "metrics": {BASE},
    "predict": {BASE, "cache", "loader", "matcher", "metrics"},
    "train": {BASE, "cache", "loader", "matcher", "metrics", "predict"},
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").is_file():
        return BASE
    return parts[1] if len(parts) > 1 else BASE


def _imports(path: Path) -> set[str]:
    """The omama modules a file imports (a `from omama.x import y` names omama.x.y when y is
    a module, else omama.x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("omama")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omama"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                out.add(sub if is_module else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_each_stage_imports_only_the_stages_before_it():
    wrong = []
    for module, deps in _graph().items():
        stage = _stage(module)
        if stage == "cli" or module == ROOT:
            continue
        for dep in deps:
            dep_stage = _stage(dep)
            if dep_stage != stage and dep_stage not in ALLOWED[stage]:
                wrong.append(f"{module} ({stage}) imports {dep} ({dep_stage})")
    assert not wrong, "\n".join(wrong)


def test_every_stage_is_declared():
    stages = {_stage(m) for m in _graph()} - {"cli"}
    assert stages <= set(ALLOWED), stages - set(ALLOWED)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep] if dep in path else [module, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_module_over_the_size_limit():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, big


def test_nothing_inside_the_package_imports_its_root():
    """The root may import every stage only because no stage imports it back."""
    wrong = [m for m, deps in _graph().items() if ROOT in deps and m != ROOT]
    assert not wrong, wrong


def test_the_root_exports_exactly_what_it_can_import():
    """`omama.__all__` and the lazy table agree, and every name resolves (no stale entry)."""
    import omama

    assert set(omama.__all__) == {"__version__", *omama._EXPORTS}
    for name in omama.__all__:
        assert getattr(omama, name) is not None, name
