"""Real Rasa and action server processes for end-to-end tests over the REST channel."""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "firstreply.tar.gz"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180


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


@pytest.fixture(scope="session")
def assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assistant]:
    """Start the real assistant on free ports with its own case store and tracker store."""
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
