"""Engines of FirstReply's databases in a worker forked after they were made (``make run``'s workers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sqlalchemy import text

from bot.cases.engine import sqlite_or_postgres_engine


def test_a_forked_worker_opens_its_own_connection(tmp_path: Path) -> None:
    engine = sqlite_or_postgres_engine(f"sqlite:///{tmp_path / 'x.db'}", ["PRAGMA busy_timeout=1000"],
                                       sqlite_per_thread=True)  # fmt: skip
    with engine.connect() as connection:  # the parent's connection, kept by the pool
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.commit()
        parents = connection.connection.dbapi_connection

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked worker
        try:
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO t VALUES (1)"))
                own = connection.connection.dbapi_connection is not parents
        except BaseException:
            os._exit(4)
        os._exit(0 if own else 3)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0  # 3: it used the parent's connection
    with engine.connect() as connection:  # and the parent's still works
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 1
        assert connection.connection.dbapi_connection is parents


def test_what_the_launcher_loads_before_the_fork_serves_the_forked_worker(tmp_path: Path) -> None:
    # In a fresh interpreter: the launcher loads lingua's models and config.yml's encoders; a worker
    # forked afterwards uses those very objects (shared pages, nothing loaded again) and they work.
    import subprocess
    import sys

    config = tmp_path / "config.yml"
    config.write_text("pipeline:\n  - name: bot.nlu.featurizer.SentenceEncoderFeaturizer\n    encoders: [all-minilm-l6-v2]\n")
    script = f"""
import os, sys
from pathlib import Path
from bot import launcher
from bot.i18n import _detector, detect_language
from bot.nlu import encoder, featurizer, multilingual
launcher.preload_for_workers(Path({str(config)!r}))
parent = (id(_detector()), id(encoder._SHARED._made), multilingual._SHARED._made is None, featurizer._ACTIVE)
read, write = os.pipe()
if os.fork() == 0:
    vector = featurizer.encode_texts(["where is my parcel"])
    child = (id(_detector()), id(encoder._SHARED._made), multilingual._SHARED._made is None, featurizer._ACTIVE)
    os.write(write, repr((child == parent, vector.shape, detect_language("où est mon colis").language)).encode())
    os._exit(0)
os.wait()
print(os.read(read, 1000).decode())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "(True, (1, 384), 'fr')"


def test_a_config_the_launcher_cannot_read_leaves_the_encoders_to_each_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bot import launcher

    with caplog.at_level(logging.INFO, logger="bot.launcher"):
        launcher.preload_for_workers(tmp_path / "missing.yml")
    assert "encoders not loaded ahead of the workers (FileNotFoundError" in caplog.text


def test_a_connection_per_thread_is_never_closed_under_another_thread(tmp_path: Path) -> None:
    # SQLAlchemy's SingletonThreadPool closes arbitrary connections once more than five threads
    # used it; here twelve threads each hold theirs in the middle of a transaction at once.
    import threading

    engine = sqlite_or_postgres_engine(f"sqlite:///{tmp_path / 'x.db'}", ["PRAGMA busy_timeout=5000"],
                                       sqlite_per_thread=True)  # fmt: skip
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    all_open = threading.Barrier(12)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT count(*) FROM t")).scalar() is not None
                all_open.wait(timeout=10)  # every thread has taken its connection
                connection.execute(text("SELECT 1")).scalar()  # still open
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 12
    # The twelve ended threads' connections are let go once another thread opens one.
    opener = threading.Thread(target=lambda: engine.connect().close())
    opener.start()
    opener.join()
    assert engine.pool.status().endswith("size: 2")  # this thread's and the opener's
