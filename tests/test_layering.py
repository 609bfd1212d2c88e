"""DESIGN.md "Where things live": imports only point down ingest → detectors → scoring → api → gatewatch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["ingest", "detectors", "scoring", "api", "gatewatch"]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_imports_point_down_only(package: str) -> None:
    allowed = set(ORDER[: ORDER.index(package) + 1])
    for path in (ROOT / package).rglob("*.py"):
        bad = imported_packages(path) - allowed
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (above {package})"


@pytest.mark.parametrize("package", ORDER)
def test_each_package_imports_alone(package: str) -> None:
    subprocess.run([sys.executable, "-c", f"import {package}"], cwd=ROOT, check=True)
