"""The code stays ruff-clean, ruff-formatted and mypy --strict clean (the gate, run with the tests)."""

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


def test_mypy_strict() -> None:
    # What it covers (the package, the harness, alerts/, dashboards/ and bench/) and how strictly
    # are in pyproject.toml; the generated protobuf code is left out there.
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_no_file_edits_the_import_path() -> None:
    """Tests, benchmarks and scripts import the harness as a package: nothing edits sys.path."""
    offenders = [
        str(path.relative_to(ROOT))
        for top in ("exporter", "harness", "tests", "bench", "alerts", "dashboards", "scripts")
        for path in (ROOT / top).rglob("*.py")
        if "sys.path.insert" in path.read_text() and path.name != "test_lint.py"
    ]
    assert not offenders
