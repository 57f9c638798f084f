"""Real Rasa and action server processes for end-to-end tests over the REST channel.

The ``assistant`` fixture runs on the embedded defaults (SQLite files) and, when the test
services are there (``scripts/test-services.sh`` sets ``FIRSTREPLY_TEST_POSTGRES_URL`` and
``FIRSTREPLY_TEST_REDIS_URL``; ``make test`` runs under it), a second time on the production
stack: Rasa with ``endpoints.prod.yml`` (``SQLTrackerStore`` on PostgreSQL, ``RedisLockStore``)
and the case store and channel database on PostgreSQL, each run in a fresh database.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import unquote, urlsplit

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "firstreply.tar.gz"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180
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


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: Optional[bytes] = None, timeout: float = 60.0, token: Optional[str] = None
) -> tuple[int, bytes]:
    """Send one HTTP request (with a bearer token if given); return the status and the body."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Process:
    """A server process started for the tests, with its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        """Stop the process group and wait for it."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()

    def tail(self) -> str:
        """Return the end of the log, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def start(name: str, args: List[str], env: Dict[str, str], log: Path) -> Process:
    """Start a server in its own process group, its output in ``log``."""
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log)


def wait_until_up(process: Process, url: str) -> None:
    """Wait until ``url`` answers 200, failing with the log if the process dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{process.name} did not answer {url} within {START_TIMEOUT_S} s:\n{process.tail()}")


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


def base_env() -> Dict[str, str]:
    """Return the environment every server process of the tests starts with."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SANIC_HOST": "127.0.0.1",
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("FIRSTREPLY_NOW", None)
    return env


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


def start_action_server(name: str, port: int, env: Dict[str, str], log: Path) -> Process:
    """Start ``rasa run actions`` on 127.0.0.1:``port``."""
    return start(name, [str(VENV_BIN / "rasa"), "run", "actions", "--port", str(port), "--actions", "actions"], env, log)


def start_rasa_server(
    name: str, port: int, endpoints: Path, env: Dict[str, str], log: Path, api_token: Optional[str] = None,
    credentials: Path = ROOT / "credentials.yml",
) -> Process:  # fmt: skip
    """Start the Rasa server (by default: REST channel, web chat, HTTP API) on 127.0.0.1:``port``."""
    args = [
        sys.executable, "-m", "bot.launcher", "run", "--model", str(MODEL), "--endpoints", str(endpoints),
        "--credentials", str(credentials), "--interface", "127.0.0.1", "--port", str(port),
        "--enable-api",
    ]  # fmt: skip
    if api_token:
        args += ["--auth-token", api_token]
    return start(name, args, env, log)


def _production_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make train` (or `make test`, which trains first)")
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
        running.processes.append(start_action_server("action server", actions_port, env, work / "actions.log"))
        running.processes.append(start_rasa_server("rasa server", rasa_port, PROD_ENDPOINTS, env, work / "rasa.log"))
        try:
            wait_until_up(running.processes[0], f"http://127.0.0.1:{actions_port}/health")
            wait_until_up(running.processes[1], f"{running.rasa_url}/status")
            yield running
        finally:
            for process in reversed(running.processes):
                process.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def assistant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    """Start the real assistant on free ports with its own case store and tracker store.

    ``sqlite``: the embedded defaults. ``postgresql``: the production stack (module docstring).
    """
    if request.param == "postgresql":
        yield from _production_assistant(tmp_path_factory)
        return
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make train` (or `make test`, which trains first)")
    work = tmp_path_factory.mktemp("assistant")
    rasa_port, actions_port = free_port(), free_port()
    case_db_url = f"sqlite:///{work / 'cases.db'}"
    endpoints = work / "endpoints.yml"
    endpoints.write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n'
        f"tracker_store:\n  type: bot.trackers.SQLiteTrackerStore\n  db: {work / 'trackers.db'}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FIRSTREPLY_CASE_DB": case_db_url,
        "FIRSTREPLY_CHANNEL_DB": str(work / "channels.db"),
        "SANIC_HOST": "127.0.0.1",
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "FIRSTREPLY_REST_TOKEN": secrets.token_urlsafe(24),
    }
    env.pop("FIRSTREPLY_NOW", None)
    running = Assistant(
        rasa_url=f"http://127.0.0.1:{rasa_port}", case_db_url=case_db_url, env=env, token=env["FIRSTREPLY_REST_TOKEN"]
    )
    actions = start(
        "action server",
        [str(VENV_BIN / "rasa"), "run", "actions", "--port", str(actions_port), "--actions", "actions"],
        env,
        work / "actions.log",
    )
    running.processes.append(actions)
    rasa = start(
        "rasa server",
        [
            sys.executable, "-m", "bot.launcher", "run", "--model", str(MODEL), "--endpoints", str(endpoints),
            "--credentials", str(ROOT / "credentials.yml"), "--interface", "127.0.0.1",
            "--port", str(rasa_port), "--enable-api",
        ],
        env,
        work / "rasa.log",
    )
    running.processes.append(rasa)
    try:
        wait_until_up(actions, f"http://127.0.0.1:{actions_port}/health")
        wait_until_up(rasa, f"{running.rasa_url}/status")
        yield running
    finally:
        for process in reversed(running.processes):
            process.stop()
