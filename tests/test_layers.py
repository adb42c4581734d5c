"""The package's layers hold: no import cycle between any two modules, type-only imports included.

`make lint` checks the layers themselves (``lint-imports``, the contracts in
``pyproject.toml``); this checks what a contract between siblings cannot see:
a cycle through a package's own ``__init__``.
"""

from __future__ import annotations

import grimp


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    imports = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    done: set[str] = set()
    for root in sorted(imports):
        path: list[str] = []
        on_path: set[str] = set()
        todo: list[tuple[str, int]] = [(root, 0)]
        while todo:
            module, i = todo.pop()
            if i == 0:
                if module in on_path:
                    return [*path[path.index(module) :], module]
                if module in done:
                    continue
                path.append(module)
                on_path.add(module)
            if i < len(imports[module]):
                todo.append((module, i + 1))
                todo.append((imports[module][i], 0))
            else:
                done.add(module)
                on_path.discard(path.pop())
    return None


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("hopcast", exclude_type_checking_imports=False)
    assert _cycle(graph) is None


def test_the_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycle(graph) is None
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
