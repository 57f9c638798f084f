"""Who holds an inbox lease, and whether that process is known to be gone.

An inbox lease (``bot.channels.inbox``) names the process holding it: ``host/machine:pid:run``
(``process_owner``). ``machine`` tells apart kernels and process-id namespaces that share a
host name (two containers, a reboot); ``run`` is drawn at each start, so a restarted process
that gets the same id (pid 1 in a container) is told apart from its earlier life. On its own
machine a process can tell that a holder is gone (``owner_gone``) and take its updates over at
once; across machines only the lease's expiry can tell.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from pathlib import Path


def _machine_tag() -> str:
    """Return 8 hex digits naming this kernel boot and process-id namespace.

    Two containers on one host may share a host name but never a pid namespace; a reboot
    changes the boot id. A process id is only meaningful among owners with the same tag.
    """
    facts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            facts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:  # not Linux: the host name alone, pids compared as they are
            facts.append("")
    return hashlib.sha256("|".join(facts).encode()).hexdigest()[:8]


_RUN = secrets.token_hex(3)


def process_owner(pid: int | None = None) -> str:
    """Return the lease owner id of this process: ``host/machine:pid:run``.

    ``run`` is drawn once per process start, so a process that gets the same id after a
    restart (pid 1 in a container) is told apart from its earlier run.
    """
    host = socket.gethostname()[:40].replace(":", "_")
    return f"{host}/{_machine_tag()}:{os.getpid() if pid is None else pid}:{_RUN}"


def _running(pid: int) -> bool:
    """Return whether process ``pid`` runs here (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    try:
        # /proc/<pid>/stat: "pid (name) state ..."; the name may hold spaces and parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_gone(owner: str | None, me: str | None = None) -> bool:
    """Return whether the process ``owner`` (a ``process_owner`` id) is known to have stopped.

    Known only on its own machine: its process id no longer runs, or it is this process's id
    with another run token (this process's earlier life). ``me`` is this process's owner id.
    Any other owner, or an id in another shape, may be alive: its lease decides.
    """
    me = me or process_owner()
    try:
        machine, pid_text, run = (owner or "").split(":")
        my_machine, my_pid, my_run = me.split(":")
        pid = int(pid_text)
    except ValueError:
        return False
    if machine != my_machine or pid <= 0:
        return False
    if pid_text == my_pid:
        return run != my_run
    return not _running(pid)
