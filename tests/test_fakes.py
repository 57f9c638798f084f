"""The fake-API scaffold of ``tests.fakes.server``: a fake declared by its routes gets records, faults and serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.fakes.server import ERROR, Delivery, FakeServer, answers, route


class FakeNotesAPI(FakeServer):
    """A platform that takes notes for a customer: all of it declared, nothing of the serving written."""

    thread_name = "fake-notes-api"
    method_route = "/v1/{method}"

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    @answers("notes.add")
    def _add(self, params: dict[str, Any]) -> dict[str, Any]:
        self.notes.append(str(params["text"]))
        return {"ok": True, "id": len(self.notes)}

    @answers("notes.count", "notes.size")
    def _count(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "count": len(self.notes)}

    def _delivery(self, method: str, params: dict[str, Any]) -> Delivery | None:
        return Delivery(method, str(params["to"]), str(params["text"]), params) if method == "notes.add" else None

    @route("GET", "/health")
    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"up": True})


class FakeQuietNotesAPI(FakeNotesAPI):
    """The same platform, whose count is always zero: a subclass overrides a handler by its name."""

    def _count(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "count": 0}


@pytest.fixture
def notes() -> Iterator[FakeNotesAPI]:
    with FakeNotesAPI() as api:
        yield api


def call(api: FakeServer, method: str, **params: Any) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{api.port}/v1/{method}", json=params, timeout=5)


def test_a_declared_fake_answers_its_methods_and_records_calls_and_deliveries(notes: FakeNotesAPI) -> None:
    added = call(notes, "notes.add", to="maria", text="hello")
    counted = call(notes, "notes.size")
    unknown = call(notes, "notes.delete", id=1)

    assert (added.status_code, added.json()) == (200, {"ok": True, "id": 1})
    assert (counted.status_code, counted.json()) == (200, {"ok": True, "count": 1})
    assert unknown.status_code == 404
    assert [c.method for c in notes.calls()] == ["notes.add", "notes.size"]
    assert [c.method for c in notes.calls(answered=404)] == ["notes.delete"]
    assert notes.delivered_texts("maria") == ["hello"]
    assert httpx.get(f"http://127.0.0.1:{notes.port}/health", timeout=5).json() == {"up": True}


def test_a_declared_fake_plays_faults(notes: FakeNotesAPI) -> None:
    notes.fault(ERROR, method="notes.add", status=503)

    refused = call(notes, "notes.add", to="maria", text="lost")
    taken = call(notes, "notes.add", to="maria", text="kept")

    assert (refused.status_code, taken.status_code) == (503, 200)
    assert notes.notes == ["kept"] and notes.delivered_texts() == ["kept"]
    assert [c.fault for c in notes.calls(answered=None)] == [ERROR, None]


def test_a_subclass_overrides_a_handler_by_name() -> None:
    with FakeQuietNotesAPI() as api:
        call(api, "notes.add", to="maria", text="hello")

        assert call(api, "notes.count").json() == {"ok": True, "count": 0}
        assert call(api, "notes.size").json() == {"ok": True, "count": 0}


def test_a_declared_fake_answers_oddly_when_told(notes: FakeNotesAPI) -> None:
    notes.answer_oddly("notes.add", {"ok": True}, times=1)

    odd = call(notes, "notes.add", to="maria", text="lost")
    usual = call(notes, "notes.add", to="maria", text="kept")

    assert (odd.status_code, odd.json()) == (200, {"ok": True})
    assert usual.json() == {"ok": True, "id": 1}
    assert notes.notes == ["kept"] and notes.delivered_texts() == ["kept"]
    assert [c.answer for c in notes.calls("notes.add")] == [{"ok": True}, {"ok": True, "id": 1}]
