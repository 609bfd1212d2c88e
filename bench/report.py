"""Writing benchmark figures to BENCHMARKS.md with the machine, versions and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from importlib import metadata
from pathlib import Path


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_header() -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in
                         ("kafka-python", "joserfc", "msgspec", "fastapi", "numpy", "scikit-learn"))
    return (f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {_cpu()}, "
            f"{os.cpu_count()} cores, Linux {platform.release()}; Python {platform.python_version()}; "
            f"Apache Kafka 4.4.0 (KRaft, single node, same machine); {versions}.")


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the `## title` section of the benchmarks file."""
    text = path.read_text(encoding="utf-8") if path.exists() else \
        "# Benchmarks\n\nFigures measured by the scripts in `bench/`; each beside its baseline from the same run.\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text, encoding="utf-8")
