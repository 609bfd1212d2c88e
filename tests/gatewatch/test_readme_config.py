"""The README's configuration table and the typed settings (gatewatch/settings.py) name the same keys.

Every key the table documents exists in `Settings` (a renamed detector section or key is caught here), and
every key of `Settings` is documented in the table (a new setting without its row is caught too)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from gatewatch.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
UNDOCUMENTED = {"base_dir"}  # set by the loader (the config file's directory), never by a person


def documented_patterns() -> list[re.Pattern[str]]:
    """From the first cell of each configuration row: "`a.b.c`, `d`, `e.f`" is a.b.c, a.b.d and a.e.f (a
    dotted name not starting with a section is under the row's section); `<name>` stands for any key."""
    out = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        names = [n.strip("[]") for n in re.findall(r"`([^`]+)`", line.split(" | ")[0])]
        if not names or names[0].split(".")[0] not in Settings.model_fields:
            continue  # another table (the CLI's, alert types)
        top, parent = names[0].split(".")[0], names[0].split(".")[:-1]
        for name in names:
            parts = name.split(".")
            if parts[0] != top:
                parts = [*parent, *parts] if len(parts) == 1 else [top, *parts]
            out.append(re.compile(r"\.".join("[^.]+" if p.startswith("<") else re.escape(p) for p in parts)))
    return out


def model_keys(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= model_keys(sub, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_every_documented_key_exists_in_the_settings() -> None:
    known = model_keys()
    # a documented key is a setting, or the root of a mapping setting's entries (`routes.<tenant>`: a dict)
    unknown = [p.pattern for p in documented_patterns()
               if not any(p.fullmatch(k) or p.match(k) or re.match(p.pattern + r"\.", k) for k in known)
               and not any(p.pattern.startswith(re.escape(k) + r"\.") for k in known)]
    assert not unknown, f"README documents keys the settings do not have: {unknown}"


def test_every_setting_is_documented() -> None:
    patterns = documented_patterns()
    missing = sorted(k for k in model_keys() - UNDOCUMENTED
                     if not any(p.fullmatch(k) or p.pattern.startswith(re.escape(k) + r"\.") for p in patterns))
    assert not missing, f"settings without a row in the README's configuration table: {missing}"
