"""The server processes the tests start (Rasa, the action server, the desk), on free ports, each logging to a file.

Every starter runs its server in its own process group (``start``), so ``Process.stop``
and ``Process.kill`` reach everything it started; ``wait_until_up`` and ``wait_until``
fail with the log as soon as a process dies rather than waiting out their time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "firstreply.tar.gz"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180
T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports free on 127.0.0.1 now (held together while choosing, then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    return free_ports(1)[0]


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


def answers(url: str) -> bool | None:
    """Return True when ``url`` answers 200 now, else None (for ``wait_until``)."""
    try:
        return True if http("GET", url, timeout=2)[0] == 200 else None
    except OSError:
        return None


@dataclass
class Process:
    """A server process started for the tests, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20) -> None:
        """Stop the process group (SIGTERM, then SIGKILL after ``timeout`` s) and wait for it."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Kill the process group at once (SIGKILL), as a crash would, and wait for it."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def tail(self) -> str:
        """Return the end of the log, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def check_alive(self) -> None:
        """Fail the test with the log if the process has exited."""
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")


def start(name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
    """Start a server in its own process group, its output appended to ``log``."""
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            list(args), cwd=ROOT, env=dict(env), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log)


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float,
    processes: Iterable[Process | subprocess.Popen[bytes]] = (), interval: float = 0.2,
) -> T:  # fmt: skip
    """Return ``probe()``'s first truthy value; fail (with its log) if a process dies, or when time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        for process in processes:
            if isinstance(process, Process):
                process.check_alive()
            elif process.poll() is not None:
                raise AssertionError(f"{what}: {process.args!r} exited with {process.returncode}")
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")


def wait_until_up(process: Process, url: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until ``url`` answers 200, failing with the log if the process dies or time runs out."""
    try:
        wait_until(f"{process.name} up at {url}", lambda: answers(url), timeout, [process], interval=0.3)
    except AssertionError:
        pytest.fail(f"{process.name} did not answer {url} within {timeout} s:\n{process.tail()}")


def base_env() -> dict[str, str]:
    """Return the environment every server process of the tests starts with (no frozen clock)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SANIC_HOST": "127.0.0.1",
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("FIRSTREPLY_NOW", None)
    return env


def write_endpoints(work: Path, actions_port: int, extra: str = "") -> Path:
    """Write ``work/endpoints.yml``: the action server on ``actions_port``, then ``extra`` (stores, brokers)."""
    endpoints = work / "endpoints.yml"
    endpoints.write_text(f'action_endpoint:\n  url: "http://127.0.0.1:{actions_port}/webhook"\n{extra}')
    return endpoints


def start_action_server(name: str, port: int, env: Mapping[str, str], log: Path) -> Process:
    """Start ``rasa run actions`` on 127.0.0.1:``port``."""
    return start(name, [str(VENV_BIN / "rasa"), "run", "actions", "--port", str(port), "--actions", "actions"], env, log)


def start_rasa_server(
    name: str, port: int, endpoints: Path, env: Mapping[str, str], log: Path, api_token: Optional[str] = None,
    credentials: Path = ROOT / "credentials.yml", *, model: Path = MODEL, launcher: bool = True, nice: int = 0,
) -> Process:  # fmt: skip
    """Start the Rasa server (by default: REST channel, web chat, HTTP API) on 127.0.0.1:``port``.

    ``launcher``: through ``bot.launcher`` (as ``make run`` does), else Rasa's own ``rasa`` command;
    ``nice``: at that lower priority (as ``make run`` starts it behind the front).
    """
    command = [sys.executable, "-m", "bot.launcher"] if launcher else [str(VENV_BIN / "rasa")]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    args = [
        *command, "run", "--model", str(model), "--endpoints", str(endpoints), "--credentials", str(credentials),
        "--interface", "127.0.0.1", "--port", str(port), "--enable-api",
    ]  # fmt: skip
    if api_token:
        args.append(f"--auth-token={api_token}")  # one argument: a token may start with "-"
    return start(name, args, env, log)


def start_front(name: str, port: int, rasa_url: str, credentials: Path, env: Mapping[str, str], log: Path) -> Process:
    """Start the front process (``python -m bot.front``, as ``make run`` does) on 127.0.0.1:``port`` before ``rasa_url``."""
    args = [sys.executable, "-m", "bot.front", "--credentials", str(credentials), "--rasa-url", rasa_url,
            "--interface", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return start(name, args, env, log)


def start_desk(name: str, env: Mapping[str, str], log: Path, *, verbose: bool = False) -> Process:
    """Start ``python -m bot desk`` (its port and settings from ``env``)."""
    return start(name, [str(VENV_BIN / "python"), "-m", "bot", *(["-v"] if verbose else []), "desk"], env, log)


def require_model(model: Path = MODEL) -> None:
    """Fail naming the way out when the trained model is missing."""
    if not model.exists():
        pytest.fail(f"{model} is missing: run `make train` (or `make test`, which trains first)")
