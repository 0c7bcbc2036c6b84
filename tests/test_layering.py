"""The layering of relay/ and workers/: the worker and the ingress share only lower layers, no
import cycles, and modules and functions small enough to read.

Imports are checked twice: for real (each module imported alone in a fresh process, then what
it loaded, from sys.modules) and statically (the import graph, read with ast from the source,
lazy imports inside functions included, `if TYPE_CHECKING:` imports left out).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PACKAGES = ("relay", "workers")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# Run in a child process: each module is imported by a forked grandchild that had imported
# nothing of ours, which reports the relay and workers modules then in sys.modules (or the error).
# The libraries are imported once, before forking, only to make each import quick.
_IMPORT_EACH = """
import importlib, json, os, sys
for library in ("aiohttp", "aiohttp.web", "arq", "redis.asyncio", "pydantic", "structlog",
                "jinja2.sandbox", "yaml", "rich.console", "prometheus_client", "standardwebhooks"):
    try:
        importlib.import_module(library)
    except ImportError:
        pass
results = {}
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            answer = {"loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("relay", "workers"))}
        except BaseException as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        results[name] = json.load(answer)
    os.waitpid(pid, 0)
print(json.dumps(results))
"""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


MODULES = _sources()


@pytest.fixture(scope="module")
def imported() -> dict[str, dict[str, object]]:
    names = [name for name in MODULES if not name.endswith(".__main__")]  # __main__ runs the CLI
    # Not under coverage (its `patch = ["subprocess"]` passes this variable on): the grandchildren
    # end with os._exit, so what they ran was never recorded, only slowed down by the tracer.
    env = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *names],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results: dict[str, dict[str, object]] = json.loads(done.stdout)
    return results


def test_every_module_imports_on_its_own(imported: dict[str, dict[str, object]]) -> None:
    """Imported first, in a fresh process, every module loads (no order-dependent cycle)."""
    errors = {name: result["error"] for name, result in imported.items() if "error" in result}
    assert errors == {}


@pytest.mark.parametrize("module", ["workers.settings", "workers.jobs"])
def test_the_worker_loads_no_ingress_and_no_cli(
    imported: dict[str, dict[str, object]], module: str
) -> None:
    loaded = imported[module]["loaded"]
    assert isinstance(loaded, list)
    assert [m for m in loaded if m.startswith(("relay.ingress", "relay.cli"))] == []


@pytest.mark.parametrize("module", ["relay.ingress.app", "relay.ingress.runner"])
def test_the_ingress_loads_no_worker_and_no_cli(
    imported: dict[str, dict[str, object]], module: str
) -> None:
    loaded = imported[module]["loaded"]
    assert isinstance(loaded, list)
    assert [m for m in loaded if m.startswith(("workers", "relay.cli"))] == []


def test_the_cli_loads_only_itself_until_a_command_runs(
    imported: dict[str, dict[str, object]],
) -> None:
    """`relay --help` starts fast: the command modules import the machinery lazily."""
    loaded = imported["relay.cli"]["loaded"]
    assert isinstance(loaded, list)
    assert [m for m in loaded if m != "relay" and not m.startswith("relay.cli")] == []


# --- the static import graph --------------------------------------------------------------


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:` (never executed)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
            (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
            or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
        ):
            for child in node.body:
                skipped |= {id(n) for n in ast.walk(child)}
    return skipped


def _imports(name: str, path: Path) -> set[str]:
    """The relay and workers modules `name` imports (a package's names count as the package,
    a submodule imported from it as that submodule)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_sees_the_imports() -> None:
    """The graph is not empty by mistake: known edges are in it."""
    graph = _graph()
    assert "relay.inbound" in graph["relay.queue"]
    assert "relay.providers" in graph["relay.ingress.app"]  # from relay.providers import names
    assert "relay.cli.serve" in graph["relay.cli"]  # from relay.cli import serve (a submodule)
    assert "workers.settings" in graph["relay.cli.worker"]  # a lazy import counts
    assert "relay.config.model" not in graph["relay.providers"]  # TYPE_CHECKING only
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_worker_and_ingress_never_import_each_other() -> None:
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith("workers"):
            assert {t for t in targets if t.startswith("relay.ingress")} == set(), name
        if name.startswith("relay.ingress"):
            assert {t for t in targets if t.startswith("workers")} == set(), name


# --- sizes --------------------------------------------------------------------------------


def test_no_module_over_500_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_80_lines() -> None:
    long: dict[str, int] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = lines
    assert long == {}
