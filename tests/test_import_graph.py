"""No import cycles among ActionRunner's modules, and the installed package never imports ``bench``.

The graph is built statically (:mod:`ast`): every ``import`` and ``from … import`` of an
``actionrunner`` module counts, including those inside functions, which hide a cycle from the
interpreter but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "actionrunner"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _leading_text(node: ast.expr) -> str:
    """The constant start of a string expression (an f-string's text before its first field)."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ActionRunner modules (and ``bench`` ones) ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules  # `from . import x` imports the module x (the package only runs)
            if len(submodules) < len(node.names):
                found.add(target)
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))
              == "import_module" and node.args):
            found.add(_leading_text(node.args[0]))  # importlib.import_module("bench.x")
    return {m for m in found if m.partition(".")[0] in ("actionrunner", "bench")}


def import_graph() -> dict[str, set[str]]:
    """Module → the modules it imports (ActionRunner's, and any of ``bench``)."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        source = _module_name(path)
        edges = graph.setdefault(source, set())
        for target in _imports(path, modules):
            while target not in modules and "." in target:  # `from pkg.mod import name`
                target = target.rpartition(".")[0]
            if target != source:
                edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "modules importing each other (directly or round a loop):\n" + "\n".join(
        f"{c}: " + "; ".join(f"{m} → {sorted(graph[m] & set(c))}" for m in c) for c in found)


def test_the_package_does_not_import_bench() -> None:
    importers = sorted(m for m, targets in import_graph().items()
                       if any(t.partition(".")[0] == "bench" for t in targets))
    assert not importers, f"actionrunner modules importing bench: {importers}"


#: The receive path's layers: the consumer knows the kombu channel only through its port
#: (``ChannelPort``), and neither it nor the Lambda runtime reaches into the monitoring queues;
#: the monitoring knows nothing of the consumer (it is told of work through a callback).
CONSUMER_MODULES = {"actionrunner.sqs.consumer", "actionrunner.sqs.delivery", "actionrunner.sqs.options",
                    "actionrunner.sqs.receiver", "actionrunner.sqs.dispatch",
                    "actionrunner.sqs.housekeeper", "actionrunner.sqs.inbound"}
FORBIDDEN = [
    (CONSUMER_MODULES, ("actionrunner.sqs.transport", "actionrunner.sqs.monitor", "actionrunner.sqs")),
    ({"actionrunner.sqs.monitor"}, ("actionrunner.sqs.consumer",)),
    ({"actionrunner.aws_lambda"}, ("actionrunner.sqs.consumer", "actionrunner.sqs.transport",
                                   "actionrunner.sqs.monitor")),
]


def _within(module: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in prefixes)


def test_the_receive_path_keeps_its_layers() -> None:
    graph = import_graph()
    assert set(graph) >= CONSUMER_MODULES, "a consumer module was renamed: update CONSUMER_MODULES"
    found = []
    for sources, targets in FORBIDDEN:
        for module, imported in graph.items():
            if not _within(module, sources):
                continue
            for target in sorted(imported):
                # ``actionrunner.sqs`` itself (the package, which loads the transport) is refused;
                # its submodules only where listed
                if target in targets or any(target.startswith(f"{t}.") for t in targets
                                            if t != "actionrunner.sqs"):
                    found.append(f"{module} → {target}")
    assert not found, "imports across the receive path's layers:\n" + "\n".join(found)
