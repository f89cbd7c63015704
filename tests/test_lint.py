"""The code stays ruff-clean, ruff-formatted and mypy --strict clean (the gate, run with the tests)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("files", [[], ["alerts"], ["dashboards"]], ids=["exporter", "alerts", "dashboards"])
def test_mypy_strict(files: list[str]) -> None:
    # Settings (strict, the package, the generated code left out) are in pyproject.toml. The two
    # generators each have a generate.py, so each directory is checked on its own.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *files], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout
