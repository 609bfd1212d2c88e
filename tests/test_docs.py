"""The README and docs/ stand on their own: every relative link resolves inside the repository, to an
existing file and, with `#anchor`, to a heading of that file; nothing points outside it (`../shared/`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            out.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared/" not in text
    links = [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", text) if not m.group(1).startswith(("http", "mailto:"))]
    for link in links:
        file, _, anchor = link.partition("#")
        target = (doc.parent / file).resolve() if file else doc
        assert target.is_relative_to(ROOT) and target.exists(), f"{doc.name}: {link}"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{doc.name}: {link} (no such heading)"


def test_the_design_and_contract_are_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("DESIGN.md", "CONTRACT.md", "DEVELOPING.md"):
        assert (ROOT / "docs" / name).is_file() and f"(docs/{name})" in readme
