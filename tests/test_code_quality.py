"""The code stays ruff-clean and mypy-strict-clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    if shutil.which(name, path=str(Path(sys.executable).parent)):
        return [str(Path(sys.executable).parent / name)]
    pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e '.[test]')")


def test_ruff_is_clean() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([*_tool("mypy")], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
