"""The package's shape: no import cycle (counting imports inside functions too, so none can be
hiding one), no Celery in the domain layers, and no step implementation in the broker CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_the_broker_cli_imports_no_step_implementation() -> None:
    """What ``sslm-mgr`` imports to send workflows to a broker: the pipeline's statement, which
    names the steps, but none of the steps themselves (the ACME client, dnspython, the deploy
    code): about 70 ms of its start, while the workers wait for its first message."""
    modules = (
        "sslm_tasks.cli.mgr",
        "sslm_tasks.cli.mgr_run",
        "sslm_tasks.cli.remote",
        "sslm_tasks.broker",
        "sslm_tasks.app",
    )
    probe = f"import sys, {', '.join(modules)}; print('\\n'.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded = set(done.stdout.split())
    assert "sslm_tasks.workflows" in loaded, "the probe imported no chain builder"
    unwanted = {"acme", "requests", "dns", "sslm_tasks.lifecycle.steps"}
    assert not loaded & unwanted, sorted(loaded & unwanted)
