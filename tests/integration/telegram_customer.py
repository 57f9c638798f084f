"""A Telegram customer of a running Rasa: updates posted to its webhook as Telegram posts them, replies awaited on the fake Bot API."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx

from tests.fakes.telegram_api import BOT_USER, FakeTelegramAPI
from tests.processes import Process, wait_until


def update(update_id: int, user: dict[str, Any], chat: dict[str, Any], **content: Any) -> dict[str, Any]:
    """Return update ``update_id`` from ``user`` in ``chat``: a button press (``callback_data=``), else a message."""
    built: dict[str, Any] = {"update_id": update_id}
    if "callback_data" in content:
        bot_message = {"message_id": 1, "date": int(time.time()), "chat": chat, "from": BOT_USER, "text": "?"}
        built["callback_query"] = {"id": f"q{update_id}", "from": user, "chat_instance": "c",
                                   "message": bot_message, "data": content["callback_data"]}  # fmt: skip
    else:
        built["message"] = {"message_id": 100 + update_id, "date": int(time.time()), "chat": chat, "from": user,
                            **content}  # fmt: skip
    return built


def deliver(rasa_url: str, secret: str, sent: dict[str, Any], api: FakeTelegramAPI | None = None) -> None:
    """POST an update to Rasa's Telegram webhook with the secret header, as Telegram does; it must be taken.

    With ``api``, a method in the answer (the typing indicator) is run on it, as Telegram runs it.
    """
    answer = httpx.post(
        f"{rasa_url}/webhooks/telegram/webhook", json=sent, headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        timeout=10,
    )  # fmt: skip
    assert answer.status_code == 200 and (answer.json() == {"ok": True} or answer.json().get("method") == "sendChatAction"), answer.text
    if api is not None:
        api.run_webhook_answer(answer.json())


def replies_after(
    api: FakeTelegramAPI, count: int, expected: int, processes: Iterable[Process], *, chat: int | None = None,
    timeout: float = 60, quiet: float = 1.5, interval: float = 0.2,
) -> list[dict[str, Any]]:  # fmt: skip
    """Wait for at least ``expected`` ``sendMessage`` calls (to ``chat``) after the first ``count``, then for
    ``quiet`` seconds without another; return the new ones' parameters."""
    seen: list[int] = [-1]
    since: list[float] = [0.0]

    def probe() -> list[dict[str, Any]] | None:
        calls = [c.params for c in api.calls("sendMessage") if chat is None or str(c.params["chat_id"]) == str(chat)]
        if len(calls) != seen[0]:
            seen[0], since[0] = len(calls), time.monotonic()
            return None
        if len(calls) >= count + expected and time.monotonic() - since[0] >= quiet:
            return calls[count:]
        return None

    what = f"{expected} replies to {chat}" if chat is not None else f"{expected} replies after {count}"
    return wait_until(what, probe, timeout, list(processes), interval=interval)


def button(reply: dict[str, Any], title: str) -> str:
    """Return the callback data of the inline button titled ``title`` under a sent message."""
    for row in reply["reply_markup"]["inline_keyboard"]:
        for item in row:
            if item["text"] == title:
                return str(item["callback_data"])
    raise AssertionError(f"no button {title!r} in {reply}")
