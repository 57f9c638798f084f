"""Real Rasa and action server processes for end-to-end tests over the REST channel.

The ``assistant`` fixture runs on the embedded defaults (SQLite files) and, when the test
services are there (``scripts/test-services.sh`` sets ``FIRSTREPLY_TEST_POSTGRES_URL`` and
``FIRSTREPLY_TEST_REDIS_URL``; ``make test`` runs under it), a second time on the production
stack: Rasa with ``endpoints.prod.yml`` (``SQLTrackerStore`` on PostgreSQL, ``RedisLockStore``)
and the case store and channel database on PostgreSQL, each run in a fresh database.

``serve_assistant`` starts an action server and Rasa for any channel's end-to-end test (the
processes themselves come from ``tests.processes``); ``browser`` and ``local_page`` are the
one Chromium launch of the browser tests.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.engine import make_url

from tests.processes import ROOT, START_TIMEOUT_S, Process, base_env, free_port, http, require_model
from tests.processes import start_action_server, start_rasa_server, wait_until_up, write_endpoints

PROD_ENDPOINTS = ROOT / "endpoints.prod.yml"
POSTGRES_URL = os.environ.get("FIRSTREPLY_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("FIRSTREPLY_TEST_REDIS_URL")
# Like tests/test_cases.py: the production stack is a parameter only when its services are
# given, so without them nothing is collected for it (rather than skipped). One of the two
# alone is a mistake, and the production fixtures fail naming the other.
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL or REDIS_URL else [])
collect_ignore = [] if "postgresql" in BACKENDS else ["test_production_stack.py"]
# Redis database of each production stack's lock store: stacks never share lock keys.
REDIS_DB_ASSISTANT = 1


@dataclass
class Assistant:
    """A running assistant: Rasa (REST channel + HTTP API) and its action server."""

    rasa_url: str
    case_db_url: str
    env: Dict[str, str]
    token: str
    processes: List[Process] = field(default_factory=list)
    # The production stack's PostgreSQL database (tracker store, case store, channel tables).
    database_url: Optional[str] = None

    def say(self, sender: str, text: Any, metadata: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """Send a customer message over the REST channel; return the bot's messages."""
        body: Dict[str, Any] = {"sender": sender, "message": text}
        if metadata is not None:
            body["metadata"] = metadata
        status, raw = http("POST", self.webhook, json.dumps(body).encode(), token=self.token)
        assert status == 200, f"REST channel answered {status}: {raw[:500]!r}"
        return list(json.loads(raw))

    @property
    def webhook(self) -> str:
        """Return the REST channel's URL."""
        return f"{self.rasa_url}/webhooks/rest/webhook"

    def tracker(self, sender: str) -> Dict[str, Any]:
        """Return the conversation as Rasa's HTTP API has it."""
        status, raw = http("GET", f"{self.rasa_url}/conversations/{sender}/tracker")
        assert status == 200
        return dict(json.loads(raw))

    def cases(self) -> List[Dict[str, Any]]:
        """Return every case as `python -m bot cases list --json` prints it."""
        result = subprocess.run(
            [sys.executable, "-m", "bot", "cases", "list", "--json", "--db", self.case_db_url],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return list(json.loads(result.stdout))


def texts(messages: List[Dict[str, Any]]) -> List[str]:
    """Return the text of each bot message."""
    return [message.get("text", "") for message in messages]


@dataclass(frozen=True)
class ProductionServices:
    """The PostgreSQL (superuser) and Redis the production-stack tests may use."""

    postgres_url: str
    redis_url: str


def production_services() -> ProductionServices:
    """Return the test services from the environment, failing with what is missing."""
    missing = [
        name
        for name, value in (("FIRSTREPLY_TEST_POSTGRES_URL", POSTGRES_URL), ("FIRSTREPLY_TEST_REDIS_URL", REDIS_URL))
        if not value
    ]
    if missing:
        pytest.fail(f"the production-stack tests need {' and '.join(missing)} (scripts/test-services.sh sets both)")
    assert POSTGRES_URL is not None and REDIS_URL is not None
    return ProductionServices(POSTGRES_URL, REDIS_URL)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create an empty PostgreSQL database next to ``admin_url``'s; yield its URL; drop it."""
    name = f"firstreply_{secrets.token_hex(6)}"
    # No pool: a connection kept from the CREATE may be dead by the DROP (the crash tests).
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", future=True, poolclass=NullPool)
    quoted = engine.dialect.identifier_preparer.quote(name)
    # CREATE/DROP DATABASE take no bound parameters; the name is made just above from hex digits.
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        engine.dispose()


def production_env(
    database_url: str, events_url: str, redis_url: str, redis_db: int, action_endpoint: str
) -> Dict[str, str]:
    """Return the variables ``endpoints.prod.yml`` and FirstReply read, for one production stack.

    The PostgreSQL database ``database_url`` holds Rasa's tracker store, the case tables and
    the channel tables; ``events_url`` (same server) Rasa's event broker table, for the desk.
    """
    database, redis = make_url(database_url), urlsplit(redis_url)
    return {
        "ACTION_ENDPOINT_URL": action_endpoint,
        "DB_HOST": str(database.host),
        "DB_PORT": str(database.port),
        "DB_NAME": str(database.database),
        "DB_USER": str(database.username),
        "DB_PASSWORD": database.password or "",
        "EVENTS_DB_NAME": str(make_url(events_url).database),
        "REDIS_HOST": str(redis.hostname),
        "REDIS_PORT": str(redis.port),
        "REDIS_DB": str(redis_db),
        "REDIS_PASSWORD": unquote(redis.password or ""),
        "FIRSTREPLY_CASE_DB": database_url,
        "FIRSTREPLY_CHANNEL_DB": database_url,
        "FIRSTREPLY_EVENTS_DB": events_url,
    }


def _production_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    require_model()
    services = production_services()
    work = tmp_path_factory.mktemp("assistant-production")
    rasa_port, actions_port = free_port(), free_port()
    with fresh_database(services.postgres_url) as database_url, fresh_database(services.postgres_url) as events_url:
        env = {
            **base_env(),
            **production_env(
                database_url, events_url, services.redis_url, REDIS_DB_ASSISTANT,
                f"http://127.0.0.1:{actions_port}/webhook",
            ),
            "FIRSTREPLY_REST_TOKEN": secrets.token_urlsafe(24),
            "FIRSTREPLY_WEBCHAT_SECRET": secrets.token_urlsafe(24),
        }
        running = Assistant(
            rasa_url=f"http://127.0.0.1:{rasa_port}",
            case_db_url=database_url,
            env=env,
            token=env["FIRSTREPLY_REST_TOKEN"],
            database_url=database_url,
        )
        # No API token, as on the SQLite stack: the tests call the API without one (loopback
        # only). The scale-out stack in test_production_stack.py runs with a token.
        with serve_assistant(running, work, actions_port, rasa_port, PROD_ENDPOINTS):
            yield running


@pytest.fixture(scope="session", params=BACKENDS)
def assistant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    """Start the real assistant on free ports with its own case store and tracker store.

    ``sqlite``: the embedded defaults. ``postgresql``: the production stack (module docstring).
    """
    if request.param == "postgresql":
        yield from _production_assistant(tmp_path_factory)
        return
    require_model()
    work = tmp_path_factory.mktemp("assistant")
    rasa_port, actions_port = free_port(), free_port()
    case_db_url = f"sqlite:///{work / 'cases.db'}"
    endpoints = write_endpoints(
        work, actions_port, f"tracker_store:\n  type: bot.trackers.SQLiteTrackerStore\n  db: {work / 'trackers.db'}\n"
    )
    env = {
        **base_env(),
        "FIRSTREPLY_CASE_DB": case_db_url,
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
        "FIRSTREPLY_REST_TOKEN": secrets.token_urlsafe(24),
    }
    running = Assistant(
        rasa_url=f"http://127.0.0.1:{rasa_port}", case_db_url=case_db_url, env=env, token=env["FIRSTREPLY_REST_TOKEN"]
    )
    with serve_assistant(running, work, actions_port, rasa_port, endpoints):
        yield running


@contextmanager
def serve_assistant(
    running: Assistant, work: Path, actions_port: int, rasa_port: int, endpoints: Path, ready_path: str = "/status",
    *, credentials: Path = ROOT / "credentials.yml", launcher: bool = True, api_token: Optional[str] = None,
    rasa_timeout: float = START_TIMEOUT_S,
) -> Iterator[Assistant]:  # fmt: skip
    """Start the action server and Rasa for ``running``; yield it once both answer ``ready_path``; stop both.

    ``credentials``, ``launcher`` and ``api_token`` are those of ``start_rasa_server``;
    Rasa may take ``rasa_timeout`` seconds to answer. Logs go to ``work/actions.log`` and
    ``work/rasa.log``.
    """
    running.processes.append(start_action_server("action server", actions_port, running.env, work / "actions.log"))
    running.processes.append(
        start_rasa_server(
            "rasa server", rasa_port, endpoints, running.env, work / "rasa.log", api_token, credentials,
            launcher=launcher,
        )  # fmt: skip
    )
    try:
        wait_until_up(running.processes[0], f"http://127.0.0.1:{actions_port}/health")
        wait_until_up(running.processes[1], f"{running.rasa_url}{ready_path}", rasa_timeout)
        yield running
    finally:
        for process in reversed(running.processes):
            process.stop()


@contextmanager
def channel_assistant(
    work: Path, credentials_yml: str, channel_env: Dict[str, str], ready_path: str
) -> Iterator[Assistant]:
    """Serve the trained model with the channels of ``credentials_yml`` (and their ``channel_env``), on SQLite.

    For a channel's end-to-end tests (and its bench): the action server and ``rasa run`` on
    free ports, cases and channel tables in ``work``; on the way out the servers stop and the
    tails of their logs are printed (what pytest shows of a failure).
    """
    from tests.processes import free_ports

    require_model()
    rasa_port, actions_port = free_ports(2)
    (work / "credentials.yml").write_text(credentials_yml)
    env = {**base_env(), **channel_env, "FIRSTREPLY_CASE_DB": f"sqlite:///{work / 'cases.db'}",
           "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db")}  # fmt: skip
    assistant = Assistant(f"http://127.0.0.1:{rasa_port}", env["FIRSTREPLY_CASE_DB"], env, token="")
    try:
        with serve_assistant(
            assistant, work, actions_port, rasa_port, write_endpoints(work, actions_port), ready_path,
            credentials=work / "credentials.yml", launcher=False, rasa_timeout=300,
        ) as started:  # fmt: skip
            yield started
    finally:
        for name in ("rasa", "actions"):
            log_file = work / f"{name}.log"
            if log_file.exists():
                tail = log_file.read_text(errors="replace").splitlines()[-30:]
                print(f"--- {name}.log (tail) ---", *tail, sep="\n")


# --- the browser: Debian's Chromium driven by Playwright, headless ------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Launch headless Chromium for the module's browser tests; close it after them."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium package"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def local_page(browser: Any, width: int, height: int, timeout_ms: float) -> Iterator[Any]:
    """Open a page (``width`` x ``height``, en-GB, ``timeout_ms`` for every wait); close it.

    Fails the test if the page loaded anything from anywhere but 127.0.0.1.
    """
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    context.set_default_timeout(timeout_ms)
    opened = context.new_page()
    outside: list[str] = []
    opened.on("request", lambda request: outside.append(request.url) if "127.0.0.1" not in request.url else None)
    try:
        yield opened
    finally:
        context.close()
    assert outside == []
