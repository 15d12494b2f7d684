"""The code stays ruff-clean and mypy-strict-clean, and so does the README's example code."""

import ast
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


# The layers of docs/architecture.md, lowest first: a module imports its own and lower ones.
CORE = {"errors", "limits", "policy", "result", "environment", "credentials", "trees",
        "attempts", "decoys", "escaping", "_records"}
FRONTENDS = {"explain", "pep517", "build", "buildenv", "installers", "sources", "requirements",
             "outputs", "archives", "checkout", "logs", "progress", "audit", "doctor", "fromager",
             "examples", "interpreters", "causes", "onattempt", "inspection"}
VIEW_HELPERS = {"_linux.filesystem", "_linux.identity"}
STDLIB_ONLY = {"audit.bait", "audit.vectors", "examples.whoami", "inspection._driver",
               "_linux.procfs", "_linux.seccomp", "_linux.usage", "_linux.disk", "_linux.cgroups",
               "_linux.changetimes", "_records"}
"""Modules that import nothing of buildjail's but one another (leaves of the layers)."""
PACKAGE = ROOT / "src" / "buildjail"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The buildjail modules *path* imports (relative to the package), at any depth."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{target}.{alias.name}".lstrip(".")
                is_module = (PACKAGE / full.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE / full.replace(".", "/")).is_dir()
                found.add(full if is_module else target)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                alias.name for alias in node.names]
            found.update(n.removeprefix("buildjail.") for n in names
                         if n == "buildjail" or n.startswith("buildjail."))
    return found - {name, ""}


def _layer(module: str) -> str:
    top = module.split(".", maxsplit=1)[0]
    if top in CORE:
        return "core"
    if top in ("_linux", "backends", "sandbox", "cli"):
        return top
    if top in FRONTENDS:
        return "frontend"
    return "package"  # buildjail/__init__.py and __main__.py


ALLOWED = {
    "core": {"core"},
    "_linux": {"core", "_linux"},
    "backends": {"core", "_linux", "backends"},
    "sandbox": {"core", "backends"},
    "frontend": {"core", "sandbox", "backends", "frontend", "_linux"},
    "cli": {"core", "sandbox", "backends", "frontend", "cli"},
    "package": {"core", "sandbox", "frontend", "cli"},
}


def _violations(module: str, imported: set[str]) -> list[str]:
    layer = _layer(module)
    found = [f"{module} -> {dep}" for dep in imported if _layer(dep) not in ALLOWED[layer]]
    top = module.split(".", maxsplit=1)[0]
    for dep in imported:
        reaches_in = dep.startswith("backends.") or (
            dep.startswith("_linux.") and dep not in VIEW_HELPERS)
        if layer == "frontend" and top != "doctor" and reaches_in:
            found.append(f"{module} -> {dep} (only the doctor reaches into it)")
    if module in STDLIB_ONLY and imported - STDLIB_ONLY:
        found.append(f"{module} -> {sorted(imported - STDLIB_ONLY)} (stdlib only)")
    return found


def test_imports_follow_the_layers() -> None:
    """policy -> backends -> frontends: no import runs back up (docs/architecture.md)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")
               if "probe_project" not in path.parts}
    assert {"_linux.kernel", "backends.base", "cli.run", "fromager.steps"} <= set(modules)
    problems = [problem for module, path in sorted(modules.items())
                for problem in _violations(module, _imports(path))]
    assert problems == []


def test_the_layer_check_sees_an_upward_import() -> None:
    """The control: an import from a backend up into a frontend is reported."""
    assert _violations("backends.native", {"pep517"}) == ["backends.native -> pep517"]
    assert _violations("_linux.kernel", {"backends.base"}) == ["_linux.kernel -> backends.base"]
    assert _violations("build", {"backends._supervisor"}) == [
        "build -> backends._supervisor (only the doctor reaches into it)"]


def test_the_launcher_and_the_probes_import_only_the_standard_library() -> None:
    """Run by path or inside the sandbox: they cannot rely on buildjail being importable."""
    launcher = _imports(PACKAGE / "fromager" / "_launcher.py")
    assert launcher == {"fromager.steps"}  # after --sys-path puts buildjail first, in main()
    tree = ast.parse((PACKAGE / "fromager" / "_launcher.py").read_text(encoding="utf-8"))
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert all((isinstance(n, ast.ImportFrom) and n.module in ("__future__", "collections.abc"))
               or (isinstance(n, ast.Import) and [a.name for a in n.names] == ["sys"])
               for n in top_level)
    for path in (PACKAGE / "audit" / "probe_project").rglob("*.py"):
        assert not any((isinstance(node, ast.ImportFrom) and node.level) or (isinstance(
            node, ast.Import | ast.ImportFrom) and "buildjail" in ast.dump(node))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))), path
