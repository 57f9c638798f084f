"""FirstReply's own threads, named so that the operating system shows which is which.

Python's thread names stay inside Python; ``top -H``, ``ps -L`` and ``/proc/<pid>/task/*/comm``
show every thread of a Rasa worker as "python". Each of FirstReply's threads (the NLU thread,
the conversation store's, the sending thread, the intake's) also gives its name to the OS, so
an operator, or ``make bench-first-message``'s CPU breakdown, can tell where a worker's CPU
goes. Linux keeps 15 bytes of a name: "firstreply-" becomes "fr-".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

# Linux's prctl option that names the calling thread.
_PR_SET_NAME = 15
_OS_NAME_BYTES = 15
_libc: ctypes.CDLL | None = None


def os_name(name: str) -> str:
    """Return the name the OS shows for a thread named ``name`` in Python."""
    short = name.replace("firstreply-", "fr-", 1)
    return short.encode("utf-8")[:_OS_NAME_BYTES].decode("utf-8", "ignore")


def show_name_to_os() -> None:
    """Give the calling thread its Python name in the OS too (Linux; elsewhere nothing is done)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _libc.prctl(_PR_SET_NAME, os_name(threading.current_thread().name).encode("utf-8"), 0, 0, 0)


def named_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """Return a thread pool whose threads are ``name_0``, ``name_1``... in Python and in the OS."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=show_name_to_os)
