"""Engines of FirstReply's databases in a worker forked after they were made (``make run``'s workers)."""

from __future__ import annotations

import os
from pathlib import Path

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
