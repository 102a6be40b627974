"""Which way imports point (docs/ARCHITECTURE.md, "Homes"), read from the source's syntax
trees: a rule the docs state and nothing else would hold."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(folder: str) -> Iterator[tuple[str, str, str | None]]:
    """``(file, module, name)`` for every absolute import under ``folder`` (``name``: the
    imported name of a ``from`` import; None for ``import module``)."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield where, alias.name, None
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    yield where, node.module, alias.name


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


#: folder → packages it must never import.
FORBIDDEN = {
    # The library a notebook uses: no HTTP, no database, no queue, nothing of the service.
    "app/transfer": (
        "fastapi", "starlette", "sqlalchemy", "celery", "redis", "app.api", "app.console",
        "app.services", "app.db", "app.queue", "app.storage", "app.config", "worker",
    ),
    "app/db": ("app.api", "app.console", "app.services", "app.transfer", "worker"),
    "app/services": ("fastapi", "starlette", "app.api", "app.console", "worker"),
    "app/api": ("worker",),  # the API enqueues by task name, never imports the worker
    "app/console": ("worker",),
    "dovecote": ("app", "worker"),  # the client talks HTTP only
}  # fmt: skip


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_point_the_documented_way(folder: str) -> None:
    found = [
        f"{where}: {module}"
        for where, module, _ in imports(folder)
        if under(module, *FORBIDDEN[folder])
    ]
    assert found == []


def test_domain_adaptation_does_not_import_the_methods_above_it() -> None:
    found = [
        f"{where}: {module}"
        for where, module, _ in imports("app/transfer/domain")
        if under(module, "app.transfer.methods")
    ]
    assert found == []


@pytest.mark.parametrize("folder", ["app", "worker", "dovecote"])
def test_no_module_imports_another_modules_private_names(folder: str) -> None:
    found = [
        f"{where}: from {module} import {name}"
        for where, module, name in imports(folder)
        if name and name.startswith("_") and not name.startswith("__")
    ]
    assert found == []


def test_the_rules_see_the_imports_they_judge() -> None:
    """A rule that reads nothing cannot fail: every folder has imports of ``app``."""
    for folder in ("app/transfer", "app/services", "app/api", "worker"):
        assert any(under(module, "app") for _, module, _ in imports(folder)), folder
