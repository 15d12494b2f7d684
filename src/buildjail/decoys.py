"""The credential decoys planted in the sandbox's private home: fake, and unique per run.

Each decoy looks like what a credential thief looks for (``~/.netrc``, ``~/.aws/credentials``)
and holds a token made for this run alone, so that a leaked one can be traced; none is a real
file of the host's (the caller's home stays masked). The sandbox's init watches them.
"""

from __future__ import annotations

import os

DECOY_DIRECTORIES = (".aws", ".ssh", ".docker")
"""The directories the decoys live in, made in the home with mode 0700."""
DECOY_FILES = (".netrc", ".pypirc", ".aws/credentials", ".ssh/id_ed25519",
               ".docker/config.json")
"""The decoys, relative to the home."""
MARK = "buildjail-decoy"
"""Written into every decoy: it is a fake, whatever its format looks like."""


def run_token() -> str:
    """A fresh token for one run's decoys (hex, 24 characters; not ``secrets``, which
    imports hashlib on the start-up path of ``buildjail run``)."""
    return os.urandom(12).hex()


def decoy_contents(token: str) -> dict[str, bytes]:
    """Each decoy's content, relative to the home, carrying *token* (planned in the caller,
    never in a forked child: binascii is imported here, off the path of a run without
    decoys)."""
    import binascii

    fake = f"{MARK}-{token}"
    aws_id = "AKIA-decoy-" + token[:16]  # not AKIA[0-9A-Z]{16}: no secret scanner's alert
    docker_auth = binascii.b2a_base64(f"decoy:{fake}".encode(), newline=False).decode()
    return {
        ".netrc": f"machine pypi.org login __token__ password pypi-{fake}\n".encode(),
        ".pypirc": (f"[distutils]\nindex-servers = pypi\n\n[pypi]\nusername = __token__\n"
                    f"password = pypi-{fake}\n").encode(),
        ".aws/credentials": (f"[default]\naws_access_key_id = {aws_id}\n"
                             f"aws_secret_access_key = {fake}\n").encode(),
        ".ssh/id_ed25519": ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
                            f"{fake}\n-----END OPENSSH PRIVATE KEY-----\n").encode(),
        ".docker/config.json": ('{"auths": {"https://index.docker.io/v1/": {"auth": "'
                                f'{docker_auth}"}}}}, "buildjail": "{fake}"}}\n').encode(),
    }
