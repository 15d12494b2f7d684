"""The code stays ruff-clean and mypy-strict-clean, and so does the README's example code."""

import re
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


def _readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """What a user copies from the README type-checks against the shipped py.typed package."""
    examples = _readme_examples()
    assert examples, "the README has no ```python blocks"
    files = []
    for number, code in enumerate(examples):
        files.append(tmp_path / f"readme_example_{number}.py")
        files[-1].write_text(code, encoding="utf-8")
    proc = subprocess.run([*_tool("mypy"), "--strict", "--no-incremental",
                           *map(str, files)], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
