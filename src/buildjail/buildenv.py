"""Build environments: a fresh venv per package, requirements installed outside the sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterable, Mapping, Sequence

from .errors import BuildjailError


class BuildEnvironmentError(BuildjailError):
    """A build environment could not be created or its requirements installed."""


class BuildEnvironment:
    """An isolated virtual environment holding one package's build requirements."""

    def __init__(self, path: str, index_args: Sequence[str] = ()) -> None:
        self.path = path
        self.index_args = tuple(index_args)
        self.uv = shutil.which("uv")
        self._create()

    @property
    def python(self) -> str:
        """The environment's interpreter."""
        return os.path.join(self.path, "bin", "python")

    @property
    def bin(self) -> str:
        """The environment's scripts directory, put first in the build's PATH."""
        return os.path.join(self.path, "bin")

    def hook_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """*base* with this environment's scripts directory first in ``PATH``."""
        return {**base, "PATH": os.pathsep.join([self.bin, base.get("PATH", os.defpath)])}

    def install(self, requirements: Iterable[str], log_path: str | None = None) -> None:
        """Install *requirements* (outside the sandbox: this step needs the index)."""
        wanted = sorted(set(requirements))
        if not wanted:
            return
        if self.uv:
            cmd = [self.uv, "pip", "install", "--python", self.python, *self.index_args,
                   *wanted]
        else:
            cmd = [sys.executable, "-m", "pip", "--python", self.python, "install",
                   "--disable-pip-version-check", "--no-input", *self.index_args, *wanted]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if log_path:
            with open(log_path, "a") as stream:
                stream.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BuildEnvironmentError(
                f"installing the build requirements {', '.join(wanted)} failed "
                f"(is the index reachable? see --index-url/--find-links/--no-index):\n{tail}"
            )

    def _create(self) -> None:
        try:
            if self.uv:
                subprocess.run([self.uv, "venv", "--quiet", "--python", sys.executable,
                                self.path], check=True, capture_output=True)
            else:
                venv.EnvBuilder(with_pip=False, symlinks=True).create(self.path)
            os.chmod(self.path, 0o755)  # the build's identity must be able to enter it
        except (OSError, subprocess.CalledProcessError) as error:
            raise BuildEnvironmentError(f"cannot create a build environment in {self.path}: "
                                    f"{error}") from None
