"""deploy/system-deps.sh, the one script `.ci/run`, `make demo` and `make test` use for what lies outside
Python: on a machine where it cannot install (no root, no password-less sudo), a missing Java, Maven,
Chromium or nginx stops it at once with one line naming what is missing and the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "system-deps.sh"


def bare_machine(tmp_path: Path, *present: str) -> dict[str, str]:
    """A PATH with the shell tools the script uses, Python, an `id` that says uid 1000, no sudo or
    apt-get, and only the `present` programs of java/mvn/chromium/nginx (as stubs; the machine's own
    /usr/sbin/nginx is out of sight through GATEWATCH_NGINX)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "grep", "sed", "env", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    os.symlink(sys.executable, bin_dir / "python3")
    stubs = {"id": "echo 1000", "java": 'echo \'openjdk version "17.0.9" 2023-10-17\' >&2', "mvn": "true",
             "chromium": "true", "nginx": "true"}
    for name, body in stubs.items():
        if name == "id" or name in present:
            (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
            (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir), "GATEWATCH_NGINX": str(tmp_path / "no-nginx")}


def run(env: dict[str, str], what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("bash"), str(SCRIPT), what], env=env, capture_output=True, text=True,
                          timeout=60)


def test_nothing_missing_is_silent(tmp_path: Path) -> None:
    done = run(bare_machine(tmp_path, "java", "mvn", "chromium", "nginx"), "test")
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize(("what", "present", "named", "packages"), [
    ("demo", (), "Java 17, Maven", "openjdk-17-jre-headless maven"),
    ("demo", ("java",), "Maven", "maven"),
    ("test", ("java", "mvn"), "Chromium, nginx", "chromium nginx"),
    ("test", ("java", "mvn", "chromium"), "nginx", "nginx"),
    ("demo", ("java", "mvn", "chromium"), None, None),  # the demo runs no nginx
])
def test_what_is_missing_is_one_line_with_the_install_command(tmp_path: Path, what: str, present: tuple[str, ...],
                                                              named: str | None, packages: str | None) -> None:
    done = run(bare_machine(tmp_path, *present), what)
    if named is None:
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert f"missing {named};" in lines[0] and lines[0].endswith(f"sudo apt-get install -y {packages}")


def test_an_old_java_counts_as_missing(tmp_path: Path) -> None:
    env = bare_machine(tmp_path, "mvn")
    java = Path(env["PATH"]) / "java"
    java.write_text("#!/bin/bash\necho 'openjdk version \"11.0.2\"' >&2\n")
    java.chmod(0o755)
    done = run(env, "demo")
    assert done.returncode == 1 and "missing Java 17;" in done.stderr
