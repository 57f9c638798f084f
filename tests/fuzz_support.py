"""What the webhook fuzz tests share: hypothesis settings, hostile inputs, a table watcher, the REST server.

The Telegram, Slack and web chat servers and agents come from those channels' own test
modules (``tests/test_*_channel.py``); the REST channel has none, so its server is here,
built the same way: Rasa's real Sanic app (``configure_app``) on a free port.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import Table, create_engine, select

from bot.channels.rest import RestInput
from tests.channel_support import RecordingAgent, served_app

REST_WEBHOOK = "/webhooks/rest/webhook"
MEGABYTE = 1_000_000


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible settings: a fixed seed (``derandomize``), no example database, no deadline.

    Every test serves one Sanic app from a function-scoped fixture and sends each example
    to it, so that health check is off; examples reset what they look at themselves.
    """
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- hostile inputs ------------------------------------------------------------------------

# What customers type: anything Unicode holds (control characters too), plus the hard cases.
_HARD_CHARACTERS = "\u202e\u200f\u200b\ufeff\x00\x07\r\n\t éשمﷺ𝕏😀"
_HARD_PIECES = ["\u202eevil", "שלום עולם", "مرحبا", "👩\u200d👩\u200d👧\u200d👦", "🇵🇹", "e\u0301",
                "\r\n"]  # fmt: skip
CHARACTERS = st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(_HARD_CHARACTERS))
_PIECES = st.one_of(CHARACTERS, st.sampled_from(_HARD_PIECES))


