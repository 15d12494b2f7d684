"""The attack vectors the audit probes, grouped by the threat each belongs to.

The threats are what a hostile build backend could do to the machine that builds it:
read credential files or the environment, reach the network, see or signal other
processes, use IPC, tamper with other builds, persist after the build, gain privileges,
exhaust resources, or read secrets elsewhere on the host (/etc, /opt, a shared cache). The
README's table lists every vector with its threat.

The probe project (package data ``probe_project/``) runs one probe per vector inside the
build hooks and prints one line per probe to its stdout (the build log)::

    BUILDJAIL-PROBE {"vector": "<id>", "outcome": "succeeded" | "failed" | "not_applicable",
                     "detail": "<what happened, e.g. the errno>"}

The auditor plants the bait first and writes ``audit-config.json`` (keys: see
``CONFIG_KEYS``) into its copy of the probe project; after the build it observes from
outside what only the outside can see (a listener's connections, a daemon's heartbeat, a
marker on the host) and combines both into a verdict per vector.
"""

from __future__ import annotations

import dataclasses

PROBE_MARKER = "BUILDJAIL-PROBE "
CONFIG_FILE = "audit-config.json"


@dataclasses.dataclass(frozen=True)
class Vector:
    """One attack vector: its id, the threat it belongs to, and one line on it."""

    id: str
    category: str
    explanation: str


VECTORS: tuple[Vector, ...] = (
    Vector("cred_home_netrc", "credential files", "read ~/.netrc of the user who runs the build"),
    Vector("cred_home_ssh", "credential files", "read ~/.ssh/id_ed25519 of that user"),
    Vector("cred_home_cloud", "credential files", "read ~/.aws/credentials, ~/.docker/config.json"),
    Vector("cred_other_user", "credential files",
           "read a world-readable key in another user's home"),
    Vector("cred_run_secrets", "credential files", "read a container secret in /run/secrets"),
    Vector("cred_k8s_token", "credential files", "read a Kubernetes-style service-account token"),
    Vector("cred_shadow", "credential files", "read /etc/shadow"),
    Vector("env_tokens", "environment", "find tokens and passwords in the environment"),
    Vector("proc_parent_environ", "processes", "read the parent's /proc/<pid>/environ"),
    Vector("proc_parent_cmdline", "processes", "read the parent's /proc/<pid>/cmdline"),
    Vector("proc_visibility", "processes", "see processes outside the build"),
    Vector("ptrace", "processes", "ptrace-attach to another process"),
    Vector("process_vm_readv", "processes", "read another process's memory"),
    Vector("signal", "processes", "send a signal to another process"),
    Vector("net_tcp", "network", "open a TCP connection to the host's network address"),
    Vector("net_udp", "network", "send a UDP datagram to the host's network address"),
    Vector("net_dns", "network", "resolve a name (payload download, DNS exfiltration)"),
    Vector("host_loopback", "network", "connect to a service on the host's 127.0.0.1"),
    Vector("abstract_socket", "network", "connect to an abstract unix socket of the host"),
    Vector("hostname", "network", "learn the host's name"),
    Vector("host_unix_socket", "network",
           "connect to a host service's unix socket outside /run, /tmp and the homes"),
    Vector("sysv_shm", "IPC", "attach the host's System V shared memory"),
    Vector("posix_shm", "IPC", "open the host's POSIX shared memory in /dev/shm"),
    Vector("pth_interpreter", "persistence", "drop a .pth into the interpreter's site-packages"),
    Vector("pth_build_env", "persistence", "drop a .pth into the build environment"),
    Vector("sitecustomize", "persistence", "write a sitecustomize.py the interpreter runs"),
    Vector("shell_profile", "persistence", "append to ~/.bashrc of the user"),
    Vector("cron", "persistence", "install a cron job in /etc/cron.d"),
    Vector("pip_conf", "persistence", "write a pip.conf redirecting later installs"),
    Vector("write_etc", "persistence", "write a file into /etc"),
    Vector("daemon", "persistence", "leave a detached daemon running after the hook"),
    Vector("other_build", "other builds", "write into another build's directory"),
    Vector("other_output", "other builds", "write into another build's output directory"),
    Vector("shared_cache", "other builds", "poison a shared cache directory"),
    Vector("tmp_shared", "other builds", "see and touch the host's /tmp"),
    Vector("view_etc", "view", "read a credential file in /etc (a pip.conf-like index token)"),
    Vector("view_system", "view", "read secrets in /opt, /srv and a shared build cache"),
    Vector("tiocsti", "privileges", "inject keystrokes into a terminal (TIOCSTI)"),
    Vector("setuid", "privileges", "gain root through a setuid binary"),
    Vector("setid_tree", "privileges",
           "leave a set-uid, set-gid program in the source tree for the caller to run"),
    Vector("keyring", "privileges", "use the kernel keyring"),
    Vector("namespaces", "privileges", "create new (user) namespaces"),
    Vector("mount", "privileges", "mount a filesystem"),
    Vector("fork_bomb", "exhaustion", "start 512 processes (limit for the audit: 128)"),
    Vector("memory_hog", "exhaustion", "allocate 1 GiB (limit for the audit: 256 MiB)"),
    Vector("disk_filler", "exhaustion", "write a 128 MiB file (limit for the audit: 32 MiB)"),
    Vector("disk_files", "exhaustion",
           "write 256 files of 1 MiB, each under the file-size limit (disk limit: 64 MiB)"),
    Vector("memory_sysv", "exhaustion",
           "hold 512 MiB in detached System V segments (limit for the audit: 256 MiB)"),
    Vector("memory_sockets", "exhaustion", "hold 512 MiB in unread socket buffers"),
    Vector("memory_memfd", "exhaustion", "hold 512 MiB in a memfd never mapped"),
)

CONFIG_KEYS = {
    "home": "the throw-away HOME planted as the caller's (.netrc, .ssh, .aws, .docker, .bashrc)",
    "secrets": "{vector id: path} for the cred_* files outside HOME",
    "env_tokens": "names of the planted secret environment variables",
    "parent_pid": "pid of the auditing process",
    "victim_pid": "pid of a bait process (secret in its environ) to trace, read and signal",
    "host_address": "the host's non-loopback address",
    "tcp_port": "a TCP listener on host_address and 127.0.0.1",
    "udp_port": "a UDP listener on host_address",
    "abstract_socket": "the name (without the leading NUL) of an abstract unix listener",
    "sysv_shm_key": "key of a System V shared-memory segment",
    "posix_shm": "path of a POSIX shared-memory object in /dev/shm",
    "writes": "{vector id: path} the persistence/other-build probes try to create",
    "heartbeat": "file in the project dir the daemon appends to",
    "setuid_binary": "a root-owned setuid copy of /usr/bin/id",
    "setid_left": "a file in the project dir the probe tries to make set-uid and set-gid",
    "host_tmp_marker": "a file in the host's /tmp",
    "unix_socket": "path of a listening unix socket of the host (outside the view)",
    "view": "{etc, opt, srv, cache: path} secrets in /etc, /opt, /srv and /var/cache",
    "build_env_site": "filled in by the probe itself (sysconfig of its interpreter)",
}

LIMITS = {"processes": 128, "memory": 256 << 20, "file_size": 32 << 20, "wall_time": 120.0,
          "disk": 64 << 20}
"""Limits of the audit's builds, low enough for the exhaustion probes to hit them."""
