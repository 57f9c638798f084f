"""Starting, watching and stopping the processes the benchmark measures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def rasa_env(**extra: str) -> Dict[str, str]:
    """Return the environment every Rasa command of the benchmark runs with."""
    env = dict(os.environ)
    env.update(
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    )
    env.update(extra)
    return env


def rasa_cmd(*args: str) -> List[str]:
    """Return the command line for ``rasa <args>`` from the project's venv."""
    return [str(VENV_BIN / "rasa"), *args]


def run_timed(cmd: Sequence[str], cwd: Path, env: Dict[str, str], log: Path, timeout: float) -> float:
    """Run ``cmd`` to completion, output to ``log``; return its wall time in seconds.

    Raises:
        RuntimeError: the command failed or ran longer than ``timeout``.
    """
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise RuntimeError(f"{' '.join(cmd[:3])} ran longer than {timeout:.0f} s; see {log}")
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {code}):\n{tail(log)}")
    return elapsed


def tail(log: Path, lines: int = 25) -> str:
    """Return the last ``lines`` lines of ``log``."""
    try:
        text = log.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """A long-running process with a health URL."""

    def __init__(self, name: str, cmd: Sequence[str], cwd: Path, env: Dict[str, str], log: Path, health: str):
        """Describe the server; ``start`` launches it."""
        self.name, self.cmd, self.cwd, self.env, self.log, self.health = name, list(cmd), cwd, env, log, health
        self.proc: Optional[subprocess.Popen] = None
        self.startup_s: Optional[float] = None

    def start(self, timeout: float = 240.0) -> "Server":
        """Launch the server and wait until its health URL answers 200."""
        start = time.perf_counter()
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                with urllib.request.urlopen(self.health, timeout=2) as response:
                    if response.status == 200:
                        self.startup_s = time.perf_counter() - start
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health} within {timeout:.0f} s:\n{tail(self.log)}")

    @property
    def pid(self) -> int:
        """Return the server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Return whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        """Return the resident memory of the process and all its descendants, in MiB."""
        return rss_mb(self.pid)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) -- only the process we started."""
        if self.proc is not None:
            stop(self.proc)
        if getattr(self, "_out", None):
            self._out.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Terminate ``proc`` (and the session it leads, if any), by its pid."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    own_group = pgid == proc.pid
    try:
        (os.killpg if own_group else os.kill)(pgid if own_group else proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        (os.killpg if own_group else os.kill)(pgid if own_group else proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def _children(pid: int) -> List[int]:
    kids: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def process_tree(pid: int) -> List[int]:
    """Return ``pid`` and all its live descendants."""
    found: List[int] = []
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen or not Path(f"/proc/{current}").exists():
            continue
        seen.add(current)
        found.append(current)
        todo += _children(current)
    return found


def _status_kb(pid: int, field: str, source: str = "status") -> int:
    """Return one ``<field>: N kB`` line of /proc/<pid>/<source>, 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    """Return VmRSS of ``pid`` plus all its descendants, in MiB (0 if gone)."""
    return round(sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) / 1024.0, 1)


def pss_mb(pid: int) -> float:
    """Return the proportional set size of ``pid`` plus all its descendants, in MiB.

    Unlike RSS, shared memory (PostgreSQL's shared buffers, which every backend maps) is
    split between the processes that map it instead of counted once per process.
    """
    return round(sum(_status_kb(p, "Pss", "smaps_rollup") for p in process_tree(pid)) / 1024.0, 1)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) used so far by ``pid`` and its live descendants."""
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICKS


def thread_cpu_seconds(pid: int) -> Dict[str, float]:
    """Return the CPU time (user + system) used so far by each kind of thread of ``pid`` and its descendants.

    A thread's kind is its OS name (FirstReply's own threads carry theirs: ``bot.threads``)
    without the pool's number, "main" for a process's first thread, and "other" for the
    rest (threads of libraries: TensorFlow's, the event loop's default pool), which the OS
    shows as "python".
    """
    kinds: Dict[str, float] = {}
    for current in process_tree(pid):
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                used = (int(fields[11]) + int(fields[12])) / _TICKS
            except (OSError, IndexError, ValueError):
                continue  # the thread ended meanwhile
            if task.name == str(current):
                kind = "main"
            elif name.startswith("fr-"):
                kind = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
            else:
                kind = "other"
            kinds[kind] = kinds.get(kind, 0.0) + used
    return kinds


def publish(name: str, data: Any, table: str) -> None:
    """Write bench/results/<name>-latest.json (``data``) and .md (``table``), and print the table."""
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}-latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (results / f"{name}-latest.md").write_text(table)
    print(table)
