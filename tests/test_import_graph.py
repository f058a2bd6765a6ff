"""The package's modules import each other without cycles, lazy (function-level) imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sknn_kernels"


def _modules():
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def import_graph():
    """Module -> the package modules it imports anywhere in its source."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + [node.module] if node.module else base)
                if not node.level:
                    source = node.module or ""
                submodules = [f"{source}.{alias.name}" for alias in node.names]
                # `from . import plotting` imports the submodule, not the package's other names
                targets = [m for m in submodules if m in modules] or [source]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert (
        "sknn_kernels.app.report" in graph
        and "sknn_kernels.plotting" in graph["sknn_kernels.app.report"]
    )
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The package's layers, lowest first: a module may import its own group and the groups below it,
# never one above (network -> kernels -> transformers -> metrics -> surrogates -> attribution and
# analysis -> plots -> the main job). Groups on one level (attribution, analysis) are independent.
LAYERS = (
    (
        "sknn_kernels._version",
        "sknn_kernels.exceptions",
        "sknn_kernels._progress",
        "sknn_kernels._results",
    ),
    ("sknn_kernels.network",),
    ("sknn_kernels.ntk", "sknn_kernels.datasets", "sknn_kernels.text"),
    ("sknn_kernels.features",),
    ("sknn_kernels.metrics",),
    ("sknn_kernels.surrogates",),
    ("sknn_kernels.attribution", "sknn_kernels.analysis"),
    ("sknn_kernels.plotting",),
    ("sknn_kernels.app",),
)
# The package root re-exports the public names of every layer; __main__ only starts the CLI.
TOP = {"sknn_kernels", "sknn_kernels.__main__"}


def group_of(module):
    """(level, group prefix) of a package module."""
    for level, groups in enumerate(LAYERS):
        for group in groups:
            if module == group or module.startswith(group + "."):
                return level, group
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def upward_imports(graph):
    """Every import of a module from a layer above it, or from a sibling group on its level."""
    bad = []
    for module, targets in sorted(graph.items()):
        if module in TOP:
            continue
        level, group = group_of(module)
        for target in sorted(targets):
            if target in TOP:
                bad.append(f"{module} -> {target}")
                continue
            t_level, t_group = group_of(target)
            if t_level > level or (t_level == level and t_group != group):
                bad.append(f"{module} -> {target}")
    return bad


def test_layers_are_imported_in_order():
    graph = import_graph()
    assert upward_imports(graph) == []


def test_an_upward_import_is_caught():
    graph = import_graph()
    planted = {k: set(v) for k, v in graph.items()}
    planted["sknn_kernels.ntk.engine"].add("sknn_kernels.surrogates._solvers")
    planted["sknn_kernels.attribution.influence"].add("sknn_kernels.analysis.shift")
    assert upward_imports(planted) == [
        "sknn_kernels.attribution.influence -> sknn_kernels.analysis.shift",
        "sknn_kernels.ntk.engine -> sknn_kernels.surrogates._solvers",
    ]


def test_every_module_has_a_layer():
    for module in import_graph():
        if module not in TOP:
            group_of(module)
