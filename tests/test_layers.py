"""Layers only point down (issue 16): every import inside src/untrained, at module level or inside a function,
goes to a strictly lower layer or stays in its own package, and no modules import each other in a cycle.

A layer is a package or a top-level module of ``untrained``; a new one needs a rank in RANKS below.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "untrained"

RANKS = {
    # -1: the user errors and checks that every layer raises (0 was planned; regularizers raise them too)
    "errors": -1,
    # 0: helpers everything may use
    PACKAGE: 0,  # the package's own __init__
    "regularizers": 0,
    "rng": 0,
    "metrics": 0,
    "outputs": 0,  # writes images, JSON and curves; imports nothing of ours (methods.dop and callbacks.images use it)
    # 1: forward models, their noise and the generators of their parameters (masks, coil maps, phantoms)
    "operators": 1,
    # 2: the inverse problem a run solves
    "problem": 2,
    # 3: what tasks and methods build on
    "baselines": 3,
    "networks": 3,
    # 4: measurement sources and reconstruction methods, independent of each other
    "tasks": 4,
    "methods": 4,
    # 5
    "callbacks": 5,
    # 6: the fast path (policy, compilation, CUDA graph, memory, the step runner)
    "speed": 6,
    # 7: the fit modules and their bookkeeping; reading finished runs
    "fit": 7,
    "report": 7,
    # 8, 9: entry points
    "run": 8,
    "train": 9,
}

# Imports that break the rule, to be removed (a stale entry fails the test; the cycle check skips them): none.
TRANSITIONAL: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(name: str, root: Path) -> str:
    """``name`` if it is a module or package under ``root``, else its parent (``from pkg import symbol``)."""
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
        return name
    return name.rpartition(".")[0]


def imported_modules(path: Path, root: Path) -> set[str]:
    """The modules of our package that ``path`` imports anywhere in its body."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package of this module, up level - 1
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.add(resolve(target, root))
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(path, root): imported_modules(path, root) for path in sorted((root / PACKAGE).rglob("*.py"))}


def layer(module: str) -> str:
    """The package or top-level module of ``untrained`` that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def unranked(graph: dict[str, set[str]], ranks: dict[str, int]) -> list[str]:
    return [
        f"{module} has no layer: add '{layer(module)}' with its rank to RANKS in tests/test_layers.py"
        for module in graph
        if layer(module) not in ranks
    ]


def wrong_direction(graph: dict[str, set[str]], ranks: dict[str, int]) -> set[tuple[str, str]]:
    """Imports of a higher layer, or of another layer at the same rank."""
    wrong = set()
    for module, targets in graph.items():
        for target in targets:
            source_layer, target_layer = layer(module), layer(target)
            if source_layer == target_layer:
                continue
            if ranks[target_layer] >= ranks[source_layer]:
                wrong.add((module, target))
    return wrong


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def describe(edges, ranks) -> str:
    return "\n".join(
        f"  {source} (rank {ranks[layer(source)]}) imports {target} (rank {ranks[layer(target)]})"
        for source, target in sorted(edges)
    )


def test_every_module_has_a_layer():
    problems = unranked(import_graph(SRC), RANKS)
    assert not problems, "\n".join(problems)


def test_imports_point_down():
    wrong = wrong_direction(import_graph(SRC), RANKS)
    new = wrong - TRANSITIONAL
    assert not new, "Imports must go to a lower layer (or stay in their own package):\n" + describe(new, RANKS)
    stale = TRANSITIONAL - wrong
    assert not stale, f"These imports are gone or allowed now: remove them from TRANSITIONAL: {sorted(stale)}"


def test_no_import_cycles():
    graph = import_graph(SRC)
    for source, target in TRANSITIONAL:
        graph.get(source, set()).discard(target)
    cycle = find_cycle(graph)
    assert cycle is None, "Import cycle: " + " -> ".join(cycle)


def test_the_check_finds_upward_imports_cycles_and_new_modules(tmp_path):
    """The checks above on a small package: they would see what they are meant to see."""
    files = {
        "__init__.py": "",
        "errors.py": "",
        "operators/__init__.py": "",
        "operators/base.py": "import untrained.errors\n",
        # function-level, and a symbol imported from a package whose module is the package itself
        "operators/blur.py": "def f():\n    from untrained.tasks import images\n",
        "tasks/__init__.py": "X = 1\n",
        "tasks/images.py": "from untrained.tasks.mri import y\nfrom untrained.methods.tv import z\n",
        "tasks/mri.py": "from . import images\n",
        "methods/tv.py": "from untrained.operators.base import A\n",
        "extra.py": "",
    }
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ranks = {PACKAGE: 0, "errors": 0, "operators": 1, "tasks": 4, "methods": 4}
    graph = import_graph(tmp_path)
    assert graph["untrained.operators.blur"] == {"untrained.tasks.images"}
    assert unranked(graph, ranks) == [
        "untrained.extra has no layer: add 'extra' with its rank to RANKS in tests/test_layers.py"
    ]
    assert wrong_direction(graph, ranks) == {
        ("untrained.operators.blur", "untrained.tasks.images"),
        ("untrained.tasks.images", "untrained.methods.tv"),
    }
    assert find_cycle(graph) == ["untrained.tasks.images", "untrained.tasks.mri", "untrained.tasks.images"]
