"""What Meta's three connectors share: the handshake, the signature, Graph errors, windows."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.channels.meta import (
    INSTAGRAM,
    MESSENGER,
    WHATSAPP,
    GraphError,
    Window,
    handshake,
    read_body,
    signature_of,
    signed_by,
    window_for,
)

SECRET = "app-secret-for-tests"
BODY = json.dumps({"object": "page", "entry": [{"id": "1", "messaging": []}]}, ensure_ascii=True).encode()


def test_signature_over_the_raw_bytes_is_accepted() -> None:
    assert signed_by(SECRET, BODY, signature_of(SECRET, BODY))


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=" + "0" * 40, signature_of("another-secret", BODY), signature_of(SECRET, BODY + b" ")],
)
def test_missing_forged_or_stale_signatures_are_refused(header: str | None) -> None:
    assert not signed_by(SECRET, BODY, header)


def test_a_body_serialised_again_no_longer_matches() -> None:
    # Meta signs its own serialisation (unicode escaped); the check must use the bytes that came.
    raw = '{"entry": [{"text": "caf\\u00e9"}]}'.encode()
    again = json.dumps(json.loads(raw), ensure_ascii=False).encode()
    assert signed_by(SECRET, raw, signature_of(SECRET, raw))
    assert not signed_by(SECRET, again, signature_of(SECRET, raw))


def test_handshake_answers_the_challenge_only_for_the_right_token() -> None:
    good = handshake({"hub.mode": ["subscribe"], "hub.verify_token": ["tok"], "hub.challenge": ["123"]}, "tok", "x")
    assert (good.status, good.body) == (200, b"123")
    for args in (
        {"hub.mode": ["subscribe"], "hub.verify_token": ["nope"], "hub.challenge": ["123"]},
        {"hub.mode": ["unsubscribe"], "hub.verify_token": ["tok"], "hub.challenge": ["123"]},
        {"hub.mode": ["subscribe"], "hub.challenge": ["123"]},
        {},
    ):
        assert handshake(args, "tok", "x").status == 403


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"entry": {}}', b'{"object": "page"}', b"[" * 100_000])
def test_bodies_without_an_entry_list_are_not_read(raw: bytes) -> None:
    assert read_body(raw, "x") is None


def test_a_body_with_entries_is_read() -> None:
    assert read_body(BODY, "x") == json.loads(BODY)


def test_graph_errors_are_read_from_any_shape() -> None:
    error = GraphError.from_answer(400, {"error": {"code": 10, "error_subcode": 2018278, "message": "window"}})
    assert (error.code, error.subcode, error.outside_window, error.refused_for_good) == (10, 2018278, True, True)
    assert GraphError.from_answer(400, {"error": {"code": 613}}).rate_limited
    assert not GraphError.from_answer(400, {"error": {"code": 613}}).refused_for_good
    assert not GraphError.from_answer(401, {"error": {"code": 190}}).refused_for_good
    assert GraphError.from_answer(400, {"error": {"code": 10900}}).refused_for_good
    assert GraphError.from_answer(502, "<html>bad gateway</html>") == GraphError(502)
    assert not GraphError(502).refused_for_good


@pytest.mark.parametrize(
    ("channel", "hours", "human", "expected"),
    [
        (MESSENGER, 23, False, Window.OPEN),
        (MESSENGER, 25, False, Window.CLOSED),
        (MESSENGER, 25, True, Window.HUMAN_AGENT),
        (INSTAGRAM, 24 * 7 - 1, True, Window.HUMAN_AGENT),
        (INSTAGRAM, 24 * 7 + 1, True, Window.CLOSED),
        (WHATSAPP, 23, True, Window.OPEN),
        (WHATSAPP, 25, True, Window.TEMPLATE_ONLY),
        ("telegram", 24 * 30, False, Window.OPEN),
    ],
)
def test_policy_windows(channel: str, hours: int, human: bool, expected: Window) -> None:
    assert window_for(channel, timedelta(hours=hours), human=human) is expected
