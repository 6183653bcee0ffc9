"""pyproject.toml declares what the package imports, and nothing it does not use."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata

from support import REPO

from sslm_tasks import __version__

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _third_party_imports() -> set[str]:
    """Top-level names of every module ``sslm_tasks`` imports that is neither ours nor the
    standard library's (the relative imports are ours)."""
    found: set[str] = set()
    for path in (REPO / "sslm_tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"sslm_tasks"}


def _distribution_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _normalised(names: set[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def test_every_imported_distribution_is_declared_and_every_declared_one_imported() -> None:
    # Given the distributions that provide each third-party module sslm_tasks imports
    providers = metadata.packages_distributions()
    imported = _third_party_imports()
    unknown = {module for module in imported if module not in providers}
    assert not unknown, f"imported but installed by no distribution: {unknown}"
    needed = _normalised({dist for module in imported for dist in providers[module]})

    # Then the runtime dependencies are exactly those (certbot: the tests use it, sslm not)
    declared = {_distribution_name(req) for req in PYPROJECT["project"]["dependencies"]}
    assert needed - declared == set(), "imported but not declared"
    assert declared - needed == set(), "declared but never imported"
    assert "certbot" not in declared


def test_metadata_is_complete_and_the_license_an_spdx_expression() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert project["readme"] == "README.md"
    assert project["urls"] and project["classifiers"]
    # PEP 639: a license expression and a License :: classifier may not both be given.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_the_installed_version_is_the_packages_own() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert metadata.version("sslm") == __version__
