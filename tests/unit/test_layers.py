"""The import-layer contract of wsserver/ (issue #17, "one house plan"), run by `make lint`.

Every module sits in a layer; a module may import its own layer and the layers below it, never
one above. Every import counts: module level, inside functions, under ``if TYPE_CHECKING``
(parsed with ``ast``, nothing is imported). The layers, bottom first::

    0  protocol, config, logs          sans-IO wire protocol, the settings, logging setup
    1  security, adapters              credentials, TLS contexts, authentication backends
    2  metrics, preflight              Prometheus metrics; "can this config run here"
    3  runtime, endpoints, wsserver    the worker's gevent runtime; Endpoint/SessionAPI and the
                                       package's public API (``wsserver/__init__.py``)
    4  prefork                         the master (arbiter), workers, relay, status listener
    5  admin                           the admin API and console
    6  cli, __main__                   the command line

A module of wsserver/ that is in no layer fails the test: place it in LAYERS.

ALLOWED lists the imports that break the contract today, each with what removes it: it is the
to-do list of the house plan and may only shrink (an entry no longer needed fails the test too,
so that it is deleted). KNOWN_CYCLES and KNOWN_DEFERRED_CYCLES do the same for import cycles.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "wsserver"

LAYERS: dict[str, int] = {
    "protocol": 0,
    "config": 0,
    "logs": 0,
    "version": 0,
    # One layer in the house plan, with a fixed direction inside it: security/ uses adapters/
    # (stapling's OCSP fetches, adapter_tls.py's keys from the registry), never the reverse.
    "adapters": 1,
    "security": 2,
    "metrics": 3,
    "preflight": 3,
    "runtime": 4,
    "endpoints": 4,
    "": 4,  # "" is the package itself: wsserver/__init__.py
    "prefork": 5,
    "admin": 6,
    "cli": 7,
    "__main__": 7,
}

# (importer, imported) pairs that break the contract today. Keep the reason and the fix.
ALLOWED: dict[tuple[str, str], str] = {}

# Import cycles among modules, each as the set of modules of one strongly connected component.
# There is none, at import time or counting the imports deferred into functions and
# ``if TYPE_CHECKING`` blocks (the usual way a cycle is hidden), and none may come back: a new
# one fails until it is broken (a Protocol for a type, a module of its own for shared data).
KNOWN_CYCLES: list[frozenset[str]] = []
KNOWN_DEFERRED_CYCLES: list[frozenset[str]] = []


def module_name(path: Path) -> str:
    parts = ["wsserver", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The wsserver modules an import statement names (``from pkg import mod`` names pkg.mod)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "wsserver"}
    if node.level:
        base = module.split(".")
        if MODULES[module].name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source.split(".")[0] != "wsserver":
        return set()
    found = set()
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        found.add(sub if sub in MODULES else source)
    return found


@functools.cache
def imports(module: str, *, module_level_only: bool = False) -> frozenset[str]:
    """The wsserver modules ``module`` imports: everywhere, or at import time only."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(_targets(module, node))
            elif module_level_only:
                # What runs at import: top-level statements and the bodies of if/try/with there.
                if isinstance(node, ast.If):
                    if not _is_type_checking(node.test):
                        visit(node.body)
                    visit(node.orelse)
                elif isinstance(node, ast.Try):
                    for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                        visit(block)
                elif isinstance(node, ast.With):
                    visit(node.body)

    if module_level_only:
        visit(tree.body)
    else:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(_targets(module, node))
    found.discard(module)
    return frozenset(found)


def violations() -> set[tuple[str, str]]:
    found = set()
    for module in MODULES:
        for target in imports(module):
            if LAYERS[layer_key(target)] > LAYERS[layer_key(module)]:
                found.add((module, target))
    return found


def cycles(*, module_level_only: bool = True) -> list[frozenset[str]]:
    """Strongly connected components (more than one module) of the import graph."""
    graph = {
        m: sorted(t for t in imports(m, module_level_only=module_level_only) if t in MODULES) for m in MODULES
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if layer_key(m) not in LAYERS)
    assert not unplaced, f"place these modules in a layer (LAYERS in {__file__}): {unplaced}"


def test_no_import_reaches_up_a_layer():
    new = sorted(violations() - ALLOWED.keys())
    assert not new, "imports from a higher layer (fix, or list in ALLOWED with the reason):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )


def test_allowed_exceptions_are_still_needed():
    stale = sorted(ALLOWED.keys() - violations())
    assert not stale, "no longer needed: delete from ALLOWED:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in stale
    )


def _check_cycles(found: list[frozenset[str]], known: list[frozenset[str]], name: str) -> None:
    new = [sorted(c) for c in found if not any(c <= k for k in known)]
    assert not new, f"new import cycles among wsserver modules (break them): {new}"
    gone = [sorted(k) for k in known if not any(c <= k for c in found)]
    assert not gone, f"these cycles are gone: delete them from {name}: {gone}"


def test_no_import_cycle_at_import_time():
    _check_cycles(cycles(), KNOWN_CYCLES, "KNOWN_CYCLES")


def test_deferred_import_cycles_only_shrink():
    _check_cycles(cycles(module_level_only=False), KNOWN_DEFERRED_CYCLES, "KNOWN_DEFERRED_CYCLES")