def customer_texts(cap: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Texts up to ``cap`` characters: short random ones, long repeated ones, exactly ``cap`` long."""
    unit = st.lists(_PIECES, min_size=1, max_size=12).map("".join)
    long = st.tuples(unit, st.integers(max(min_size, 1), cap)).map(lambda pair: (pair[0] * pair[1])[: pair[1]])
    if min_size > 60:
        return long.filter(lambda text: len(text) >= min_size)
    short = st.lists(_PIECES, min_size=min_size, max_size=min(cap, 60)).map("".join)
    return st.one_of(short, long).filter(lambda text: min_size <= len(text) <= cap)


# Texts made to sneak an intent past a "drop the leading /" rule: "/ /affirm", " //inform{...}".
SLASHY_TEXTS: st.SearchStrategy[str] = st.tuples(
    st.lists(st.sampled_from(["/", "//", " ", "\u00a0", "\t", "\n", "\u2003"]), min_size=1, max_size=6).map("".join),
    st.sampled_from(["affirm", 'inform{"priority": "urgent"}', "start", "start@firstreply_test_bot x", "hi there"]),
).map("".join)


def without_command_prefix(text: str) -> str:
    """What Rasa may read of a customer's text: no slash at the start, however spaced, so no intent."""
    return re.sub(r"^[\s/]+", "", text).strip()


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(CHARACTERS, max_size=12),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(CHARACTERS, max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def not_a(*kinds: type) -> st.SearchStrategy[Any]:
    """JSON values of any type but ``kinds`` (``bool`` counts apart from ``int``)."""

    def other(value: Any) -> bool:
        kind = type(value)
        return kind not in kinds

    return JSON_VALUES.filter(other)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field inside ``value``: the keys and indexes that lead to it."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replaced(value: Any, path: tuple[Any, ...], new: Any, remove: bool) -> Any:
    """A copy of ``value`` with the field at ``path`` set to ``new`` (or removed)."""
    key, rest = path[0], path[1:]
    changed = dict(value) if isinstance(value, dict) else list(value)
    if rest:
        changed[key] = _replaced(value[key], rest, new, remove)
    elif remove:
        del changed[key]
    else:
        changed[key] = new
    return changed


def with_wrong_type(value: Any, draw: st.DrawFn) -> Any:
    """``value`` with one field, any one at any depth, given a value of another type or removed."""
    path = draw(st.sampled_from(list(_paths(value))))
    field = value
    for key in path:
        field = field[key]
    remove = draw(st.integers(0, 4)) == 0
    return _replaced(value, path, None if remove else draw(not_a(type(field))), remove)


def dumps(value: Any) -> bytes:
    """Encode as JSON the way a sloppy client might: UTF-8, no ASCII escaping."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


# Bodies that have broken parsers elsewhere: too deep, lone surrogates, other encodings, NaN.
NASTY_BODIES: tuple[bytes, ...] = (
    b"",
    b"null",
    b"[]",
    b"{}",
    b'"just a string"',
    b"\x00" * 64,
    b"\xff\xfe\xfd",
    b"\xef\xbb\xbf{}",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"sender": "\\ud800", "message": "\\udfff", "update_id": 1, "token": "\\ud800"}',
    b'{"sender": "x", "message": NaN, "update_id": Infinity}',
    b'{"sender": "x", "message": 1e999, "metadata": {"n": -1e999}}',
    b'{"update_id": ' + b"9" * 5000 + b"}",
    json.dumps({"sender": "maria", "message": "ol\u00e1"}).encode("utf-16"),
    json.dumps({"sender": "mar\u00eda", "message": "ol\u00e1"}, ensure_ascii=False).encode("latin-1"),
    b'{"sender": "maria", "message": "hi"} trailing',
    b'{"sender": "maria", "message": "hi", "message": 5}',
    b"payload=%7B%22type%22%3A+%22block_actions%22%7D",
    b"payload=not+json",
    b"payload=%5B1%2C+2%5D",
    b"ssl_check=1&token=x",
    b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
)

ANY_BODY: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from(NASTY_BODIES),
    st.binary(max_size=600),
    JSON_VALUES.map(dumps),
    st.text(CHARACTERS, max_size=200).map(lambda text: text.encode("utf-8")),
    # Valid JSON made invalid UTF-8 by one byte.
    st.tuples(JSON_VALUES.map(dumps), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])).map(b"".join),
)


def huge_bodies(valid: Callable[[str], bytes]) -> st.SearchStrategy[bytes]:
    """Bodies of 1-5 MB: filler bytes, a deep array, and ``valid`` wrapped around a huge text."""
    size = st.integers(MEGABYTE, 5 * MEGABYTE)
    return st.one_of(
        st.tuples(size, st.sampled_from([b"a", b"\xff", b"{", b" "])).map(lambda pair: pair[1] * pair[0]),
        size.map(lambda n: b"[" * n),
        st.tuples(size, st.sampled_from(["x", "é", "👍", "\x00"])).map(lambda pair: valid(pair[1] * (pair[0] // 4))),
    )


def _header_safe(raw: bytes) -> bytes:
    # What an HTTP client lets through: visible ASCII and bytes >= 0x80, spaces only inside.
    return bytes(byte for byte in raw if byte > 0x20 and byte != 0x7F)


HEADER_BYTES: st.SearchStrategy[bytes] = st.binary(min_size=1, max_size=80).map(_header_safe).filter(bool)


def sendable(value: bytes | str | None) -> bool:
    """Return whether an HTTP client sends ``value`` as a header (h11: no control bytes, no space at the ends)."""
    if value is None:
        return True
    raw = value.encode() if isinstance(value, str) else value
    visible = all(byte == 0x09 or (byte >= 0x20 and byte != 0x7F) for byte in raw)
    return bool(raw) and visible and raw == raw.strip(b" \t")


def wrong_secrets(right: str) -> st.SearchStrategy[bytes | None]:
    """Header values that are not ``right``: none, near misses, random text, non-UTF-8 bytes."""
    encoded = right.encode()
    near = [b"", encoded[:-1], encoded + b"x", encoded.upper(), encoded[::-1], encoded + b"\xff", b"\xff" + encoded,
            encoded.replace(encoded[:1], b"\xc3\xa9", 1)]  # fmt: skip
    printable = st.text(string.ascii_letters + string.digits + "_-=/+", min_size=1, max_size=300).map(str.encode)
    return st.one_of(st.none(), st.sampled_from(near), printable, HEADER_BYTES).filter(lambda value: value != encoded)


def handling_failed(record: logging.LogRecord) -> bool:
    """Whether a log record reports that handling a stored update failed (the inbox retries those)."""
    if record.name == "bot.channels.inbox":
        return record.levelno >= logging.WARNING
    return record.name == "bot.channels.common" and record.levelno >= logging.ERROR


async def refused_or_ignored(
    post: Callable[[bytes], Awaitable[httpx.Response]], body: bytes, refusal: dict[str, Any], watch: TableWatch,
    agent: RecordingAgent, caplog: Any,
) -> httpx.Response:  # fmt: skip
    """POST a malformed authenticated ``body``: a 400 (``refusal``, nothing stored, nothing to Rasa) or a 200.

    Also after the 200: handling what was stored must not fail in the background, and only
    text reaches Rasa. Returns the answer for the caller's own checks.
    """
    stored = watch.snapshot()
    caplog.clear()
    answer = await post(body)
    failures = [r.getMessage() for r in caplog.records if handling_failed(r)]
    assert failures == [], (body[:300], [repr(r.exc_info[1]) for r in caplog.records if r.exc_info])
    assert answer.status_code in (200, 400), answer.text[:300]
    if answer.status_code == 400:
        assert answer.json() == refusal
        assert watch.snapshot() == stored and agent.messages == []
    assert all(isinstance(message.text, str) for message in agent.messages)
    return answer


# --- watching what is stored ---------------------------------------------------------------


class TableWatch:
    """Reads whole tables through its own connection, to compare before and after a request."""

    def __init__(self, url: str, tables: Sequence[Table]) -> None:
        """Watch ``tables`` of the database at ``url`` (the channel's own engine is left alone)."""
        self._engine = create_engine(url, future=True)
        self._tables = tables

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        """Return every row of every watched table."""
        with self._engine.connect() as conn:
            return [[tuple(row) for row in conn.execute(select(table))] for table in self._tables]

    def dispose(self) -> None:
        """Close the connections."""
        self._engine.dispose()


# --- the REST channel, served -----------------------------------------------------------------


@dataclass
class RestServed:
    """Rasa's app with the REST channel, a recording agent and a client."""

    channel: RestInput
    agent: RecordingAgent
    client: httpx.AsyncClient

    async def post(self, body: bytes, authorization: bytes | str | None = None) -> httpx.Response:
        """POST ``body`` to the webhook, with ``Authorization: <authorization>`` when given."""
        headers: dict[str, bytes | str] = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        return await self.client.post(REST_WEBHOOK, content=body, headers=headers)


@asynccontextmanager
async def serve_rest(channel: RestInput, agent: RecordingAgent) -> AsyncIterator[RestServed]:
    """Rasa's Sanic app (``configure_app``) with the REST ``channel`` registered, on a free port."""
    async with served_app([channel], agent, timeout=30) as (_, client):
        yield RestServed(channel, agent, client)
