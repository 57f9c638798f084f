"""bot/threads.py: FirstReply's threads carry their names into the OS (top -H, /proc)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bot.channels.sending import SendingThread
from bot.threads import named_pool, os_name

linux_only = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="names are read from Linux's /proc")


def os_thread_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def test_names_are_shortened_to_what_linux_keeps() -> None:
    assert os_name("firstreply-trackers_3") == "fr-trackers_3"
    assert os_name("firstreply-sending") == "fr-sending"
    assert len(os_name("firstreply-a-very-long-thread-name_12").encode()) == 15
    assert os_name("éééééééé") == "ééééééé"  # cut on a whole character


@linux_only
def test_a_named_pools_threads_show_their_names_to_the_os() -> None:
    with named_pool(2, "firstreply-nlu") as pool:
        seen = {pool.submit(os_thread_name).result() for _ in range(4)}
    assert seen <= {"fr-nlu_0", "fr-nlu_1"} and seen


@linux_only
def test_the_sending_thread_shows_its_name_to_the_os() -> None:
    sending = SendingThread()

    async def name() -> str:
        return os_thread_name()

    assert asyncio.run(sending.run(name())) == "fr-sending"


@linux_only
def test_the_benchs_cpu_breakdown_tells_a_named_thread_from_the_main_one() -> None:
    import os
    import time

    from bench.procs import thread_cpu_seconds

    def spin() -> None:
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    before = thread_cpu_seconds(os.getpid())
    with named_pool(1, "firstreply-spin") as pool:
        pool.submit(spin).result()
        after = thread_cpu_seconds(os.getpid())

    assert after["fr-spin"] >= 0.25 and "fr-spin" not in before
    assert after["main"] >= before["main"]
