"""The code stays ruff-clean and ruff-formatted (the project's style gate, run with the tests)."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def ruff() -> str:
    return shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ruff(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check() -> None:
    done = run("check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = run("format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr
