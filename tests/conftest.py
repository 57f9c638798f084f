"""Shared fixtures: the real domain, a real case store (SQLite, and PostgreSQL when given), a pinned clock.

Set ``FIRSTREPLY_TEST_POSTGRES_URL`` (a database these tests may drop tables in) to run
every test that takes ``db_url`` or ``store`` against PostgreSQL too; without it only
SQLite is a parameter (nothing is collected for PostgreSQL, rather than skipped: a skip
would look the same as a broken database).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("FIRSTREPLY_TEST_POSTGRES_URL")
DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Monday 23 November 2026, 10:00 in London: the support team is open.
OPEN_NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
# Sunday 22 November 2026, 22:30 in London: closed until Monday 08:00.
CLOSED_NOW = datetime(2026, 11, 22, 22, 30, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def edge_greeting_switch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connector unit tests check parsing and sending with the channel's greeting of new customers off.

    Their fake Rasa (``tests.channel_support.RecordingAgent``) runs no dialogue, so the greeting
    would be one more reply in every one of them; the greeting has its own tests
    (``tests/test_edge_greeting.py``, marked ``edge_greeting``), and the integration tests,
    with the real dialogue, run with it on as deployed.
    """
    from bot.channels.edge import ENV_EDGE_GREETING

    if "integration" in request.path.parts or request.node.get_closest_marker("edge_greeting"):
        monkeypatch.delenv(ENV_EDGE_GREETING, raising=False)
    else:
        monkeypatch.setenv(ENV_EDGE_GREETING, "off")


@pytest.fixture(scope="session")
def domain() -> Dict[str, Any]:
    """Return the assistant's domain, loaded from domain/ as Rasa loads it."""
    from rasa.shared.core.domain import Domain

    return Domain.load(str(ROOT / "domain")).as_dict()


@pytest.fixture
def case_db_url(tmp_path: Path) -> str:
    """Return the URL of an empty SQLite case store in a temporary folder."""
    return f"sqlite:///{tmp_path / 'cases.db'}"


def _drop_all(url: str) -> None:
    from sqlalchemy import create_engine

    from bot.cases import schema

    engine = create_engine(url, future=True)
    schema.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty case database: a fresh SQLite file, or the test PostgreSQL emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cases.db'}"
        return
    assert POSTGRES_URL is not None
    _drop_all(POSTGRES_URL)
    yield POSTGRES_URL
    _drop_all(POSTGRES_URL)


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    """A case store on ``db_url``, disposed of after the test."""
    from bot.cases import CaseStore

    opened = CaseStore.from_url(db_url)
    yield opened
    opened.dispose()


@pytest.fixture
def services(case_db_url: str) -> Iterator[Any]:
    """Return Services around a fresh case store, the shipped support.yml and a clock pinned to OPEN_NOW."""
    from bot.cases import CaseStore
    from bot.ops import load_support_config
    from bot.services import Services

    store = CaseStore.from_url(case_db_url)
    built = Services(store=store, support=load_support_config(ROOT / "support.yml"), now=lambda: OPEN_NOW)
    yield built
    store.dispose()
