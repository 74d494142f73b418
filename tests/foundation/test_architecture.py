"""The house's shape, checked so it cannot drift: import rules (import-linter
contracts in pyproject.toml) and modules small enough to read in one sitting."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGES = [
    "config",
    "core",
    "signals_app",
    "positions",
    "ea_gateway",
    "monitoring",
    "staff_auth",
    "ea_protocol",
    "ea_client",
    "demo",
]
SERVER_PACKAGES = [
    "config",
    "core",
    "signals_app",
    "positions",
    "ea_gateway",
    "monitoring",
    "staff_auth",
    "ea_protocol",
]
MAX_MODULE_LINES = 350


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold():
    result = _lint_imports(REPO_ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "broken"),
    [
        ("signals_app/selectors.py", "import positions.models", "Apps point one way"),
        ("positions/selectors.py", "import ea_gateway.models", "Apps point one way"),
        ("monitoring/selectors.py", "import ea_client.client", "No server package imports"),
        ("positions/exit_plan.py", "import positions.scanner", "No import cycle"),
    ],
)
def test_the_contracts_catch_a_wrong_import(tmp_path, module, bad_import, broken):
    # given: a copy of the code with one import the house forbids
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")

    # when
    result = _lint_imports(tmp_path)

    # then
    assert result.returncode != 0
    assert broken in result.stdout.split("Broken contracts")[-1]


def test_no_server_module_outgrows_one_sitting():
    too_long = {
        str(path.relative_to(REPO_ROOT)): lines
        for package in SERVER_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these by job (CONVENTIONS §1): {too_long}"
