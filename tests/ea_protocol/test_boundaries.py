"""Who may import what around the protocol module.

``ea_protocol`` is the arithmetic both sides share, so it stands alone: the
standard library only, no Django, neither the server nor the client. The
server apps may use it but never the reference client.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ["signals_app", "positions", "ea_gateway", "monitoring", "config", "core"]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_ea_protocol_imports_only_the_standard_library() -> None:
    # A fresh interpreter: in this one Django and the apps are already loaded.
    code = (
        "import json, sys; before = set(sys.modules);"
        "import ea_protocol, ea_protocol.signing, ea_protocol.vectors;"
        "print(json.dumps(sorted({name.split('.')[0] for name in set(sys.modules) - before})))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout)) - {"ea_protocol"}
    assert loaded <= sys.stdlib_module_names, sorted(loaded - sys.stdlib_module_names)


@pytest.mark.parametrize("package", SERVER_PACKAGES)
def test_the_server_never_imports_the_reference_client(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if module == "ea_client" or module.startswith("ea_client.")
    ]

    assert offenders == []
