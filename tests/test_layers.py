"""The layer order (docs/design.md#layers), checked on every import in the source tree, function-level
ones included: a module imports only from its own layer or below, the report imports only the torch-free
floor, and no two modules import each other, directly or round a longer circle.

import-linter's `layers` contract would be the library for this, but it refuses layers nested inside one
another (`benchmarks` holds the data sets below it and the performance tools above training), so the
order is a table here and the graph comes from `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runfolder", "towers", "benchmarks", "launch", "results")
# (module prefix, layer), the longest matching prefix wins; lowest layer first
LAYERS = (("runfolder", 0), ("towers", 1), ("benchmarks.data", 2), ("benchmarks", 3), ("launch", 4),
          ("benchmarks.performance", 5), ("results", 5))
# the report's modules: what `python -m results.report` and the scaling report run on
REPORT = ("results.report", "results.report_sections", "results.runs", "results.tables", "results.scores",
          "results.significance", "results.figures", "results.anchors", "results.published",
          "results.endpoints", "results.document", "results.verdict_text", "results.samples_to_accuracy",
          "results.baselines", "results.factorial", "results.scaling_report", "results.scaling_fit",
          "results.scaling_cells", "results.scaling_spec", "results.controls_report",
          "results.plateau_report")
# known exceptions, each with its reason; the test fails when one disappears, so the list stays true
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(known: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, imported module) for every import statement, at any depth of the file."""
    edges = set()
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                           else node.module for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add((name, target))
    return edges


def layer(module: str) -> int:
    return max(((len(prefix), rank) for prefix, rank in LAYERS
                if module == prefix or module.startswith(prefix + ".")))[1]


def test_every_import_points_down_the_layer_order():
    upward = {(a, b) for a, b in imports(modules()) if layer(b) > layer(a)}
    assert upward == ALLOWED_UPWARD


def test_the_report_imports_only_the_torch_free_floor_and_itself():
    known = modules()
    assert set(REPORT) <= set(known)
    outside = {(a, b) for a, b in imports(known)
               if a in REPORT and not b.startswith(("runfolder", "results."))}
    assert outside == set()
    drivers = {(a, b) for a, b in imports(known) if a in REPORT and b.startswith("results.")
               and b not in REPORT}
    assert drivers == set(), "the report imports an experiment driver"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports) as a path back to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            circle = visit(start, [start])
            if circle:
                return circle
    return None


def test_no_import_circle_anywhere():
    graph: dict[str, set[str]] = {}
    for a, b in imports(modules()):
        graph.setdefault(a, set()).add(b)
    circle = find_circle(graph)
    assert circle is None, " -> ".join(circle)


def test_the_checks_find_what_they_look_for():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert layer("benchmarks.performance.throughput") > layer("launch.trainer") \
        > layer("benchmarks.evaluations")
    assert layer("benchmarks.data.toy") < layer("benchmarks.toy_zeroshot") and layer("runfolder.records") == 0
    # the graph sees imports inside functions too (benchmarks.encoder imports accelerate's set_seed in one)
    inside = {(a, b) for a, b in imports(modules()) if a == "benchmarks.encoder" and b.startswith("towers")}
    assert ("benchmarks.encoder", "towers.registry") in inside
