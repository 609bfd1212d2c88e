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
def test_every_module_of_a_package_imports_without_a_package_above_it(package: str) -> None:
    """At run time, not just in the source: importing every module of `package` (its `__init__` files are
    empty, so importing the package alone would prove nothing) loads no package above it — an import
    hidden in a function body the AST check reads as fine, or a cycle, would show here."""
    above = ORDER[ORDER.index(package) + 1:]
    code = f"""
import importlib, pkgutil, sys
import {package}
names = [m.name for m in pkgutil.walk_packages({package}.__path__, "{package}.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({above!r}))
print(len(names), loaded)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    count, loaded = done.stdout.strip().split(" ", 1)
    assert int(count) > 0 and loaded == "[]", f"importing {package}'s modules loaded {loaded}"
