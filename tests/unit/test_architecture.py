"""The package's shape: no import cycle (counting imports inside functions too, so none can be
hiding one), and no Celery in the domain layers."""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PACKAGE = REPO / "sslm_tasks"
#: The layers that must run without a broker: everything but the Celery adapters and the CLI.
DOMAIN = ("config", "store", "locks", "crypto", "acme", "dns", "deploy", "lifecycle")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever in the file the import stands."""
    found: set[str] = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    done: set[str] = set()
    trail: list[str] = []

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in trail, " -> ".join([*trail[trail.index(node) :], node])
        trail.append(node)
        for target in sorted(edges[node]):
            # a package's __init__ may re-export its modules; importing the package is not a
            # cycle through the module that defines the name
            if target != node.rpartition(".")[0]:
                visit(target)
        trail.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)


def test_domain_layers_import_no_celery() -> None:
    for layer in DOMAIN:
        for path in (PACKAGE / layer).rglob("*.py"):
            celery = {name for name in imports(path) if name.split(".")[0] in ("celery", "kombu")}
            assert not celery, f"{path.relative_to(REPO)} imports {sorted(celery)}"
