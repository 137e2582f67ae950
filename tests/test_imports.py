"""The house rules on imports, read from the source: no arrow runs back up, no module pair imports
each other, no cycle through the curation, manifest and shard modules.

The graph has an edge A -> B for every `import B` / `from B import ...` in A, at module level or
inside a function (a lazy import is still a dependency), and `from P import m` adds P.m when m is
a module. The stage registry imports its stage modules by name (`svdcli.curate.stages.MODULES`);
those edges are added too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "svdcli"
LOWER_FLOORS = ["svdcli.curate", "svdcli.shards", "svdcli.train", "svdcli.sample", "svdcli.models", "svdcli.families"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # from . import x, from ..y import z
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[module].update(n for n in names if n in files and n != module)
    from svdcli.curate import stages

    graph["svdcli.curate.stages"].update(stages.MODULES.values())
    return graph


GRAPH = import_graph()


def within(module: str, packages: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def imports_of(packages: list[str], forbidden: list[str]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in GRAPH.items() if within(a, packages)
                  for b in bs if within(b, forbidden))


def cycles(graph: dict[str, set[str]] = GRAPH) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_cycles_are_found_however_long():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_the_graph_sees_lazy_imports_and_the_registry():
    assert "svdcli.curate.stages.text" in GRAPH["svdcli.cli.curate_cmds.text"]  # imported inside the command
    assert "svdcli.curate.stages.motion" in GRAPH["svdcli.curate.stages"]


@pytest.mark.parametrize("package", [
    "svdcli.curate", "svdcli.manifest", "svdcli.shards", "svdcli.video", "svdcli.diffusion", "svdcli.demo",
    "svdcli.weights", "svdcli.errors", "svdcli.train", "svdcli.models", "svdcli.sample", "svdcli.families",
])
def test_library_code_never_imports_the_cli(package):
    assert imports_of([package], ["svdcli.cli"]) == []


@pytest.mark.parametrize("package", ["svdcli.manifest", "svdcli.video", "svdcli.diffusion"])
def test_the_ground_floor_imports_nothing_above_it(package):
    assert imports_of([package], LOWER_FLOORS) == []


def test_models_never_import_curation():
    assert imports_of(["svdcli.models"], ["svdcli.curate"]) == []


def test_curation_imports_no_shards_training_or_models():
    assert imports_of(["svdcli.curate"], ["svdcli.shards", "svdcli.train", "svdcli.sample", "svdcli.models",
                                          "svdcli.families"]) == []


def two_cycles() -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in GRAPH.items() for b in bs if a < b and a in GRAPH[b])


def test_no_module_pair_imports_each_other():
    pending = ["svdcli.train", "svdcli.sample", "svdcli.models"]
    assert [pair for pair in two_cycles() if not all(within(m, pending) for m in pair)] == []


def test_no_module_pair_imports_each_other_in_train_sample_and_models():
    assert two_cycles() == []


def test_no_cycle_passes_through_curation_manifests_or_shards():
    houses = ["svdcli.curate", "svdcli.manifest", "svdcli.shards"]
    assert [c for c in cycles() if any(within(m, houses) for m in c)] == []


def test_no_cycles_at_all():
    assert cycles() == []


def test_shards_and_training_do_not_import_each_other_both_ways():
    assert not (imports_of(["svdcli.shards"], ["svdcli.train"]) and imports_of(["svdcli.train"], ["svdcli.shards"]))
